"""The store protocol and what its backends share (rows, nested transaction blocks).

Backends import this module, never the package (whose `open_store` imports them)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import msgspec

from commonsky.model import Item, is_deleted


@dataclass(frozen=True, slots=True)
class HotlineRow:
    """One hotline message's state as the store keeps it: `seq` is the message item's own
    store sequence number; `parties` (sender and recipients) index it for history pages;
    `open` is true while a recipient has not acknowledged it; `body` is opaque to the store
    (the hotline desk encodes it)."""

    seq: int
    sender: str
    uid: str
    parties: tuple[str, ...]
    open: bool
    stale: float
    body: bytes


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

    def reserve(self, seq: int) -> None:
        """Never hand out a sequence number at or below `seq` again: the ledger has
        recorded it (a crash between the ledger's commit and the store's must not give a
        recorded number to another item)."""
        ...

    def active(self, now: float) -> list[Item]:
        """The latest durable item per (party, uid) that is not stale at `now`."""
        ...

    def since(self, seq: int) -> Iterator[Item]:
        """Every durable item with a sequence number above `seq`, in order."""
        ...

    def deleted(self, now: float, limit: int) -> list[tuple[Item, Item]]:
        """The items their owners deleted whose deleted version is not stale at `now`, the
        newest `limit` of them, oldest first: (the tombstone, latest row of its key, see
        `hub/deletes.tombstone`; the version it deleted, the row before it)."""
        ...

    def set_cursor(self, party: str, client: str, seq: int) -> None:
        """Remember the last sequence delivered to one client of a party."""
        ...

    def cursor(self, party: str, client: str) -> int: ...

    # Hotline state (acknowledgements, escalations, ledger links), one row per message,
    # written in the same commit as the items that change it: a restart reads the open
    # messages back instead of replaying the whole store, and history is paged from here.

    def put_hotline(self, row: HotlineRow) -> None:
        """Insert or replace the row of message `row.seq`."""
        ...

    def hotline(self, sender: str, uid: str) -> bytes | None:
        """The body of the message (sender, uid), or None."""
        ...

    def hotline_open(self, now: float) -> list[bytes]:
        """Bodies of the open messages not stale at `now`, oldest first."""
        ...

    def hotline_page(
        self, party: str, other: str | None, before: int | None, limit: int
    ) -> list[tuple[int, bytes]]:
        """Up to `limit` messages involving `party` (and `other`, if given) with a sequence
        number below `before` (None: the newest), newest first, as (seq, body)."""
        ...

    def meta(self, key: str) -> str | None:
        """A small value the hub keeps beside its items (`hub_id`, see `hub/datadir.py`;
        format markers)."""
        ...

    def set_meta(self, key: str, value: str) -> None:
        """Keep `value` under `key`, committed before it returns (or with the enclosing
        `transaction()` block)."""
        ...

    def count(self) -> int:
        """How many durable items are stored."""
        ...

    # The ledger's journal: the hub commits its store first and its ledger (a file of its
    # own) second; the entries the ledger is about to commit are written here in the store's
    # commit, so a crash between the two loses none (`LedgerRecorder.recover` appends them).

    def put_journal(self, leaves: Sequence[tuple[int, bytes]]) -> None:
        """Keep (seq, leaf) entries, in order, with the enclosing `transaction()` block, in
        place of those kept before (the ledger committed those: it commits after us)."""
        ...

    def journal(self) -> list[tuple[int, bytes]]:
        """The kept (seq, leaf) entries, in order."""
        ...

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


def load_deleted(
    rows: Iterable[tuple[int, bytes, int, bytes]], unreadable: dict[int, str]
) -> list[tuple[Item, Item]]:
    """`Store.deleted`'s candidate rows (the latest of a key and the one before it, newest
    first) as (tombstone, deleted version), oldest first: those whose latest is a tombstone
    (a stale version with the deleted detail), both rows decoding (`load_rows`)."""
    out = []
    for gone_seq, gone_body, last_seq, last_body in rows:
        pair = list(load_rows(((gone_seq, gone_body), (last_seq, last_body)), unreadable))
        if len(pair) == 2 and is_deleted(pair[0].event):
            out.append((pair[0], pair[1]))
    out.reverse()
    return out


def redacted(url: str) -> str:
    """A store URL without its passwords, for messages, logs and hub.json: the one in its
    user information (`USER:***@`) and those libpq takes as query parameters (`password=`,
    `sslpassword=`, as `password=***`)."""
    url = re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)
    return re.sub(r"([?&](?:ssl)?password=)[^&#]*", r"\1***", url, flags=re.IGNORECASE)
