"""The hub's shared state: who is connected, the current picture, and routing.

One object, owned by one event loop (uvicorn's `ServerState` habit): listeners and the HTTP
API only call `accept`, `attach` and `detach`; desks stand on it through `add_desk` and see
it only as a `DeskView` (`desk.py`, `desk_view.py`). Every refusal is decided in `accept`,
before anything is stored or recorded. Routing is decided against the compiled policy by
the hub's `Router` (`routing.py`) and kept with the item; each distinct output (own / full /
generalized × XML / protobuf / JSON, and for an item naming a third party's item, per
distinct set of names: `naming.py`) is rendered once (`render.py`) and shared by every
connection that receives it (`connections.py` batches the writes).

Addressing (`<marti><dest …/>`, `connection.py`) narrows delivery to devices in every party;
an addressed item whose device is not connected waits in the picture and is delivered when
the device reports itself.

Deletes (`t-x-d-d`): only the owner may; see `deletes.py`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator

from msgspec.structs import replace

from commonsky.bus import Bus, LocalBus
from commonsky.errors import AlreadyRecorded, LocalProtocolError, Refused, StoreUnavailable
from commonsky.metrics import Metrics
from commonsky.model import (
    DURABLE,
    HUB,
    Category,
    CotEvent,
    Disclosure,
    Item,
    category_of_event,
    is_transient,
)
from commonsky.namespace import Key
from commonsky.policy import Policy
from commonsky.protocol.bounds import check_acceptable, check_event
from commonsky.protocol.cot import detail_tree
from commonsky.protocol.refs import RECEIPT_TYPES
from commonsky.ratelog import RateLimitedLog
from commonsky.settings import Settings
from commonsky.store import Store

from .connection import Connection as Connection  # (re-exported: adapters import it here)
from .connection import reaches
from .connections import Connections, Delivered, delivery, record_delivery
from .deletes import DELETE_TYPE, Deletes
from .desk import Desk, Recorder, give_restored
from .directory import Directory, device_callsign
from .naming import Naming, own_names
from .outbox import Pending, Rendered, Variant
from .picture import Picture
from .quarantine import Quarantine
from .receipts import Receipts, remembering
from .render import Renderer
from .render import item_json as item_json  # (re-exported)
from .routing import VARIANT, Routed, Router
from .withdraw import Withdrawals

log = logging.getLogger("commonsky.hub")


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
        directory: Directory | None = None,  # opened: the start's catch-up routes by it
    ) -> None:
        self.policy = policy
        self.store = store
        self.settings = settings
        self.secret = secret
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.bus = bus or LocalBus()
        self.directory = directory if directory is not None else Directory()
        self.parties = frozenset(policy.parties) | {HUB}  # every namespace a name may claim
        # Who receives what (hub/routing.py), over the picture and naming made next.
        self.router = Router(policy, self.parties, self.directory, lambda: self.clock())
        # What the hub holds now (hub/picture.py); `live` and `durable` are its two pools.
        self.picture = Picture(self.parties, self.router.variant_for, lambda: self.clock())
        self.live = self.picture.live
        self.durable = self.picture.durable
        # Desks (`add_desk`, hub/desk.py): each one's checks by category, in order.
        self._desks: list[Desk] = []
        self._checks: dict[Category, list[Desk]] = defaultdict(list)
        # What the desks' checks parsed for the item being accepted, by desk name, handed
        # to their `observe` for that very event (identity), then forgotten.
        self._parsed: tuple[CotEvent, dict[str, object]] | None = None
        # Recorders (`add_recorder`: the ledger): each records every durable item once it
        # is stored and before anyone receives it, and commits after the store (see
        # `transaction`), its pending writes journalled into the store's commit.
        self._recorders: list[Recorder] = []
        # Items applied inside the open transaction, published on the bus once it commits.
        self._unpublished: list[Item] = []
        self._tx_depth = 0
        self._grid = settings.generalize_grid_deg
        self.naming = Naming(
            self.parties,
            secret,
            self._grid,
            lookup=self.picture.lookup,
            keys=self.picture.keys,
            sees_full=self.router.sees_full,
        )
        self.router.bind(self.picture, self.naming)
        self.renderer = Renderer(self.naming, self.metrics)
        self.logs = RateLimitedLog()
        # Who is connected, and the write batching (hub/connections.py).
        self.wires = Connections(settings, self.metrics, self.logs, lambda: self.clock())
        self.connections = self.wires.by_party  # party -> its connections
        # Receipts and hub notices held for senders' devices, what they prove (receipts.py).
        self.receipts = Receipts(self.picture, self.parties, self.router.variant_for,
                                 self.connections, store.meta,
                                 remembering(store, self.transaction))  # fmt: skip
        self.handshaking: dict[str, int] = {}  # TLS connections not yet authenticated, by IP
        # The delete flow (hub/deletes.py), and withdrawals at agreements' ends (withdraw.py).
        self.withdrawals = Withdrawals(self.picture, self.router, self.wires, self._rendered,
                                       store)  # fmt: skip
        self.deletes = Deletes(
            parties=self.parties, picture=self.picture, routing=self.router, wires=self.wires,
            store=store, recorders=self._recorders, transaction=self.transaction,
            render=self._rendered, apply=self._apply, observe=self._observe,
            clock=lambda: self.clock(), owe=self.withdrawals.owe, forget=self.directory.deleted,
        )  # fmt: skip
        # Whatever is stored, the hub starts: an item it cannot load is set aside, reported.
        self.quarantine = quarantine if quarantine is not None else Quarantine(None)
        self.quarantine.counter = self.metrics.quarantined
        self.quarantine.rebuild("picture", store.active(clock()), self._load)
        self.receipts.loaded()
        self._quarantine_unreadable("picture")
        self.withdrawals.catch_up()  # what changed while it was down, what deletes owe
        self._quarantine_unreadable("deletes")  # (a stored delete's rows that do not decode)

    def add_desk(self, desk: Desk) -> None:
        """Let `desk` check the items of its categories before they are stored and observe
        every item as it is delivered, after the desks added before it (hub/desk.py)."""
        if any(d.name == desk.name for d in self._desks):
            raise LocalProtocolError(f"a desk named {desk.name!r} is on this hub already")
        self._desks.append(desk)
        for category in desk.categories:
            self._checks[category].append(desk)

    def restored(self, items: list[Item]) -> None:
        """Live items a cluster core restored at a takeover, to the desks (`give_restored`)."""
        give_restored(self._desks, items, self.metrics)

    def add_recorder(self, recorder: Recorder) -> None:
        """Have `recorder` record every durable item in the store's transaction, after the
        recorders added before it (hub/desk.py)."""
        self._recorders.append(recorder)

    def _load(self, item: Item) -> None:
        if is_transient(item.event.type):  # stored for the record, never in the picture
            if item.event.type in RECEIPT_TYPES:  # (but held for the sender: receipts.py)
                check_event(item.event)
                self.receipts.load(self._rendered(item))
            return
        if item.party != HUB:
            # The type table is the only place that decides: an item stored under an
            # older table (a CASEVAC stored as `alert`) is routed by today's.
            category = category_of_event(item.event)
            if category is None or category not in DURABLE:
                return
            if category is not item.category:
                item = replace(item, category=category)
        # The rules every accepted item passed, and a detail that parses (the protobuf form
        # and the desks read it): what fails here would fail for every recipient.
        check_event(item.event)
        if item.event.detail:
            detail_tree(item.event.detail)
        self.picture.add(item, self._rendered(item))

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
                self.picture.remove((entry.party, entry.uid))
        return done

    def quarantine_item(self, item: Item, where: str, reason: str) -> None:
        """A desk could not rebuild this stored item (see quarantine.py): set it aside and
        out of the picture."""
        self.quarantine.add(item.seq, where, reason, item)
        rendered = self.durable.get(item.key)
        if rendered is not None and rendered.item.seq == item.seq:
            self.picture.remove(item.key)

    def _quarantine_unreadable(self, where: str) -> None:
        for seq, reason in sorted(getattr(self.store, "unreadable", {}).items()):
            self.quarantine.add(seq, where, reason)

    # ---- rendering ----------------------------------------------------------------------

    def _rendered(self, item: Item) -> Rendered:
        return self.renderer.rendered(item)

    def event_for(self, item: Item, variant: Variant) -> CotEvent:
        """`item`'s event as delivered under `variant`."""
        return self.naming.event(self._rendered(item), variant)

    # ---- inbound ------------------------------------------------------------------------

    def accept(
        self,
        party: str,
        user: str,
        event: CotEvent,
        sender: Connection | None = None,
        *,
        audience: tuple[str, ...] = (),
        origin: str = "",
        refuse_unrouted: Collection[Category] = (),
    ) -> Item:
        """Take one event from an authenticated party; raise RemoteProtocolError to refuse.

        Every path (TAK XML, TAK protobuf, the API, a federation link) comes through here,
        so the rule of what an item may hold (`check_event`: what every output can carry) is
        checked here. A federation link gives `audience` (the parties the item's own hub
        decided it is for: delivered to exactly those, see `route`) and `origin` (its
        provenance; a connection's id otherwise). An item of a category in
        `refuse_unrouted` that no agreement routes to anyone now is refused (reason
        `no_agreement`, HTTP 403) before anything is stored or recorded (the API's hotline)."""
        check_acceptable(event)
        event = own_names(party, event, self.parties)
        now = self.clock()
        if event.type == DELETE_TYPE:
            return self.deletes.accept(party, user, event, sender, now, origin)
        category = category_of_event(event)
        callsign = device_callsign(event)
        if callsign is not None:
            self._register(party, event.uid, callsign, sender)
        item = Item(
            party=party,
            user=user,
            category=category or Category.OTHER,
            event=event,
            received=now,
            origin=sender.id if sender else origin,
            audience=audience,
        )
        if category is None:
            # Types that never leave the party: relayed to it once, not kept.
            self._fan_out(self._rendered(item), {}, durable=False, transient=True)
            return item
        parsed: dict[str, object] = {}
        for desk in self._checks.get(category, ()):
            try:
                result = desk.check(party, event)
            except AlreadyRecorded as repeat:  # a retry of what is held: nothing to do
                return replace(item, seq=repeat.seq)
            if result is not None:
                parsed[desk.name] = result
        if category in DURABLE and event.stale > now and (party, event.uid) not in self.durable:
            self.picture.check_quota(party, self.settings.limit_durable_items_per_party)
        routed: Routed | None = None
        if category in refuse_unrouted:
            routed = self.router.routed(item, now)
            if not routed[0]:
                raise Refused(
                    403, "no agreement in force lets this message reach anyone", "no_agreement"
                )
        self.metrics.count_in(party, category._value_)  # (`.value`, read as cheaply)
        outer, self._parsed = self._parsed, (event, parsed) if parsed else None
        try:
            item = self._submit_many([item], routed)[0]
        finally:
            self._parsed = outer  # (an accept nested in a desk's observe leaves it whole)
        if callsign is not None:  # (accepted: its last report, for clientEndPoints)
            self.directory.saw(party, event, now, bool(audience))
        return item

    def _register(self, party: str, uid: str, callsign: str, sender: Connection | None) -> None:
        """A device's report of itself: learn its callsign; give a connection reporting a
        device for the first time (or under a new callsign) what waits addressed to it."""
        self.directory.report(party, uid, callsign)
        if sender is None or sender.devices.get(uid) == callsign:
            return  # (the steady state: a device reporting itself again)
        before = dict(sender.devices)
        sender.devices[uid] = callsign
        sender.callsigns = set(sender.devices.values())
        self.give_devices(sender, {uid: callsign}, before)

    def give_devices(self, conn: Connection, new: dict[str, str], before: dict[str, str]) -> None:
        """Queue for `conn` what it is owed now that devices `new` (uid -> callsign) reported
        themselves on it, its devices having been `before` (`Receipts.owed`)."""
        for pending, durable in self.receipts.owed(conn, new, before, self.clock()):
            self.wires.enqueue(conn, pending, durable)

    def submit(self, item: Item) -> Item:
        """Store (if durable), record, then publish an accepted item to every hub process.

        A durable item and everything its publication sets off (fused events, notices,
        warnings, their ledger entries) are written in one transaction, committed before
        this returns — and so before any of it leaves the process: connections are flushed
        by the event loop only after the input that caused them has been handled.
        """
        return self._submit_many([item])[0]

    def _submit_many(self, items: list[Item], routed: Routed | None = None) -> list[Item]:
        """`submit` for several items: the durable ones stored and recorded in one batch,
        then each published in order. Each item is routed once: the routes the ledger
        records are the ones kept with it for delivery (`cached_route`); `routed` gives
        those `accept` computed already for a single item."""
        durable = [i for i in items if i.category in DURABLE]
        if not durable:
            for item in items:
                self._apply(item, self._prepared(item, routed))
            return items
        with self.transaction():
            seqs = iter(self.store.append_many(durable))
            items = [replace(i, seq=next(seqs)) if i.category in DURABLE else i for i in items]
            now = self.clock()
            prepared = [self._prepared(i, routed) for i in items]
            route = self.router.cached_route
            batch = [(r.item, route(r, now)) for r in prepared if r.item.category in DURABLE]
            for recorder in self._recorders:
                recorder.record(batch)
            for rendered in prepared:
                self._apply(rendered.item, rendered)
        return items

    def _prepared(self, item: Item, routed: Routed | None) -> Rendered:
        """`item`'s shared wire forms (made on demand), with routes already known kept."""
        rendered = self._rendered(item)
        if routed is not None:
            rendered.routes, rendered.routes_until, rendered.routes_epoch = routed
        held = self._parsed
        if held is not None and held[0] is item.event:  # what accept's checks read of it
            rendered.parsed = tuple(held[1].values())
        return rendered

    def _apply(self, item: Item, rendered: Rendered | None = None) -> None:
        """Apply an item in this process (the picture, its recipients' outboxes, the desks)
        and publish it on the bus for other processes — once what it is part of commits.

        Outboxes are flushed by the event loop after the current input, so nothing of the
        item leaves the process before the commit either; what the desks write because of
        it joins the same commit."""
        if self._tx_depth:
            self._unpublished.append(item)  # (before what its delivery sets off: causal order)
            self._deliver(item, rendered)
        else:
            self._deliver(item, rendered)
            self.bus.publish(item)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One unit for the store and every recorder (the ledger): the store commits first,
        with each recorder's journal of what it commits next (so a crash between the commits
        is repaired at the next start), then the recorders. Items applied
        inside are published on the bus after the commits, in order. Blocks nest."""
        if self._tx_depth:  # inside an outer block: join it
            yield
            return
        try:
            with contextlib.ExitStack() as stack:
                for recorder in self._recorders:
                    # Entered first, so left (committed) last.
                    stack.enter_context(recorder.transaction())
                stack.enter_context(self.store.transaction())
                for recorder in self._recorders:
                    # Run inside the store's block, before its commit.
                    stack.callback(recorder.journal, self.store)
                self._tx_depth += 1
                try:
                    yield
                finally:
                    self._tx_depth -= 1
        except StoreUnavailable:
            self._unpublished.clear()  # the commit did not happen: nothing to publish
            raise
        finally:
            # (Left by another error, the block still committed what it wrote: the store
            # commits on the way out, as for an item already relayed.)
            published, self._unpublished = self._unpublished, []
            for item in published:
                self.bus.publish(item)

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

    def _deliver(self, item: Item, rendered: Rendered | None = None) -> None:
        if item.event.type == DELETE_TYPE and item.party != HUB:
            self.deletes.apply(item)
            return
        if rendered is None:
            rendered = self._rendered(item)
        durable = item.category in DURABLE
        transient = is_transient(item.event.type)
        now = self.clock()
        if transient:
            self.picture.end(item, durable)  # (relayed, never kept)
        elif self.picture.place(rendered, durable, now):  # (supersedes the uid's version)
            self.naming.entered(Key(*item.key))
        routes = self.router.cached_route(rendered, now)  # kept with it: replays reuse it
        self._fan_out(rendered, routes, durable, transient)
        if transient:
            self.receipts.relayed(rendered, routes)  # (a receipt: held for its sender)
        self._observe(item, routes)

    def _observe(self, item: Item, routes: dict[str, Disclosure]) -> None:
        held = self._parsed
        parsed = held[1] if held is not None and held[0] is item.event else {}
        for desk in self._desks:
            try:
                desk.observe(item, routes, parsed.get(desk.name))
            except Exception:
                # Our bug (a desk failed on an item it had accepted): logged with its
                # traceback; the item is stored and relayed, its sender keeps its connection.
                self.metrics.internal_error("observer")
                log.exception("a desk failed on item %s/%r", item.party, item.uid[:120])

    def route(self, item: Item, now: float) -> dict[str, Disclosure]:
        """`Router.route`: the other parties that receive `item` now, and in which form."""
        return self.router.route(item, now)

    def chat_key(self, name: Key) -> tuple[str, str] | None:
        """`Picture.chat_key`: the key of the GeoChat message whose message id is `name`."""
        return self.picture.chat_key(name)

    def receivers(self, party: str, event: CotEvent) -> set[str]:
        """`Router.receivers`: the parties `event` would reach if `party` sent it now."""
        return self.router.receivers(party, event)

    def _fan_out(
        self,
        rendered: Rendered,
        routes: dict[str, Disclosure],
        durable: bool,
        transient: bool = False,
    ) -> None:
        """Queue an item for every connection that receives it. Durable items and transient
        messages are never merged or dropped; live ones may be, for a reader that is behind."""
        durable = durable or transient
        item = rendered.item
        targets: list[tuple[str, Variant]] = [(item.party, "own")]
        seen, variant = rendered.seen, self.router.variant
        for party, level in routes.items():
            forms = seen.get(party)
            if forms is None:
                seen[party] = {VARIANT[level]}
            else:
                forms.add(VARIANT[level])
            targets.append((party, variant(rendered, party, level)))
        e = item.event
        addressed = bool(e.dest_parties or e.dest_callsigns or e.dest_uids)
        origin, connections, enqueue_each = item.origin, self.connections, self.wires.enqueue_each
        for party, form in targets:
            conns = connections.get(party)
            if not conns:
                continue
            pending = Pending(rendered, form)  # shared: nobody changes a Pending
            if addressed:
                conns = {c for c in conns if reaches(item, c, self.parties)}
            # (not echoed to the connection it came from: `origin`)
            enqueue_each(conns, pending, durable, skip=origin)

    def log_limited(
        self,
        logger: logging.Logger,
        reason: str,
        key: str,
        msg: str,
        *args: object,
        level: int = logging.WARNING,
        exc_info: bool = False,
    ) -> None:
        """A log line about a peer, rate-limited per reason and per `key` (a connection,
        address or party): see `commonsky.ratelog`."""
        self.logs.log(logger, level, reason, key, msg, *args, exc_info=exc_info)

    # ---- connections --------------------------------------------------------------------

    @property
    def call_soon(self) -> Callable[[Callable[[], None]], object] | None:
        """The event loop's `call_soon` (None without a loop): batches writes and desks'
        deferred work to the end of each burst of input."""
        return self.wires.call_soon

    @call_soon.setter
    def call_soon(self, call_soon: Callable[[Callable[[], None]], object] | None) -> None:
        self.wires.call_soon = call_soon

    def admit(self, party: str) -> str | None:
        """`Connections.admit`: why a new connection of `party` may not open now, or None."""
        return self.wires.admit(party)

    def attach(self, conn: Connection) -> None:
        """Register a connection and owe it the current picture it is entitled to.

        The picture is not queued at once: the outbox draws it page by page as the socket
        drains (`Outbox.replay`), so a picture of any size never trips the durable queue
        limit — each item is looked up again when its page is drawn, and skipped if it has
        been superseded (the newer version was queued to this connection already), went
        stale or may no longer be seen. What is addressed to devices is given when the
        device reports itself."""
        self.wires.add(conn)
        conn.outbox.replay(self.withdrawals.replay(conn, self.picture.replay(conn)))
        self.wires.opened(conn)

    def visible(self, party: str, durable: bool = True) -> Iterator[tuple[Rendered, Variant]]:
        """`Picture.visible`: the current picture as `party` may see it."""
        return self.picture.visible(party, durable)

    def visible_live(
        self, party: str, keys: Iterable[tuple[str, str]]
    ) -> Iterator[tuple[Rendered, Variant]]:
        """`Picture.visible_live`: `visible(party, durable=False)` for just these keys."""
        return self.picture.visible_live(party, keys)

    def resend(self, key: tuple[str, str], party: str) -> bool:
        """Queue a stored durable item again for every connection of one entitled party."""
        rendered = self.durable.get(key)
        if rendered is None:
            return False
        variant = self.router.variant_for(rendered, party, self.clock())
        if variant is None:
            return False
        for conn in self.connections.get(party, ()):
            if reaches(rendered.item, conn, self.parties):
                self.wires.enqueue(conn, Pending(rendered, variant), durable=True)
        return True

    def detach(self, conn: Connection) -> None:
        self.wires.remove(conn)

    def all_connections(self) -> Iterable[Connection]:
        return iter(self.wires)

    def prune(self) -> int:
        """Forget stale items from the current picture; returns how many went."""
        gone = self.picture.prune(self.clock())
        self.receipts.prune(self.clock())
        if gone:
            self.naming.forget(lambda k: self.picture.lookup(k) is not None)
        return gone

    def record_delivery(
        self, conn: Connection, batch: list[Pending], delivered: Delivered | None = None
    ) -> None:
        """Count `batch` as written to `conn`: items out by category, and each item's
        latency from acceptance. `delivered` is `delivery(batch)` made already (the same
        batch written to several connections is summed up once: `Connections.shared`)."""
        record_delivery(self.metrics, conn, delivered or self.delivery(batch))

    def delivery(self, batch: list[Pending]) -> Delivered:
        """`delivery(batch, clock, metrics)` on this hub's clock and metrics."""
        return delivery(batch, self.clock, self.metrics)
