"""When the core writes each changed live item's bucket entries: a share per upkeep round.

Live items' picture entries and live records (picture_kv.py, live_kv.py) need not follow
every position report: each is brought up to date within `LIVE_EVERY_S` of its change. The
core used to write all the changed ones at once every LIVE_EVERY_S — at 1,000 msg/s with 50
receivers ~300 KV writes in one burst per bucket — and the inbound stream, on the same NATS
server and connection, queued behind them: the cluster's worst p99 spikes
(docs/performance.md, "Cluster: live writes spread"). `LiveSpread` hands the upkeep round
(`ROUND_S`) the keys to write now: the fewest that, written at the same pace in the rounds
left, still bring every key in before its deadline — for a burst of N changes, about N/8 a
round.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

LIVE_EVERY_S = 2.0  # a live item's entries are written at most this long after its change
ROUND_S = 0.25  # the core's upkeep rounds (core.py `_upkeep`), each writing a share


class LiveSpread(Generic[K]):
    """The keys changed and not written yet, in batches by when they were first noted.

    `note(key)` when a key changes (a key noted already keeps its place: its deadline is
    from its first unwritten change); `share()` once per upkeep round: the keys to write in
    this round, oldest first, taken out; `take(key)` when a key is written otherwise (an
    urgent write, a full pass). Times are `timer()`'s seconds (monotonic; a test's own).

    Deadlines: a key first noted at t is handed out at a round no later than
    t + LIVE_EVERY_S - ROUND_S, when the rounds come every ROUND_S; one round to spare, so a
    round a little late still keeps it within LIVE_EVERY_S. A round later than that hands
    out every key past its deadline at once."""

    def __init__(self, timer: Callable[[], float]) -> None:
        self.timer = timer
        self.batch_of: dict[K, dict[K, None]] = {}  # key -> the batch holding it
        # (first noted at, its keys in order), oldest first; a batch per round at most.
        self.batches: deque[tuple[float, dict[K, None]]] = deque()
        self.round_at = -math.inf  # when the last share was taken

    def __contains__(self, key: object) -> bool:
        return key in self.batch_of

    def __len__(self) -> int:
        return len(self.batch_of)

    def note(self, key: K) -> None:
        if key in self.batch_of:
            return
        if not self.batches or self.batches[-1][0] < self.round_at:
            self.batches.append((self.timer(), {}))  # (the first change since the last round)
        batch = self.batches[-1][1]
        batch[key] = None
        self.batch_of[key] = batch

    def take(self, key: K) -> None:
        """`key` is being written now (or needs no write): no longer due."""
        batch = self.batch_of.pop(key, None)
        if batch is not None:
            del batch[key]

    def clear(self) -> list[K]:
        """Every key due, taken out (oldest first)."""
        keys = list(self.batch_of)
        self.batch_of.clear()
        self.batches.clear()
        return keys

    def quota(self, now: float) -> int:
        """How many keys this round writes: written at this pace from now, the i-th oldest
        key (1-based) goes in round ceil(i / quota), which must be within the rounds left
        before its batch's deadline (one to spare). Batches are in deadline order, so the
        last key of each batch is the one that bounds the pace."""
        quota = total = 0
        for first, keys in self.batches:
            total += len(keys)
            rounds = max(1, math.floor((first + LIVE_EVERY_S - now) / ROUND_S + 1e-9))
            quota = max(quota, -(-total // rounds))
        return quota

    def share(self) -> list[K]:
        """This round's keys to write (`quota`), taken out; oldest first."""
        now = self.timer()
        self.round_at = now
        quota = self.quota(now)
        out: list[K] = []
        while self.batches and len(out) < quota:
            keys = self.batches[0][1]
            while keys and len(out) < quota:
                key = next(iter(keys))
                del keys[key]
                del self.batch_of[key]
                out.append(key)
            if not keys:
                self.batches.popleft()
        while self.batches and not self.batches[0][1]:
            self.batches.popleft()  # (emptied by `take`)
        return out
