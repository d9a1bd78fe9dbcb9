"""Per-connection outbound queue with stated overflow policies.

- Live items (tracks, positions) while the reader keeps up: every update is queued, in
  order, and written at the end of the current burst of input. A fast reader loses nothing:
  two updates of one uid that arrive in the same burst are both delivered (replacing the
  first one there dropped ~1 % of updates at 1,000 msg/s and ~17 % at 2,000).
- Live items while the socket pushes back (the adapter calls `push_back` when its write
  buffer is over its high-water mark, `resume` once it drained): at most `limit_queue_tracks`
  pending uids, a newer update of a pending uid replaces it in place (the slow reader only
  ever needs the latest), a new uid arriving when full evicts the oldest pending uid. A burst
  of more than `limit_queue_tracks` updates is treated the same way. Both are counted.
- Durable items (hotline, launch, airspace…) and transient messages (receipts, file
  transfers): never dropped or merged; one supersedes any live version of its uid still
  pending (it would be written after it: `take` writes durable first). Past
  `limit_queue_durable` the connection is declared too slow and closed; the store replays
  what is durable when it returns.
- The picture a connection is owed when it opens (its replay) is not queued: it waits as a
  `backlog` that each `take` draws one page from (REPLAY_PAGE items), so a picture of any
  size is fed to the socket as it drains instead of landing at once on the durable limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Literal

from commonsky.model import Disclosure, Item
from commonsky.namespace import Key
from commonsky.protocol.refs import References

# "own" (the sender's party), "full", "gen" (generalized), or "full:PARTY" for an item that
# names a third party's item, whose names depend on what PARTY may see (hub/naming.py).
Variant = str
REPLAY_PAGE = 256  # replay items per take: one socket write of a few hundred kilobytes
Overflow = Literal["coalesced", "evicted", "too_slow"] | None


@dataclass(slots=True)
class Rendered:
    """The wire forms of one item, made once and shared by every connection."""

    item: Item
    make: Callable[[Rendered, Variant, str], bytes]
    # (variant or per-recipient names, mode) -> bytes
    cache: dict[tuple[object, str], bytes] = field(default_factory=dict)
    # The item's routes, valid until the policy's next validity boundary (`routes_until`)
    # and while the callsign directory is unchanged (`routes_epoch`).
    routes: dict[str, Disclosure] | None = None
    routes_until: float = 0.0
    routes_epoch: int = -1
    # The item's references, read once (hub/naming.py): whose item each name means, and
    # whether any is a third party's (then names depend on the recipient).
    refs: References | None = None
    keys: tuple[Key, ...] = ()
    per_party: bool = False
    # What the desks' checks parsed from `item.event` when it was accepted (hub/core.py), so
    # rendering reads nothing twice: the map page's geometry is the deconfliction desk's.
    parsed: tuple[object, ...] = ()
    # Every party this uid was delivered to, with the forms it got ("own"/"full"/"gen"),
    # carried from version to version: a delete reaches each of them under those names.
    seen: dict[str, set[str]] = field(default_factory=dict)
    # Its CoT XML cut where the uid goes (`Renderer`: the "own" and "full" forms differ only
    # in the uid when no name in the item depends on who reads it), once asked for; () when
    # the cut cannot be made (the XML carries no uid).
    xml_around_uid: tuple[bytes, ...] | None = None

    def wire(self, variant: Variant, mode: str) -> bytes:
        key = (variant, mode)
        data = self.cache.get(key)
        if data is None:
            data = self.make(self, variant, mode)
            if ":" not in variant:  # per-recipient forms are cached under their names
                self.cache[key] = data
        return data


@dataclass(slots=True)
class Pending:
    rendered: Rendered
    variant: Variant


class Outbox:
    # One per connection, most of them idle: slots and a list (56 B) rather than a deque
    # (760 B) for the durable queue, which is only appended to and taken whole
    # (`commonsky bench memory`, docs/performance.md).
    __slots__ = (
        "backlog",
        "durable",
        "flowing",
        "limit_durable",
        "limit_live",
        "live",
        "pushed_back",
        "ready",
    )

    def __init__(self, limit_live: int, limit_durable: int) -> None:
        self.limit_live = limit_live
        self.limit_durable = limit_durable
        self.flowing: list[Pending] = []  # every live update, in order, while not pushed back
        self.live: dict[tuple[str, str], Pending] = {}  # newest per uid, while pushed back
        self.durable: list[Pending] = []
        self.pushed_back = False
        self.backlog: Iterator[Pending] | None = None  # the replay still owed
        # Set by the adapter when the socket pushed back; its writer task waits for drain.
        self.ready = asyncio.Event()

    def replay(self, backlog: Iterator[Pending]) -> None:
        """Owe the connection `backlog`, drawn a page per `take`, before anything queued."""
        self.backlog = backlog

    def put(self, pending: Pending, durable: bool) -> Overflow:
        if durable:
            # Durable items go out before live ones (`take`), so a live version of the same
            # uid still pending is older than this one and would land after it: the reader
            # would be left showing what the item no longer is (a track whose uid a marker
            # took). It is moot, as when the item is deleted.
            if self.flowing or self.live:
                self.discard(pending.rendered.item.key)
            self.durable.append(pending)
            return "too_slow" if len(self.durable) > self.limit_durable else None
        if not self.pushed_back and len(self.flowing) < self.limit_live:
            self.flowing.append(pending)
            return None
        return self._coalesce(pending)

    def push_back(self) -> list[str]:
        """The socket pushed back: from now until `resume`, keep only the newest update per
        uid. Returns what merging the queued updates dropped (for the drop counters)."""
        if self.pushed_back:
            return []
        self.pushed_back = True
        queued = [*self.flowing, *self.live.values()]  # oldest first
        self.flowing, self.live = [], {}
        return [o for o in map(self._coalesce, queued) if o is not None]

    def resume(self) -> None:
        """The socket drained: queue every update again (after what is still pending)."""
        if self.pushed_back:
            self.pushed_back = False
            self.flowing.extend(self.live.values())
            self.live.clear()

    def _coalesce(self, pending: Pending) -> Overflow:
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

    def discard(self, key: tuple[str, str], forms: Collection[str] | None = None) -> None:
        """Drop every pending live update of `key` (its item was deleted), or only those in
        `forms` ("full", "gen": a form withdrawn): merged or still flowing in order (deletes
        are rare; the scan of `flowing` is bounded by its limit)."""

        def moot(p: Pending) -> bool:
            return p.rendered.item.key == key and (
                forms is None or p.variant.partition(":")[0] in forms
            )

        merged = self.live.get(key)
        if merged is not None and moot(merged):
            del self.live[key]
        if self.flowing:
            self.flowing = [p for p in self.flowing if not moot(p)]

    def take(self) -> list[Pending]:
        """A page of the replay still owed, then everything queued: durable first (they
        carry obligations), then live in the order it came (what flowed before any merging,
        then the newest per uid). `backlog` is None once the replay is all taken."""
        if self.backlog is None and not self.durable and not self.live:
            # (the common case, live updates flowing: the list itself, no copy)
            batch, self.flowing = self.flowing, []
            return batch
        batch = []
        if self.backlog is not None:
            for pending in self.backlog:
                batch.append(pending)
                if len(batch) >= REPLAY_PAGE:
                    break
            else:
                self.backlog = None
        batch.extend(self.durable)
        self.durable.clear()
        batch.extend(self.flowing)
        self.flowing = []
        batch.extend(self.live.values())
        self.live.clear()
        return batch

    def __len__(self) -> int:
        owed = 0 if self.backlog is None else 1  # at least one page may remain
        return len(self.durable) + len(self.flowing) + len(self.live) + owed
