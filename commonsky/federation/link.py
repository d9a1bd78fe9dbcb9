"""TAK Federation v2 links: gRPC over mutual TLS, service `com.atakmap.FederatedChannel`.

A hub can listen (TAK's default port 9001) and dial; either way a link is one peer hub
named by a `[[federate]]`. What crosses is decided elsewhere (`bridge.py`); this module
moves `FederatedEvent`s and keeps the link alive, in TAK Server's own call order:

- **dialing** (TAK's `TakFigClient`): `ClientFederateGroupsStream` (our group names),
  `ClientEventStream(Subscription)` (the peer's events come down it), `ServerEventStream`
  (ours go up it), then `HealthCheck(SERVING)` every `timeout_federation_health_s`; after
  the first SERVING answer, `ClientROLStream` and `ServerROLStream` are opened and kept open
  (TAK Server drops a link whose ROL stream errors; mission changes are not applied here).
- **listening**: serves all of these; HealthCheck answers SERVING; ROL received is counted
  and ignored; `getIdentity` says who we are (a CommonSky peer then sends acknowledgements).

The peer is identified by its certificate only: verified by TLS against the configured CAs,
then matched to the `[[federate]]` whose `ca` issued it and/or whose `fingerprint` (SHA-256
of the DER certificate) it has. We present our full chain (hub certificate, then CA), which
TAK Server expects (`certChain[1]` is its CA).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
from cryptography import x509

from . import federation_pb2 as pb
from . import federation_pb2_grpc as rpc
from .peers import FederateConfig, fingerprint

__all__ = ["DEFAULT_PORT", "Dialer", "FederateConfig", "HubIdentity", "Link", "Listener"]

log = logging.getLogger("commonsky.federation")

DEFAULT_PORT = 9001
PRODUCT = "CommonSky"  # Identity.description: a peer that says this sends acknowledgements
_MAX_BACKOFF = 20  # redial waits double up to this many times timeout_federation_retry_s


@dataclass(frozen=True, slots=True)
class HubIdentity:
    """Our side of every link: the hub certificate chain and key, the roots we trust."""

    hub_id: str
    name: str
    chain_pem: bytes  # hub certificate, then its CA
    key_pem: bytes
    own_ca_pem: bytes
    cert_file: Path | None = None  # the same certificate and key as files, for the pin check
    key_file: Path | None = None

    @classmethod
    def from_ca_dir(cls, directory: Path, hub_id: str, name: str) -> HubIdentity:
        """Read `server.pem`, `server-key.pem` and `ca.pem` (`commonsky ca init`)."""
        cert = (directory / "server.pem").read_bytes()
        ca = (directory / "ca.pem").read_bytes()
        key = (directory / "server-key.pem").read_bytes()
        chain = cert.rstrip(b"\n") + b"\n" + ca
        return cls(
            hub_id, name, chain, key, ca, directory / "server.pem", directory / "server-key.pem"
        )


class Endpoint(Protocol):
    """What the hub side does with a link (bridge.py; tests give their own)."""

    def opened(self, link: Link) -> None:
        """A session is up: note what the peer is owed (the session starts catching up)."""

    def refill(self, link: Link) -> list[pb.FederatedEvent]:
        """The next page of what the peer is owed (read from the store as the stream
        drains); empty when caught up."""

    def received(self, link: Link, message: pb.FederatedEvent) -> None:
        """One message from the peer."""


_WAKE = pb.FederatedEvent()  # (identity-compared: wakes a stream to catch up again)


@dataclass(eq=False)
class Session:
    """One outbound stream to the peer; replaced when the peer reconnects.

    While `catching_up`, the stream draws pages from `refill` (the store, as it drains)
    before what is queued; the endpoint queues durable items only when it is not."""

    refill: Callable[[], list[pb.FederatedEvent]] = lambda: []
    queue: asyncio.Queue[pb.FederatedEvent | None] = field(default_factory=asyncio.Queue)
    closed: bool = False
    catching_up: bool = True
    behind: bool = False  # over the limit: catch up again once the queue drains to here

    @property
    def from_store(self) -> bool:
        """Whether durable items now reach the peer from the store, not the queue."""
        return self.catching_up or self.behind

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)

    def catch_up(self) -> None:
        """Go back to the store for durable items (the queue was over its limit) once what
        is queued has gone, so that they still leave in order."""
        if not self.from_store and not self.closed:
            self.behind = True
            self.queue.put_nowait(_WAKE)

    def ready(self) -> list[pb.FederatedEvent]:
        """What `messages` would yield now without waiting (in-memory links, tests)."""
        out: list[pb.FederatedEvent] = []
        while not self.closed:
            if self.catching_up:
                page = self.refill()
                if page:
                    out += page
                    continue
                self.catching_up = False
            if self.queue.empty():
                break
            queued = self.queue.get_nowait()
            if queued is None:
                break
            if queued is _WAKE:
                self.behind, self.catching_up = False, True
            else:
                out.append(queued)
        return out

    async def messages(self) -> AsyncIterator[pb.FederatedEvent]:
        while not self.closed:
            if self.catching_up:
                page = self.refill()
                if page:
                    for stored in page:
                        yield stored
                    continue
                self.catching_up = False  # (no await since the last page: nothing slipped)
            queued = await self.queue.get()
            if queued is None:
                return
            if queued is _WAKE:
                self.behind, self.catching_up = False, True
            else:
                yield queued


@dataclass(eq=False)
class Link:
    """One peer: its configuration, its current session, its counters (for /metrics)."""

    config: FederateConfig
    endpoint: Endpoint
    limit_queue: int = 20000
    session: Session | None = None
    peer_is_commonsky: bool = False
    items_in: int = 0
    items_out: int = 0
    dropped: int = 0  # live messages not queued while the queue was over its limit
    refused: int = 0
    reconnects: int = 0
    rol_ignored: int = 0
    internal_errors: int = 0
    last_in: float = 0.0  # wall clock of the last message received
    peer_groups: tuple[str, ...] = ()
    on_change: Callable[[Link], None] = lambda link: None
    _down: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def up(self) -> bool:
        return self.session is not None and not self.session.closed

    @property
    def full(self) -> bool:
        """Whether `limit_queue` messages are pending (then live ones are dropped and
        durable ones read from the store again once the stream drains)."""
        session = self.session
        return session is not None and session.queue.qsize() >= self.limit_queue

    def attach(self, commonsky: bool) -> Session:
        """A new outbound stream: it replaces any older one and starts by catching up."""
        if self.session is not None:
            self.session.close()
            self.reconnects += 1
        session = self.session = Session(refill=lambda: self.endpoint.refill(self))
        self._down.clear()
        self.peer_is_commonsky = commonsky
        log.info("federation link %s up (peer %s)", self.name, "CommonSky" if commonsky else "TAK")
        self.endpoint.opened(self)
        self.on_change(self)
        return session

    def detach(self, session: Session) -> None:
        session.close()
        if self.session is session:
            self.session = None
            self._down.set()
            log.info("federation link %s down", self.name)
            self.on_change(self)

    async def wait_down(self) -> None:
        """Return once the link has no session (streams kept open for as long as it is up)."""
        if self.up:
            await self._down.wait()

    def send(self, message: pb.FederatedEvent) -> bool:
        """Queue one message for the peer; False when the link is down (nothing queued).
        The endpoint minds `full` (see there)."""
        session = self.session
        if session is None or session.closed:
            return False
        session.queue.put_nowait(message)
        self.items_out += 1
        return True

    def receive(self, message: pb.FederatedEvent) -> None:
        self.items_in += 1
        self.last_in = time.time()
        try:
            self.endpoint.received(self, message)
        except Exception:
            # Our bug (the peer's faults are refused inside): it costs this message only,
            # never the link.
            self.internal_errors += 1
            log.exception("federation link %s: a received message failed", self.name)


def _our_identity(identity: HubIdentity, kind: pb.Identity.ConnectionType) -> pb.Identity:
    return pb.Identity(
        name=identity.name,
        uid=identity.hub_id,
        description=PRODUCT,
        type=kind,
        server_id=identity.hub_id,
    )


def _groups(link: Link) -> pb.FederateGroups:
    return pb.FederateGroups(federate_groups=list(link.config.parties))


class Servicer(rpc.FederatedChannelServicer):
    """The listening side of every link."""

    def __init__(self, identity: HubIdentity, links: dict[str, Link]) -> None:
        self.identity = identity
        self.links = links
        self._by_ca: list[tuple[x509.Certificate, Link]] = []
        for link in links.values():
            if link.config.ca is not None:
                for ca in x509.load_pem_x509_certificates(link.config.ca.read_bytes()):
                    self._by_ca.append((ca, link))

    def identify(self, context: grpc.aio.ServicerContext, name: str = "") -> Link | None:
        """The link of the peer's certificate: fingerprint first, then issuing CA (with the
        identity's name to tell apart federates under one CA). None: not a federate."""
        pems = context.auth_context().get("x509_pem_cert") or []
        if not pems:
            return None
        pem = pems[0]
        print_ = fingerprint(pem)
        candidates = [
            link
            for link in self.links.values()
            if link.config.fingerprint is not None and link.config.fingerprint == print_
        ]
        if not candidates:
            leaf = x509.load_pem_x509_certificate(pem)
            for ca, link in self._by_ca:
                if link.config.fingerprint is not None:
                    continue  # a pinned federate is only its certificate
                with contextlib.suppress(Exception):
                    leaf.verify_directly_issued_by(ca)
                    candidates.append(link)
        if len(candidates) > 1:
            candidates = [link for link in candidates if link.name == name] or candidates[:0]
        return candidates[0] if len(candidates) == 1 else None

    async def _refuse(self, context: grpc.aio.ServicerContext) -> None:
        cn = (context.auth_context().get("x509_common_name") or [b"?"])[0]
        log.warning(
            "federation: refused %s (certificate CN=%s matches no [[federate]])",
            context.peer(),
            cn.decode(errors="replace"),
        )
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not a configured federate")

    async def ClientEventStream(
        self, request: pb.Subscription, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.FederatedEvent]:
        link = self.identify(context, request.identity.name)
        if link is None:
            await self._refuse(context)
            return
        session = link.attach(commonsky=request.identity.description == PRODUCT)
        try:
            async for message in session.messages():
                yield message
        finally:
            link.detach(session)

    async def ServerEventStream(
        self, request_iterator: AsyncIterator[pb.FederatedEvent], context: grpc.aio.ServicerContext
    ) -> pb.Subscription:
        link = self.identify(context)
        if link is None:
            await self._refuse(context)
            return pb.Subscription()
        async for message in request_iterator:
            link.receive(message)
        return pb.Subscription(
            identity=_our_identity(self.identity, pb.Identity.FEDERATION_TAK_SERVER)
        )

    async def SendOneEvent(
        self, request: pb.FederatedEvent, context: grpc.aio.ServicerContext
    ) -> pb.Empty:
        link = self.identify(context)
        if link is None:
            await self._refuse(context)
            return pb.Empty()
        link.receive(request)
        return pb.Empty()

    async def HealthCheck(
        self, request: pb.ClientHealth, context: grpc.aio.ServicerContext
    ) -> pb.ServerHealth:
        if self.identify(context) is None:
            await self._refuse(context)
        return pb.ServerHealth(status=pb.ServerHealth.SERVING)

    async def getIdentity(
        self, request: pb.Empty, context: grpc.aio.ServicerContext
    ) -> pb.Identity:
        return _our_identity(self.identity, pb.Identity.FEDERATION_TAK_SERVER)

    async def ClientROLStream(
        self, request: pb.Subscription, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ROL]:
        link = self.identify(context, request.identity.name)
        if link is None:
            await self._refuse(context)
            return
        # Kept open while the link is: we publish no mission changes.
        await link.wait_down()
        nothing: list[pb.ROL] = []
        for rol in nothing:
            yield rol

    async def ServerROLStream(
        self, request_iterator: AsyncIterator[pb.ROL], context: grpc.aio.ServicerContext
    ) -> pb.Subscription:
        link = self.identify(context)
        if link is None:
            await self._refuse(context)
            return pb.Subscription()
        async for _rol in request_iterator:
            link.rol_ignored += 1  # missions and data feeds are not federated here
        return pb.Subscription()

    async def ServerFederateGroupsStream(
        self, request: pb.Subscription, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.FederateGroups]:
        link = self.identify(context, request.identity.name)
        if link is None:
            await self._refuse(context)
            return
        yield _groups(link)
        await link.wait_down()

    async def ClientFederateGroupsStream(
        self, request_iterator: AsyncIterator[pb.FederateGroups], context: grpc.aio.ServicerContext
    ) -> pb.Subscription:
        link = self.identify(context)
        if link is None:
            await self._refuse(context)
            return pb.Subscription()
        async for groups in request_iterator:
            link.peer_groups = tuple(groups.federate_groups)
        return pb.Subscription()


def server_credentials(identity: HubIdentity, links: list[Link]) -> grpc.ServerCredentials:
    """Mutual TLS: our chain; peers verified against every federate's CA and our own."""
    roots = [identity.own_ca_pem] + [
        link.config.ca.read_bytes() for link in links if link.config.ca is not None
    ]
    return grpc.ssl_server_credentials(
        [(identity.key_pem, identity.chain_pem)],
        root_certificates=b"\n".join(r.rstrip(b"\n") for r in roots) + b"\n",
        require_client_auth=True,
    )


class Listener:
    """The `kind = "federation"` listener: one gRPC server for every link."""

    def __init__(self, identity: HubIdentity, links: dict[str, Link], host: str, port: int):
        self.identity = identity
        self.links = links
        self.host = host
        self.port = port
        self.server: grpc.aio.Server | None = None

    async def start(self) -> int:
        """Bind and serve; returns the bound port (0 in the config: an ephemeral one)."""
        self.server = grpc.aio.server()
        rpc.add_FederatedChannelServicer_to_server(  # type: ignore[no-untyped-call]
            Servicer(self.identity, self.links), self.server
        )
        credentials = server_credentials(self.identity, list(self.links.values()))
        port: int = self.server.add_secure_port(f"{self.host}:{self.port}", credentials)
        if port == 0:
            raise OSError(f"cannot bind federation listener {self.host}:{self.port}")
        await self.server.start()
        self.port = port
        return port

    async def stop(self, grace: float = 1.0) -> None:
        for link in self.links.values():
            if link.session is not None:
                link.detach(link.session)
        if self.server is not None:
            await self.server.stop(grace)


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
            except grpc.aio.AioRpcError as exc:
                self.failures += 1
                log.warning(
                    "federation link %s: %s (%s); redialing in %.1f s",
                    self.link.name,
                    exc.code().name,
                    (exc.details() or "")[:200],
                    wait,
                )
            except Exception as exc:
                self.failures += 1
                log.warning(
                    "federation link %s: %s: %s; redialing in %.1f s",
                    self.link.name,
                    type(exc).__name__,
                    str(exc)[:200],
                    wait,
                )
            if time.monotonic() - started > 10 * self.retry_s:
                wait = self.retry_s  # it had been up: start the backoff again
            await asyncio.sleep(wait)
            wait = min(wait * 2, self.retry_s * _MAX_BACKOFF)

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
        context = ssl.create_default_context(cadata=self._roots_text())
        context.check_hostname = False
        context.load_cert_chain(*self._key_files())
        _reader, writer = await asyncio.open_connection(host, port, ssl=context)
        try:
            sslobj = writer.get_extra_info("ssl_object")
            der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if der is None or fingerprint(der) != pin:
            raise PermissionError(f"peer certificate is not the pinned {pin}")

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
                identity=_our_identity(self.identity, pb.Identity.FEDERATION_TAK_CLIENT)
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
            groups_out.put_nowait(_groups(link))
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
