"""The core: the one process (holding the lease) that applies the edges' stream to the hub.

A normal `Hub` with its desks over the PostgreSQL store and the ledger (built by
`HubServer`, without TAK listeners) — the routing, outboxes, desks and recorders unchanged.
`ClusterCore` feeds it:

- The inbound stream (`wire.Ingest`, `Attach`, `Detach`) through a durable push consumer,
  in stream order. Each batch is applied in one hub transaction that also records every
  applied message id (`commonsky_applied`), and acknowledged only after that commits: a
  message redelivered (the core died before its ack reached NATS) is recognised and not
  applied again; one never committed is applied by whichever core reads it next. Position
  reports are the exception (`_live`, `_commit`): recorded only when applying one wrote
  something, so a batch of them costs PostgreSQL nothing; applied again, a position is the
  same latest position.
- For each client of an edge, a proxy `Connection` whose `Peer` (`ProxyPeer`) sends what the
  hub queued for it — rendered for that client as the single process would write it — to
  that edge (`<name>.out.<edge>`). Only edges holding an entitled client get anything.
- The picture bucket (`picture_kv.PictureWriter`) for clients that connect later, and the
  live bucket (`live_kv.LiveKeeper`) that lets the next core know the live items this one
  holds (restored at `start`).

A core that cannot commit (PostgreSQL gone) or loses the lease stops at once (fail-stop):
the outputs of an uncommitted durable item must never leave, and a standby takes over from the
stream (`serve_core` in `run.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING

from commonsky import probe
from commonsky.errors import CommonSkyError, StoreUnavailable
from commonsky.hub.connection import Connection
from commonsky.hub.core import Hub
from commonsky.hub.deletes import DELETE_TYPE, target_key
from commonsky.hub.naming import own_names
from commonsky.hub.outbox import Outbox, Pending
from commonsky.model import CotEvent, category_of_event, is_transient

from . import poison
from .core_long import hold_forms, hold_sent, replayed_long
from .live_kv import LIVE, LiveKeeper
from .markers import Sweeper
from .nats_io import DUPLICATE_WINDOW_S
from .packer import pack
from .picture_kv import PictureWriter
from .proxy import ProxyPeer
from .push import BOUND_CHECK_S, Binding
from .spread import ROUND_S
from .stream_acks import StreamAcks, StreamPublisher
from .trust import Checks, Untrusted, agrees
from .wire import (
    EDGE_SILENT_S,
    Attach,
    ConnInfo,
    Detach,
    Ingest,
    Names,
    Roster,
    encode,
)

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

    from commonsky.store.postgres import PostgresStore

log = logging.getLogger("commonsky.cluster")

FETCH = 128  # stream messages per batch at most (one commit; the loop stays responsive)
_PICTURE_EVERY_S = ROUND_S  # picture bucket writes, newest per key, this often
_PRUNE_EVERY_S = 60.0  # applied ids that can never come again forgotten this often
# An applied id is kept this long (epoch seconds) after its stream message was acknowledged:
# past the duplicate window JetStream would take a second publish of it as new, and an
# edge's retry of a publish whose acknowledgement was lost may come that late after a long
# outage — the table, not the window, then keeps it from being applied twice.
APPLIED_KEEP_S = 30 * DUPLICATE_WINDOW_S
_RECONCILE_EVERY_S = 5.0  # every key of the picture checked (prune, agreements' changes)
_STORE_EVERY_S = 2.0  # the database asked whether it answers this often (`_check_store`)
_STORE_MISSES = 3  # (one slow answer on a loaded machine is not an outage)


class Fatal(CommonSkyError):
    """The core must stop now (fail-stop): nothing uncommitted may leave it."""

    reason = "core_fail_stop"


def _live(env: Ingest) -> bool:
    """Whether `env` is a position report (a track's, a device's): the latest per uid wins,
    so applying it again after a core stopped changes nothing (model.py: live categories;
    the rest, deletes and messages included, is recorded as applied)."""
    return category_of_event(env.event) in LIVE and not is_transient(env.event.type)


class ClusterCore:
    """Feeds the hub from the stream and sends its outputs to the edges (module header)."""

    def __init__(self, hub: Hub, nc: Client, js: JetStreamContext, kv: KeyValue,
                 names: Names, live: KeyValue | None = None,
                 stream: StreamPublisher | None = None) -> None:  # fmt: skip
        """`stream`: what the buckets' writes are published with (None: `StreamAcks` on
        `nc`, started by `start`)."""
        self.hub, self.nc, self.js, self.names = hub, nc, js, names
        self.store: PostgresStore = hub.store  # type: ignore[assignment]
        # (`live`: the live bucket; None: live items are this core's alone, as before it.)
        self.keeper = LiveKeeper(hub, live, names.live) if live is not None else None
        self.acks: StreamAcks | None = None  # (made only when no `stream` is given)
        if stream is None:
            stream = self.acks = StreamAcks(nc)
        self.picture = PictureWriter(hub, kv, hub.clock, stream, names.picture, self.keeper)
        hold_forms(hub)  # (long outputs held here too, for a fetch at another edge: core_long.py)
        # (Old delete markers of both buckets removed now and then: markers.py.)
        buckets = [(names.picture, kv)] + ([(names.live, live)] if live is not None else [])
        self.markers = Sweeper(js, buckets)
        self.checks = Checks.of(names, set(hub.policy.parties), hub.settings)  # (trust.py)
        self.proxies: dict[tuple[str, str], Connection] = {}
        self.seen: dict[str, float] = {}  # edge -> when it was last heard of (monotonic)
        self.found: int | None = None  # clients the edges' rosters told of (while `_roster`)
        self._outs: dict[str, list[tuple[str, str, list[Pending]]]] = defaultdict(list)
        self._closes: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self._refused: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        self._attached: dict[str, list[str]] = defaultdict(list)
        self._wake = asyncio.Event()
        self._inbox: asyncio.Queue[Msg] = asyncio.Queue()  # pushed by the consumer, in order
        self.binding = Binding(js, names, self._on_msg)  # (its subscription: push.py)
        self.tasks: list[asyncio.Task[None]] = []
        self.applied = 0
        self.repeated = 0  # redelivered messages recognised as applied already
        self.failed: BaseException | None = None
        # Stream sequence at takeover: a message up to it may have been applied by an earlier
        # core (its id is looked up even when live); later ones only this core applies.
        self.recheck_upto = 0
        self.unanswered = 0  # the database's checks failed in a row (`_check_store`)

    # ---- connections --------------------------------------------------------------------

    def _proxy(self, edge: str, info: ConnInfo) -> Connection:
        key = (edge, info.conn)
        conn = self.proxies.get(key)
        if conn is not None:
            return conn
        settings = self.hub.settings
        peer = ProxyPeer(self, edge, info.conn, info.mode)
        conn = Connection(
            party=info.party,
            user=info.user,
            listener=info.listener,
            outbox=Outbox(settings.limit_queue_tracks, settings.limit_queue_durable),
            peer=peer,
            id=f"{edge}/{info.conn}",
            address=info.address,
            oversight=info.oversight,  # (a map page on the edge)
        )
        peer.conn = conn
        for uid, callsign in info.devices.items():
            self.hub.directory.report(info.party, uid, callsign)
            conn.devices[uid] = callsign
        conn.callsigns = set(conn.devices.values())
        self.proxies[key] = conn
        self.hub.wires.add(conn)
        self.seen.setdefault(edge, time.monotonic())
        return conn

    def _attach(self, att: Attach) -> None:
        """A client came: from now on it gets what the hub queues for it, and now the part
        of its picture the edge did not replay from the bucket (picture_kv.py)."""
        conn = self._proxy(att.edge, att.info)
        assert isinstance(conn.peer, ProxyPeer)
        conn.peer.mode = att.info.mode
        replay = self.hub.picture.replay(conn)
        if att.replayed is not None:
            covered = replayed_long(self.picture.covered, self.hub.wires.held, conn)
            party, upto, unread = conn.party, att.replayed, frozenset(att.unread)
            replay = (p for p in replay if not covered(party, p, upto, unread))
        conn.outbox.replay(self.hub.withdrawals.replay(conn, replay))
        if att.info.devices:
            # Devices it reported while the edge read its picture: the edge knew them before
            # this Attach, so their reports (behind it in the stream) find them known and give
            # nothing (`Hub._register`). What waits addressed to them is owed now, as the
            # single process gives it at each device's first report.
            self.hub.give_devices(conn, dict(att.info.devices), {})
        conn.peer.attaching = True
        self.hub.wires.mark(conn)

    def _detach(self, edge: str, conn_id: str) -> None:
        conn = self.proxies.pop((edge, conn_id), None)
        if conn is not None:
            self.hub.detach(conn)

    def _drop_edge(self, edge: str) -> None:
        for key in [k for k in self.proxies if k[0] == edge]:
            self._detach(*key)
        self.seen.pop(edge, None)

    async def _roster(self, wait_s: float = 0.5) -> int:
        """Ask every edge which clients it holds (a new core: the old core's are unknown):
        each answers with a beat on its own subject (`_on_beat`) within `wait_s`."""
        self.found = 0
        await self.nc.publish(self.names.roster, b"")
        await asyncio.sleep(wait_s)
        found, self.found = self.found, None
        return found or 0

    def _take_roster(self, roster: Roster) -> int:
        """One edge's roster: its clients the core did not know; a client that fails the
        checks is left out (trust.py). Returns how many it took."""
        roster, skipped = self.checks.clients(roster)
        for left in skipped:
            self._drop(left)
        found = 0
        for info in roster.conns:
            known = self.proxies.get((roster.edge, info.conn))
            if known is not None and known.party != info.party:
                continue  # (answered twice, differently: the first one holds)
            if known is None:
                self._proxy(roster.edge, info)
                found += 1
            else:  # (a roster in parts, edge.roster_parts: a client's devices in several)
                for uid, callsign in info.devices.items():
                    self.hub.directory.report(info.party, uid, callsign)
                    known.devices[uid] = callsign
                    known.callsigns.add(callsign)
        return found

    async def _on_beat(self, msg: Msg) -> None:
        try:
            roster = self.checks.beat(msg.data, msg.subject)
        except Untrusted as exc:
            self._drop(exc)
            return
        self.seen[roster.edge[:200]] = time.monotonic()
        if self.found is not None:  # (asking the edges for their clients: `_roster`)
            self.found += self._take_roster(roster)

    # ---- outputs ------------------------------------------------------------------------

    def send(self, edge: str, conn_id: str, mode: str, outs: list[Pending]) -> None:
        if self.failed is not None:
            return  # (stopping: what a failed commit queued never leaves, `_commit`)
        self._outs[edge].append((conn_id, mode, outs))
        self._wake.set()

    def close_remote(self, edge: str, conn_id: str, reason: str) -> None:
        self._closes[edge].append((conn_id, reason))
        self._wake.set()

    def attached(self, edge: str, conn_id: str) -> None:
        """Tell the edge its client's Attach is handled (after what the proxy flushed)."""
        self._attached[edge].append(conn_id)
        self._wake.set()

    async def _sender(self) -> None:
        """Send what the proxies flushed, per edge, in order, in messages of about 512 kB:
        each rendered output once per message, with the clients that get it."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            flushed, self._outs = self._outs, defaultdict(list)
            closes, self._closes = self._closes, defaultdict(list)
            refused, self._refused = self._refused, defaultdict(list)
            attached, self._attached = self._attached, defaultdict(list)  # (with its outs)
            if self.picture.dirty or self.picture.full or self.picture.unsettled_urgent:
                # A durable item's entry is in the bucket before any client gets the item
                # (its key was noted when the hub published it, before its outputs were
                # flushed here): a client that connects later never reads a version older
                # than one its peers were given. Live items' entries follow every
                # LIVE_EVERY_S. What is flushed meanwhile waits for the next round.
                await self.picture.flush(live=False)
            for edge in set(flushed) | set(closes) | set(refused) | set(attached):
                *full, delivery = pack(flushed.get(edge, ()), self.hub.parties)
                hold_sent(self.hub.wires.held, self.proxies, edge, [*full, delivery])  # (first)
                for packed in full:
                    await self._publish(edge, encode(packed.done()))
                if delivery.sends or edge in closes or edge in refused or edge in attached:
                    last = delivery.done(closes.get(edge, []), refused.get(edge, []),
                                         attached.get(edge, []))  # fmt: skip
                    await self._publish(edge, encode(last))

    async def _publish(self, edge: str, data: bytes) -> None:
        if probe.ON:
            probe.stamp("core_publish", data, edge)
        await self.nc.publish(self.names.out(edge), data)

    # ---- the stream ---------------------------------------------------------------------

    async def start(self) -> None:
        """Take over: learn the edges' clients, restore the live items the last core held
        (live_kv.py), write the picture bucket, and read the stream from its first
        unacknowledged message (the old core's unacknowledged ones again)."""
        from nats.js.errors import NotFoundError

        if self.acks is not None:
            await self.acks.start()
        await self.nc.subscribe(self.names.beats, cb=self._on_beat)
        found = await self._roster()
        restored = ""
        if self.keeper is not None:
            # Before the picture bucket is written: their entries are kept, not dropped.
            got = await self.keeper.restore()
            restored = (f"; {got.restored} live items restored ({got.stale} stale, "
                        f"{got.superseded} superseded by a stored item, {got.refused} "
                        "left out)")  # fmt: skip
        else:
            self.hub.restored([])  # (none: the desks' rebuild ends all the same)
        await self.picture.load()
        await self.picture.flush()
        strays = await self.picture.drop_strays()
        if self.keeper is not None:
            strays += await self.keeper.drop_strays()
        log.info("core: %d clients on the edges; picture bucket written (%d strays removed)%s",
                 found, strays, restored)  # fmt: skip
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(self.names.stream, self.names.consumer)
        stream = await self.js.stream_info(self.names.stream)
        self.recheck_upto = stream.state.last_seq
        # Pushed, not pulled: the next messages are on their way while a batch is applied
        # (a pull costs a round trip per batch, which bounded the core well below its CPU).
        await self.binding.start()  # (kept bound: push.py)
        self.tasks = [
            asyncio.create_task(self._sender()),
            asyncio.create_task(self._consume()),
            asyncio.create_task(self._upkeep()),
        ]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.markers.stop()

    async def wait_failed(self) -> BaseException:
        """Returns (never raises) why the core must stop, once one of its tasks failed."""
        done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                return task.exception()  # type: ignore[return-value]
        return Fatal("a core task ended")

    async def prune_applied(self) -> int:
        """Forget the applied ids no redelivery can bring again: acknowledged (at or below
        the durable consumer's ack floor: a work queue has removed them) and recorded more than
        APPLIED_KEEP_S ago (a late second publish of the id is not applied again).
        Returns how many went. Raises StoreUnavailable; NATS's errors."""
        info = await self.js.consumer_info(self.names.stream, self.names.consumer)
        floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
        return self.store.prune_applied(floor or 0, time.time() - APPLIED_KEEP_S)

    async def _upkeep(self) -> None:
        loop = asyncio.get_running_loop()
        last_reconcile = last_prune = last_checked = last_bound = loop.time()
        while True:
            await asyncio.sleep(_PICTURE_EVERY_S)
            now = loop.time()
            if now - last_bound >= BOUND_CHECK_S:
                last_bound = now
                with contextlib.suppress(Exception):  # (NATS away: looked at next time)
                    await self.binding.check()
            if now - last_prune >= _PRUNE_EVERY_S:
                last_prune = now
                try:
                    await self.prune_applied()
                except StoreUnavailable as exc:
                    raise Fatal(f"the store is unavailable: {exc}") from exc
                except Exception as exc:  # NATS away: tried again at the next round
                    log.warning("core: applied ids not pruned (%s)", exc)
            if now - last_checked >= _STORE_EVERY_S:
                last_checked = now
                await self._check_store()
            if now - last_reconcile >= _RECONCILE_EVERY_S:
                last_reconcile = now
                self.picture.reconcile()
                quiet = time.monotonic() - EDGE_SILENT_S
                for edge in [e for e, t in self.seen.items() if t < quiet]:
                    log.warning("core: edge %s silent for %.0f s; forgetting its clients",
                                edge, EDGE_SILENT_S)  # fmt: skip
                    self._drop_edge(edge)
            self.markers.tick()  # (a task of its own: the flushes never wait for it)
            await self.picture.flush()  # (with this round's share of the live writes)

    async def _check_store(self) -> None:
        """A core whose database stops answering stops serving (Fatal: the lease goes back,
        run.py), even when nothing it applies needs a write: it must not serve on without a
        store (live items need none), nor hold the lease a standby that has one could take.
        _STORE_MISSES failed checks in a row: one slow answer is not an outage."""
        from commonsky.store.postgres import answers  # (psycopg: the `cluster` extra)

        if await asyncio.to_thread(answers, self.store.url):
            self.unanswered = 0
            return
        self.unanswered += 1
        log.warning("core: the database does not answer (%d of %d)", self.unanswered,
                    _STORE_MISSES)  # fmt: skip
        if self.unanswered >= _STORE_MISSES:
            raise Fatal(f"the store is unavailable: {self.store.where} does not answer")

    async def _on_msg(self, msg: Msg) -> None:
        self._inbox.put_nowait(msg)

    async def _consume(self) -> None:
        inbox = self._inbox
        while True:
            msgs = [await inbox.get()]  # then what else came meanwhile, up to FETCH
            while len(msgs) < FETCH and not inbox.empty():
                msgs.append(inbox.get_nowait())
            await self._apply(msgs)
            # A full inbox never makes `get` wait: yield, so NATS's reader gets in between.
            await asyncio.sleep(0)

    async def _apply(self, msgs: list[Msg]) -> None:
        """One batch: segments between Attach messages, each one commit; then the acks."""
        envelopes: list[Ingest | Attach | Detach] = []
        seqs: dict[str, int] = {}  # message id -> its stream sequence (pruning, below)
        ids: list[str] = []  # the ids that may have been applied already (looked up)
        for msg in msgs:
            try:
                envelope = self.checks.read(msg.subject, msg.data)
            except Untrusted as exc:
                self._drop(exc)
                continue
            envelopes.append(envelope)
            if isinstance(envelope, Ingest):
                seq = seqs[envelope.id] = msg.metadata.sequence.stream
                if not _live(envelope) or seq <= self.recheck_upto:
                    ids.append(envelope.id)
        # (A live item's id is looked up only where an earlier core may have applied it:
        # a message in the stream when this core took over.)
        done = self.store.applied(ids)
        segment: list[Ingest | Detach] = []
        for envelope in envelopes:
            if isinstance(envelope, Attach):
                self._commit(segment, done, seqs)
                segment = []
                # (So `covered` knows every revision; live items' entries wait for their
                # round: `covered` is false for them until then.)
                await self.picture.flush(share=False)
                if self._agrees(envelope):
                    self._attach(envelope)
            else:
                segment.append(envelope)
        self._commit(segment, done, seqs)
        # The batch's outputs to the sender now, not at the next flush round (up to
        # FLUSH_INTERVAL_S away): a batch is a burst already, there is nothing to wait for.
        self.hub.wires.flush()
        if self.picture.live_due:
            # A live item left the picture, or a party that may see its record may not see
            # its current version: the record changes before the messages that did it are
            # acknowledged — a message acknowledged never comes again, and the next core
            # would restore the record (live_kv.py). Rare (deletes, tracks arriving stale
            # or leaving an agreement's area); other records follow every LIVE_EVERY_S.
            await self.picture.flush(live=False)
        for msg in msgs:
            await msg.ack()

    def _commit(self, segment: list[Ingest | Detach], done: set[str],
                seqs: dict[str, int]) -> None:  # fmt: skip
        """Apply `segment` in one hub transaction. The ids of durable items are recorded in
        its commit (`commonsky_applied`: never applied twice); a live item's (`_live`) only
        when applying it wrote something (a desk's notice): a position applied twice is the
        same latest position, and a block that writes nothing commits nothing — so live
        items' outputs leave without waiting for PostgreSQL. A message whose application
        raises what nobody foresaw is dropped, the others applied once each (poison.py);
        raises Fatal (the store away, or it refused what a message wrote)."""
        if not segment:
            return
        fresh: list[str] = []
        live: list[str] = []
        wrote = False
        try:
            with self.hub.transaction():
                for envelope in segment:
                    try:
                        kind = self._one(envelope, done)
                    except StoreUnavailable:
                        raise  # (an outage stops the core: poison.py)
                    except Exception:  # (our bug, or a value the database refused)
                        poison.report(self.hub, envelope)
                        ok = isinstance(envelope, Ingest) and envelope.id not in done
                        kind = "fresh" if ok else None  # (recorded: it never comes again)
                    if self.store.refused:  # (the transaction is gone: poison.py)
                        raise poison.Aborted(envelope)
                    if kind is not None:
                        assert isinstance(envelope, Ingest)
                        (live if kind == "live" else fresh).append(envelope.id)
                wrote = self.store.wrote
                if wrote:
                    fresh += live
                try:
                    self.store.mark_applied(fresh, time.time(), [seqs[i] for i in fresh])
                except StoreUnavailable:
                    raise
                except Exception as exc:  # (no one message to blame: none recorded)
                    self.store.abandon()  # (not committed without its ids on the way out)
                    raise poison.Aborted(None) from exc
        except poison.Aborted as exc:
            self.failed = exc  # (nothing queued by the segment may leave: `send`)
            what = poison.stopping(self.hub, self.store, exc.envelope, seqs)
            raise Fatal(f"{exc}: {what}; the next core applies the others (poison.py)") from exc
        except StoreUnavailable as exc:
            self.failed = exc
            raise Fatal(f"the store is unavailable: {exc}") from exc
        self.applied += len(fresh) + (0 if wrote else len(live))

    def _one(self, envelope: Ingest | Detach, done: set[str]) -> str | None:
        """Apply one message of a segment: "fresh" or "live" (`_live`) when its id is to be
        recorded as applied, None when not (a Detach, a message dropped, one applied before)."""
        if isinstance(envelope, Detach):
            self._detach(envelope.edge, envelope.conn)
            return None
        if not self._agrees(envelope):
            return None  # (dropped: never applied, its id not recorded)
        if envelope.id in done:
            self.repeated += 1
            log.info("core: message %s was applied already (redelivered after a core "
                     "stopped); not applied again", envelope.id)  # fmt: skip
            self._again(envelope)
            return None
        self._ingest(envelope)
        return "live" if _live(envelope) else "fresh"

    def _agrees(self, envelope: Ingest | Attach) -> bool:
        """Whether `envelope`'s party is the one its edge gave the connection (trust.py
        `agrees`); dropped (counted, logged) when not."""
        conn = envelope.conn if isinstance(envelope, Ingest) else envelope.info.conn
        known = self.proxies.get((envelope.edge, conn))
        try:
            agrees(envelope, None if known is None else known.party)
        except Untrusted as exc:
            self._drop(exc)
            return False
        return True

    def _drop(self, exc: Untrusted) -> None:
        """A stream message that failed the core's checks: counted, one rate-limited line
        per edge and reason; acknowledged with its batch, never applied (trust.py)."""
        self.hub.metrics.cluster_drop(exc.reason)
        self.hub.log_limited(log, f"cluster_{exc.reason}", exc.edge,
                             "core: dropped a message from edge %r (%s): %s", exc.edge,
                             exc.reason, str(exc)[:300])  # fmt: skip

    def _ingest(self, env: Ingest) -> None:
        info = ConnInfo(env.conn, env.party, env.user, "tak", "", env.mode)
        conn = self._proxy(env.edge, info)
        assert isinstance(conn.peer, ProxyPeer)
        conn.peer.mode = env.mode
        if env.user and conn.user != env.user:
            conn.user = env.user
        try:
            self.hub.accept(env.party, env.user, env.event, conn)
            if probe.ON:
                probe.stamp("core_apply", env.event.detail)
        except StoreUnavailable:
            raise
        except CommonSkyError as exc:
            if exc.close:
                self.close_remote(env.edge, env.conn, exc.reason)
            else:
                self._refused[env.edge].append((env.conn, exc.reason, exc.public()))
                self._wake.set()
            self.hub.metrics.refuse(exc.reason)
            self.hub.log_limited(log, exc.reason, conn.id, "core: %s/%s refused (%s): %s",
                                 env.party, env.user, exc.reason, str(exc)[:300])  # fmt: skip
        except Exception:  # (our bug: its traceback, rate-limited per edge)
            self.hub.metrics.internal_error("accept")
            self.hub.log_limited(log, "internal_accept", env.edge, "core: accepting %s/%r "
                                 "from edge %s failed", env.party, env.event.uid[:120],
                                 env.edge, level=logging.ERROR, exc_info=True)  # fmt: skip

    def _again(self, env: Ingest) -> None:
        """A message applied before the last core died: what it made is given again to those
        who may see it (its outputs may never have left), never applied twice."""
        key = (env.party, env.event.uid)
        for party in self.hub.policy.parties:
            self.hub.resend(key, party)
        # (Its restored live version may predate what it did: live_kv.LiveKeeper.redelivered.)
        about = self._live_about(env) if self.keeper is not None else None
        if about is not None and self.keeper is not None and self.keeper.redelivered(*about):
            self.picture.dropped(about[0])

    def _live_about(self, env: Ingest) -> tuple[tuple[str, str], CotEvent | None] | None:
        """The key a stream message's event is about as the hub applied it (a delete's: its
        target's) and the event (None for a delete); None when it names none."""
        try:
            event = own_names(env.party, env.event, self.hub.parties)
        except CommonSkyError:
            return None
        if event.type == DELETE_TYPE:
            target = target_key(env.party, event, self.hub.parties, strict=False)
            return None if target is None else (target, None)
        return (env.party, event.uid), event
