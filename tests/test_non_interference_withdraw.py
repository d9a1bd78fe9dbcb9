"""Withdrawals at an agreements' change keep the one invariant (tests/test_non_interference.py:
`run`, and `withdrawable`, which states where a withdrawal may go): an agreement to the
observer ends at the tick, and the model itself is shown to catch a hub that withdraws where
the change stopped nothing, or a form the change did not stop."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commonsky.model import Category, CotEvent, Disclosure, Point
from commonsky.policy import Agreement, Party, Policy
from tests.test_non_interference import BOXES, NOW, PARTIES, TYPES, agreements, events, run


@pytest.mark.slow
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(agreements(), max_size=4),
    st.lists(events(), min_size=1, max_size=12),
    st.permutations(PARTIES),
    st.sampled_from(list(Disclosure)),
    st.sampled_from(BOXES),
    st.integers(0, 1000),
    st.integers(0, 12),
)
def test_withdrawals_at_an_agreements_end_change_nothing_else(
    tmp_path_factory,
    deals: list[Agreement],
    stream: list[tuple[str, CotEvent]],
    order: list[str],
    disclosure: Disclosure,
    area: tuple[tuple[float, float], ...] | None,
    salt: int,
    tick: int,
) -> None:
    """The same property where an agreement to the observer always ends at the tick (so
    that withdrawals are many: `withdrawable` checks each)."""
    provider, observer = order[0], order[1]
    ends = Agreement("ends", provider, (observer,), frozenset(TYPES), disclosure, area, None,
                     NOW + 10)  # fmt: skip
    policy = Policy([Party(p) for p in PARTIES], [*deals, ends])
    before, changed = run(policy, stream, observer, tmp_path_factory.mktemp("a"), salt, tick)
    after, _ = run(policy, changed, observer, tmp_path_factory.mktemp("b"), tick=tick)
    assert before == after


def test_the_withdrawal_model_can_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub withdrawing from everyone that got an item at every change (though USA's
    agreement with RUS goes on) is caught by `withdrawable`; the real one withdraws nothing
    there, and the item once RUS's agreement ends."""
    from commonsky.hub.withdraw import Withdrawals

    deals = [
        Agreement("goes-on", "RUS", ("USA",), frozenset({Category.TRACK}), Disclosure.FULL),
        Agreement("other", "JPN", ("KOR",), frozenset(TYPES), Disclosure.FULL, None, NOW - 10,
                  NOW + 10),
    ]  # fmt: skip
    event = CotEvent(
        uid="u1", type="a-f-A", time=NOW, start=NOW, stale=NOW + 60, how="m-g",
        point=Point(35.0, 35.0),
    )  # fmt: skip
    policy = Policy([Party(p) for p in PARTIES], deals)
    assert not [d for d in run(policy, [("RUS", event)], "USA", tmp_path / "a", tick=1)[0]
                if d.startswith(b"withdrawn:")]  # fmt: skip
    ending = [dataclasses.replace(deals[0], valid_until=NOW + 10)]
    got, _ = run(Policy([Party(p) for p in PARTIES], ending), [("RUS", event)], "USA",
                 tmp_path / "b", tick=1)  # fmt: skip
    assert [d for d in got if d.startswith(b"withdrawn:")] and b"RUS::u1" in got[-1]

    def leaky(self: Withdrawals, change: float, now: float) -> int:
        pictured = [*self.picture.durable.values(), *self.picture.live.values()]
        return sum(self.withdraw(r, p, now) for r in pictured for p in list(r.seen))

    monkeypatch.setattr(Withdrawals, "at_change", leaky)
    with pytest.raises(AssertionError, match="withdrawn from USA: RUS/u1"):
        run(policy, [("RUS", event)], "USA", tmp_path / "c", tick=1)


def test_the_model_allows_only_the_form_a_change_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """USA is given RUS's track in full until NOW + 10, generalized after (a downgrade): the
    real hub withdraws its full form; one that also withdraws where USA is given more
    (generalized until then, in full after: an upgrade) is caught."""
    from commonsky.hub import withdraw

    track = frozenset({Category.TRACK})
    event = CotEvent(
        uid="u1", type="a-f-A", time=NOW, start=NOW, stale=NOW + 60, how="m-g",
        point=Point(35.0, 35.0),
    )  # fmt: skip
    gen = Agreement("gen", "RUS", ("USA",), track, Disclosure.GENERALIZED)
    down = Policy([Party(p) for p in PARTIES], [gen, Agreement(
        "full", "RUS", ("USA",), track, Disclosure.FULL, None, None, NOW + 10)])  # fmt: skip
    got, _ = run(down, [("RUS", event)], "USA", tmp_path / "a", tick=1)
    (withdrawn,) = [d for d in got if d.startswith(b"withdrawn:")]
    assert b'link uid="RUS::u1"' in withdrawn
    up = Policy([Party(p) for p in PARTIES], [gen, Agreement(
        "full", "RUS", ("USA",), track, Disclosure.FULL, None, NOW + 10)])  # fmt: skip
    assert not [d for d in run(up, [("RUS", event)], "USA", tmp_path / "b", tick=1)[0]
                if d.startswith(b"withdrawn:")]  # fmt: skip

    def leaky(was: Disclosure, now: Disclosure | None, got: set[str]) -> set[str]:
        return set(got)  # every form, whatever the change did

    monkeypatch.setattr(withdraw, "stopped", leaky)
    with pytest.raises(AssertionError, match="withdrawn from USA: RUS/u1"):
        run(up, [("RUS", event)], "USA", tmp_path / "c", tick=1)
