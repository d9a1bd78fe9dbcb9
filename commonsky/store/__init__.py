"""Persistence behind one small protocol: SQLite by default, PostgreSQL for scale-out."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

import msgspec

from commonsky.model import Item


class Store(Protocol):
    """Durable items, in acceptance order. One writer; `append` returns once it is stored.

    A stored row that no longer decodes as an item is skipped by `active` and `since` and
    noted in `unreadable` (sequence -> why), for the hub to quarantine and report."""

    unreadable: dict[int, str]

    def append(self, item: Item) -> int:
        """Store a durable item and return its sequence number (1, 2, …)."""
        ...

    def append_many(self, items: Sequence[Item]) -> list[int]:
        """`append` for several items, in order; their sequence numbers."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """Group the appends made inside into one commit, taken before the block is left
        (also when it is left by an exception: what was appended was already relayed).
        Blocks nest; an inner block joins the outer one."""
        ...

    def active(self, now: float) -> list[Item]:
        """The latest durable item per (party, uid) that is not stale at `now`."""
        ...

    def since(self, seq: int) -> Iterator[Item]:
        """Every durable item with a sequence number above `seq`, in order."""
        ...

    def set_cursor(self, party: str, client: str, seq: int) -> None:
        """Remember the last sequence delivered to one client of a party."""
        ...

    def cursor(self, party: str, client: str) -> int: ...

    def close(self) -> None: ...


class NestedBlocks:
    """`Store.transaction` for a store on one connection: blocks nest (`_depth`), and leaving
    the outermost commits whatever its writes opened — also when it is left by an exception,
    since what was appended was already relayed."""

    _depth = 0

    def _in_transaction(self) -> bool:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _block_ended(self) -> None:
        """Called when the outermost block is left, committed or not."""

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                try:
                    if self._in_transaction():
                        self._commit()
                finally:
                    self._block_ended()


_decoder = msgspec.msgpack.Decoder(Item)


def load_rows(rows: Iterable[tuple[int, bytes]], unreadable: dict[int, str]) -> Iterator[Item]:
    """Stored rows (sequence, body) as items. The body is stored as accepted (seq 0); the
    row's key is the sequence number. A body that does not decode is noted in `unreadable`
    and skipped: one bad row must not stop a replay, or the hub's start."""
    for seq, body in rows:
        try:
            item = _decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            unreadable[seq] = f"row does not decode as an item: {exc}"
            continue
        yield msgspec.structs.replace(item, seq=seq)


def open_store(url: str, data_dir: Path) -> Store:
    """The store `store_url` names: empty for SQLite in `data_dir`, else PostgreSQL."""
    if url:
        from commonsky.store.postgres import PostgresStore  # psycopg only when asked for

        return PostgresStore(url)
    from commonsky.store.sqlite import SQLiteStore

    return SQLiteStore(data_dir)
