# Ledger and store transactions: many appends, one commit; a refused append inside a block
# takes nothing else with it; nothing is lost when the block ends in an error.
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from commonsky.ledger import merkle
from commonsky.ledger.entry import EntryError, EntryFields
from commonsky.ledger.log import Ledger
from commonsky.model import Category, CotEvent, Item, Point
from commonsky.store.sqlite import SQLiteStore

from ._helpers import fields


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as other:  # another connection sees only what was committed
        return int(other.execute("SELECT COUNT(*) FROM ledger_entry").fetchone()[0])


def test_appends_in_a_block_commit_once_at_its_end(tmp_path: Path) -> None:
    with Ledger.open(tmp_path) as led:
        with led.transaction():
            with led.transaction():  # nested blocks join the outer one
                led.append(fields(0))
            led.append_many([fields(1), fields(2)])
            assert led.size == 3 and _rows(led.path) == 0
        assert _rows(led.path) == 3
        assert merkle.root(led._nodes, 3) == led.root(3)


def test_a_refused_append_in_a_block_takes_nothing_else_with_it(tmp_path: Path) -> None:
    bad = EntryFields(kind="Not A Word", time_us=1, originator="USA", audience=["JPN"], payload={})
    with Ledger.open(tmp_path) as led:
        with led.transaction():
            led.append(fields(0))
            with pytest.raises(EntryError):
                led.append_many([fields(1), bad])  # all or nothing: fields(1) is not kept
            led.append(fields(2))
        assert led.size == 2
        assert [e.payload["uid"] for e in led.entries(0, 2)] == ["u-0", "u-2"]
    with Ledger.open(tmp_path) as again:  # and the file agrees after a restart
        assert again.size == 2
        assert again.root(2) == merkle.root(again._nodes, 2)


def test_a_block_left_by_an_error_still_commits_what_was_appended(tmp_path: Path) -> None:
    with Ledger.open(tmp_path) as led:
        with pytest.raises(RuntimeError), led.transaction():
            led.append(fields(0))
            raise RuntimeError("the caller failed after appending")
        assert _rows(led.path) == 1


def _item(i: int) -> Item:
    event = CotEvent(f"u{i}", "b-l-r", 0.0, 0.0, 9e9, "m-g", Point(1.0, 2.0), "x" * 2000)
    return Item(party="USA", user="u", category=Category.LAUNCH, event=event, received=0.0)


def test_store_transaction_nests_and_commits_on_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    try:
        with pytest.raises(RuntimeError), store.transaction():
            with store.transaction():
                assert store.append(_item(1)) == 1
            assert store.append(_item(2)) == 2
            raise RuntimeError("boom")
        with sqlite3.connect(store.path) as other:
            assert other.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 2
    finally:
        store.close()


def test_the_wal_is_checkpointed_off_the_writer(tmp_path: Path) -> None:
    # Writers never checkpoint (autocheckpoint is off); the background thread must, or the
    # database file would stay empty while the log grows without bound.
    store = SQLiteStore(tmp_path)
    try:
        main = store.path
        before = main.stat().st_size
        with store.transaction():
            for i in range(500):  # ~1 MB
                store.append(_item(i))
        deadline = time.monotonic() + 10
        while main.stat().st_size < before + 500_000 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert main.stat().st_size >= before + 500_000
        (autocheckpoint,) = store._db.execute("PRAGMA wal_autocheckpoint").fetchone()
        assert autocheckpoint == 0
    finally:
        store.close()


def test_store_batches_number_on_from_single_appends_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path)
    try:
        assert store.append(_item(1)) == 1
        with store.transaction():
            assert store.append_many([_item(2), _item(3), _item(4)]) == [2, 3, 4]
        assert store.append(_item(5)) == 5
    finally:
        store.close()
    again = SQLiteStore(tmp_path)
    try:
        assert [i.seq for i in again.since(0)] == [1, 2, 3, 4, 5]
        assert [i.uid for i in again.since(1)] == ["u2", "u3", "u4", "u5"]
        assert again.append_many([_item(6), _item(7)]) == [6, 7]  # outside a block too
    finally:
        again.close()


def test_recover_appends_exactly_the_journalled_entries_it_lacks(tmp_path: Path) -> None:
    def entry(n: int) -> EntryFields:
        return EntryFields("fact", n, "USA", ["USA"], {"n": n})

    source = Ledger(tmp_path / "a.sqlite3")
    with source.transaction():
        source.append_many([entry(0), entry(1)])
        journal = source.uncommitted()
    assert [seq for seq, _ in journal] == [0, 1] and source.uncommitted() == []
    with source.transaction():
        source.append(entry(2))
        journal += source.uncommitted()
    behind = Ledger(tmp_path / "b.sqlite3")
    assert behind.recover(journal[:1]) == 1  # (an entry's bytes carry when it was appended)
    assert behind.recover(journal) == 2
    assert behind.root() == source.root() and behind.recover(journal) == 0
    # A journal that does not continue the log is not applied (another hub's ledger, or one
    # made afresh with --init: the data folder's binding judges those).
    other = Ledger(tmp_path / "c.sqlite3")
    other.append(entry(9))
    assert other.recover(journal) is None  # entry 0 holds other bytes
    assert other.recover(journal[2:]) is None  # starts past its end
    assert other.size == 1
