"""The seam between federation and the hub core: `HubSeam`, and nothing else.

Everything federation asks of the hub — one desk that only observes (`Hub.add_desk`),
`accept`, `transaction`, routing and rendering, the store's cursors, the ledger — goes
through this one class, so the core never learns of links and the links never reach into
the core's internals.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from commonsky.hub.withdraw import Watcher
from commonsky.model import HUB, Category, CotEvent, Disclosure, Item
from commonsky.namespace import own_uid

if TYPE_CHECKING:
    from commonsky.desks.recorder import LedgerRecorder
    from commonsky.hub.core import Hub

log = logging.getLogger("commonsky.federation")

ORIGIN = "fed:"  # Item.origin of what came over a link: "fed:<link>>id,id…" (`origin_of`)
CURSOR_IN, CURSOR_OUT = "fed-in", "fed-out"


def origin_of(link: str, path: Sequence[str]) -> str:
    """`Item.origin` of an item that came over `link` having passed the hubs `path` (their
    server ids, from the message's provenance, first hub first): kept with the item in the
    store, so a relayed copy carries its whole path even when sent again from the store."""
    return f"{ORIGIN}{link}" + (">" + ",".join(path) if path else "")


def came_over(origin: str) -> tuple[str, tuple[str, ...]] | None:
    """(link, path) of an item that came over a link; None for this hub's own."""
    if not origin.startswith(ORIGIN):
        return None
    link, _, path = origin[len(ORIGIN) :].partition(">")
    return link, tuple(path.split(",")) if path else ()


_watchers = itertools.count(1)


@dataclass(frozen=True)
class _Watcher:
    """A desk that only observes (hub/desk.py): what federation needs of every item."""

    name: str
    observer: Callable[[Item, dict[str, Disclosure]], None]
    categories: tuple[Category, ...] = ()

    def check(self, party: str, event: CotEvent) -> None:
        return None

    def observe(
        self, item: Item, routes: dict[str, Disclosure], parsed: object | None = None
    ) -> None:
        self.observer(item, routes)


class HubSeam:
    """Everything federation asks of the hub core, in one place."""

    def __init__(self, hub: Hub, recorder: LedgerRecorder | None = None) -> None:
        self.hub = hub
        self.recorder = recorder  # the hub's ledger (signed receipts), if it keeps one

    def ledger_seq(self, item: Item) -> int | None:
        """The ledger entry of a durable item just accepted (None without a ledger)."""
        if self.recorder is None:
            return None
        return self.recorder.seq_of.get((item.party, item.uid, item.seq))

    def held_entry(self, party: str, event: CotEvent, link: str) -> int | None:
        """The ledger entry of the copy of `event` this hub applied from `link` before (a
        copy sent again after a restart): so it is answered with a receipt again. None when
        the hub holds another version of the item now, or none, or keeps no ledger."""
        uid = own_uid(party, event.uid, self.parties())
        rendered = self.hub.picture.get((party, uid)) if uid is not None else None
        if self.recorder is None or rendered is None:
            return None
        item = rendered.item
        held = item.event
        if (came_over(item.origin) or ("",))[0] != link or (held.type, held.time, held.stale) != (
            event.type,
            event.time,
            event.stale,
        ):
            return None
        return self.recorder.entry_of(item)

    def entry_at(self, store_seq: int) -> int | None:
        """The ledger entry of our stored item `store_seq` (None without a ledger)."""
        return self.recorder.seq_at(store_seq) if self.recorder is not None else None

    def parties_of(self, ledger_seqs: Iterable[int | None]) -> set[str]:
        """The parties our ledger entries `ledger_seqs` name: originators and audiences."""
        parties: set[str] = set()
        if self.recorder is not None:
            ledger = self.recorder.ledger
            for seq in ledger_seqs:
                if seq is not None and 0 <= seq < ledger.size:
                    entry = ledger.entry(seq)
                    parties.update((entry.originator, *entry.audience))
        parties.discard(HUB)
        return parties

    def sign_checkpoint(self) -> dict[str, Any] | None:
        if self.recorder is None:
            return None
        return self.recorder.ledger.checkpoint().to_json()

    def consistency(self, old: int, new: int) -> list[str]:
        """RFC 6962 consistency proof of our log from size `old` to `new`, as hex."""
        assert self.recorder is not None
        return [p.hex() for p in self.recorder.ledger.consistency_proof(old, new)]

    def record(self, kind: str, audience: list[str], payload: dict[str, Any]) -> None:
        if self.recorder is not None:
            with self.hub.transaction():
                self.recorder.record_fact(kind, HUB, audience, payload, self.hub.clock())

    def watch(self, observer: Callable[[Item, dict[str, Disclosure]], None]) -> None:
        self.hub.add_desk(_Watcher(f"federation#{next(_watchers)}", observer))

    def watch_withdrawals(self, watcher: Watcher) -> None:
        """Be told of each item's withdrawals at an agreements' change (hub/withdraw.py)."""
        self.hub.withdrawals.watchers.append(watcher)

    def accept(
        self, party: str, user: str, event: CotEvent, audience: tuple[str, ...], origin: str
    ) -> Item:
        return self.hub.accept(party, user, event, audience=audience, origin=origin)

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        return self.hub.transaction()

    def route(self, item: Item) -> dict[str, Disclosure]:
        return self.hub.route(item, self.hub.clock())

    def route_own(self, item: Item) -> dict[str, Disclosure]:
        """Who this hub's own agreements entitle to `item` now, and in which form — for an
        item that came over a link too (whose delivery here follows its audience)."""
        return self.hub.route(msgspec.structs.replace(item, audience=()), self.hub.clock())

    def render(self, item: Item, party: str, level: Disclosure) -> CotEvent:
        """`item` as `party` may see it (generalized, or full under its names)."""
        variant = "gen" if level is Disclosure.GENERALIZED else f"full:{party}"
        return self.hub.event_for(item, variant)

    def live_items(self) -> list[Item]:
        now = self.hub.clock()
        return [r.item for r in list(self.hub.live.values()) if r.item.event.stale > now]

    def stored_since(self, seq: int) -> Iterator[Item]:
        return self.hub.store.since(seq)

    def cursor(self, name: str, link: str) -> int:
        return self.hub.store.cursor(name, link)

    def set_cursor(self, name: str, link: str, position: int) -> None:
        with self.hub.transaction():
            self.hub.store.set_cursor(name, link, position)

    def clock(self) -> float:
        return self.hub.clock()

    def parties(self) -> frozenset[str]:
        return frozenset(self.hub.policy.parties) | {HUB}

    def log_limited(self, reason: str, key: str, msg: str, *args: object) -> None:
        self.hub.log_limited(log, reason, key, msg, *args)
