"""The invariant for fusion, checked directly: what a party receives of launch events depends
only on the reports it may see. Random launch agreements, reports in random order and
rounds; every report the observer may not see is swapped for a different one (the same look
with other noise) that it may not see either; the bytes delivered to the observer — raw
reports and fused events — must not change by one byte."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.engines.harness import World, make_world
from tests.engines.test_launch_bursts import POOL, _deferred, _pool, _run
from tests.engines.test_launch_desk import send_report

PARTIES = ("USA", "RUS", "JPN", "KOR")
SENSORS = ("KOR", "USA", "JPN")  # who made the reports in POOL
OTHER_NOISE = _pool(seed=12)


@st.composite
def sharing(draw: st.DrawFn) -> dict[str, list[str]]:
    """For each sensor, the parties its launch reports are released to."""
    return {
        s: draw(st.lists(st.sampled_from([p for p in PARTIES if p != s]), unique=True))
        for s in SENSORS
    }


def _received(
    path: Path, released: dict[str, list[str]], swap: set[int], order, cuts, observer: str
) -> list[bytes]:
    agreements = [
        {"name": f"{s} launch", "from": s, "to": to, "categories": ["launch"]}
        for s, to in released.items()
        if to
    ]
    w: World = make_world(path, agreements, parties=PARTIES)
    try:
        callbacks = _deferred(w)
        for index, cut in zip(order, cuts, strict=True):
            report = OTHER_NOISE[index] if index in swap else POOL[index]
            w.clock.now += 1.0
            send_report(w, report)
            if cut:
                _run(callbacks)
        _run(callbacks)
        w.clock.now += 1.0
        w.services.launch.tick()
        return [p.rendered.wire(p.variant, "xml") for p in w.outboxes[observer].take()]
    finally:
        w.services.close()
        w.hub.store.close()


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    released=sharing(),
    observer=st.sampled_from(PARTIES),
    order=st.permutations(range(len(POOL))),
    cuts=st.lists(st.booleans(), min_size=len(POOL), max_size=len(POOL)),
)
def test_reports_a_party_may_not_see_change_nothing_it_receives(
    released: dict[str, list[str]], observer: str, order: list[int], cuts: list[bool]
) -> None:
    hidden = {
        i for i, r in enumerate(POOL) if r.party != observer and observer not in released[r.party]
    }
    with tempfile.TemporaryDirectory() as tmp:
        as_is = _received(Path(tmp) / "a", released, set(), order, cuts, observer)
        swapped = _received(Path(tmp) / "b", released, hidden, order, cuts, observer)
    assert as_is == swapped


def test_the_swap_changes_what_a_party_that_sees_it_receives() -> None:
    """The swapped reports differ where they are seen (so the test above can fail)."""
    released = {"KOR": ["USA"], "USA": [], "JPN": []}
    order, cuts = list(range(len(POOL))), [True] * len(POOL)
    with tempfile.TemporaryDirectory() as tmp:
        as_is = _received(Path(tmp) / "a", released, set(), order, cuts, "USA")
        swapped = _received(Path(tmp) / "b", released, {0, 3, 6}, order, cuts, "USA")
    assert as_is != swapped
