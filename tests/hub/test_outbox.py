"""The outbox merges live updates only while the socket pushes back (issue #12 fault 11)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from commonsky.hub.outbox import Outbox, Pending, Rendered
from commonsky.model import Category, CotEvent, Item, Point


def pending(uid: str, n: int, party: str = "USA") -> Pending:
    event = CotEvent(
        uid=uid, type="a-f-A", time=n, start=n, stale=n + 60, how="m-g", point=Point(0.0, 0.0)
    )
    item = Item(party=party, user="u", category=Category.TRACK, event=event, received=n)
    return Pending(Rendered(item, lambda *_: b""), "own")


def times(batch: list[Pending]) -> list[tuple[str, float]]:
    return [(p.rendered.item.uid, p.rendered.item.event.time) for p in batch]


def test_a_reader_that_keeps_up_gets_every_update_in_order() -> None:
    box = Outbox(limit_live=100, limit_durable=100)
    for n, uid in enumerate(["A", "B", "A", "A", "B"]):
        assert box.put(pending(uid, n), durable=False) is None
    assert times(box.take()) == [("A", 0), ("B", 1), ("A", 2), ("A", 3), ("B", 4)]


def test_push_back_keeps_the_newest_update_per_uid_and_counts_the_rest() -> None:
    box = Outbox(limit_live=100, limit_durable=100)
    box.put(pending("A", 0), durable=False)
    box.put(pending("A", 1), durable=False)
    box.put(pending("B", 2), durable=False)
    assert box.push_back() == ["coalesced"]
    assert box.put(pending("B", 3), durable=False) == "coalesced"
    assert box.put(pending("C", 4), durable=False) is None
    assert times(box.take()) == [("A", 1), ("B", 3), ("C", 4)]
    box.resume()
    box.put(pending("C", 5), durable=False)
    box.put(pending("C", 6), durable=False)
    assert times(box.take()) == [("C", 5), ("C", 6)]


def test_pushed_back_and_full_evicts_the_oldest_uid() -> None:
    box = Outbox(limit_live=2, limit_durable=100)
    box.push_back()
    box.put(pending("A", 0), durable=False)
    box.put(pending("B", 1), durable=False)
    assert box.put(pending("C", 2), durable=False) == "evicted"
    assert times(box.take()) == [("B", 1), ("C", 2)]


def test_a_burst_over_the_limit_merges_what_is_past_it() -> None:
    box = Outbox(limit_live=3, limit_durable=100)
    for n in range(3):
        assert box.put(pending("A", n), durable=False) is None
    assert box.put(pending("A", 3), durable=False) is None  # first past the limit: kept
    assert box.put(pending("A", 4), durable=False) == "coalesced"
    assert times(box.take()) == [("A", 0), ("A", 1), ("A", 2), ("A", 4)]


def test_durable_items_are_never_merged_even_when_pushed_back() -> None:
    box = Outbox(limit_live=10, limit_durable=3)
    box.push_back()
    assert box.put(pending("H", 0), durable=True) is None
    assert box.put(pending("H", 1), durable=True) is None
    assert times(box.take()) == [("H", 0), ("H", 1)]


@given(st.lists(st.tuples(st.sampled_from("ABCD"), st.booleans()), max_size=60))
def test_merging_never_loses_a_uid_s_newest_update(ops: list[tuple[str, bool]]) -> None:
    """Whatever the pushback pattern, the newest update of every uid is delivered, after
    every older update of that uid that is delivered."""
    box = Outbox(limit_live=10, limit_durable=10)
    delivered: list[tuple[str, float]] = []
    for n, (uid, pushed) in enumerate(ops):
        if pushed:
            box.push_back()
        else:
            box.resume()
        box.put(pending(uid, n), durable=False)
        if n % 7 == 6:
            delivered += times(box.take())
    delivered += times(box.take())
    newest = {uid: n for n, (uid, _) in enumerate(ops)}
    for uid, n in newest.items():
        mine = [t for u, t in delivered if u == uid]
        assert mine[-1] == n
        assert mine == sorted(mine)
    if not any(pushed for _, pushed in ops):
        assert len(delivered) == len(ops)


def test_a_durable_version_supersedes_a_live_one_still_pending() -> None:
    """A track whose uid a marker takes: the marker (durable) is written before the live
    queue, so the pending track would land after it and the reader keep the old track."""
    box = Outbox(limit_live=10, limit_durable=10)
    box.put(pending("A", 0), durable=False)
    box.put(pending("B", 1), durable=False)
    box.put(pending("A", 2), durable=True)
    assert times(box.take()) == [("A", 2), ("B", 1)]
    box.push_back()
    box.put(pending("A", 3), durable=False)
    box.put(pending("A", 4), durable=True)
    assert times(box.take()) == [("A", 4)]


@given(st.lists(st.tuples(st.sampled_from("ABC"), st.booleans(), st.booleans()), max_size=60))
def test_every_uid_s_versions_arrive_oldest_first(ops: list[tuple[str, bool, bool]]) -> None:
    """Live and durable versions of the same uids, any pushback pattern, taken now and
    then: each uid's versions are delivered oldest first, its newest always, and every
    durable version always (durable items are never dropped)."""
    box = Outbox(limit_live=10, limit_durable=100)
    delivered: list[tuple[str, float]] = []
    for n, (uid, pushed, durable) in enumerate(ops):
        if pushed:
            box.push_back()
        else:
            box.resume()
        box.put(pending(uid, n), durable=durable)
        if n % 5 == 4:
            delivered += times(box.take())
    delivered += times(box.take())
    for uid in {uid for uid, _, _ in ops}:
        mine = [t for u, t in delivered if u == uid]
        assert mine == sorted(mine)
        assert mine[-1] == max(n for n, op in enumerate(ops) if op[0] == uid)
    assert {n for n, op in enumerate(ops) if op[2]} <= {t for _, t in delivered}
