"""TAK listeners: thin asyncio adapters that move bytes between sockets and a `TakSession`.

Identity is fixed when the connection opens — the listener's party for `tak-tcp`, the
client certificate's O (party) and CN (user) for `tak-tls` — and never read from content.
Each connection has a reader (this coroutine) and a writer task draining its outbox; both
end in `finally`, and the hub forgets the connection there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import ssl
import time
from collections.abc import Callable

from cryptography import x509

from commonsky import probe
from commonsky.config import ListenerConfig
from commonsky.errors import CommonSkyError, UsageError
from commonsky.protocol.cot import XmlLimits
from commonsky.protocol.session import (
    TIMEOUT_SETTING,
    EventReceived,
    MessageRefused,
    SessionLimits,
    TakSession,
)
from commonsky.protocol.stream import StreamEvent
from commonsky.revocation import Revocations

from .core import Connection, Hub
from .held import STREAM_BYTES, Held, LongMessages
from .outbox import Outbox, Pending
from .tls import bind_http as bind_http  # (re-exported: the server and Marti bind with it)
from .tls import peer_address as _peer
from .tls import port_problem as port_problem  # (re-exported: the server binds with it)
from .tls import reason as _reason
from .tls import subject as _subject
from .tls import tls_context as tls_context  # (re-exported)

log = logging.getLogger("commonsky.listener")
_ids = itertools.count(1)


class TakListener:
    def __init__(
        self,
        hub: Hub,
        config: ListenerConfig,
        tls: ssl.SSLContext | None = None,
        revocations: Revocations | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.hub = hub
        # SO_REUSEPORT: several edge processes of a cluster share the port (the kernel spreads
        # new connections over them; when one dies, its clients reconnect to the others).
        self.reuse_port = reuse_port
        # tak-tls: the CA's CRL, checked at each connection and each housekeeping tick.
        self.revocations = revocations
        self._serials: dict[Connection, int] = {}
        self.config = config
        self.name = f"{config.kind}:{config.host}:{config.port}"
        self.server: asyncio.Server | None = None
        self.port = config.port
        s = hub.settings
        self.limits = XmlLimits(
            s.limit_message_bytes,
            s.limit_xml_depth,
            s.limit_attribute_bytes,
        )
        self.tasks: set[asyncio.Task[None]] = set()
        # Built now, so a certificate mistake stops the hub before anything is bound.
        if tls is None and config.kind == "tak-tls":
            tls = tls_context(config)
        self.tls = tls
        self._announcing: Callable[[list[Pending], str], Joined] | None = None

    async def start(self) -> None:
        try:
            # TLS is started per connection (`_handle`), not by the server, so that a refused
            # handshake reaches our log with its peer and reason; asyncio would swallow it.
            self.server = await asyncio.start_server(
                self._handle,
                self.config.host,
                self.config.port,
                limit=self.limits.message_bytes * 2,
                reuse_port=self.reuse_port or None,
            )
        except OSError as exc:
            raise UsageError(
                f"{self.config.where} bind = '{self.config.host}:{self.config.port}': "
                f"{port_problem(self.config.port, exc)}"
            ) from None
        self.port = self.server.sockets[0].getsockname()[1]
        self.name = f"{self.config.kind}:{self.config.host}:{self.port}"
        # (The party too: a tool that had it bind port 0 reads which port is whose here.)
        party = f" for party {self.config.party}" if self.config.party else ""
        log.info("listening %s%s", self.name, party)

    async def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            if self.tls is not None and not await self._handshake(writer):
                return
            await self._serve(reader, writer)
        finally:
            self.tasks.discard(task)

    async def _handshake(self, writer: asyncio.StreamWriter) -> bool:
        """TLS for one connection, within `limit_handshakes` (hub-wide) and
        `limit_handshakes_per_address`: before its certificate names a party, a connection
        counts against its address, so nobody can hold every socket without credentials.
        A refusal is logged (rate-limited) with the peer and the reason (no client
        certificate, unknown CA, expired, not a client certificate…); the connection is
        aborted whenever this returns False."""
        assert self.tls is not None
        settings = self.hub.settings
        peer = _peer(writer)
        address = peer.rpartition(":")[0] or peer
        pending = self.hub.handshaking
        refused: str | None = None
        if sum(pending.values()) >= settings.limit_handshakes:
            refused = "limit_handshakes"
        elif pending.get(address, 0) >= settings.limit_handshakes_per_address:
            refused = "limit_handshakes_per_address"
        if refused is not None:
            self.hub.metrics.close(refused)
            self.hub.log_limited(
                log,
                refused,
                address,
                "%s: TLS connection from %s refused: too many handshakes in progress (%s)",
                self.name,
                peer,
                refused,
            )
            writer.transport.abort()
            return False
        pending[address] = pending.get(address, 0) + 1
        try:
            await writer.start_tls(self.tls, ssl_handshake_timeout=settings.tls_handshake_timeout_s)
            return True
        except (OSError, TimeoutError, EOFError) as exc:
            self.hub.metrics.refuse("tls_handshake")
            self.hub.metrics.close("tls_handshake")  # (every close of the hub's has a reason)
            self.hub.log_limited(
                log,
                "tls_handshake",
                address,
                "%s: TLS handshake from %s refused: %s",
                self.name,
                peer,
                _reason(exc),
            )
            writer.transport.abort()
            return False
        finally:
            pending[address] -= 1
            if not pending[address]:
                del pending[address]

    def _identity(self, writer: asyncio.StreamWriter) -> tuple[str, str] | str:
        """The (party, user) a connection speaks as, or why it is refused (logged and
        counted as a refusal here; the caller closes it)."""
        if self.config.kind == "tak-tcp":
            assert self.config.party is not None
            return self.config.party, ""
        subject = _subject(writer.get_extra_info("peercert"))
        orgs, names = subject.get("organizationName", []), subject.get("commonName", [])
        if len(orgs) != 1 or len(names) != 1:
            # Two O values would leave the party to whichever the reader takes: refused.
            self.hub.metrics.refuse("certificate_subject")
            self.hub.log_limited(
                log,
                "certificate_subject",
                self.name,
                "%s: certificate has %d O and %d CN values (exactly one each is required); closing",
                self.name,
                len(orgs),
                len(names),
            )
            return "certificate_subject"
        party, user = orgs[0], names[0]
        if self._revoked(writer):
            self.hub.metrics.refuse("certificate_revoked")
            self.hub.log_limited(
                log,
                "certificate_revoked",
                self.name,
                "%s: TLS client %s refused: certificate of %s/%s is revoked (CRL)",
                self.name,
                _peer(writer),
                party,
                user,
            )
            return "certificate_revoked"
        if not party or not user or party not in self.hub.policy.parties:
            self.hub.metrics.refuse("unknown_party")
            self.hub.log_limited(
                log,
                "unknown_party",
                self.name,
                "%s: TLS client %s refused: certificate O=%r CN=%r names no declared party",
                self.name,
                _peer(writer),
                party,
                user,
            )
            return "unknown_party"
        return party, user

    def _serial(self, writer: asyncio.StreamWriter) -> int | None:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        return x509.load_der_x509_certificate(der).serial_number if der else None

    def _revoked(self, writer: asyncio.StreamWriter) -> bool:
        if self.revocations is None:
            return False
        serial = self._serial(writer)
        return serial is not None and self.revocations.revoked(serial)

    def drop_revoked(self) -> int:
        """Close the connections whose certificate the CRL now revokes (a housekeeping tick:
        a revocation ends a session already open too). Returns how many."""
        if self.revocations is None or not self._serials:
            return 0
        dropped = 0
        for conn, serial in list(self._serials.items()):
            if self.revocations.revoked(serial):
                log.warning(
                    "%s: closing %s/%s: its certificate was revoked",
                    self.name,
                    conn.party,
                    conn.user,
                )
                self.hub.metrics.refuse("certificate_revoked")
                conn.close("certificate_revoked")
                del self._serials[conn]
                dropped += 1
        return dropped

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hub = self.hub
        address = _peer(writer)
        identity = self._identity(writer)
        if isinstance(identity, str):
            hub.metrics.close(identity)
            writer.close()
            return
        party, user = identity
        refused = hub.admit(party)
        if refused is not None:
            hub.metrics.close(refused)
            hub.log_limited(
                log,
                refused,
                party,
                "%s: %s/%s from %s refused: %s reached",
                self.name,
                party,
                user or "?",
                address,
                refused,
            )
            writer.transport.abort()
            return
        session, peer, conn = self._open(writer, party, user, address)
        log.info("%s: %s/%s connected from %s", self.name, party, user or "?", address)
        writer.write(session.start(hub.clock()))
        hub.attach(conn)
        serial = self._serial(writer) if self.revocations is not None else None
        if serial is not None:
            self._serials[conn] = serial
        writer_task = asyncio.create_task(self._write_loop(conn, writer))
        try:
            await self._read(conn, session, peer, reader, writer)
        except (ConnectionError, ssl.SSLError) as exc:
            peer.closing.append(f"connection lost: {exc}")
        except Exception:
            # Our bug (the parser's, say), not the peer's: logged with its traceback and
            # counted, and the close carries its reason like every other close of the hub's.
            hub.metrics.internal_error("connection")
            log.exception(
                "%s %s/%s: reading failed; closing", self.name, party, conn.user or address
            )
            peer.close("internal_error")
        finally:
            log.info(
                "%s: %s/%s from %s disconnected (%s)",
                self.name,
                party,
                conn.user or "?",
                address,
                peer.closing[0] if peer.closing else "closed by the client",
            )
            hub.detach(conn)
            self._serials.pop(conn, None)
            writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer_task
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _read(self, conn: Connection, session: TakSession, peer: TakPeer, reader:
                    asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:  # fmt: skip
        """Hand on what the client sends until the connection ends or a session timer runs
        out. One timeout spans many reads: moved only when the deadline comes earlier (a
        message begun), and when it fires the session says whether the connection expired
        or its deadline moved on. (One armed around every read was 7 % of the hub's CPU at
        4,000 msg/s in: docs/performance.md.)"""
        hub, monotonic = self.hub, time.monotonic
        loop = asyncio.get_running_loop()
        while not peer.closing:
            now = monotonic()
            expired = session.expired(now)
            if expired is not None:
                self._timed_out(conn, expired)
                return
            due = session.deadline()
            try:
                async with asyncio.timeout_at(loop.time() + (due - now)) as timer:
                    while not peer.closing:
                        data = await reader.read(65536)
                        if not data:
                            return
                        now = monotonic()
                        events = session.receive_data(data, now, hub.clock())
                        reply = session.data_to_send()
                        if reply:
                            writer.write(reply)
                        if not self._on_events(conn, session, events):
                            return
                        if session.deadline() < due:  # (a message begun: its own timer)
                            due = session.deadline()
                            timer.reschedule(loop.time() + (due - now))
            except TimeoutError:
                if not timer.expired():  # (not the timer's: a fault of ours, logged by the caller)
                    raise
                continue  # `expired` decides (what was sent meanwhile may have moved it)

    def _open(
        self, writer: asyncio.StreamWriter, party: str, user: str, address: str
    ) -> tuple[TakSession, TakPeer, Connection]:
        """The session, the peer and the hub's connection of one new TAK client."""
        settings = self.hub.settings
        session = TakSession(
            SessionLimits(
                settings.timeout_idle_s,
                settings.timeout_partial_event_s,
                settings.limit_refusals_before_close,
            ),
            time.monotonic(),
            self.limits,
        )
        # Past this much unwritten, the reader is behind: live updates merge (outbox.py).
        high_water = 4 * self.limits.message_bytes + 262144
        peer = TakPeer(self.hub, writer, session, high_water, self._joiner())
        conn = peer.conn = Connection(
            party=party,
            user=user,
            listener=self.config.kind,
            outbox=Outbox(settings.limit_queue_tracks, settings.limit_queue_durable),
            peer=peer,
            id=f"{self.name}#{next(_ids)}",
            address=address,
        )
        return session, peer, conn

    def _joiner(self) -> Callable[[list[Pending], str], Joined]:
        """How this listener's connections join a batch: with over-long items announced
        (held.py) where the Marti listener accepts their certificates, else as they are."""
        held = self.hub.wires.held
        if not held.serves(self.config.kind, self.config.ca):
            return Joined
        if self._announcing is None:  # (one for all its connections: they share batches)
            self._announcing = functools.partial(Joined, held=held)
        return self._announcing

    def _timed_out(self, conn: Connection, expired: str) -> None:
        self.hub.log_limited(
            log,
            expired,
            conn.id,
            "%s %s/%s: closing, %s timeout (%s)",
            self.name,
            conn.party,
            conn.user or conn.address,
            expired,
            TIMEOUT_SETTING[expired],
            level=logging.INFO,
        )
        if expired == "partial_event":
            self.hub.metrics.refuse("partial_event")
        conn.close(expired)

    def _on_events(self, conn: Connection, session: TakSession, events: list[StreamEvent]) -> bool:
        """Give the hub what the session decoded; count what it or the hub refused. False
        when the connection is to close (the rest of this read is not handled)."""
        hub = self.hub
        for event in events:
            if isinstance(event, EventReceived):
                if not conn.user:
                    conn.user = event.event.uid  # a TCP client is known by its own uid
                try:
                    hub.accept(conn.party, conn.user, event.event, conn)
                except CommonSkyError as exc:
                    # The error's hints decide (errors.py): close (a store that cannot
                    # write: nothing was stored or relayed, and the client sends again when
                    # it reconnects), or refuse the message.
                    if exc.close:
                        log.error(
                            "%s %s/%s: %s; closing",
                            self.name,
                            conn.party,
                            conn.user or conn.address,
                            exc,
                        )
                        conn.close(exc.reason)
                        return False
                    if exc.http_status < 500:
                        event = MessageRefused(exc.reason, exc.public())
                    else:
                        self._failed(conn, event.event.uid)
                        continue
                except Exception:
                    self._failed(conn, event.event.uid)
                    continue
            if isinstance(event, MessageRefused):
                hub.metrics.refuse(event.reason)
                hub.log_limited(
                    log,
                    event.reason,
                    conn.id,
                    "%s %s/%s refused (%s): %s",
                    self.name,
                    conn.party,
                    conn.user or conn.address,
                    event.reason,
                    event.message[:300],  # (a peer chooses what the message quotes)
                )
                close = session.refused(event)
                if close is not None:
                    conn.close(close)
                    return False
        return True

    def _failed(self, conn: Connection, uid: str) -> None:
        """Our bug, not the peer's (accepting its event raised): counted, and logged with its
        traceback — rate-limited per connection, as the peer's refusals are: a client that
        keeps sending what meets the bug must not write a traceback per frame. The connection
        and the rest of its read go on."""
        self.hub.metrics.internal_error("accept")
        self.hub.log_limited(log, "internal_accept", conn.id, "%s %s/%s: accepting %r failed",
                             self.name, conn.party, conn.user or conn.address, uid[:120],
                             level=logging.ERROR, exc_info=True)  # fmt: skip

    async def _write_loop(self, conn: Connection, writer: asyncio.StreamWriter) -> None:
        """Only busy when the socket pushed back: wait for it to drain, then flush again."""
        try:
            while True:
                await conn.outbox.ready.wait()
                conn.outbox.ready.clear()
                await writer.drain()
                conn.outbox.resume()
                conn.flush()
        except (ConnectionError, ssl.SSLError):
            conn.close("write_failed")


class TakPeer:
    """The `Peer` of one TAK socket: what the hub may ask of it (mode, close, flush).

    `flush` writes the outbox in the session's current mode while the socket keeps up; once
    its write buffer passes `high_water` live updates merge (newest per uid, `outbox.py`)
    and the writer task flushes again when it drained."""

    def __init__(
        self,
        hub: Hub,
        writer: asyncio.StreamWriter,
        session: TakSession,
        high_water: int,
        join: Callable[[list[Pending], str], Joined] | None = None,
    ) -> None:
        self.hub = hub
        self.join = join or Joined
        self.writer = writer
        self.session = session
        self.high_water = high_water
        self.closing: list[str] = []  # the reason it closed, first
        self.conn: Connection | None = None  # set as soon as the connection is made

    @property
    def mode(self) -> str:
        return self.session.mode._value_  # (not `.value`: see `flush`)

    def close(self, reason: str) -> None:
        if not self.closing:
            self.closing.append(reason)
            self.hub.metrics.close(reason)
            transport = self.writer.transport
            transport.abort() if reason == "too_slow" else self.writer.close()

    def flush(self) -> None:
        conn, transport = self.conn, self.writer.transport
        if conn is None or self.closing or transport.is_closing():
            return
        outbox = conn.outbox
        if transport.get_write_buffer_size() > self.high_water:
            # The reader is behind: live updates merge (newest per uid) until it drains.
            for overflow in outbox.push_back():
                self.hub.metrics.drop(overflow)
            outbox.ready.set()  # the writer task waits for drain, then flushes
            return
        batch = outbox.take()
        if batch:
            wires = self.hub.wires
            # (`_value_`, not `.value`: the enum's property costs a Python call per write)
            joined = wires.shared(batch, self.session.mode._value_, self.join)
            self.writer.write(joined.data)
            if joined.held:  # (announced in place of over-long items: its party may fetch)
                wires.held.grant(conn.party, joined.held)
            if probe.ON:
                probe.stamp("client_write", joined.data)
            joined.written.append(self)
            if len(joined.written) == 1:  # its first write this round: counted after all
                wires.after_writes(conn, functools.partial(joined.count, self.hub))
        if outbox.backlog is not None:
            outbox.ready.set()  # more of the replay owed: next page once it drains


class Joined:
    """A batch's bytes in one mode (`Connections.shared`: made once per round for every
    connection that gets the same batch) and the peers it was written to, counted together
    once the round wrote every socket (`count`). One object for the bytes and the counting:
    a write looks its batch up once (two lookups, each keyed by the ids of the batch's
    items, and a count scheduled per write were a fifth of a round's bookkeeping:
    docs/performance.md, #19)."""

    __slots__ = ("batch", "data", "held", "written")

    def __init__(self, batch: list[Pending], mode: str, held: LongMessages | None = None) -> None:
        self.batch = batch
        self.written: list[TakPeer] = []
        self.held: list[Held] | tuple[()] = ()  # announced in place of items (held.py)
        parts = []
        for pending in batch:  # (`Rendered.wire`'s cache read here: no call per item)
            rendered, variant = pending.rendered, pending.variant
            data = rendered.cache.get((variant, mode))
            if data is None:
                data = rendered.wire(variant, mode)
            if held is not None and len(data) > STREAM_BYTES:  # (the only cost: a test)
                data = self._announce(held, pending, mode, data)
            parts.append(data)
        self.data = b"".join(parts)

    def _announce(self, held: LongMessages, pending: Pending, mode: str, data: bytes) -> bytes:
        try:
            one = held.announce(pending.rendered, pending.variant, mode, data)
            if one is None:  # (not too long for commo after all: a protobuf frame's header)
                return data
            wire = held.wire(one, mode)
        except Exception:  # (our bug: it costs the announcement only, the item goes whole)
            log.exception("cannot announce item #%d; written whole", pending.rendered.item.seq)
            return data
        if not self.held:
            self.held = []
        self.held.append(one)
        return wire

    def count(self, hub: Hub) -> None:
        """What writing the batch counts, for each peer it was written to: items out by
        category and their latencies (`Hub.delivery`, summed up once), and the session's
        idle clock. A count that fails closes its own connection only."""
        batch = self.batch
        delivered = hub.delivery(batch)
        now = time.monotonic()
        for peer in self.written:
            conn = peer.conn
            assert conn is not None  # (set before it could be written)
            try:
                hub.record_delivery(conn, batch, delivered)
                peer.session.sent(now)
            except Exception:
                hub.wires.failed(conn)
