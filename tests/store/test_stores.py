"""The Store contract, held by SQLite and PostgreSQL alike: numbering, replay, the current
picture, cursors, blocks that commit once (also when left by an error), hostile keys."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commonsky.model import DELETED, Category, CotEvent, Item, Point
from commonsky.store import Store


def item(uid: str, stale: float = 9e9, party: str = "USA", detail: str = "x" * 200) -> Item:
    event = CotEvent(uid, "b-l-r", 0.0, 0.0, stale, "m-g", Point(1.0, 2.0), detail)
    return Item(party=party, user="u", category=Category.LAUNCH, event=event, received=0.0)


def test_items_are_numbered_in_order_and_survive_a_restart(
    open_store: Callable[[], Store],
) -> None:
    store = open_store()
    assert store.append(item("u1")) == 1
    with store.transaction():
        assert store.append_many([item("u2"), item("u3"), item("u4")]) == [2, 3, 4]
    assert store.append(item("u5")) == 5
    store.close()
    again = open_store()
    assert [i.seq for i in again.since(0)] == [1, 2, 3, 4, 5]
    assert [i.uid for i in again.since(1)] == ["u2", "u3", "u4", "u5"]
    assert again.append_many([item("u6"), item("u7")]) == [6, 7]  # outside a block too
    assert list(again.since(7)) == []


def test_the_picture_is_the_newest_version_of_each_key_if_it_is_not_stale(
    open_store: Callable[[], Store],
) -> None:
    store = open_store()
    store.append(item("a", stale=100.0))
    store.append(item("b", stale=500.0))
    store.append(item("a", stale=300.0))  # supersedes the first "a"
    store.append(item("a", stale=500.0, party="RUS"))  # another party's "a": its own key
    store.append(item("c", stale=500.0))
    store.append(item("c", stale=50.0))  # the newest "c" is stale: no "c" at all
    active = store.active(200.0)
    assert [(i.party, i.uid, i.seq) for i in active] == [
        ("USA", "b", 2),
        ("USA", "a", 3),
        ("RUS", "a", 4),
    ]
    assert [i.uid for i in store.active(400.0)] == ["b", "a"]


def test_a_block_commits_once_also_when_left_by_an_error(
    open_store: Callable[[], Store],
) -> None:
    store = open_store()
    with pytest.raises(RuntimeError), store.transaction():
        with store.transaction():
            assert store.append(item("u1")) == 1
        assert store.append(item("u2")) == 2
        raise RuntimeError("boom")
    store.close()
    assert [i.uid for i in open_store().since(0)] == ["u1", "u2"]


def test_cursors_only_move_forward(open_store: Callable[[], Store]) -> None:
    store = open_store()
    assert store.cursor("USA", "c1") == 0
    store.set_cursor("USA", "c1", 5)
    store.set_cursor("USA", "c1", 3)
    with store.transaction():
        store.set_cursor("USA", "c2", 7)
    store.close()
    again = open_store()
    assert (again.cursor("USA", "c1"), again.cursor("USA", "c2"), again.cursor("RUS", "c1")) == (
        5,
        7,
        0,
    )


HOSTILE = [
    "a\x00b",  # NUL: a TAK protobuf uid may carry one; PostgreSQL text may not
    "ab",  # ... and it is not this uid
    "a",
    "'); DROP TABLE commonsky_items; --",
    "ünïcødé-🚀",
    "x" * 5000,
    "",
]


def test_hostile_uids_and_details_are_kept_exactly(open_store: Callable[[], Store]) -> None:
    store = open_store()
    for uid in HOSTILE:
        store.append(item(uid, detail=f"<remarks>{uid[:50]}</remarks>\x00\u2028"))
    store.close()
    again = open_store()
    assert [i.uid for i in again.since(0)] == HOSTILE
    assert sorted(i.uid for i in again.active(0.0)) == sorted(HOSTILE)  # each its own key
    assert again.append(item("after")) == len(HOSTILE) + 1


def _plant_row(store: Store, body: bytes, stale: float = 9e9) -> None:
    """A row written behind the store's back (a disk error, a hand-made row)."""
    from commonsky.store.postgres import PostgresStore
    from commonsky.store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        store._db.execute(
            "INSERT INTO items (party, uid, category, stale, body) VALUES (?,?,?,?,?)",
            ("USA", "planted", "launch", stale, body),
        )
    else:
        assert isinstance(store, PostgresStore)
        store._conn.execute(
            "INSERT INTO commonsky_items (party, uid, category, stale, body) "
            "VALUES (%s, %s, %s, %s, %s)",
            ("USA", b"planted", "launch", stale, body),
        )


def test_a_row_that_does_not_decode_is_skipped_and_noted(
    open_store: Callable[[], Store],
) -> None:
    store = open_store()
    store.append(item("before"))
    _plant_row(store, b"\xc1 not msgpack")
    _plant_row(store, b"\x93\x01\x02\x03")  # msgpack, but not an item
    store.append(item("after"))
    store.close()
    again = open_store()
    assert [i.uid for i in again.since(0)] == ["before", "after"]
    assert sorted(i.uid for i in again.active(0.0)) == ["after", "before"]
    assert sorted(again.unreadable) == [2, 3]
    assert all("does not decode" in why for why in again.unreadable.values())


def test_hotline_rows_are_kept_paged_and_found_by_key(open_store: Callable[[], Store]) -> None:
    from commonsky.store import HotlineRow

    store = open_store()
    with store.transaction():
        for seq in range(1, 8):
            to = "RUS" if seq % 2 else "JPN"
            store.put_hotline(
                HotlineRow(seq, "USA", f"m{seq}\x00", ("USA", to), seq < 5, 100.0, b"v%d" % seq)
            )
        store.put_hotline(HotlineRow(3, "USA", "m3\x00", ("USA", "RUS"), False, 100.0, b"new"))
        store.set_meta("k", "1")
    store.close()
    again = open_store()
    assert again.hotline("USA", "m3\x00") == b"new" and again.hotline("USA", "m3") is None
    assert again.hotline_open(50.0) == [b"v1", b"v2", b"v4"]
    assert again.hotline_open(100.0) == []  # stale ones are not open
    assert [s for s, _ in again.hotline_page("USA", None, None, 3)] == [7, 6, 5]
    assert [s for s, _ in again.hotline_page("USA", None, 5, 3)] == [4, 3, 2]
    assert [s for s, _ in again.hotline_page("USA", "RUS", None, 10)] == [7, 5, 3, 1]
    assert [s for s, _ in again.hotline_page("RUS", "JPN", None, 10)] == []
    assert again.meta("k") == "1" and again.meta("other") is None


def test_meta_values_and_the_item_count_survive_a_restart(
    open_store: Callable[[], Store],
) -> None:
    store = open_store()
    assert store.meta("hub_id") is None and store.count() == 0
    store.set_meta("hub_id", "abc")
    store.set_meta("hub_id", "def")  # replaced, not added
    store.append(item("u1"))
    store.close()
    again = open_store()
    assert again.meta("hub_id") == "def" and again.count() == 1


def test_reserved_numbers_are_never_handed_out(open_store: Callable[[], Store]) -> None:
    store = open_store()
    assert store.append(item("a")) == 1
    store.reserve(5)
    store.reserve(3)  # never backwards (a number may be skipped: gaps are allowed)
    b = store.append(item("b"))
    c, d = store.append_many([item("c"), item("d")])
    assert 5 < b < c < d
    store.close()
    again = open_store()
    again.reserve(2)
    assert again.append(item("e")) > d


def test_the_ledger_journal_keeps_the_last_batch_with_the_block(
    open_store: Callable[[], Store],
) -> None:
    store = open_store()
    assert store.journal() == []
    with store.transaction():
        store.append(item("a"))
        store.put_journal([(0, b"zero"), (1, b"one")])
    with store.transaction():
        store.append(item("b"))
        store.put_journal([(2, b"two\x00"), (3, b"three")])  # the ledger holds 0 and 1 now
    store.put_journal([])  # nothing to keep: nothing changes
    store.close()
    again = open_store()
    assert again.journal() == [(2, b"two\x00"), (3, b"three")]
    assert [i.uid for i in again.since(0)] == ["a", "b"]


def test_the_deleted_items_are_the_tombstones_whose_deleted_version_is_not_stale(
    open_store: Callable[[], Store],
) -> None:
    store = open_store()
    store.append(item("a", stale=500.0))
    store.append(item("b", stale=500.0))
    store.append(item("b", stale=100.0))  # a newer version, stale sooner: not a delete
    store.append(item("c", stale=500.0))
    store.append(item("c", stale=100.0, detail=DELETED))  # deleted, then made again
    store.append(item("c", stale=500.0))
    store.append(item("d", stale=100.0, detail=DELETED))  # (nothing before it)
    store.append(item("a", stale=100.0, detail=DELETED))  # seq 8: a's tombstone
    store.append(item("e", stale=300.0))
    store.append(item("e", stale=100.0, detail=DELETED))  # seq 10
    store.append(item("a", stale=400.0, party="RUS"))
    store.append(item("a", stale=100.0, detail=DELETED, party="RUS"))  # seq 12
    pairs = [
        (gone.seq, gone.key, last.seq, last.event.stale) for gone, last in store.deleted(200.0, 9)
    ]
    assert pairs == [
        (8, ("USA", "a"), 1, 500.0),
        (10, ("USA", "e"), 9, 300.0),
        (12, ("RUS", "a"), 11, 400.0),
    ]  # (oldest first)
    assert [gone.seq for gone, _ in store.deleted(350.0, 9)] == [8, 12]  # e's went stale
    assert [gone.seq for gone, _ in store.deleted(200.0, 2)] == [10, 12]  # the newest two
    assert store.deleted(600.0, 9) == []


_examples = itertools.count()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from([100.0, 200.0, 300.0]), st.booleans()),
        max_size=12,
    ),
    st.sampled_from([50.0, 150.0, 250.0, 350.0]),
)
def test_the_deleted_items_are_what_their_definition_says(
    open_store: Callable[[], Store], history: list[tuple[int, float, bool]], now: float
) -> None:
    """`deleted` against its definition, worked out here from each key's rows: the latest
    is a tombstone stale at `now`, staler sooner than the row before it, which is not."""
    opened = getattr(open_store, "opened", None) or [open_store()]
    open_store.opened = opened  # type: ignore[attr-defined]  # (one store for all examples)
    store = opened[0]
    prefix = f"x{next(_examples)}-"
    rows: dict[str, list[tuple[int, float, bool]]] = {}
    for key, stale, tombstone in history:
        uid = f"{prefix}{key}"
        seq = store.append(item(uid, stale=stale, detail=DELETED if tombstone else "x"))
        rows.setdefault(uid, []).append((seq, stale, tombstone))
    expected = []
    for versions in rows.values():
        if len(versions) >= 2:
            (p_seq, p_stale, _), (t_seq, t_stale, tombstone) = versions[-2:]
            if tombstone and t_stale <= now < p_stale:
                expected.append((t_seq, p_seq))
    found = [
        (g.seq, last.seq) for g, last in store.deleted(now, 10_000) if g.uid.startswith(prefix)
    ]
    assert found == sorted(expected)


def test_a_deleted_item_whose_rows_do_not_decode_is_skipped_and_noted(
    open_store: Callable[[], Store],
) -> None:
    store = open_store()
    store.append(item("planted", stale=500.0))
    _plant_row(store, b"\xc1 not msgpack", stale=100.0)  # (where its tombstone would be)
    store.append(item("x", stale=500.0))
    store.append(item("x", stale=100.0, detail=DELETED))
    store.close()
    again = open_store()
    assert [(gone.uid, last.uid) for gone, last in again.deleted(200.0, 9)] == [("x", "x")]
    assert list(again.unreadable) == [2]
