"""TAK listeners: thin asyncio adapters that move bytes between sockets and `TakStream`.

Identity is fixed when the connection opens — the listener's party for `tak-tcp`, the
client certificate's O (party) and CN (user) for `tak-tls` — and never read from content.
Each connection has a reader (this coroutine) and a writer task draining its outbox; both
end in `finally`, and the hub forgets the connection there.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import socket
import ssl
import time
from pathlib import Path

from cryptography import x509

from commonsky.config import ListenerConfig
from commonsky.errors import CommonSkyError, UsageError
from commonsky.pki import CA_CERT, SERVER_CERT, SERVER_KEY
from commonsky.protocol.cot import XmlLimits
from commonsky.protocol.liveness import Liveness
from commonsky.protocol.stream import EventReceived, MessageRefused, TakStream
from commonsky.revocation import Revocations

from .core import Connection, Hub
from .outbox import Outbox

log = logging.getLogger("commonsky.listener")
_ids = itertools.count(1)


def tls_context(config: ListenerConfig) -> ssl.SSLContext:
    """The server side of a TLS listener (`tak-tls`, `marti`; `enroll` asks for no client
    certificate): its certificate, and the CA its clients' certificates must chain to.
    Raises UsageError naming the listener, the file and the fix."""
    assert config.ca is not None
    ca_dir = Path(config.ca)
    cert = config.cert or ca_dir / SERVER_CERT
    key = config.key or ca_dir / SERVER_KEY
    fix = (
        f"run `commonsky ca init --dir {ca_dir}`"
        if config.cert is None
        else "check the cert and key files it names"
    )
    for path in (cert, key, ca_dir / CA_CERT):
        if not path.is_file():
            raise UsageError(f"{config.where} ({config.kind}): {path} is missing; {fix}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(
            f"{config.where} ({config.kind}): {cert} / {key}: not a certificate and its key "
            f"({_reason(exc)}); {fix}"
        ) from None
    try:
        context.load_verify_locations(ca_dir / CA_CERT)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(
            f"{config.where} ({config.kind}): {ca_dir / CA_CERT}: not a CA certificate "
            f"({_reason(exc)}); {fix}"
        ) from None
    return context


def port_problem(port: int, exc: OSError) -> str:
    """What an operator should read when a port cannot be bound."""
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is already in use (another hub or program); stop it or pick another"
    if exc.errno == errno.EACCES:
        return f"port {port} needs privileges this user lacks; pick a port above 1023"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "no network interface of this machine has that address"
    return f"cannot listen ({exc.strerror})"


def bind_http(host: str, port: int, where: str) -> socket.socket:
    """The HTTP listening socket, bound here so that a busy port is one line (UsageError)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"{where} = {host}:{port}: cannot resolve {host!r} ({exc})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UsageError(f"{where} = {host}:{port}: {port_problem(port, exc)}") from None
    sock.set_inheritable(True)
    return sock


def _reason(exc: BaseException) -> str:
    """An operator's words for a TLS failure: OpenSSL's verify message or reason code."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return str(exc.verify_message)
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    if isinstance(exc, TimeoutError):
        return "no handshake within tls_handshake_timeout_s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _peer(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def _subject(peercert: object) -> dict[str, list[str]]:
    """Every value of each attribute of the certificate's subject (a name may repeat)."""
    fields: dict[str, list[str]] = {}
    if isinstance(peercert, dict):
        for rdn in peercert.get("subject", ()):
            for name, value in rdn:
                fields.setdefault(name, []).append(value)
    return fields


class TakListener:
    def __init__(
        self,
        hub: Hub,
        config: ListenerConfig,
        tls: ssl.SSLContext | None = None,
        revocations: Revocations | None = None,
    ) -> None:
        self.hub = hub
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

    async def start(self) -> None:
        try:
            # TLS is started per connection (`_handle`), not by the server, so that a refused
            # handshake reaches our log with its peer and reason; asyncio would swallow it.
            self.server = await asyncio.start_server(
                self._handle,
                self.config.host,
                self.config.port,
                limit=self.limits.message_bytes * 2,
            )
        except OSError as exc:
            raise UsageError(
                f"{self.config.where} bind = '{self.config.host}:{self.config.port}': "
                f"{port_problem(self.config.port, exc)}"
            ) from None
        self.port = self.server.sockets[0].getsockname()[1]
        self.name = f"{self.config.kind}:{self.config.host}:{self.port}"
        log.info("listening %s", self.name)

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
        settings = hub.settings
        peer = _peer(writer)
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
                peer,
                refused,
            )
            writer.transport.abort()
            return
        stream = TakStream(self.limits)
        closing: list[str] = []

        def close(reason: str) -> None:
            if not closing:
                closing.append(reason)
                hub.metrics.close(reason)
                writer.transport.abort() if reason == "too_slow" else writer.close()

        conn = Connection(
            party=party,
            user=user,
            listener=self.config.kind,
            outbox=Outbox(settings.limit_queue_tracks, settings.limit_queue_durable),
            mode=lambda: stream.mode.value,
            close=close,
            id=f"{self.name}#{next(_ids)}",
            peer=peer,
        )
        high_water = 4 * self.limits.message_bytes + 262144

        def flush() -> None:
            if closing or writer.transport.is_closing():
                return
            if writer.transport.get_write_buffer_size() > high_water:
                # The reader is behind: live updates merge (newest per uid) until it drains.
                for overflow in conn.outbox.push_back():
                    hub.metrics.drop(overflow)
                conn.outbox.ready.set()  # the writer task waits for drain, then flushes
                return
            batch = conn.outbox.take()
            if batch:
                mode = conn.mode()
                writer.write(b"".join(p.rendered.wire(p.variant, mode) for p in batch))
                hub.record_delivery(conn, batch)
                liveness.sent(time.monotonic())
            if conn.outbox.backlog is not None:
                conn.outbox.ready.set()  # more of the replay owed: next page once it drains

        liveness = Liveness.start(
            time.monotonic(),
            settings.timeout_idle_s,
            settings.timeout_partial_event_s,
        )
        conn.flush = flush
        log.info("%s: %s/%s connected from %s", self.name, party, user or "?", peer)
        writer.write(stream.offer(hub.clock()))
        hub.attach(conn)
        serial = self._serial(writer) if self.revocations is not None else None
        if serial is not None:
            self._serials[conn] = serial
        writer_task = asyncio.create_task(self._write_loop(conn, writer))
        refusal_limit = settings.limit_refusals_before_close
        try:
            while not closing:
                now = time.monotonic()
                expired = liveness.expired(now)
                if expired is not None:
                    hub.log_limited(
                        log,
                        expired,
                        conn.id,
                        "%s %s/%s: closing, %s timeout (%s)",
                        self.name,
                        party,
                        conn.user or peer,
                        expired,
                        "timeout_partial_event_s"
                        if expired == "partial_event"
                        else "timeout_idle_s: nothing received or sent",
                        level=logging.INFO,
                    )
                    if expired == "partial_event":
                        hub.metrics.refuse("partial_event")
                    close(expired)
                    break
                try:
                    async with asyncio.timeout(liveness.deadline() - now):
                        data = await reader.read(65536)
                except TimeoutError:
                    continue  # `expired` decides (what was sent meanwhile may have moved it)
                if not data:
                    break
                completed = stream.completed
                events = stream.receive_data(data, hub.clock())
                reply = stream.data_to_send()
                if reply:
                    writer.write(reply)
                liveness.heard(time.monotonic(), stream.partial, stream.completed > completed)
                for event in events:
                    if isinstance(event, EventReceived):
                        if not conn.user:
                            conn.user = event.event.uid  # a TCP client is known by its own uid
                        try:
                            hub.accept(party, conn.user, event.event, conn)
                        except CommonSkyError as exc:
                            # The error's hints decide (errors.py): close (a store that
                            # cannot write: nothing was stored or relayed, and the client
                            # sends again when it reconnects), or refuse the message.
                            if exc.close:
                                log.error(
                                    "%s %s/%s: %s; closing", self.name, party, user or peer, exc
                                )
                                close(exc.reason)
                                break
                            if exc.http_status < 500:
                                event = MessageRefused(exc.reason, exc.public())
                            else:
                                hub.metrics.internal_error("accept")
                                log.exception("%s %s/%s: accepting failed", self.name, party, peer)
                                continue
                        except Exception:
                            # Our bug, not the peer's: logged with its traceback and counted;
                            # the connection and the rest of its read go on.
                            hub.metrics.internal_error("accept")
                            log.exception(
                                "%s %s/%s: accepting %r failed",
                                self.name,
                                party,
                                conn.user or peer,
                                event.event.uid[:120],
                            )
                            continue
                    if isinstance(event, MessageRefused):
                        conn.refusals += 1
                        hub.metrics.refuse(event.reason)
                        hub.log_limited(
                            log,
                            event.reason,
                            conn.id,
                            "%s %s/%s refused (%s): %s",
                            self.name,
                            party,
                            conn.user or peer,
                            event.reason,
                            event.message[:300],  # (a peer chooses what the message quotes)
                        )
                        if event.fatal or conn.refusals >= refusal_limit:
                            close("refusals" if not event.fatal else event.reason)
                            break
        except (ConnectionError, ssl.SSLError) as exc:
            closing.append(f"connection lost: {exc}")
        except Exception:
            # Our bug (the parser's, say), not the peer's: logged with its traceback and
            # counted, and the close carries its reason like every other close of the hub's.
            hub.metrics.internal_error("connection")
            log.exception("%s %s/%s: reading failed; closing", self.name, party, conn.user or peer)
            close("internal_error")
        finally:
            log.info(
                "%s: %s/%s from %s disconnected (%s)",
                self.name,
                party,
                conn.user or "?",
                peer,
                closing[0] if closing else "closed by the client",
            )
            hub.detach(conn)
            self._serials.pop(conn, None)
            writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer_task
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

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
