"""The dialing half of TAK Federation v2 links (link.py's rule): TAK Server's own call
order (`TakFigClient`), health checks, redial with backoff, the peer's pin checked first.

A refused TLS handshake is one line naming the link, the peer's address and why: gRPC's own
error says only "Socket closed" when the peer refuses our certificate, so a handshake of our
own (`_why_refused`) finds out which side refused and for what."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
from cryptography import x509

from . import federation_pb2 as pb
from . import federation_pb2_grpc as rpc
from .link import PRODUCT, HubIdentity, Link, our_groups, our_identity
from .peers import fingerprint

log = logging.getLogger("commonsky.federation")
_MAX_BACKOFF = 20  # redial waits double up to this many times timeout_federation_retry_s
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # (a gRPC server answers it with SETTINGS)


class _PinMismatch(PermissionError):
    """The peer's certificate is not the pinned one."""


class Dialer:
    """Dials one peer and keeps the link up, in TAK Server's call order (module rule)."""

    def __init__(
        self, identity: HubIdentity, link: Link, health_s: float = 5.0, retry_s: float = 1.0
    ) -> None:
        assert link.config.connect is not None
        self.identity = identity
        self.link = link
        self.health_s = health_s
        self.retry_s = retry_s
        self.task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.failures = 0  # sessions that ended in an error (for tests and the log)
        self.calls: list[str] = []  # the calls of the last session, in the order made

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"federation-dial-{self.link.name}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def run(self) -> None:
        wait = self.retry_s
        while True:
            started = time.monotonic()
            try:
                await self.session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                try:
                    await self._failed(exc, wait)
                except Exception as worse:  # (explaining must never end the redialing)
                    log.warning("federation link %s: %s: %s (%s: %s); redialing in %.1f s",
                                self.link.name, type(exc).__name__, str(exc)[:200],
                                type(worse).__name__, str(worse)[:200], wait)  # fmt: skip
            if time.monotonic() - started > 10 * self.retry_s:
                wait = self.retry_s  # it had been up: start the backoff again
            await asyncio.sleep(wait)
            wait = min(wait * 2, self.retry_s * _MAX_BACKOFF)

    async def _failed(self, exc: Exception, wait: float) -> None:
        """One line for a session that ended: for a refused TLS handshake, which side
        refused and why (module rule)."""
        name = self.link.name
        host, port = self.link.config.connect  # type: ignore[misc]
        why: str | None
        if isinstance(exc, _PinMismatch):
            why = str(exc)
        elif isinstance(exc, ssl.SSLError) or (
            isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE
        ):
            why = await self._why_refused()
        else:
            why = None
        if why is not None:
            log.warning(
                "federation link %s: TLS handshake with %s:%d refused: %s; redialing in %.1f s",
                name,
                host,
                port,
                why,
                wait,
            )
        elif isinstance(exc, grpc.aio.AioRpcError):
            log.warning(
                "federation link %s: %s (%s); redialing in %.1f s",
                name,
                exc.code().name,
                (exc.details() or "")[:200],
                wait,
            )
        else:
            log.warning(
                "federation link %s: %s: %s; redialing in %.1f s",
                name,
                type(exc).__name__,
                str(exc)[:200],
                wait,
            )

    async def _why_refused(self) -> str | None:
        """Why a TLS handshake with the peer is refused, from one handshake of our own with
        the same roots and certificate; None when it completes (or the peer is not there)."""
        host, port = self.link.config.connect  # type: ignore[misc]
        try:
            context = self._tls_context()
        except (OSError, PermissionError):
            return None
        context.set_alpn_protocols(["h2"])
        answer, alert = b"", ""
        try:
            async with asyncio.timeout(self.health_s):
                reader, writer = await asyncio.open_connection(host, port, ssl=context)
        except ssl.SSLCertVerificationError as exc:
            roots = self._roots_name()
            return f"its certificate does not verify against {roots} ({exc.verify_message})"
        except ssl.SSLError as exc:  # refused in the handshake (TLS 1.2: the peer's alert)
            if "ALERT" not in str(exc.reason).upper():
                return f"TLS failed ({exc.reason}): is it a federation listener?"
            alert = f" (TLS: {exc.reason})"
        except (OSError, TimeoutError, ValueError):  # (ValueError: a name IDNA refuses)
            return None
        else:
            try:
                writer.write(_H2_PREFACE)
                async with asyncio.timeout(self.health_s):
                    answer = await reader.read(1)
            except ssl.SSLError as exc:  # (TLS 1.3: the peer's alert comes after)
                alert = f" (TLS: {exc.reason})"
            except (OSError, TimeoutError):
                return None
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        if answer:
            return None
        return f"the peer does not accept our certificate ({self._ours()}){alert}; its log says why"

    def _ours(self) -> str:
        """Our certificate, as the peer's operator would look it up."""
        cert = x509.load_pem_x509_certificate(self.identity.chain_pem)
        text = f"{cert.subject.rfc4514_string()}, issued by {cert.issuer.rfc4514_string()}"
        now = datetime.now(UTC)
        if cert.not_valid_after_utc < now:
            text += f", EXPIRED {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        elif cert.not_valid_before_utc > now:
            text += f", not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        return text

    def _roots_name(self) -> str:
        ca = self.link.config.ca
        return f"ca = {str(ca)!r}" if ca is not None else "this hub's own CA"

    def _tls_context(self) -> ssl.SSLContext:
        """Our side of a handshake of our own: the link's roots and our certificate."""
        context = ssl.create_default_context(cadata=self._roots_text())
        context.check_hostname = False
        context.load_cert_chain(*self._key_files())
        return context

    def _credentials(self) -> grpc.ChannelCredentials:
        ca = self.link.config.ca
        roots = ca.read_bytes() if ca is not None else self.identity.own_ca_pem
        return grpc.ssl_channel_credentials(
            root_certificates=roots,
            private_key=self.identity.key_pem,
            certificate_chain=self.identity.chain_pem,
        )

    async def _check_pin(self, host: str, port: int) -> None:
        """A pinned peer (`fingerprint`): its certificate, read by a TLS handshake of our own
        before gRPC's (which does not show it), must be the pinned one."""
        pin = self.link.config.fingerprint
        if pin is None:
            return
        _reader, writer = await asyncio.open_connection(host, port, ssl=self._tls_context())
        try:
            sslobj = writer.get_extra_info("ssl_object")
            der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if der is None or fingerprint(der) != pin:
            shown = fingerprint(der) if der is not None else "none"
            raise _PinMismatch(f"its certificate ({shown}) is not the pinned {pin}")

    def _roots_text(self) -> str:
        ca = self.link.config.ca
        return (ca.read_bytes() if ca is not None else self.identity.own_ca_pem).decode("ascii")

    def _key_files(self) -> tuple[str, str]:
        if self.identity.cert_file is None or self.identity.key_file is None:
            raise PermissionError("fingerprint pinning when dialing needs the hub's key files")
        return str(self.identity.cert_file), str(self.identity.key_file)

    async def session(self) -> None:
        host, port = self.link.config.connect  # type: ignore[misc]
        await self._check_pin(host, port)
        options = [("grpc.keepalive_time_ms", 10000), ("grpc.keepalive_timeout_ms", 5000)]
        async with grpc.aio.secure_channel(f"{host}:{port}", self._credentials(), options) as ch:
            stub = rpc.FederatedChannelStub(ch)  # type: ignore[no-untyped-call]
            link = self.link
            subscription = pb.Subscription(
                identity=our_identity(self.identity, pb.Identity.FEDERATION_TAK_CLIENT)
            )
            subscription.identity.name = self.identity.name
            self.calls = ["getIdentity"]
            try:
                peer = await stub.getIdentity(pb.Empty(), timeout=self.health_s)
                commonsky = peer.description == PRODUCT
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                commonsky = False  # a TAK Server need not answer getIdentity
            done = asyncio.Event()
            groups_out: asyncio.Queue[pb.FederateGroups | None] = asyncio.Queue()
            groups_out.put_nowait(our_groups(link))
            self.calls.append("ClientFederateGroupsStream")
            groups_call = stub.ClientFederateGroupsStream(_drain(groups_out))
            self.calls.append("ClientEventStream")
            events_in = stub.ClientEventStream(subscription)
            out = link.attach(commonsky)
            self.calls.append("ServerEventStream")
            events_out = stub.ServerEventStream(out.messages())
            tasks = [
                asyncio.create_task(self._read(events_in)),
                asyncio.create_task(self._health(stub, subscription, done)),
                asyncio.create_task(_await_call(events_out)),
                asyncio.create_task(_await_call(groups_call)),
            ]
            self.connected.set()
            try:
                finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    task.result()  # raises what ended it
                raise ConnectionError("a federation stream ended")
            finally:
                self.connected.clear()
                link.detach(out)
                groups_out.put_nowait(None)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, events: Any) -> None:
        async for message in events:
            self.link.receive(message)

    async def _health(self, stub: Any, subscription: pb.Subscription, done: asyncio.Event) -> None:
        rol_tasks: list[asyncio.Task[None]] = []
        rol_out: asyncio.Queue[pb.ROL | None] = asyncio.Queue()
        try:
            while True:
                if not rol_tasks:
                    self.calls.append("HealthCheck")
                answer = await stub.HealthCheck(
                    pb.ClientHealth(status=pb.ClientHealth.SERVING), timeout=self.health_s
                )
                if answer.status != pb.ServerHealth.SERVING:
                    raise ConnectionError(f"peer health {answer.status}")
                if not rol_tasks:
                    # TAK's order: the ROL streams only after the first SERVING answer.
                    self.calls += ["ClientROLStream", "ServerROLStream"]
                    rol_tasks.append(
                        asyncio.create_task(self._ignore_rol(stub.ClientROLStream(subscription)))
                    )
                    rol_tasks.append(
                        asyncio.create_task(_await_call(stub.ServerROLStream(_drain(rol_out))))
                    )
                    rol_tasks.append(
                        asyncio.create_task(
                            self._note_groups(stub.ServerFederateGroupsStream(subscription))
                        )
                    )
                for task in rol_tasks:
                    if task.done():
                        task.result()
                        raise ConnectionError("a ROL or groups stream ended")
                await asyncio.sleep(self.health_s)
        finally:
            rol_out.put_nowait(None)
            for task in rol_tasks:
                task.cancel()
            await asyncio.gather(*rol_tasks, return_exceptions=True)

    async def _ignore_rol(self, call: Any) -> None:
        async for _rol in call:
            self.link.rol_ignored += 1
        await asyncio.Event().wait()  # the server closed it: keep the link regardless

    async def _note_groups(self, call: Any) -> None:
        async for groups in call:
            self.link.peer_groups = tuple(groups.federate_groups)
        await asyncio.Event().wait()


async def _drain(queue: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    while True:
        item = await queue.get()
        if item is None:
            return
        yield item


async def _await_call(call: Any) -> None:
    await call
