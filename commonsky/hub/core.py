"""The hub's shared state: who is connected, the current picture, and routing.

One object, owned by one event loop (uvicorn's `ServerState` habit): listeners and the HTTP
API only call `accept`, `attach` and `detach`. Routing is decided once per item against the
compiled policy; each distinct output (own / full / generalized × XML / protobuf) is
rendered once and shared by every connection that receives it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
from msgspec.structs import replace

from commonsky.bus import Bus, LocalBus
from commonsky.errors import AlreadyRecorded, RemoteProtocolError
from commonsky.metrics import Metrics
from commonsky.model import DURABLE, HUB, Category, CotEvent, Disclosure, Item, category_of
from commonsky.policy import Policy, generalize, namespaced, own_uid
from commonsky.protocol.bounds import check_event
from commonsky.protocol.cot import detail_tree, encode_event
from commonsky.protocol.stream import frame_proto
from commonsky.protocol.takv1 import event_to_proto
from commonsky.ratelog import RateLimitedLog
from commonsky.settings import Settings
from commonsky.store import Store

from .outbox import Outbox, Pending, Rendered, Variant
from .quarantine import Quarantine

log = logging.getLogger("commonsky.hub")

_VARIANT: dict[Disclosure, Variant] = {Disclosure.FULL: "full", Disclosure.GENERALIZED: "gen"}


@dataclass(eq=False)
class Connection:
    """One client of one party. The I/O adapter owns the socket; the hub owns the outbox."""

    party: str
    user: str
    listener: str
    outbox: Outbox
    mode: Callable[[], str]
    close: Callable[[str], None]
    flush: Callable[[], None] = lambda: None  # write what is pending, if the socket allows
    id: str = ""
    peer: str = ""
    refusals: int = 0
    callsigns: set[str] = field(default_factory=set)


class Hub:
    def __init__(
        self,
        policy: Policy,
        store: Store,
        settings: Settings,
        secret: bytes,
        bus: Bus | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        quarantine: Quarantine | None = None,
    ) -> None:
        self.policy = policy
        self.store = store
        self.settings = settings
        self.secret = secret
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.bus = bus or LocalBus()
        self.bus.subscribe(self._deliver)
        self.connections: dict[str, set[Connection]] = defaultdict(set)
        self.live: dict[tuple[str, str], Rendered] = {}
        self.durable: dict[tuple[str, str], Rendered] = {}
        self.callsigns: dict[str, set[str]] = defaultdict(set)  # callsign -> parties using it
        self._directory_epoch = 0
        # Engines hook in here: `on_durable` runs once a durable item is stored and before
        # anyone receives it (the ledger); `observers` see every item as it is delivered.
        self.on_durable: list[Callable[[list[tuple[Item, dict[str, Disclosure]]]], None]] = []
        # Per-category checks run before anything is stored; they refuse by raising
        # RemoteProtocolError (e.g. an airspace drawing with a self-intersecting outline).
        self.validators: dict[Category, Callable[[str, CotEvent], None]] = {}
        self.observers: list[Callable[[Item, dict[str, Disclosure]], None]] = []
        # Other writers whose commits join the store's (see `submit`).
        self.transactions: list[Callable[[], contextlib.AbstractContextManager[None]]] = []
        self._tx_depth = 0
        self._grid = settings.get_float("generalize_grid_deg")
        # Writes are batched: enqueueing marks a connection dirty and one callback, run by
        # the event loop after the current burst of input, flushes every dirty connection.
        self.call_soon: Callable[[Callable[[], None]], object] | None = None
        self._dirty: set[Connection] = set()
        self._flush_pending = False
        self.logs = RateLimitedLog()
        self.handshaking: dict[str, int] = {}  # TLS connections not yet authenticated, by IP
        self._held: dict[str, int] = defaultdict(int)  # durable items in the picture, by party
        # Whatever is stored, the hub starts: an item it cannot load is set aside, reported.
        self.quarantine = quarantine if quarantine is not None else Quarantine(None)
        self.quarantine.counter = self.metrics.quarantined
        self.quarantine.rebuild("picture", store.active(clock()), self._load)
        self._quarantine_unreadable("picture")

    def _load(self, item: Item) -> None:
        # The rules every accepted item passed, and a detail that parses (the protobuf form
        # and the desks read it): what fails here would fail for every recipient.
        check_event(item.event)
        if item.event.detail:
            detail_tree(item.event.detail)
        self._hold(item.key, self._rendered(item))

    def rebuild(self, where: str, rebuild: Callable[[Item], None], since: int = 0) -> int:
        """Feed every stored durable item after `since` to a desk's `rebuild`, in order (a
        restart). An item that breaks the acceptance rules, or on which `rebuild` raises, is
        quarantined (see quarantine.py) instead of stopping the start; so is a row that no
        longer decodes. Returns how many items were rebuilt."""

        def one(item: Item) -> None:
            check_event(item.event)
            rebuild(item)

        done = self.quarantine.rebuild(where, self.store.since(since), one)
        self._quarantine_unreadable(where)
        for entry in list(self.quarantine.items.values()):  # out of the picture too
            rendered = self.durable.get((entry.party, entry.uid))
            if rendered is not None and rendered.item.seq == entry.seq:
                self._unhold((entry.party, entry.uid))
        return done

    def quarantine_item(self, item: Item, where: str, reason: str) -> None:
        """A desk could not rebuild this stored item (see quarantine.py): set it aside and
        out of the picture."""
        self.quarantine.add(item.seq, where, reason, item)
        rendered = self.durable.get(item.key)
        if rendered is not None and rendered.item.seq == item.seq:
            self._unhold(item.key)

    def _quarantine_unreadable(self, where: str) -> None:
        for seq, reason in sorted(getattr(self.store, "unreadable", {}).items()):
            self.quarantine.add(seq, where, reason)

    # ---- rendering ----------------------------------------------------------------------

    def _rendered(self, item: Item) -> Rendered:
        return Rendered(item, self._render)

    def _render(self, item: Item, variant: Variant, mode: str) -> bytes:
        """One wire form of an item; b"" (nothing is sent) when it cannot be rendered.

        Validation at the edge should make this impossible; if an item slips through all the
        same, it costs only itself — never the batch, the connection or another party."""
        try:
            event = self.event_for(item, variant)
            if mode == "json":
                return _json_encoder.encode(item_json(item, event))
            if mode == "proto":
                return frame_proto(event_to_proto(event))
            return encode_event(event)
        except Exception as exc:
            self.metrics.render_failed(mode)
            log.error(
                "cannot render item #%d %s/%r as %s (%s): %s: %s; not sent in that form",
                item.seq,
                item.party,
                item.uid[:120],
                mode,
                variant,
                type(exc).__name__,
                str(exc)[:300],
            )
            return b""

    def event_for(self, item: Item, variant: Variant) -> CotEvent:
        if variant == "own":
            return item.event
        if variant == "full":
            return namespaced(item.event, item.party)
        return generalize(item.event, item.party, self.secret, self._grid)

    # ---- inbound ------------------------------------------------------------------------

    def accept(
        self, party: str, user: str, event: CotEvent, sender: Connection | None = None
    ) -> Item:
        """Take one event from an authenticated party; raise RemoteProtocolError to refuse.

        Every path (TAK XML, TAK protobuf, the API) comes through here, so the rule of what
        an item may hold (`check_event`: what every output can carry) is checked here."""
        check_event(event)
        uid = own_uid(party, event.uid)
        if uid is None:
            raise RemoteProtocolError(
                "uid_spoof", f"uid {event.uid[:60]!r} claims another party's namespace"
            )
        if uid != event.uid:
            event = replace(event, uid=uid)
        now = self.clock()
        category = category_of(event.type)
        if event.callsign and sender is not None:
            sender.callsigns.add(event.callsign)
            if party not in self.callsigns[event.callsign]:
                self.callsigns[event.callsign].add(party)
                self._directory_epoch += 1
        item = Item(
            party=party,
            user=user,
            category=category or Category.POSITION,
            event=event,
            received=now,
            origin=sender.id if sender else "",
        )
        if category is None:
            # Types the hub does not classify (deletes, map tools…) stay inside the party.
            self._fan_out(self._rendered(item), {}, durable=False)
            return item
        check = self.validators.get(category)
        if check is not None:
            try:
                check(party, event)
            except AlreadyRecorded as repeat:  # a retry of what is held: nothing to do
                return replace(item, seq=repeat.seq)
        if category in DURABLE and event.stale > now and (party, event.uid) not in self.durable:
            self._check_quota(party)
        self.metrics.count_in(party, category.value)
        return self.submit(item)

    def _check_quota(self, party: str) -> None:
        """A party may hold at most `limit_durable_items_per_party` durable items in the
        picture at once (each is replayed to every entitled connection): past it, a new one
        is refused until some expire or are withdrawn; updates of held ones still go."""
        limit = self.settings.get_int("limit_durable_items_per_party")
        held = self._held[party]
        if held >= limit:
            raise RemoteProtocolError(
                "quota",
                f"{party} already holds {held} durable items in the picture "
                f"(limit_durable_items_per_party={limit}); let some expire or withdraw them",
            )

    def submit(self, item: Item) -> Item:
        """Store (if durable), record, then publish an accepted item to every hub process.

        A durable item and everything its publication sets off (fused events, notices,
        warnings, their ledger entries) are written in one transaction, committed before
        this returns — and so before any of it leaves the process: connections are flushed
        by the event loop only after the input that caused them has been handled.
        """
        return self._submit_many([item])[0]

    def _submit_many(self, items: list[Item]) -> list[Item]:
        """`submit` for several items: the durable ones stored and recorded in one batch,
        then each published in order."""
        durable = [i for i in items if i.category in DURABLE]
        if not durable:
            for item in items:
                self.bus.publish(item)
            return items
        with self.transaction():
            seqs = iter(self.store.append_many(durable))
            items = [replace(i, seq=next(seqs)) if i.category in DURABLE else i for i in items]
            now = self.clock()
            batch = [(i, self.route(i, now)) for i in items if i.category in DURABLE]
            for hook in self.on_durable:
                hook(batch)
            for item in items:
                self.bus.publish(item)
        return items

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One commit for the store and every writer in `transactions` (the ledger)."""
        if self._tx_depth:  # inside an outer block: join it
            yield
            return
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.store.transaction())
            for begin in self.transactions:
                stack.enter_context(begin())
            self._tx_depth += 1
            try:
                yield
            finally:
                self._tx_depth -= 1

    def publish_from_hub(
        self, event: CotEvent, category: Category, audience: Iterable[str]
    ) -> Item:
        """An item the hub makes (notice, fused event, warning) for exactly `audience`."""
        item = Item(
            party=HUB,
            user="hub",
            category=category,
            event=event,
            received=self.clock(),
            audience=tuple(sorted(set(audience))),
        )
        return self.submit(item)

    def publish_each_from_hub(
        self, events: Iterable[tuple[CotEvent, str]], category: Category
    ) -> list[Item]:
        """`publish_from_hub` of each event for its one party, stored and recorded in one
        batch (a fused launch event goes to every entitled party, each its own copy)."""
        now = self.clock()
        items = [
            Item(party=HUB, user="hub", category=category, event=e, received=now, audience=(p,))
            for e, p in events
        ]
        return self._submit_many(items)

    def _deliver(self, item: Item) -> None:
        rendered = self._rendered(item)
        durable = item.category in DURABLE
        now = self.clock()
        # A new version of a uid always supersedes the old one, whatever its category, and
        # one that arrives already stale removes it: what stays in the picture for others
        # must not depend on details (here: staleness) of an update they may not see.
        # (Popping first also makes the picture's order the order of last updates, which
        # likewise must not depend on anyone's invisible history.)
        self.live.pop(item.key, None)
        self._unhold(item.key)
        if item.event.stale > now:
            if durable:
                self._hold(item.key, rendered)
            else:
                self.live[item.key] = rendered
        routes = self.route(item, now)
        self._fan_out(rendered, routes, durable)
        for observer in self.observers:
            try:
                observer(item, routes)
            except Exception:
                # Our bug (a desk failed on an item it had accepted): logged with its
                # traceback; the item is stored and relayed, its sender keeps its connection.
                self.metrics.internal_error("observer")
                log.exception("a desk failed on item %s/%r", item.party, item.uid[:120])

    def route(self, item: Item, now: float) -> dict[str, Disclosure]:
        if item.audience:
            return {p: Disclosure.FULL for p in item.audience if p != item.party}
        routes = self.policy.route(item, now)
        if item.event.dest_callsigns and not item.event.dest_parties:
            # Directed by callsign: to each entitled party whose own clients use one of those
            # callsigns. Whether a party qualifies depends only on that party's own traffic,
            # so another party claiming the same callsign cannot divert or block it.
            wanted = set()
            for callsign in item.event.dest_callsigns:
                wanted |= self.callsigns.get(callsign, set())
            routes = {p: d for p, d in routes.items() if p in wanted}
        return routes

    def _fan_out(self, rendered: Rendered, routes: dict[str, Disclosure], durable: bool) -> None:
        item = rendered.item
        targets: list[tuple[str, Variant]] = [(item.party, "own")]
        targets.extend((party, _VARIANT[level]) for party, level in routes.items())
        for party, variant in targets:
            for conn in self.connections.get(party, ()):
                if conn.id != item.origin or not item.origin:
                    self._enqueue(conn, Pending(rendered, variant), durable)

    def _enqueue(self, conn: Connection, pending: Pending, durable: bool) -> None:
        overflow = conn.outbox.put(pending, durable)
        self._dirty.add(conn)
        if not self._flush_pending and self.call_soon is not None:
            self._flush_pending = True
            self.call_soon(self._flush)
        if overflow is None:
            return
        if overflow == "too_slow":
            self.metrics.drop("durable_too_slow")
            self.log_limited(
                log,
                "too_slow",
                conn.id,
                "closing %s/%s: more than limit_queue_durable=%d durable items pending",
                conn.party,
                conn.user,
                conn.outbox.limit_durable,
            )
            conn.close("too_slow")
        else:
            self.metrics.drop(overflow)

    def log_limited(
        self,
        logger: logging.Logger,
        reason: str,
        key: str,
        msg: str,
        *args: object,
        level: int = logging.WARNING,
    ) -> None:
        """A log line about a peer, rate-limited per reason and per `key` (a connection,
        address or party): see `commonsky.ratelog`."""
        self.logs.log(logger, level, reason, key, msg, *args)

    def _flush(self) -> None:
        self._flush_pending = False
        dirty, self._dirty = self._dirty, set()
        for conn in dirty:
            try:
                conn.flush()
            except Exception:  # our bug: this connection is closed, the others still flushed
                self.metrics.internal_error("flush")
                log.exception("flushing %s/%s failed; closing it", conn.party, conn.user)
                conn.close("internal_error")

    # ---- connections --------------------------------------------------------------------

    def admit(self, party: str) -> str | None:
        """Why a new connection of `party` may not open now (the setting it would exceed), or
        None. The hub-wide limit is shared by all parties; each party also has its own, so
        one party's idle sockets cannot lock the others out."""
        total = sum(len(group) for group in self.connections.values())
        if total >= self.settings.get_int("limit_connections"):
            return "limit_connections"
        if len(self.connections.get(party, ())) >= self.settings.get_int(
            "limit_connections_per_party"
        ):
            return "limit_connections_per_party"
        return None

    def attach(self, conn: Connection) -> None:
        """Register a connection and owe it the current picture it is entitled to.

        The picture is not queued at once: the outbox draws it page by page as the socket
        drains (`Outbox.replay`), so a picture of any size never trips the durable queue
        limit — each item is looked up again when its page is drawn, and skipped if it has
        been superseded (the newer version was queued to this connection already), went
        stale or may no longer be seen."""
        self.connections[conn.party].add(conn)
        self.metrics.child(self.metrics.connections, conn.listener, conn.party).inc()  # type: ignore[attr-defined]
        conn.outbox.replay(self._replay(conn.party))
        self._dirty.add(conn)
        if not self._flush_pending and self.call_soon is not None:
            self._flush_pending = True
            self.call_soon(self._flush)

    def _replay(self, party: str) -> Iterator[Pending]:
        # The picture as it is now (what is published from here on is queued as it comes).
        owed = [(pool, key, r) for pool in (self.durable, self.live) for key, r in pool.items()]
        return self._still_owed(party, owed)

    def _still_owed(
        self,
        party: str,
        owed: list[tuple[dict[tuple[str, str], Rendered], tuple[str, str], Rendered]],
    ) -> Iterator[Pending]:
        for pool, key, rendered in owed:
            if pool.get(key) is not rendered:
                continue
            variant = self._variant_for(rendered, party, self.clock())
            if variant is not None:
                yield Pending(rendered, variant)

    def visible(self, party: str, durable: bool = True) -> Iterator[tuple[Rendered, Variant]]:
        """The current picture as `party` may see it: durable items first, nothing stale
        (only the live items — tracks, positions — when `durable` is False)."""
        now = self.clock()
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
        now = self.clock()
        for key in keys:
            rendered = self.live.get(key)
            if rendered is not None:
                variant = self._variant_for(rendered, party, now)
                if variant is not None:
                    yield rendered, variant

    def _variant_for(self, rendered: Rendered, party: str, now: float) -> Variant | None:
        item = rendered.item
        if item.event.stale <= now:
            return None
        if item.party == party:
            return "own"
        level = self.cached_route(rendered, now).get(party)
        return None if level is None else _VARIANT[level]

    def cached_route(self, rendered: Rendered, now: float) -> dict[str, Disclosure]:
        """`route` for a picture item, computed once until the policy or directory changes."""
        if (
            rendered.routes is None
            or now >= rendered.routes_until
            or rendered.routes_epoch != self._directory_epoch
        ):
            rendered.routes = self.route(rendered.item, now)
            rendered.routes_until = self.policy.next_change(now)
            rendered.routes_epoch = self._directory_epoch
        return rendered.routes

    def resend(self, key: tuple[str, str], party: str) -> bool:
        """Queue a stored durable item again for every connection of one entitled party."""
        rendered = self.durable.get(key)
        if rendered is None:
            return False
        item = rendered.item
        if item.party == party:
            variant: Variant = "own"
        else:
            level = self.route(item, self.clock()).get(party)
            if level is None:
                return False
            variant = _VARIANT[level]
        for conn in self.connections.get(party, ()):
            self._enqueue(conn, Pending(rendered, variant), durable=True)
        return True

    def detach(self, conn: Connection) -> None:
        self._dirty.discard(conn)
        if conn in self.connections.get(conn.party, ()):
            self.connections[conn.party].discard(conn)
            self.metrics.child(self.metrics.connections, conn.listener, conn.party).dec()  # type: ignore[attr-defined]

    def all_connections(self) -> Iterable[Connection]:
        for group in self.connections.values():
            yield from group

    def prune(self) -> int:
        """Forget stale items from the current picture; returns how many went."""
        now = self.clock()
        gone = 0
        for key in [k for k, r in self.live.items() if r.item.event.stale <= now]:
            del self.live[key]
            gone += 1
        for key in [k for k, r in self.durable.items() if r.item.event.stale <= now]:
            self._unhold(key)
            gone += 1
        return gone

    def _hold(self, key: tuple[str, str], rendered: Rendered) -> None:
        self.durable[key] = rendered
        self._held[key[0]] += 1

    def _unhold(self, key: tuple[str, str]) -> None:
        if self.durable.pop(key, None) is not None:
            self._held[key[0]] -= 1

    def record_delivery(self, conn: Connection, batch: list[Pending]) -> None:
        counts: dict[str, int] = defaultdict(int)
        observe = self.metrics.latency.observe
        now = self.clock()
        # A scenario clock may run faster than real time; latency is reported in real seconds.
        rate = float(getattr(self.clock, "rate", 1.0))
        for pending in batch:
            item = pending.rendered.item
            counts[item.category.value] += 1
            observe((now - item.received) / rate)
        for category, n in counts.items():
            self.metrics.count_out(conn.party, category, n)


_json_encoder = msgspec.json.Encoder()


def item_json(item: Item, event: CotEvent) -> dict[str, Any]:
    """The JSON form of a delivered item (WebSocket and REST): CoT names, our category."""
    p = event.point
    return {
        "uid": event.uid,
        "type": event.type,
        "category": item.category.value,
        "party": item.party,
        "seq": item.seq,
        "time": event.time,
        "stale": event.stale,
        "lat": p.lat,
        "lon": p.lon,
        "hae": p.hae,
        "ce": p.ce,
        "le": p.le,
        "callsign": event.callsign,
        "speed": event.speed,
        "course": event.course,
        "detail": event.detail,
    }
