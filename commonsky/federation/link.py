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
  and ignored; `getIdentity` says who we are (a CommonSky peer then sends acknowledgements)
  — to a caller whose certificate is a federate's, like every other call.

This module holds what both sides share (the link, its sessions, our identity); the
dialing half is dial.py, the listening half listen.py.

The peer is identified by its certificate only: verified by TLS against the configured CAs,
then matched to the `[[federate]]` whose `ca` issued it and/or whose `fingerprint` (SHA-256
of the DER certificate) it has. We present our full chain (hub certificate, then CA), which
TAK Server expects (`certChain[1]` is its CA).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from . import federation_pb2 as pb
from .peers import FederateConfig

__all__ = ["DEFAULT_PORT", "FederateConfig", "HubIdentity", "Link"]

log = logging.getLogger("commonsky.federation")

DEFAULT_PORT = 9001
PRODUCT = "CommonSky"  # Identity.description: a peer that says this sends acknowledgements


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


def our_identity(identity: HubIdentity, kind: pb.Identity.ConnectionType) -> pb.Identity:
    return pb.Identity(
        name=identity.name,
        uid=identity.hub_id,
        description=PRODUCT,
        type=kind,
        server_id=identity.hub_id,
    )


def our_groups(link: Link) -> pb.FederateGroups:
    return pb.FederateGroups(federate_groups=list(link.config.parties))
