"""TAK listeners: thin asyncio adapters that move bytes between sockets and `TakStream`.

Identity is fixed when the connection opens — the listener's party for `tak-tcp`, the
client certificate's O (party) and CN (user) for `tak-tls` — and never read from content.
Each connection has a reader (this coroutine) and a writer task draining its outbox; both
end in `finally`, and the hub forgets the connection there.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import time
from pathlib import Path

from commonsky.config import ListenerConfig
from commonsky.errors import RemoteProtocolError, StoreUnavailable, UsageError
from commonsky.pki import CA_CERT, SERVER_CERT, SERVER_KEY
from commonsky.protocol.cot import XmlLimits
from commonsky.protocol.stream import EventReceived, MessageRefused, TakStream

from .core import Connection, Hub
from .outbox import Outbox

log = logging.getLogger("commonsky.listener")
_ids = itertools.count(1)


def tls_context(config: ListenerConfig) -> ssl.SSLContext:
    assert config.ca is not None
    ca_dir = Path(config.ca)
    cert = config.cert or ca_dir / SERVER_CERT
    key = config.key or ca_dir / SERVER_KEY
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_cert_chain(cert, key)
        context.load_verify_locations(ca_dir / CA_CERT)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(
            f"tak-tls listener: cannot load certificates from {ca_dir}: {exc}"
        ) from None
    return context


def _subject(peercert: object) -> dict[str, str]:
    fields: dict[str, str] = {}
    if isinstance(peercert, dict):
        for rdn in peercert.get("subject", ()):
            for name, value in rdn:
                fields[name] = value
    return fields


class TakListener:
    def __init__(self, hub: Hub, config: ListenerConfig) -> None:
        self.hub = hub
        self.config = config
        self.name = f"{config.kind}:{config.host}:{config.port}"
        self.server: asyncio.Server | None = None
        self.port = config.port
        s = hub.settings
        self.limits = XmlLimits(
            s.get_int("limit_message_bytes"),
            s.get_int("limit_xml_depth"),
            s.get_int("limit_attribute_bytes"),
        )
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        context = tls_context(self.config) if self.config.kind == "tak-tls" else None
        handshake = self.hub.settings.get_float("tls_handshake_timeout_s") if context else None
        try:
            self.server = await asyncio.start_server(
                self._handle,
                self.config.host,
                self.config.port,
                ssl=context,
                ssl_handshake_timeout=handshake,
                limit=self.limits.message_bytes * 2,
            )
        except OSError as exc:
            raise UsageError(f"listener {self.name}: cannot bind: {exc.strerror}") from None
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("listening %s (port %d)", self.name, self.port)

    async def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self.tasks.discard(task)

    def _identity(self, writer: asyncio.StreamWriter) -> tuple[str, str] | None:
        if self.config.kind == "tak-tcp":
            assert self.config.party is not None
            return self.config.party, ""
        subject = _subject(writer.get_extra_info("peercert"))
        party, user = subject.get("organizationName"), subject.get("commonName")
        if not party or not user or party not in self.hub.policy.parties:
            self.hub.metrics.refuse("unknown_party")
            log.warning(
                "%s: certificate O=%r CN=%r names no declared party; closing",
                self.name,
                party,
                user,
            )
            return None
        return party, user

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hub = self.hub
        settings = hub.settings
        peer = str(writer.get_extra_info("peername"))
        identity = self._identity(writer)
        if identity is None:
            writer.close()
            return
        if sum(len(g) for g in hub.connections.values()) >= settings.get_int("limit_connections"):
            hub.metrics.close("limit_connections")
            writer.close()
            return
        party, user = identity
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
            outbox=Outbox(
                settings.get_int("limit_queue_tracks"), settings.get_int("limit_queue_durable")
            ),
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
                conn.outbox.ready.set()  # the writer task waits for drain, then flushes
                return
            batch = conn.outbox.take()
            if batch:
                mode = conn.mode()
                writer.write(b"".join(p.rendered.wire(p.variant, mode) for p in batch))
                hub.record_delivery(conn, batch)

        conn.flush = flush
        writer.write(stream.offer(hub.clock()))
        hub.attach(conn)
        writer_task = asyncio.create_task(self._write_loop(conn, writer))
        idle = settings.get_float("timeout_idle_s")
        partial_timeout = settings.get_float("timeout_partial_event_s")
        partial_since: float | None = None
        refusal_limit = settings.get_int("limit_refusals_before_close")
        try:
            while not closing:
                now = time.monotonic()
                wait = (
                    idle
                    if partial_since is None
                    else min(idle, max(0.0, partial_since + partial_timeout - now))
                )
                try:
                    async with asyncio.timeout(wait):
                        data = await reader.read(65536)
                except TimeoutError:
                    reason = "idle" if partial_since is None else "partial_event"
                    log.info(
                        "%s %s/%s: closing, %s timeout", self.name, party, user or peer, reason
                    )
                    if reason == "partial_event":
                        hub.metrics.refuse("partial_event")
                    close(reason)
                    break
                if not data:
                    break
                events = stream.receive_data(data, hub.clock())
                reply = stream.data_to_send()
                if reply:
                    writer.write(reply)
                partial_since = (
                    (partial_since or time.monotonic()) if stream.pending_bytes else None
                )
                for event in events:
                    if isinstance(event, EventReceived):
                        if not conn.user:
                            conn.user = event.event.uid  # a TCP client is known by its own uid
                        try:
                            hub.accept(party, conn.user, event.event, conn)
                        except RemoteProtocolError as exc:
                            event = MessageRefused(exc.reason, str(exc))
                        except StoreUnavailable as exc:
                            # Not stored, so not relayed: closing tells the client; it sends
                            # again when it reconnects.
                            log.error("%s %s/%s: %s; closing", self.name, party, user or peer, exc)
                            close("store_unavailable")
                            break
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
                        log.warning(
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
            log.info("%s %s/%s: connection lost: %s", self.name, party, conn.user or peer, exc)
        finally:
            hub.detach(conn)
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
                conn.flush()
        except (ConnectionError, ssl.SSLError):
            conn.close("write_failed")
