"""The current picture: what the hub holds now, apart from how items flow through it.

Two pools of rendered items keyed by (party, uid) — `durable` (stored: areas, alerts, chat…)
and `live` (positions, tracks: never stored) — a key is in at most one of them. With them,
the indexes that answer questions about the picture without scanning it: durable items held
per party (the quota), items addressed to devices (given to a device when it reports
itself: `receipts.py`), and GeoChat messages by (party, message id) (what a receipt may
answer).

Whether and how a party sees an item is the hub's routing, given as `variant_for`
(rendered, party, now) -> variant or None; the picture only asks it. Everything here runs
on the hub's event loop (core.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator

from commonsky.errors import RemoteProtocolError
from commonsky.model import Item
from commonsky.namespace import Key
from commonsky.protocol.refs import RECEIPT_TYPES, message_id

from .connection import Connection, addressed_to_devices, reaches
from .outbox import Pending, Rendered, Variant

VariantFor = Callable[[Rendered, str, float], Variant | None]


class Picture:
    def __init__(
        self, parties: frozenset[str], variant_for: VariantFor, clock: Callable[[], float]
    ) -> None:
        self.live: dict[tuple[str, str], Rendered] = {}
        self.durable: dict[tuple[str, str], Rendered] = {}
        self.held: dict[str, int] = defaultdict(int)  # durable items in the picture, by party
        # Keys of picture items addressed to devices (dest callsign/uid).
        self._addressed: set[tuple[str, str]] = set()
        # (party, GeoChat message id) -> the message's key, for the messages in the picture:
        # a receipt crosses to another party only if it answers one it was sent.
        self._chats: dict[tuple[str, str], tuple[str, str]] = {}
        self._parties = parties
        self._variant_for = variant_for
        self._clock = clock

    # ---- reading ------------------------------------------------------------------------

    def get(self, key: tuple[str, str]) -> Rendered | None:
        """The item held under `key`, durable or live (a key is in one pool at most)."""
        return self.durable.get(key) or self.live.get(key)

    def lookup(self, key: Key) -> Rendered | None:
        return self.get((key.party, key.uid))

    def keys(self) -> list[Key]:
        return [Key(*k) for pool in (self.durable, self.live) for k in pool]

    def check_quota(self, party: str, limit: int) -> None:
        """A party may hold at most `limit` (`limit_durable_items_per_party`) durable items in
        the picture at once (each is replayed to every entitled connection): past it, a new
        one is refused (`RemoteProtocolError("quota")`) until some expire or are withdrawn;
        updates of held ones still go (the caller asks only for a new key)."""
        held = self.held[party]
        if held >= limit:
            raise RemoteProtocolError(
                "quota",
                f"{party} already holds {held} durable items in the picture "
                f"(limit_durable_items_per_party={limit}); let some expire or withdraw them",
            )

    def chat_key(self, name: Key) -> tuple[str, str] | None:
        """The key of the GeoChat message in the picture whose message id is `name`
        (party, id) — the id ATAK's receipts carry."""
        key = self._chats.get(name)
        return key if key is not None and self.get(key) is not None else None

    def visible(self, party: str, durable: bool = True) -> Iterator[tuple[Rendered, Variant]]:
        """The current picture as `party` may see it: durable items first, nothing stale
        (only the live items — tracks, positions — when `durable` is False)."""
        now = self._clock()
        for pool in (self.durable, self.live) if durable else (self.live,):
            for rendered in list(pool.values()):
                variant = self._variant_for(rendered, party, now)
                if variant is not None:
                    yield rendered, variant

    def visible_live(
        self, party: str, keys: Iterable[tuple[str, str]]
    ) -> Iterator[tuple[Rendered, Variant]]:
        """`visible(party, durable=False)` for just these keys (a desk that indexes the few
        live items it needs must not scan thousands of tracks)."""
        now = self._clock()
        for key in keys:
            rendered = self.live.get(key)
            if rendered is not None:
                variant = self._variant_for(rendered, party, now)
                if variant is not None:
                    yield rendered, variant

    def replay(self, conn: Connection) -> Iterator[Pending]:
        """What `conn` is owed of the picture as it is now, drawn lazily (`Outbox.replay`):
        each item is looked up again when drawn, and skipped if it has been superseded
        (the newer version was queued to this connection already), went stale or may no
        longer be seen. What reaches it through its devices is given when each device
        reports itself (`Hub.give_devices`)."""
        # Taken now, not when first drawn: what is published from here on is queued as it
        # comes, and must not be owed twice.
        owed = [(pool, key, r) for pool in (self.durable, self.live) for key, r in pool.items()]
        return self._still_owed(conn, owed)

    def _still_owed(
        self,
        conn: Connection,
        owed: list[tuple[dict[tuple[str, str], Rendered], tuple[str, str], Rendered]],
    ) -> Iterator[Pending]:
        party = conn.party
        for pool, key, rendered in owed:
            if pool.get(key) is not rendered or not reaches(
                rendered.item, conn, self._parties, devices=False
            ):
                continue
            variant = self._variant_for(rendered, party, self._clock())
            if variant is not None:
                if rendered.item.party != party:  # (routes change with time: may be new here)
                    rendered.seen.setdefault(party, set()).add(variant.partition(":")[0])
                yield Pending(rendered, variant)

    def addressed(self) -> Iterator[Rendered]:
        """The items in the picture addressed to devices (dest callsign/uid), whoever may
        see them: what is owed to a device when it reports itself (`Receipts.owed`)."""
        for key in list(self._addressed):
            rendered = self.get(key)
            if rendered is None:
                self._addressed.discard(key)
            else:
                yield rendered

    # ---- changing -----------------------------------------------------------------------

    def add(self, item: Item, rendered: Rendered) -> None:
        """Hold a stored durable item (a restart's load)."""
        self._hold(item.key, rendered)
        self._index(item)

    def place(self, rendered: Rendered, durable: bool, now: float) -> bool:
        """Put a new version of an item in the picture; returns whether its key is new.

        A new version of a uid always supersedes the old one, whatever its category, and one
        that arrives already stale removes it: what stays in the picture for others must not
        depend on details (here: staleness) of an update they may not see. (Popping first
        also makes the picture's order the order of last updates, which likewise must not
        depend on anyone's invisible history.)"""
        item = rendered.item
        key = (item.party, item.event.uid)  # (`item.key`, without a property's call)
        old = self.live.pop(key, None) or self.durable.get(key)
        self._unhold(key)
        if old is not None:
            rendered.seen = old.seen
        self._addressed.discard(key)
        if item.event.stale <= now:
            return False
        if durable:
            self._hold(key, rendered)
        else:
            self.live[key] = rendered
        self._index(item)
        return old is None

    def end(self, item: Item, durable: bool) -> None:
        """A message (receipt, file transfer, cancel) is relayed and never kept. It ends the
        item of its uid only if that is of its own category — an emergency's cancel; ATAK's
        file-transfer acknowledgement carries its device's uid, and must not end that
        device's position."""
        key = item.key
        kept = (self.durable if durable else self.live).get(key)
        if kept is not None and kept.item.category is item.category:
            if durable:
                self._unhold(key)
            else:
                del self.live[key]
            self._addressed.discard(key)

    def remove(self, key: tuple[str, str]) -> None:
        """Take `key` out of the picture (a delete, a quarantined item)."""
        self.live.pop(key, None)
        self._unhold(key)
        self._addressed.discard(key)

    def prune(self, now: float) -> int:
        """Forget stale items; returns how many went."""
        gone = 0
        for key in [k for k, r in self.live.items() if r.item.event.stale <= now]:
            del self.live[key]
            self._addressed.discard(key)
            gone += 1
        for key in [k for k, r in self.durable.items() if r.item.event.stale <= now]:
            self._unhold(key)
            self._addressed.discard(key)
            gone += 1
        if gone:
            self._chats = {m: k for m, k in self._chats.items() if self.get(k)}
        return gone

    def _hold(self, key: tuple[str, str], rendered: Rendered) -> None:
        self.durable[key] = rendered
        self.held[key[0]] += 1

    def _unhold(self, key: tuple[str, str]) -> None:
        if self.durable.pop(key, None) is not None:
            self.held[key[0]] -= 1

    def _index(self, item: Item) -> None:
        """Note a picture item that is addressed to devices, or is a GeoChat message."""
        e = item.event
        if addressed_to_devices(e):
            self._addressed.add(item.key)
        if e.type.startswith("b-t-f") and e.type not in RECEIPT_TYPES:
            self._chats[(item.party, message_id(e))] = item.key
