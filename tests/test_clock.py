"""The compressed clock (commonsky/clock.py): continuous, shared by processes given the same
settings, and `wall_delay` the inverse of reading it."""

from __future__ import annotations

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
