"""The compressed clock (commonsky/clock.py): continuous, shared by processes given the same
settings, and `wall_delay` the inverse of reading it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commonsky import clock as clock_module
from commonsky.clock import ScenarioClock, hub_clock


class Wall:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> Wall:
    w = Wall(1_000.0)
    monkeypatch.setattr(clock_module.time, "time", w)
    return w


def test_real_before_origin_fast_between_real_after(wall: Wall) -> None:
    c = ScenarioClock(60.0, origin=1_010.0, until=1_010.0 + 600.0)
    assert c() == 1_000.0 and c.rate == 1.0  # before origin: the wall clock
    wall.t = 1_010.0
    assert c() == 1_010.0 and c.rate == 60.0
    wall.t = 1_015.0
    assert c() == pytest.approx(1_310.0)
    wall.t = 1_020.0  # 600 s of clock time after the origin: real speed from here
    assert c() == pytest.approx(1_610.0)
    wall.t = 1_030.0
    assert c() == pytest.approx(1_620.0) and c.rate == 1.0


@given(
    rate=st.floats(0.5, 200.0),
    lead=st.floats(0.0, 50.0),
    span=st.floats(0.0, 5_000.0),
    at=st.floats(0.0, 200.0),
    ahead=st.floats(0.0, 10_000.0),
)
def test_wall_delay_reaches_the_reading_and_two_clocks_agree(
    rate: float, lead: float, span: float, at: float, ahead: float
) -> None:
    wall = Wall(1_000.0)
    original = clock_module.time.time
    clock_module.time.time = wall  # type: ignore[assignment]
    try:
        origin = 1_000.0 + lead
        a = ScenarioClock(rate, origin, origin + span)
        wall.t += at
        b = ScenarioClock(rate, origin, origin + span)  # made later, in another process
        assert a() == b()
        before = a()
        target = before + ahead
        wall.t += a.wall_delay(target)
        assert a() == pytest.approx(target, abs=1e-6)
        assert a() >= before
    finally:
        clock_module.time.time = original  # type: ignore[assignment]


def test_relax_keeps_the_time_and_runs_real(wall: Wall) -> None:
    c = ScenarioClock(10.0)
    wall.t += 3.0
    assert c() == pytest.approx(1_030.0)
    c.relax()
    assert c() == pytest.approx(1_030.0)
    wall.t += 2.0
    assert c() == pytest.approx(1_032.0) and c.rate == 1.0


def test_hub_clock_from_settings() -> None:
    import time

    assert hub_clock(1.0, 0.0, 0.0) is time.time
    assert isinstance(hub_clock(20.0, 0.0, 0.0), ScenarioClock)
    with pytest.raises(ValueError, match="positive"):
        ScenarioClock(0.0)


CLOCK_ERRORS = [
    ({"clock_rate": float("inf")}, "clock_rate = inf", "$.server.clock_rate"),
    ({"clock_rate": 1e308}, "clock_rate = 1e+308", "$.server.clock_rate"),
    ({"clock_rate": 2.0, "clock_origin": math.inf}, "clock_origin = inf", "$.server.clock_origin"),
    ({"clock_rate": 2.0, "clock_origin": 1e300}, "clock_origin = 1e+300", "$.server.clock_origin"),
    ({"clock_rate": 2.0, "clock_until": float("inf")}, "clock_until = inf", "$.server.clock_until"),
    # an end before the start: the rate would silently never apply
    (
        {"clock_rate": 20.0, "clock_origin": 2e9, "clock_until": 1e9},
        "clock_until = 1000000000.0 is not after clock_origin",
        "$.server.clock_until",
    ),
    ({"clock_rate": 2.0, "clock_until": 5.0}, "clock_until = 5.0 is not after now",
     "$.server.clock_until"),
]  # fmt: skip


@pytest.mark.parametrize(("server", "said", "at"), CLOCK_ERRORS)
def test_hostile_clock_settings_are_one_line_errors(
    server: dict[str, float], said: str, at: str
) -> None:
    from commonsky.errors import UsageError
    from commonsky.settings import Settings

    with pytest.raises(UsageError) as caught:
        Settings.resolve(server, "hub.toml", environ={})
    message = str(caught.value)
    assert "\n" not in message and said in message and message.endswith(f"({at})")
    assert message.startswith("hub.toml: [server]: ")


def test_an_end_after_the_start_is_taken() -> None:
    from commonsky.settings import Settings

    s = Settings.resolve(
        {"clock_rate": 20.0, "clock_origin": 1e9, "clock_until": 1.5e9}, environ={}
    )
    assert (s.clock_rate, s.clock_origin, s.clock_until) == (20.0, 1e9, 1.5e9)
    assert Settings.resolve({"clock_until": 5.0}, environ={}).clock_until == 5.0  # (rate 1: unused)
