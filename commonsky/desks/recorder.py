"""The signed record: every accepted durable item goes into the Merkle ledger.

Rule: an item is appended (with its audience: the originator plus every party it is
routed to) before any recipient gets it, in the same turn of the event loop as its store
write. In one process the store and the ledger are two commits (the ledger is a file of its
own, and the store may be PostgreSQL): the store commits first, carrying in its journal the
entries the ledger commits next, so a crash between the two loses no entry — `recover`
appends them at the next start, byte for byte. A cluster's ledger is in the store's
PostgreSQL database, on its connection (ledger/pgdb.py): one commit, no journal needed.
Entries use integers only (microseconds, 1e-7 degrees, millimetres), as the ledger's
canonical JSON demands.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from commonsky.ledger.entry import EntryFields, Signature
from commonsky.ledger.log import Ledger
from commonsky.model import HUB, Disclosure, Item
from commonsky.store.base import Store

log = logging.getLogger("commonsky.ledger")

_SEQ_OF_KEPT = 4096


def item_payload(item: Item) -> dict[str, Any]:
    e = item.event
    p = e.point
    payload: dict[str, Any] = {
        "uid": e.uid,
        "type": e.type,
        "category": item.category.value,
        "user": item.user,
        "store_seq": item.seq,
        "time_us": round(e.time * 1e6),
        "stale_us": round(e.stale * 1e6),
        "detail": e.detail,
    }
    # What is unknown (CoT's 9999999, or NaN as ATAK writes it) is left out, never recorded
    # as a number.
    if p.position_known:
        payload["lat_e7"] = round(p.lat * 1e7)
        payload["lon_e7"] = round(p.lon * 1e7)
    if p.hae_known:
        payload["hae_mm"] = round(p.hae * 1000)
    return payload


@dataclass(frozen=True)
class Statement:
    """What a party signed through the API — the canonical JSON of `payload` (for a hotline
    message `{"to","text","uid"}`, for an acknowledgement `{"ack": id}`) — and the signature.
    It is recorded as its own `statement` entry, right after the entry of the item or fact it
    backs, so the signature verifies over exactly the bytes the party signed."""

    payload: dict[str, Any]
    signature: Signature


class LedgerRecorder:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        # Statements signed for items submitted through the API, keyed by (party, uid),
        # recorded beside their item's entry.
        self.statements: dict[tuple[str, str], Statement] = {}
        self.seq_of: dict[tuple[str, str, int], int] = {}
        self.by_store_seq: dict[int, int] = {}  # the same, by the item's store sequence

    @classmethod
    def open(cls, data_dir: Path) -> LedgerRecorder:
        return cls(Ledger.open(data_dir))

    def audience(self, item: Item, routes: dict[str, Disclosure]) -> list[str]:
        parties = set(item.audience) if item.audience else {item.party} | set(routes)
        parties.discard(HUB)
        return sorted(parties)

    def last_store_seq(self, scan: int = 10_000) -> int:
        """The store sequence of the newest item the ledger records (0 when none of its last
        `scan` entries records one)."""
        size = self.ledger.size
        for seq in range(size - 1, max(-1, size - 1 - scan), -1):
            entry = self.ledger.entry(seq)
            store_seq = entry.payload.get("store_seq")
            if entry.kind in ("item", "notice") and isinstance(store_seq, int):
                return store_seq
        return 0

    def record(self, batch: list[tuple[Item, dict[str, Disclosure]]]) -> None:
        """Append an entry for each (item, routes), in order, as one ledger batch (each
        followed by the statement its sender signed, if any)."""
        entries: list[EntryFields] = []
        at: list[int] = []  # index of each item's own entry
        for item, routes in batch:
            fields = EntryFields(
                kind="item" if item.party != HUB else "notice",
                time_us=round(item.received * 1e6),
                originator=item.party,
                audience=self.audience(item, routes),
                payload=item_payload(item),
            )
            at.append(len(entries))
            entries.append(fields)
            statement = self.statements.pop(item.key, None)
            if statement is not None:
                entries.append(_statement_fields(fields, statement))
        appended = self.ledger.append_many(entries)
        seq_of = self.seq_of
        by_store_seq = self.by_store_seq
        for (item, _routes), index in zip(batch, at, strict=True):
            seq_of[(item.party, item.uid, item.seq)] = by_store_seq[item.seq] = appended[index][0]
        # Desks read an item's entry while it is being published (the same turn); older
        # ones are kept where they matter (the hotline's rows), so this stays bounded.
        while len(seq_of) > _SEQ_OF_KEPT:
            del seq_of[next(iter(seq_of))]
        while len(by_store_seq) > _SEQ_OF_KEPT:
            del by_store_seq[next(iter(by_store_seq))]

    def entry_of(self, item: Item) -> int | None:
        """The ledger sequence of the entry of `item` (this very version); None when the
        ledger holds none."""
        known = self.seq_of.get((item.party, item.uid, item.seq))
        if known is not None:
            return known
        seq = self.seq_at(item.seq)
        if seq is None:
            return None
        entry = self.ledger.entry(seq)
        mine = entry.originator == item.party and entry.payload.get("uid") == item.uid
        return seq if mine else None

    def seq_at(self, store_seq: int) -> int | None:
        """The ledger sequence of the entry recording the stored item `store_seq`: from
        memory when it was recorded lately, else searched (the entries of items are
        appended in store order, `last_store_seq`); None when the ledger holds none."""
        known = self.by_store_seq.get(store_seq)
        if known is not None:
            return known
        lo, hi = 0, self.ledger.size
        while lo < hi:
            mid = (lo + hi) // 2
            probe, found = self._next_store_seq(mid, hi)
            if found is None or found > store_seq:
                hi = mid
            elif found < store_seq:
                lo = probe + 1
            else:
                return probe
        return None

    def _next_store_seq(self, seq: int, stop: int) -> tuple[int, int | None]:
        """The first entry from `seq` (before `stop`) recording a store item, and its store
        sequence."""
        for probe in range(seq, stop):
            entry = self.ledger.entry(probe)
            store_seq = entry.payload.get("store_seq")
            if entry.kind in ("item", "notice") and isinstance(store_seq, int):
                return probe, store_seq
        return stop, None

    def record_fact(
        self,
        kind: str,
        originator: str,
        audience: list[str],
        payload: dict[str, Any],
        time_s: float,
        statement: Statement | None = None,
    ) -> int:
        """Receipts, acknowledgements and escalations: facts about items, not items (with the
        statement the originator signed for it, if any, in the same batch)."""
        fields = EntryFields(
            kind=kind,
            time_us=round(time_s * 1e6),
            originator=originator,
            audience=sorted(set(audience) - {HUB}) or [originator],
            payload=payload,
        )
        batch = [fields] if statement is None else [fields, _statement_fields(fields, statement)]
        return self.ledger.append_many(batch)[0][0]

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """The ledger's commit (the hub enters it before the store's, `Hub.transaction`)."""
        return self.ledger.transaction()

    def journal(self, store: Store) -> None:
        """Copy the entries the ledger is about to commit into the store's commit (called
        inside the hub's transaction, just before the store commits)."""
        leaves = self.ledger.uncommitted()
        if leaves:
            store.put_journal(leaves)

    def recover(self, store: Store) -> int:
        """Append the store's journalled entries the ledger lacks (a crash fell between the
        two commits); how many were appended."""
        journal = store.journal()
        appended = self.ledger.recover(journal)
        if appended is None:
            log.warning(
                "ledger: the store's journal (entries %d to %d) does not continue this ledger "
                "(size %d); not applied",
                journal[0][0],
                journal[-1][0],
                self.ledger.size,
            )
            return 0
        if appended:
            log.warning(
                "ledger: %d entries committed with the store but not the ledger (the hub "
                "stopped between the two) appended from the store's journal",
                appended,
            )
        return appended

    def close(self) -> None:
        self.ledger.close()


def _statement_fields(backed: EntryFields, statement: Statement) -> EntryFields:
    return EntryFields(
        kind="statement",
        time_us=backed.time_us,
        originator=statement.signature.party,
        audience=backed.audience,
        payload=statement.payload,
        signature=statement.signature,
    )
