"""Launch reports that arrive together are fused once per burst (the hub's event loop runs
`LaunchDesk.settle` after the input it has taken), and that changes nothing anyone ends up
with: the same views, the same last fused event per uid, the same warnings, as when every
report is settled on its own."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commonsky.alerts import LaunchReport
from commonsky.alerts.simulate import Ballistic, radar_report
from commonsky.desks.launch import fused_json
from tests.engines.harness import T0, World, make_world
from tests.engines.test_launch_desk import BILATERAL, GSOMIA, fused, link, send_report

TRUTHS = [
    Ballistic(
        lat=39.9,
        lon=127.5,
        launch_time=datetime.fromtimestamp(T0 - 600, UTC),
        azimuth_deg=84.0,
        range_m=1_150_000.0,
        apogee_m=420_000.0,
    ),
    Ballistic(
        lat=39.0,
        lon=125.7,
        launch_time=datetime.fromtimestamp(T0 - 560, UTC),
        azimuth_deg=95.0,
        range_m=900_000.0,
        apogee_m=350_000.0,
    ),
    # Lofted (20 min of flight): looks more than 15 min apart start as two events, and a
    # look spanning the gap merges them, so a party is told that one of them retired.
    Ballistic(
        lat=39.0,
        lon=125.7,
        launch_time=datetime.fromtimestamp(T0 - 1250, UTC),
        azimuth_deg=80.0,
        range_m=1_000_000.0,
        apogee_m=1_800_000.0,
    ),
]


def _pool(seed: int = 11) -> list[LaunchReport]:
    """Early, middle and late looks at three launches, by the three sensor parties (another
    seed: the same looks with other noise)."""
    rng = np.random.default_rng(seed)
    out = []
    for n, truth in enumerate(TRUTHS):
        flight = truth.flight_s
        spans = [(20.0, 90.0), (flight * 0.4, flight * 0.55), (flight - 200, flight - 80)]
        if flight > 1200:
            spans = [(30.0, 60.0), (100.0, flight - 150), (flight - 100, flight - 50)]
        for (start, end), party in zip(spans, ("KOR", "USA", "JPN"), strict=True):
            step = 10 if end - start < 300 else 20
            out.append(radar_report(truth, party, f"{party}-{n}", start, end, step, 400, 300, rng))
    return out


POOL = _pool()


def _world(path: Path, trilateral: bool) -> World:
    alerts = [link("JPN", "USA", ("alert",)), link("KOR", "USA", ("alert",))]
    return make_world(path, BILATERAL + (GSOMIA if trilateral else []) + alerts)


def _deferred(w: World) -> list[Callable[[], object]]:
    """Give the hub an event loop the test runs by hand."""
    callbacks: list[Callable[[], object]] = []
    w.hub.call_soon = callbacks.append
    return callbacks


def _run(callbacks: list[Callable[[], object]]) -> None:
    while callbacks:
        callbacks.pop(0)()


_RETIRED = '<csky_fused merged="true"/>'


def _last_by_uid(w: World, party: str) -> dict[str, str]:
    """The detail of the last fused event each uid carried to `party`, retirements included."""
    return {e.uid: e.detail for e in w.received.get(party, []) if e.type == "b-l-f"}


def test_a_burst_is_fused_once_per_event(tmp_path: Path) -> None:
    w = _world(tmp_path, trilateral=True)
    callbacks = _deferred(w)
    kor, jpn = POOL[0], POOL[2]
    send_report(w, kor)
    send_report(w, jpn)
    # Both reports are stored and relayed at once; fusing waits for the loop.
    assert fused(w.take("USA")) == []
    assert {e.uid for e in w.received["USA"]} == {
        f"KOR::launch-report-{kor.report_id}",
        f"JPN::launch-report-{jpn.report_id}",
    }
    assert len(callbacks) == 2  # one flush of the connections, one settle of the burst
    _run(callbacks)
    for party in ("USA", "JPN", "KOR"):
        events = fused(w.take(party))
        assert len(events) == 1, party  # one fused event for the burst, not one per report
        assert events[0]["parties"] == ["JPN", "KOR"]
    assert fused(w.take("RUS")) == []
    rounds = w.hub.metrics.render().decode()
    assert "commonsky_launch_round_reports_count 1.0" in rounds
    assert "commonsky_launch_round_reports_sum 2.0" in rounds


def test_a_merge_retires_only_what_was_sent(tmp_path: Path) -> None:
    """The lofted launch's two far-apart looks are two events until the middle look joins
    them: a party that was sent both is told one retired; one whose burst held all three
    looks was only ever sent the survivor."""
    early, middle, late = POOL[6], POOL[7], POOL[8]
    for split in (True, False):
        w = _world(tmp_path / str(split), trilateral=True)
        callbacks = _deferred(w)
        send_report(w, early)
        send_report(w, late)
        if split:
            _run(callbacks)
            assert len(fused(w.take("USA"))) == 2
        send_report(w, middle)
        _run(callbacks)
        got = w.take("USA")
        retired = [e for e in got if 'merged="true"' in e.detail]
        assert len(retired) == (1 if split else 0)
        survivor = fused(got)
        assert len(survivor) == 1 and len(survivor[0]["report_keys"]) == 3
        assert list(w.services.launch.views["USA"]) == [survivor[0]["event_id"]]


def test_settling_a_burst_twice_sends_nothing_more(tmp_path: Path) -> None:
    w = _world(tmp_path, trilateral=False)
    callbacks = _deferred(w)
    send_report(w, POOL[0])
    _run(callbacks)
    w.take("KOR")
    settled = w.services.launch.reports_settled
    w.services.launch.settle()
    assert w.take("KOR") == []
    assert w.services.launch.reports_settled == settled == 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    order=st.permutations(range(len(POOL))),
    cuts=st.lists(st.booleans(), min_size=len(POOL), max_size=len(POOL)),
    trilateral=st.booleans(),
    step_s=st.sampled_from([0.0, 0.4, 30.0]),
)
def test_bursts_end_where_one_report_at_a_time_ends(
    order: list[int], cuts: list[bool], trilateral: bool, step_s: float
) -> None:
    """Whatever bursts the reports come in, every party ends with the same fused events (and
    the same last word on every uid it was sent) and the public feed says the same."""
    with tempfile.TemporaryDirectory() as tmp:
        single = _world(Path(tmp) / "single", trilateral)
        burst = _world(Path(tmp) / "burst", trilateral)
        try:
            _compare(single, burst, order, cuts, step_s)
        finally:
            for w in (single, burst):
                w.services.close()
                w.hub.store.close()


def _compare(
    single: World, burst: World, order: list[int], cuts: list[bool], step_s: float
) -> None:
    """Feed both worlds the same reports, `burst` settling only at the cuts; compare."""
    callbacks = _deferred(burst)
    for index, cut in zip(order, cuts, strict=True):
        for w in (single, burst):
            w.clock.now += step_s
            send_report(w, POOL[index])
        if cut:  # the loop gets back: this burst is settled
            _run(callbacks)
    _run(callbacks)
    for party in ("USA", "RUS", "JPN", "KOR"):
        single.take(party)
        burst.take(party)
        views = [
            {k: fused_json(e) for k, e in w.services.launch.views[party].items()}
            for w in (single, burst)
        ]
        assert views[0] == views[1], party
        # The last word on every uid is the same, except that an event born and merged
        # within one burst was never sent, so there is no retirement to send either.
        last_single, last_burst = _last_by_uid(single, party), _last_by_uid(burst, party)
        assert last_burst.items() <= last_single.items(), party
        unsent = last_single.keys() - last_burst.keys()
        assert all(last_single[uid] == _RETIRED for uid in unsent), party
    warned = [
        sorted(
            (a.sender, a.info[0].areas[0].geocodes[0][1], a.info[0].severity)
            for engine in w.services.launch.core.engines.values()
            for a in engine.active()
        )
        for w in (single, burst)
    ]
    # A burst may skip an estimate single reports passed through (and the Update or Cancel
    # that went with it), never what is warned once the reports are in.
    assert warned[0] == warned[1]
