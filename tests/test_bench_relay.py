"""`bench relay`'s options (several rates, the event loop) and how a rate's pair is judged;
the event loop setting of `commonsky serve`; its systems start as `bench relay` starts them.
No load is run here (benchmarks are not tests)."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

from commonsky import eventloop
from commonsky.bench import commands, relay
from commonsky.bench.relay import RatePair, Result, parse_rates
from commonsky.errors import UsageError
from commonsky.settings import Settings


def test_rates_are_read_in_order() -> None:
    assert parse_rates("1000,2000,4000") == [1000, 2000, 4000]
    assert parse_rates(" 4_000 , 500") == [4000, 500]


@pytest.mark.parametrize("text", ["", "1000,", "1000,0", "1000,-5", "2k", "1.5"])
def test_bad_rates_are_refused_by_name(text: str) -> None:
    with pytest.raises(UsageError, match="--rates"):
        parse_rates(text)


def _result(name: str, delivered: int, expected: int, latencies_ms: list[float]) -> Result:
    return Result(
        name,
        offered=1000,
        expected=expected,
        delivered=delivered,
        seconds=10.0,
        latencies=[ms / 1000 for ms in latencies_ms],
        cpu_s=5.0,
    )


def test_a_rate_is_judged_hub_against_relay() -> None:
    relay_run = _result("relay", 1000, 1000, [1.0] * 99 + [4.0])
    hub_ok = _result("hub", 1000, 1000, [2.0] * 99 + [8.0])
    summary = RatePair(1000, 0, hub_ok, relay_run).summary()
    assert summary["out ratio"] == pytest.approx(1.0)
    assert summary["p99 ratio"] == pytest.approx(2.0)
    assert summary["hub cpu %"] == pytest.approx(50.0)
    assert summary["targets"] == "met"
    slow = _result("hub", 1000, 1000, [2.0] * 98 + [9.0, 9.0])
    assert RatePair(1000, 0, slow, relay_run).summary()["targets"] == "NOT met"
    missed = _result("hub", 999, 1000, [1.0] * 100)
    assert RatePair(1000, 0, missed, relay_run).summary()["targets"] == "NOT met"
    behind = _result("relay", 980, 1000, [1.0] * 100)  # the relay itself fell behind
    assert RatePair(1000, 0, missed, behind).summary()["targets"] == "not judged"


def test_rates_alternate_which_system_goes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, str, bool]] = []

    def fake(*args: object) -> list[Result]:
        rate, loop, relay_first = args[2], args[5], args[6]
        calls.append((int(rate), str(loop), bool(relay_first)))  # type: ignore[call-overload]
        return [_result("hub", 1, 1, [1.0]), _result("relay", 1, 1, [1.0])]

    monkeypatch.setattr(relay, "bench_relay", fake)
    pairs = relay.bench_rates(50, 10, [1000, 2000], 1.0, 6, "uvloop", repeat=2)
    assert [(p.rate, p.repeat) for p in pairs] == [(1000, 0), (2000, 0), (1000, 1), (2000, 1)]
    assert calls == [
        (1000, "uvloop", False),
        (2000, "uvloop", True),
        (1000, "uvloop", False),
        (2000, "uvloop", True),
    ]


@pytest.mark.parametrize(
    ("options", "match"),
    [({"loop": "trio"}, "--loop"), ({"rates": "1000,x"}, "--rates"), ({"repeat": 0}, "--repeat")],
)
def test_bench_relay_refuses_bad_options_before_any_process(
    options: dict[str, object], match: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay, "bench_relay", pytest.fail)  # nothing may start
    with pytest.raises(UsageError, match=match):
        commands.relay(**options)  # type: ignore[arg-type]


def test_loop_choice_resolves_to_what_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert eventloop.resolve("asyncio") == "asyncio"
    monkeypatch.setattr(eventloop, "uvloop_available", lambda: False)
    assert eventloop.resolve("auto") == "asyncio"
    with pytest.raises(UsageError, match="uvloop is not installed"):
        eventloop.resolve("uvloop")
    with pytest.raises(UsageError, match="choose one of"):
        eventloop.resolve("trio")
    monkeypatch.setattr(eventloop, "uvloop_available", lambda: True)
    assert eventloop.resolve("auto") == "uvloop"
    # A tak-tls listener starts TLS after accepting, which uvloop's early read defeats.
    assert eventloop.resolve("auto", tak_tls=True) == "asyncio"
    with pytest.raises(UsageError, match="tak-tls"):
        eventloop.resolve("uvloop", tak_tls=True)


@pytest.mark.parametrize("choice", ["asyncio", "uvloop"])
def test_run_uses_the_loop_chosen(choice: str) -> None:
    if choice == "uvloop" and not eventloop.uvloop_available():
        pytest.fail("uvloop is a dependency on this platform and must be installed")

    async def main() -> str:
        await asyncio.sleep(0)
        return eventloop.running_loop_name()

    assert eventloop.run(main(), choice) == choice


def test_loop_setting_takes_the_three_choices_only() -> None:
    assert Settings.resolve({}, "f", environ={}).loop == "auto"
    assert Settings.resolve({"loop": "asyncio"}, "f", environ={}).loop == "asyncio"
    with pytest.raises(UsageError, match="loop"):
        Settings.resolve({"loop": "trio"}, "f", environ={})


@pytest.mark.parametrize("system", ["hub", "relay"])
def test_a_system_starts_on_the_ports_it_bound_itself(system: str, tmp_path: Path) -> None:
    """Seen: a port chosen free (bind 0, read, close) twice in one plan gave two parties the
    same port (the kernel hands a freed port out again), and the hub "did not start". Now no
    port is chosen before it is bound: the plan says 0 and the system's own ports are read
    back (a port taken meanwhile is never one of them)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        plan = relay.bench_plan(parties=3, senders=2, receivers=4)
        started = relay.start_bench_system(system, plan, tmp_path)
        try:
            assert sorted(plan.ports) == sorted(plan.parties)
            assert len(set(plan.ports.values())) == len(plan.ports)
            assert port not in plan.ports.values()
            for party_port in plan.ports.values():
                socket.create_connection(("127.0.0.1", party_port), timeout=5).close()
            assert (started.http != 0) == (system == "hub")
        finally:
            started.proc.terminate()
            started.proc.wait(10)


def test_a_system_that_does_not_start_says_why() -> None:
    cmd = [sys.executable, "-m", "commonsky_no_such_module"]
    with pytest.raises(relay.NotStarted, match=r"(?s)exit status 1.*No module named"):
        relay.start_system(cmd, "ready")
