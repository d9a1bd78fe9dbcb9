"""Delete markers in the core's KV buckets, removed once old (issue 19: they grew forever).

Both buckets (picture_kv.py, live_kv.py) keep one message per key (history=1, no TTL), and
deleting a key leaves a delete marker — a stream message — in place of its value, for good.
Tracks come and go (new uids every raid), so markers grow without bound: on disk, and in
every read of the bucket (an edge's read of a late joiner's picture, a new core's `load` and
`restore` at takeover), which goes through them, key by key.

The rule: a marker older than MARKER_AGE_S is removed, by its own sequence number.

Why it is safe. With history=1 a marker is the only message of its key: the value it
deleted is gone already, so removing it leaves the key absent, never an older value back.
Every reader of these buckets reads a marker as an absence: an edge's read
(`read_picture`) leaves the key out of the replay, a new core's `load` leaves it out of
`found` (so `drop_strays` has nothing to delete) and `restore` restores nothing — and the
core keeps no state about a deleted key (`held`, `Kept`: gone with the delete), so
`covered` and `redelivered` never meet it. The late joiner's `R` (`Read.top`) is the
highest revision the edge read: a marker missing from the read can only lower it, and
`covered(…, R)` is then true for fewer items (every value with revision <= R was still in
the read) — the core sends a few more, never misses or doubles one. The removal is by
sequence (a stream purge of the key's subject below the marker's sequence + 1): a value
written to the key after the scan (a uid that came back) has a higher sequence and stays.
nats-py's `KeyValue.purge_deletes` purges the whole subject, and so could remove it.

Why an age at all: a marker protects a reader that has not reached it yet and follows the
bucket live (an ordered consumer past its initial read: it must see the delete, or it would
keep the value). No process of ours follows the buckets live today (reads stop at their
end), but a reader stalled behind its consumer, or an operator's `nats kv watch`, is — so
a marker is kept for MARKER_AGE_S, minutes beyond any read (5 s per message before it is
given up) and any acknowledgement wait (`picture_kv.ACK_WAIT_S`). Markers of the last
MARKER_AGE_S + SWEEP_EVERY_S are therefore all a bucket holds: bounded by the churn rate.

A read that runs during a sweep (measured on nats-server 2.9, docs/performance.md): the
server skips the removed markers; the read can end early (nats-py ends it when the server
says nothing is pending), with R the highest revision delivered — the core sends the
late joiner the rest (`covered`). If its end is never signalled the read times out (5 s)
and the core sends the whole picture (edge.py `_announce`): slower, never wrong.

Cost: the scan reads the bucket from its first message in stream order, headers only
(no values), and stops at the first message younger than the cutoff (messages are in
time order): the keys rewritten since — live items, within `LIVE_EVERY_S` — are not read.
Removals go WINDOW at a time, so the core's loop is never held for long (figures:
docs/performance.md, "Delete markers").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .nats_io import end_watch

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

log = logging.getLogger("commonsky.cluster")

MARKER_AGE_S = 15 * 60.0  # a marker younger than this stays (module header: why)
SWEEP_EVERY_S = 5 * 60.0  # a sweep of both buckets this often (`Sweeper.tick`)
RETRY_S = 60.0  # a sweep that failed (NATS away) is tried again this soon
WINDOW = 32  # removals in flight at once (each a JetStream API request)
ROUND_MAX = 200_000  # markers removed per sweep at most (the rest at the next one)
READ_TIMEOUT_S = 5.0  # the scan gives up when the server sends nothing for this long

_DELETES = ("DEL", "PURGE")  # (KV-Operation of a marker)


class Sweeper:
    """Removes old delete markers from KV buckets (module header: the rule).

    `buckets`: (bucket name, its KeyValue). `clock`: wall-clock seconds (the server stamps
    messages with its own; same host or NTP: minutes of margin). The core calls `tick`
    from its upkeep; the sweep runs as a task of its own, so the upkeep (flushes, the
    store's check) never waits for it."""

    def __init__(self, js: JetStreamContext, buckets: list[tuple[str, KeyValue]],
                 clock: Callable[[], float] = time.time, age: float = MARKER_AGE_S,
                 every: float = SWEEP_EVERY_S) -> None:  # fmt: skip
        self.js = js
        self.buckets = buckets
        self.clock = clock
        self.age = age
        self.every = every
        self.next_at = time.monotonic() + every  # (a new core read the buckets just now)
        self.task: asyncio.Task[None] | None = None
        self.removed = 0  # markers removed since the core started

    def tick(self, now: float | None = None) -> None:
        """Start a sweep if one is due (`now`: monotonic seconds) and none is running."""
        now = time.monotonic() if now is None else now
        if now < self.next_at or (self.task is not None and not self.task.done()):
            return
        self.next_at = now + self.every
        self.task = asyncio.create_task(self._round())

    async def _round(self) -> None:
        """One sweep; a failure is one line in the log, and tried again in RETRY_S."""
        try:
            removed = await self.sweep()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # (NATS away or refusing: the core goes on)
            self.next_at = time.monotonic() + min(RETRY_S, self.every)
            log.warning("core: delete markers not removed (%s: %s); tried again in %.0f s",
                        type(exc).__name__, str(exc)[:200], min(RETRY_S, self.every))  # fmt: skip
            return
        if removed:
            log.info("core: %d delete markers older than %.0f s removed", removed, self.age)

    async def sweep(self) -> int:
        """Remove every marker older than `age` from each bucket; returns how many. Raises
        NATS's errors (the removals done before stay done)."""
        cutoff = self.clock() - self.age
        removed = 0
        for bucket, kv in self.buckets:
            old = await self.old_markers(bucket, kv, cutoff, ROUND_MAX - removed)
            removed += await self.remove(bucket, old)
        self.removed += removed
        return removed

    async def old_markers(self, bucket: str, kv: KeyValue, cutoff: float,
                          most: int) -> list[tuple[str, int]]:  # fmt: skip
        """(key, revision) of the markers stored before `cutoff` (seconds since the epoch),
        oldest first, at most `most`."""
        from nats.errors import TimeoutError as NatsTimeout

        found: list[tuple[str, int]] = []
        # From the first message (history=1: each is its key's latest), headers only.
        watcher = await kv.watchall(include_history=True, meta_only=True)
        try:
            while len(found) < most:
                try:
                    entry = await watcher.updates(timeout=READ_TIMEOUT_S)  # type: ignore[no-untyped-call]
                except NatsTimeout:
                    break  # (nothing more: the end was not signalled)
                if entry is None or entry.created is None:
                    break
                if entry.created.timestamp() >= cutoff:
                    break  # (stream order is time order: the rest is younger)
                if entry.operation in _DELETES:
                    found.append((entry.key, entry.revision or 0))
        finally:
            # (Its consumer gone now: with it there, removals went 70 times slower.)
            await end_watch(kv, watcher)
        return found

    async def remove(self, bucket: str, markers: list[tuple[str, int]]) -> int:
        """Remove `markers` ((key, revision)) of `bucket`: each key's messages below its
        marker's revision + 1, so a newer value of the key stays. Returns how many."""
        stream, prefix = f"KV_{bucket}", f"$KV.{bucket}."
        for at in range(0, len(markers), WINDOW):
            await asyncio.gather(*(
                self.js.purge_stream(stream, subject=prefix + key, seq=revision + 1)
                for key, revision in markers[at : at + WINDOW]
            ))  # fmt: skip
        return len(markers)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
