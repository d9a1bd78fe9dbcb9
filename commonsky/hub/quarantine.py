"""Stored items the hub cannot rebuild: kept aside and reported, never a reason not to start.

Rule: whatever is in the store, the hub starts. A stored item that cannot be read, rendered
or replayed into a desk (a row written before a validation existed, a disk error, a hand-made
row) is quarantined where it is found — the hub's picture load or a desk's rebuild — and from
then on left out of the picture, of every desk and of every replay. It is reported three ways:

- an ERROR log line naming the store sequence, its party and uid, where it was found and why;
- the `commonsky_quarantined_items_total{where}` counter;
- a JSON line in `DATA_DIR/quarantine.jsonl` (seq, party, uid, category, where, reason,
  found_at; for a desk's own row, its digest), once per stored item (the file is 0600, like
  the rest of the data folder). The row itself stays in the store, untouched: the record
  is evidence, and the ledger entry that backs it names its sequence.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter

from commonsky.model import Item

log = logging.getLogger("commonsky.quarantine")
FILE_NAME = "quarantine.jsonl"


@dataclass(frozen=True, slots=True)
class Quarantined:
    seq: int
    where: str
    reason: str
    party: str = ""
    uid: str = ""
    category: str = ""


class Quarantine:
    """The set of quarantined store sequences, and the one place that reports them."""

    def __init__(self, path: Path | None, counter: Counter | None = None) -> None:
        self.path = path
        self.counter = counter
        self.items: dict[int, Quarantined] = {}
        self.rows: set[str] = set()  # digests of desks' own rows set aside
        self._written: set[object] = set()
        if path is not None and path.exists():
            # Already reported on an earlier start: logged again, not written twice.
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    record = json.loads(line)
                    self._written.add(int(record["seq"]) if "seq" in record else record["row"])
                except (ValueError, KeyError, TypeError):
                    continue

    def __contains__(self, seq: int) -> bool:
        return seq in self.items

    def __len__(self) -> int:
        return len(self.items) + len(self.rows)

    def add(self, seq: int, where: str, reason: str, item: Item | None = None) -> None:
        """Set stored item `seq` aside (once; later calls for it are ignored)."""
        if seq in self.items:
            return
        entry = Quarantined(
            seq,
            where,
            reason[:500],
            item.party if item is not None else "",
            item.uid if item is not None else "",
            item.category.value if item is not None else "",
        )
        self.items[seq] = entry
        log.error(
            "quarantined stored item #%d (%s/%r, %s) found in %s: %s; left out of the picture "
            "and replays, kept in the store%s",
            seq,
            entry.party or "?",
            entry.uid[:200],
            entry.category or "?",
            where,
            entry.reason,
            f" and listed in {self.path}" if self.path is not None else "",
        )
        if self.counter is not None:
            self.counter.labels(where).inc()
        record: dict[str, object] = {
            "seq": seq,
            "party": entry.party,
            "uid": entry.uid[:200],
            "category": entry.category,
            "where": where,
            "reason": entry.reason,
        }
        self._write(record, seq)

    def add_row(self, where: str, body: bytes, reason: str) -> None:
        """Set aside a desk's own stored row (not an item: a hotline message's state, say)
        that cannot be read: logged, counted and listed like an item, under its digest."""
        digest = hashlib.sha256(body).hexdigest()[:16]
        if digest in self.rows:
            return
        self.rows.add(digest)
        log.error(
            "quarantined a stored %s row (sha256 %s…, %d bytes): %s; left out, kept in the store",
            where,
            digest,
            len(body),
            reason[:500],
        )
        if self.counter is not None:
            self.counter.labels(where).inc()
        self._write({"row": digest, "where": where, "reason": reason[:500]}, digest)

    def _write(self, record: dict[str, object], key: object) -> None:
        if self.path is None or key in self._written:
            return
        self._written.add(key)
        record["found_at"] = time.time()
        try:
            # Private like everything in the data folder: it names parties' uids.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as out:
                out.write(json.dumps(record, ensure_ascii=True) + "\n")
        except OSError as exc:  # reported by the log line and the counter all the same
            log.error("cannot write %s: %s", self.path, exc)

    def rebuild(self, where: str, items: Iterable[Item], rebuild: Callable[[Item], None]) -> int:
        """Run `rebuild` on each stored item not already set aside, quarantining any item it
        fails on (whatever the exception: that item is set aside, the start goes on).
        Returns how many were rebuilt."""
        done = 0
        for item in items:
            if item.seq in self.items:
                continue
            try:
                rebuild(item)
            except Exception as exc:
                self.add(item.seq, where, f"{type(exc).__name__}: {exc}", item)
                continue
            done += 1
        return done
