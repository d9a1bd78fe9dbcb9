"""Store and ledger agree: every stored durable item has exactly one ledger entry, and every
ledger entry for an item names a stored one.

The hub stores a durable item and records it (`desks/recorder.py`: an `item` entry, or a
`notice` for what the hub makes itself, whose payload names the item's `store_seq` and `uid`)
in one turn of the event loop. A stored item the ledger lacks would be replayed after a
restart as if it had been recorded; an entry naming no stored item is a record of nothing.
This module finds either, for tests, the fuzz harness and operators.
"""

from __future__ import annotations

from collections.abc import Iterable

from commonsky.ledger.entry import Entry
from commonsky.model import Item

ITEM_KINDS = frozenset({"item", "notice"})


def disagreements(items: Iterable[Item], entries: Iterable[Entry], limit: int = 100) -> list[str]:
    """Where the store (`items`, as `Store.since(0)` gives them) and the ledger (`entries`)
    disagree, one line each, at most `limit` lines (the count is in the last one when more)."""
    stored: dict[int, tuple[str, str]] = {item.seq: (item.party, item.uid) for item in items}
    recorded: set[int] = set()
    out: list[str] = []
    found = 0

    def note(line: str) -> None:
        nonlocal found
        found += 1
        if len(out) < limit:
            out.append(line)

    for entry in entries:
        if entry.kind not in ITEM_KINDS:
            continue
        seq = entry.payload.get("store_seq")
        if not isinstance(seq, int) or seq not in stored:
            note(f"ledger #{entry.seq} records store item {seq!r}, which is not stored")
            continue
        if seq in recorded:
            note(f"ledger #{entry.seq} records store item {seq} a second time")
            continue
        recorded.add(seq)
        party, uid = stored[seq]
        if (entry.originator, entry.payload.get("uid")) != (party, uid):
            note(
                f"ledger #{entry.seq} records store item {seq} as "
                f"{entry.originator}/{entry.payload.get('uid')!r}, stored as {party}/{uid!r}"
            )
    for seq in sorted(stored.keys() - recorded):
        party, uid = stored[seq]
        note(f"store item {seq} ({party}/{uid[:80]!r}) has no ledger entry")
    if found > len(out):
        out.append(f"... {found} disagreements in all")
    return out
