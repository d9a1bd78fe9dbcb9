"""Per-connection outbound queue with stated overflow policies.

- Live items (tracks, positions): at most `limit_queue_tracks` pending uids. A newer update
  of a pending uid replaces it in place (the reader only ever needs the latest); a new uid
  arriving when full evicts the oldest pending uid. Both are counted.
- Durable items (hotline, launch, airspace…): never dropped. Past `limit_queue_durable`
  the connection is declared too slow and closed; the store replays them when it returns.
- The picture a connection is owed when it opens (its replay) is not queued: it waits as a
  `backlog` that each `take` draws one page from (REPLAY_PAGE items), so a picture of any
  size is fed to the socket as it drains instead of landing at once on the durable limit.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from commonsky.model import Disclosure, Item

Variant = Literal["own", "full", "gen"]
REPLAY_PAGE = 256  # replay items per take: one socket write of a few hundred kilobytes
Overflow = Literal["coalesced", "evicted", "too_slow"] | None


@dataclass(slots=True)
class Rendered:
    """The wire forms of one item, made once and shared by every connection."""

    item: Item
    make: Callable[[Item, Variant, str], bytes]
    cache: dict[tuple[Variant, str], bytes] = field(default_factory=dict)
    # The item's routes, valid until the policy's next validity boundary (`routes_until`)
    # and while the callsign directory is unchanged (`routes_epoch`).
    routes: dict[str, Disclosure] | None = None
    routes_until: float = 0.0
    routes_epoch: int = -1

    def wire(self, variant: Variant, mode: str) -> bytes:
        key = (variant, mode)
        data = self.cache.get(key)
        if data is None:
            data = self.cache[key] = self.make(self.item, variant, mode)
        return data


@dataclass(slots=True)
class Pending:
    rendered: Rendered
    variant: Variant


class Outbox:
    def __init__(self, limit_live: int, limit_durable: int) -> None:
        self.limit_live = limit_live
        self.limit_durable = limit_durable
        self.live: dict[tuple[str, str], Pending] = {}
        self.durable: deque[Pending] = deque()
        self.backlog: Iterator[Pending] | None = None  # the replay still owed
        # Set by the adapter when the socket pushed back; its writer task waits for drain.
        self.ready = asyncio.Event()

    def replay(self, backlog: Iterator[Pending]) -> None:
        """Owe the connection `backlog`, drawn a page per `take`, before anything queued."""
        self.backlog = backlog

    def put(self, pending: Pending, durable: bool) -> Overflow:
        if durable:
            self.durable.append(pending)
            return "too_slow" if len(self.durable) > self.limit_durable else None
        key = pending.rendered.item.key
        if key in self.live:
            self.live[key] = pending
            return "coalesced"
        overflow: Overflow = None
        if len(self.live) >= self.limit_live:
            del self.live[next(iter(self.live))]
            overflow = "evicted"
        self.live[key] = pending
        return overflow

    def take(self) -> list[Pending]:
        """A page of the replay still owed, then everything queued: durable first (they
        carry obligations), then live. `backlog` is None once the replay is all taken."""
        batch: list[Pending] = []
        if self.backlog is not None:
            for pending in self.backlog:
                batch.append(pending)
                if len(batch) >= REPLAY_PAGE:
                    break
            else:
                self.backlog = None
        batch.extend(self.durable)
        self.durable.clear()
        batch.extend(self.live.values())
        self.live.clear()
        return batch

    def __len__(self) -> int:
        owed = 0 if self.backlog is None else 1  # at least one page may remain
        return len(self.durable) + len(self.live) + owed
