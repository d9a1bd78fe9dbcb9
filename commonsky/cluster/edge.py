"""An edge: TAK clients' connections in front of the cluster's core.

The TAK listeners (hub/listeners.py) run unchanged on an `EdgeHub`: the small part of `Hub`
they use (settings, metrics, clock, policy, log_limited, admit, attach, accept, detach,
record_delivery, handshaking). Sockets, TLS, framing, pings, sessions, the party stamped from
the connection and the bounded per-connection outboxes (hub/outbox.py, hub/connections.py)
all stay here; so do the refusals that need only the event itself (`check_event`, the
parser's). What needs the hub's state (policy routing, desks, quotas, the store) is the
core's: `accept` hands the event to the inbound stream (`EdgeLink`) and returns.

The core's outputs come back rendered for each client (`wire.Delivery`) and go into that
client's outbox as they are; a client connecting gets its picture from the KV bucket
(`picture_kv.read_picture`) before it is announced to the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import msgspec

from commonsky import probe
from commonsky.errors import LocalProtocolError, RemoteProtocolError, StoreUnavailable
from commonsky.hub.connection import Connection
from commonsky.hub.connections import Connections, Delivered, delivery, record_delivery
from commonsky.hub.directory import device_callsign
from commonsky.hub.outbox import Pending, Rendered
from commonsky.metrics import Metrics
from commonsky.model import Category, CotEvent, Item, category_of_event
from commonsky.policy import Policy
from commonsky.protocol.bounds import check_acceptable
from commonsky.protocol.cot import XmlLimits, parse_event
from commonsky.protocol.render import render
from commonsky.protocol.session import TakSession
from commonsky.protocol.stream import MessageRefused
from commonsky.ratelog import RateLimitedLog
from commonsky.settings import Settings

from .edge_long import end_holdings, long_messages, output_limits
from .picture_kv import entry_json, read_picture
from .stream_acks import StreamPublisher
from .wire import (
    BEAT_S,
    Attach,
    ConnInfo,
    Delivery,
    Detach,
    Ingest,
    Names,
    PictureEntry,
    Roster,
    delivery_decoder,
    encode,
)

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

log = logging.getLogger("commonsky.cluster")

_VARIANT = "edge"  # (one form per output: the core chose it for this client)
_PUBLISH_BATCH = 1000  # inbound messages published and awaiting their acknowledgements, at most
_ACK_TIMEOUT_S = 5.0
_BEAT_ROOM = 4096  # bytes of a NATS message a beat's roster leaves to the rest
# What an edge holds unpublished while the stream is away, in messages, is bounded by ten
# connections' worth of outbox (limit_queue_tracks + limit_queue_durable: 150,000 by default);
# past it new events are refused (`EdgeBacklogged`), what was accepted before is kept.
_BACKLOG_OUTBOXES = 10
# The bucket's live entries (tracks, positions) wait for the core's word that it handled the
# client's Attach (`Delivery.attached`): the core sends a newer version of any the bucket holds
# an older one of (it writes live entries within spread.LIVE_EVERY_S), and a client must not
# get the older one first, where the single process gives the current version once. With no
# core to answer, they go to the client after this long.
LIVE_HOLD_S = 2.0


def backlog_limit(settings: Settings) -> int:
    """Messages an edge may hold unpublished (at least one publish batch)."""
    per_outbox = settings.limit_queue_tracks + settings.limit_queue_durable
    return max(_PUBLISH_BATCH, _BACKLOG_OUTBOXES * per_outbox)


class EdgeBacklogged(StoreUnavailable):
    """The edge holds `backlog_limit` messages it could not publish yet (NATS away): the
    event is not taken, and its connection is closed so that the client sends it again when
    it reconnects (as when the single process's store cannot write)."""

    reason = "edge_backlog"


@dataclass(slots=True, frozen=True)
class EdgeItem:
    """What the edge's outbox and counters read of an output's item (`Item`'s `key`,
    `category`, `received`), without the event: the edge never decodes what it relays."""

    key: tuple[str, str]
    category: Category
    received: float


def _convert(rendered: Rendered, variant: str, mode: str) -> bytes:
    """An output in another wire form than the core rendered (the client switched to TAK
    protobuf meanwhile): parsed from its XML and written again."""
    xml = rendered.cache.get((variant, "xml"))
    if xml is None:
        raise LocalProtocolError(f"no XML form of {rendered.item.key[1]!r} to write as {mode}")
    # (the core's own rendering, trusted and already bounded: its names' prefixes may take
    # it past the limits a client's input is read within, so its own length bounds it)
    return render(parse_event(xml, XmlLimits(len(xml), 1024, len(xml))), mode)


def edge_pending(party: str, uid: str, category: str, received: float, mode: str,
                 data: bytes) -> Pending:  # fmt: skip
    """One output, as the edge's outbox holds it."""
    item = EdgeItem((party, uid), to_category(category), received)
    rendered = Rendered(item=cast(Item, item), make=_convert)
    rendered.cache[(_VARIANT, mode)] = data
    return Pending(rendered, _VARIANT)


class EdgeHub:
    """The surface of `Hub` the TAK listeners use, for an edge process."""

    def __init__(self, edge: str, policy: Policy, settings: Settings,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.edge = edge
        self.policy = policy
        self.settings = settings
        self.clock = clock
        self.metrics = Metrics()
        self.logs = RateLimitedLog()
        long = long_messages(settings, policy, clock, self.logs)  # (edge_long.py)
        self.wires = Connections(settings, self.metrics, self.logs, held=long)
        self.handshaking: dict[str, int] = {}
        self.by_id: dict[str, Connection] = {}
        self.link: EdgeLink | None = None  # set by EdgeLink
        self.unknown = 0  # outputs for clients no longer here
        # conn id -> the bucket's live entries read for it, by item key, until the core has
        # handled its Attach (LIVE_HOLD_S)
        self.held_live: dict[str, dict[tuple[str, str], Pending]] = {}

    def log_limited(self, logger: logging.Logger, reason: str, key: str, msg: str, *args: object,
                    level: int = logging.WARNING, exc_info: bool = False) -> None:  # fmt: skip
        self.logs.log(logger, level, reason, key, msg, *args, exc_info=exc_info)

    def admit(self, party: str) -> str | None:
        return self.wires.admit(party)

    def attach(self, conn: Connection) -> None:
        """A client came: held here at once; its picture read and the core told (`EdgeLink`)."""
        self.wires.add(conn)
        self.by_id[conn.id] = conn
        if self.link is not None:
            self.link.attached(conn)

    def detach(self, conn: Connection) -> None:
        self.wires.remove(conn)
        self.held_live.pop(conn.id, None)
        if self.by_id.pop(conn.id, None) is not None and self.link is not None:
            self.link.detached(conn)

    def accept(self, party: str, user: str, event: CotEvent,
               sender: Connection | None = None) -> None:  # fmt: skip
        """The refusals that need only the event (what every output can carry; a TAK
        server's mission notices), then the event to the core. Raises RemoteProtocolError."""
        check_acceptable(event)
        assert sender is not None and self.link is not None
        callsign = device_callsign(event)
        if callsign is not None:
            sender.devices[event.uid] = callsign  # (re-announced to a new core: addressing)
        category = category_of_event(event)
        self.metrics.count_in(party, category.value if category else "other")
        if probe.ON:
            probe.stamp("edge_accept", event.detail, self.edge)
        self.link.ingest(sender, user, event, self.clock())

    def deliver(self, delivery: Delivery) -> None:
        """The core's outputs into their clients' outboxes (written after this burst)."""
        made = [
            (edge_pending(o.party, o.uid, o.category, o.received, o.mode, o.data), o.durable)
            for o in delivery.outputs
        ]  # (each shared by the clients that get it: nobody changes a Pending)
        by_id, enqueue_each, held = self.by_id, self.wires.enqueue_each, self.held_live
        if self.wires.held:  # (what it ends of the long forms held: edge_long.py)
            end_holdings(self.wires.held, delivery)
        if delivery.attached:
            self._attached(delivery, made)
        for conn_ids, indexes in delivery.sends:
            conns = [conn for conn in map(by_id.get, conn_ids) if conn is not None]
            self.unknown += (len(conn_ids) - len(conns)) * len(indexes)
            if not conns:
                continue
            for at in indexes:  # (each output to all of them, then the next: in order)
                enqueue_each(conns, *made[at])
            if held:  # (the core's version is the newer one)
                for conn_id in conn_ids:
                    if conn_id in held:
                        self._unhold(conn_id, [made[at][0] for at in indexes])
        for conn_id, reason in delivery.close:
            conn = self.by_id.get(conn_id)
            if conn is not None:
                conn.close(reason)
        for conn_id, reason, message in delivery.refused:
            conn = self.by_id.get(conn_id)
            session = getattr(conn.peer, "session", None) if conn is not None else None
            if conn is not None and isinstance(session, TakSession):
                # (Counted by the core; here the session's own count, which may close it.)
                self.log_limited(log, reason, conn_id, "edge: %s/%s refused by the core (%s): %s",
                                 conn.party, conn.user, reason, message[:300])  # fmt: skip
                close = session.refused(MessageRefused(reason, message))
                if close is not None:
                    conn.close(close)
        # Written now: a delivery is the core's burst already (a flush round would wait up
        # to FLUSH_INTERVAL_S for more).
        self.wires.flush()

    def _attached(self, delivery: Delivery, made: list[tuple[Pending, bool]]) -> None:
        """The core handled these clients' Attach: the bucket's live entries held for them go
        first — they are the older part of the picture, before the core's rest and anything
        live in this delivery — but those the core sends them here, in a newer version."""
        attached = {conn_id for conn_id in delivery.attached if conn_id in self.held_live}
        for conn_ids, indexes in delivery.sends:
            for conn_id in attached.intersection(conn_ids):
                self._unhold(conn_id, [made[at][0] for at in indexes])
        for conn_id in attached:
            self.release(conn_id)

    def _unhold(self, conn_id: str, sent: list[Pending]) -> None:
        """The bucket's live entries held for `conn_id` that the core sent it (`sent`)
        anew are not given: the core's version is the newer one."""
        held = self.held_live[conn_id]
        for pending in sent:
            held.pop(pending.rendered.item.key, None)

    def release(self, conn_id: str) -> None:
        """The bucket's live entries held for a client, to its outbox: the core has handled
        its Attach (or did not answer within LIVE_HOLD_S); those it sent meanwhile are gone."""
        held = self.held_live.pop(conn_id, None)
        conn = self.by_id.get(conn_id)
        if held and conn is not None:
            for pending in held.values():
                self.wires.enqueue(conn, pending, False)

    def record_delivery(self, conn: Connection, batch: list[Pending],
                        delivered: Delivered | None = None) -> None:  # fmt: skip
        """`Hub.record_delivery`: `batch` counted as written to `conn`."""
        record_delivery(self.metrics, conn, delivered or self.delivery(batch))

    def delivery(self, batch: list[Pending]) -> Delivered:
        """`Hub.delivery`: what writing `batch` counts; latency from the core's acceptance."""
        return delivery(batch, self.clock, self.metrics)

    def roster(self, announced: set[str]) -> Roster:
        return Roster(self.edge, [info(c) for c in self.by_id.values() if c.id in announced])


def page_replay(hub: EdgeHub, entries: list[PictureEntry]) -> list[Pending]:
    """A map page's picture from the bucket, as the JSON the core would send it; an entry
    that cannot be read is left out (logged, counted), as the hub leaves out an item it
    cannot render."""
    limits = output_limits(hub.settings)  # (the core's rendering: edge_long.py)
    made: list[Pending] = []
    failed: list[str] = []
    for e in entries:
        try:
            data = entry_json(e, limits)
        except Exception as exc:  # (one line for the read, below: not one per entry)
            hub.metrics.render_failed("json")
            failed.append(f"{e.party}/{e.uid[:120]!r}: {str(exc)[:200]}")
            continue
        made.append(edge_pending(e.party, e.uid, e.category, e.received, "json", data))
    if failed:
        log.error("edge: %d picture entries unreadable as JSON, left out; the first, %s",
                  len(failed), failed[0])  # fmt: skip
    return made


def read_delivery(data: bytes) -> Delivery:
    """The core's `Delivery` from its bytes, each output's index and category checked.
    Raises ValueError."""
    try:
        delivery = delivery_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a delivery: {exc}") from None
    count = len(delivery.outputs)
    for _, indexes in delivery.sends:
        if indexes and (min(indexes) < 0 or max(indexes) >= count):
            raise ValueError(f"an output index past its {count} outputs")
    for output in delivery.outputs:
        to_category(output.category)  # (ValueError)
    return delivery


_CATEGORIES = {c.value: c for c in Category}


def to_category(value: str) -> Category:
    """`Category(value)` by a dictionary look-up (an Enum call costs several per output).
    Raises ValueError."""
    found = _CATEGORIES.get(value)
    if found is None:
        raise ValueError(f"{value[:40]!r} is not a category")
    return found


def info(conn: Connection) -> ConnInfo:
    return ConnInfo(conn.id, conn.party, conn.user, conn.listener, conn.address, conn.mode(),
                    dict(conn.devices), conn.oversight)  # fmt: skip


def roster_parts(roster: Roster, budget: int) -> list[bytes]:
    """`roster` as messages of about `budget` bytes at most: NATS takes none over its
    max_payload, and a roster over it (some 5,000 clients, or one client's 20,000 devices)
    was never sent — the core, hearing no beat, dropped every client of the edge. A
    client's devices are split over parts when they alone are more; the core takes the
    parts as one (`ClusterCore._take_roster`)."""
    whole = encode(roster)
    if len(whole) <= budget:
        return [whole]
    parts: list[bytes] = []
    chunk: list[ConnInfo] = []
    size = 0
    for info in roster.conns:
        pieces = _pieces(info, budget // 2)
        for piece in pieces:
            n = len(encode(piece))
            if chunk and size + n > budget:
                parts.append(encode(Roster(roster.edge, chunk)))
                chunk, size = [], 0
            chunk.append(piece)
            size += n
    return [*parts, encode(Roster(roster.edge, chunk))]


def _pieces(info: ConnInfo, budget: int) -> list[ConnInfo]:
    """`info` with its devices split into pieces of about `budget` bytes (one at least)."""
    pieces: list[ConnInfo] = []
    devices, at = list(info.devices.items()), 0
    while not pieces or at < len(devices):
        taken: dict[str, str] = {}
        room = budget
        while at < len(devices) and (not taken or room > 0):
            uid, callsign = devices[at]
            taken[uid] = callsign
            room -= len(uid) + len(callsign) + 8
            at += 1
        pieces.append(msgspec.structs.replace(info, devices=taken))
    return pieces


class EdgeLink:
    """The edge's NATS side: publishes to the inbound stream in the order things happened
    (a client's Attach before its events: its events wait while its picture is read),
    receives the core's deliveries, answers roster requests and beats. `stream` is what
    `_sender` publishes with (`StreamAcks`, started, in the product); `js` publishes again
    what it did not see acknowledged (`_acker`), and reads the picture's bucket `kv`."""

    def __init__(self, hub: EdgeHub, nc: Client, js: JetStreamContext, kv: KeyValue,
                 names: Names, stream: StreamPublisher) -> None:  # fmt: skip
        self.hub = hub
        hub.link = self
        self.nc, self.js, self.kv, self.names = nc, js, kv, names
        self.stream = stream
        self.subject = names.ingest(hub.edge)
        self.run_id = f"{hub.edge}.{secrets.token_hex(4)}"
        self._count = itertools.count(1)
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.waiting: dict[str, list[tuple[str, bytes]]] = {}  # conn id -> its held events
        self.announced: set[str] = set()
        self.published = 0
        self.taken = 0  # messages put in `queue` or `waiting`; taken - published are held here
        self.limit = backlog_limit(hub.settings)
        self.tasks: list[asyncio.Task[None]] = []
        # Published batches awaiting their acknowledgements, in order (`_acker`).
        self._unacked: asyncio.Queue[
            tuple[list[tuple[str, bytes]], list[asyncio.Future[Any] | None]]
        ] = asyncio.Queue()
        self.in_flight = 0
        self._room = asyncio.Event()
        self._healthy = asyncio.Event()  # cleared while the acker publishes again
        self._healthy.set()

    def _id(self) -> str:
        return f"{self.run_id}.{next(self._count)}"

    @property
    def unpublished(self) -> int:
        """Messages this edge holds that the stream has not acknowledged yet."""
        return self.taken - self.published

    def _put(self, item: tuple[str, bytes]) -> None:
        self.taken += 1
        self.queue.put_nowait(item)

    def ingest(self, conn: Connection, user: str, event: CotEvent, now: float) -> None:
        """`event` to the stream, behind what came before. Raises EdgeBacklogged (counted
        as refusal `edge_backlog`) when `limit` messages are unpublished already, and
        RemoteProtocolError (`oversized`) for one NATS would not carry."""
        if self.unpublished >= self.limit:
            self.hub.metrics.refuse(EdgeBacklogged.reason)
            raise EdgeBacklogged(
                f"edge {self.hub.edge} holds {self.unpublished} messages the cluster's stream "
                "has not taken yet (NATS unreachable)"
            )
        msg_id = self._id()
        data = encode(Ingest(msg_id, self.hub.edge, conn.id, conn.party, user, conn.mode(),
                             event, now))  # fmt: skip
        if len(data) > self.nc.max_payload:
            # (Not at start, `trust.beyond_nats`: the server's limit was lowered since. Held,
            # it would be published again forever, and nothing behind it.)
            most = self.nc.max_payload
            raise RemoteProtocolError(
                "oversized", f"event of {len(data)} bytes in its envelope: NATS takes {most}"
            )
        held = self.waiting.get(conn.id)
        if held is not None:
            self.taken += 1
            held.append((msg_id, data))
        else:
            self._put((msg_id, data))

    def attached(self, conn: Connection) -> None:
        self.waiting[conn.id] = []
        self.tasks.append(asyncio.create_task(self._announce(conn)))

    async def _announce(self, conn: Connection) -> None:
        replayed: int | None = None
        unread: list[str] = []
        try:
            read = await read_picture(self.kv, conn.party, self.hub.clock())
            entries, replayed, unread = read.entries, read.top, read.unread
        except Exception as exc:  # NATS away: the core will send it the whole picture
            log.warning("edge %s: picture of %s unread (%s); the core sends it",
                        self.hub.edge, conn.party, exc)  # fmt: skip
            entries = []
        if unread:
            self.hub.metrics.cluster_drop("picture_entry")
        here = conn.id in self.hub.by_id
        if here and entries:
            # (In XML; a client that speaks protobuf gets each converted as it is drawn; a
            # map page its JSON, made here: cluster/edge_http.py.)
            def made(es: list[PictureEntry]) -> list[Pending]:
                if conn.mode() == "json":
                    return page_replay(self.hub, es)
                return [edge_pending(e.party, e.uid, e.category, e.received, "xml", e.xml)
                        for e in es]  # fmt: skip

            conn.outbox.replay(iter(made([e for e in entries if e.durable])))
            live = {p.rendered.item.key: p for p in made([e for e in entries if not e.durable])}
            if live:  # (after the core's word: LIVE_HOLD_S)
                self.hub.held_live[conn.id] = live
                asyncio.get_running_loop().call_later(LIVE_HOLD_S, self.hub.release, conn.id)
            self.hub.wires.mark(conn)
        self._put((self._id(), encode(Attach(self.hub.edge, info(conn), replayed, unread))))
        for held in self.waiting.pop(conn.id, []):
            self.queue.put_nowait(held)  # (counted in `taken` when it was held)
        if here:
            self.announced.add(conn.id)
        else:  # gone while its picture was read: the core forgets it again
            self._put((self._id(), encode(Detach(self.hub.edge, conn.id))))

    def detached(self, conn: Connection) -> None:
        if conn.id in self.waiting:
            return  # (`_announce` sees it gone and says so after the Attach)
        self.announced.discard(conn.id)
        self._put((self._id(), encode(Detach(self.hub.edge, conn.id))))

    async def start(self) -> None:
        await self.nc.subscribe(self.names.out(self.hub.edge), cb=self._on_delivery)
        await self.nc.subscribe(self.names.roster, cb=self._on_roster)
        self.tasks.append(asyncio.create_task(self._publisher()))
        self.tasks.append(asyncio.create_task(self._beat()))

    async def stop(self) -> None:
        # What clients sent is handed on before the edge goes (within a few seconds).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                while not self.queue.empty() or self.in_flight:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _on_delivery(self, msg: Msg) -> None:
        try:
            if probe.ON:
                probe.stamp("edge_receive", msg.data, self.hub.edge)
            delivery = read_delivery(msg.data)
        except ValueError as exc:  # (not the core's: anyone may publish on NATS)
            self.hub.metrics.cluster_drop("delivery")
            self.hub.log_limited(log, "cluster_delivery", msg.subject[:120], "edge %s: a "
                                 "delivery it cannot read on %r, dropped: %s", self.hub.edge,
                                 msg.subject[:120], str(exc)[:300])  # fmt: skip
            return
        self.hub.deliver(delivery)

    async def _on_roster(self, msg: Msg) -> None:
        # (A beat now, on the edge's own subject: only this edge may publish there.)
        await self._send_beat()

    async def _beat(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self._send_beat()
            await asyncio.sleep(BEAT_S)

    async def _send_beat(self) -> None:
        roster = self.hub.roster(self.announced)
        for part in roster_parts(roster, self.nc.max_payload - _BEAT_ROOM):
            await self.nc.publish(self.names.beat(self.hub.edge), part)

    async def _publisher(self) -> None:
        """Publish in order, many at a time, without waiting for a batch's acknowledgements
        before the next (at most _PUBLISH_BATCH messages awaiting theirs: an item's wait
        is one round trip, not the batch before it too); `_acker` checks them in order."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._acker())
            tasks.create_task(self._sender())

    async def _sender(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < _PUBLISH_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            while self.in_flight and self.in_flight + len(batch) > _PUBLISH_BATCH:
                self._room.clear()
                await self._room.wait()
            await self._healthy.wait()
            self.in_flight += len(batch)
            futures: list[asyncio.Future[Any] | None] = []
            try:
                for msg_id, data in batch:
                    future = await self.stream.publish_async(
                        self.subject, data, headers={"Nats-Msg-Id": msg_id})  # fmt: skip
                    futures.append(future)
                    if probe.ON:
                        future.add_done_callback(_ack_stamp(data, self.hub.edge))
            except Exception as exc:
                log.warning("edge %s: publishing to the stream failed: %s", self.hub.edge, exc)
            futures += [None] * (len(batch) - len(futures))
            self._unacked.put_nowait((batch, futures))

    async def _acker(self) -> None:
        """What JetStream did not acknowledge is published again under the same message id
        (it keeps one), one by one, in order, until it is; nothing new is published meanwhile."""
        while True:
            batch, futures = await self._unacked.get()
            sent = [f for f in futures if f is not None]
            done: set[asyncio.Future[Any]] = set()
            if sent:
                done, _ = await asyncio.wait(sent, timeout=_ACK_TIMEOUT_S)
            pending = [
                b for b, f in zip(batch, futures, strict=True)
                if f is None or f not in done or f.exception() is not None
            ]  # fmt: skip
            for future in sent:
                if future not in done:
                    # Its acknowledgement may never come (lost): a future not done is held
                    # (StreamAcks keeps it; nats-py's publish_async a slot of its bounded
                    # pending count, blocking every later publish once all are held).
                    future.cancel()
            self.published += len(batch) - len(pending)
            if pending:
                self._healthy.clear()
            for msg_id, data in pending:
                while True:
                    try:
                        await self.js.publish(self.subject, data, timeout=_ACK_TIMEOUT_S,
                                              headers={"Nats-Msg-Id": msg_id})  # fmt: skip
                        self.published += 1
                        break
                    except Exception as exc:
                        log.warning("edge %s: stream unavailable (%s); retrying",
                                    self.hub.edge, exc)  # fmt: skip
                        await asyncio.sleep(0.5)
            self._healthy.set()
            self.in_flight -= len(batch)
            self._room.set()


def _ack_stamp(data: bytes, edge: str) -> Callable[[asyncio.Future[Any]], None]:
    """The probe's `stream_ack` stamp for one publish (bench/hops.py), as a done callback."""
    return lambda _: probe.stamp("stream_ack", data, edge)
