"""Shared fixtures: a real hub on port 0 and a small TAK test client.

The client deliberately does not use CommonSky's own codec to read what it receives: XML is
parsed with the standard library and protobuf frames with takproto, so a bug in our codec
cannot hide itself by being symmetric.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import takproto
from hypothesis import settings

from commonsky.bench.ports import HeldPorts
from commonsky.config import HubConfig, config_from_dict
from commonsky.server import HubServer

# No per-example deadline for any property test: speed is measured by benchmarks, not by
# tests, and hypothesis's default (200 ms an example) failed a pure property test
# (tests/cluster/test_live_failover.py) on a loaded 2-core machine — a timing, not a finding.
# A test's own `@settings` still sets what it names; this is what the others inherit.
settings.register_profile("commonsky", deadline=None)
settings.load_profile("commonsky")

PARTIES = ["USA", "JPN", "KOR", "RUS"]
OPERATOR_TOKEN = "test-operator-token-0123456789"


def token_of(party: str) -> str:
    return f"test-token-{party.lower()}-0123456789"


def base_config(
    tmp_path: Path,
    agreements: list[dict[str, Any]] | None = None,
    server: dict[str, Any] | None = None,
    tls_ca: Path | None = None,
) -> HubConfig:
    listeners: list[dict[str, Any]] = [
        {"kind": "tak-tcp", "bind": "127.0.0.1:0", "party": p} for p in PARTIES
    ]
    if tls_ca is not None:
        listeners.append({"kind": "tak-tls", "bind": "127.0.0.1:0", "ca": str(tls_ca)})
    data = {
        "server": {
            "data_dir": str(tmp_path / "hub"),
            "http": "127.0.0.1:0",
            "operator_token": OPERATOR_TOKEN,
            **(server or {}),
        },
        "listener": listeners,
        "party": [{"id": p, "token": token_of(p)} for p in PARTIES],
        "agreement": agreements or [],
    }
    return config_from_dict(data, "test")


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def barrier_event(uid: str, cot_type: str = "a-f-G") -> bytes:
    """A plain CoT event, written by hand: a track (or a ping, `t-x-c-t`) for barriers."""
    now = datetime.now(UTC)
    return (
        f'<event version="2.0" uid="{uid}" type="{cot_type}" time="{_stamp(now)}" '
        f'start="{_stamp(now)}" stale="{_stamp(now + timedelta(minutes=5))}" how="m-g">'
        '<point lat="1.0" lon="1.0" hae="0" ce="10" le="10"/><detail/></event>'
    ).encode()


_barriers = itertools.count()


@dataclass
class TakClient:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    proto: bool = False
    party: str = ""
    buffer: bytearray = field(default_factory=bytearray)
    events: list[dict[str, Any]] = field(default_factory=list)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def _read_some(self, timeout: float) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except TimeoutError:
            return False
        if not data:
            raise ConnectionError("closed by hub")
        self.buffer += data
        self._split()
        return True

    def _split(self) -> None:
        while True:
            if self.proto and self.buffer[:1] == b"\xbf":
                # Length-delimited TakMessage: let takproto parse it.
                length, shift, i = 0, 0, 1
                while i < len(self.buffer):
                    b = self.buffer[i]
                    length |= (b & 0x7F) << shift
                    i += 1
                    if not b & 0x80:
                        break
                    shift += 7
                else:
                    return
                if len(self.buffer) < i + length:
                    return
                frame = bytes(self.buffer[: i + length])
                del self.buffer[: i + length]
                msg = takproto.parse_proto(bytearray(frame))
                cot = msg.cotEvent
                self.events.append(
                    {
                        "uid": cot.uid,
                        "type": cot.type,
                        "lat": cot.lat,
                        "lon": cot.lon,
                        "hae": cot.hae,
                        "callsign": cot.detail.contact.callsign,
                        "xmlDetail": cot.detail.xmlDetail,
                        "wire": "proto",
                    }
                )
                continue
            end = self.buffer.find(b"</event>")
            if end < 0:
                return
            frame = bytes(self.buffer[: end + 8])
            del self.buffer[: end + 8]
            root = ET.fromstring(frame.strip())
            point = root.find("point")
            contact = root.find("detail/contact")
            assert point is not None
            self.events.append(
                {
                    "uid": root.get("uid"),
                    "type": root.get("type"),
                    "lat": float(point.get("lat", "nan")),
                    "lon": float(point.get("lon", "nan")),
                    "hae": float(point.get("hae", "nan")),
                    "callsign": contact.get("callsign") if contact is not None else None,
                    "detail": ET.tostring(root.find("detail") or ET.Element("detail"), "unicode"),
                    "wire": "xml",
                }
            )
            if root.get("type") == "t-x-takp-r":
                self.proto = True

    async def collect(self, duration: float = 0.3) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        end = loop.time() + duration
        while (left := end - loop.time()) > 0:
            await self._read_some(left)
        return self.items()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 3.0
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            for event in self.events:
                if predicate(event):
                    return event
            left = end - loop.time()
            if left <= 0:
                raise AssertionError(f"no matching event in {timeout}s; got {self.items()}")
            await self._read_some(left)

    def items(self) -> list[dict[str, Any]]:
        """Received events other than protocol control (t-x-…)."""
        return [e for e in self.events if not str(e["type"]).startswith("t-x-")]

    async def sync(self) -> None:
        """A ping and its pong: once the pong is back, the hub has taken in everything this
        connection sent before the ping (it reads a connection in order and answers the
        ping after handing on what came before it)."""
        ping = barrier_event(f"sync-{next(_barriers)}", "t-x-c-t")
        if self.proto:  # after the negotiation only TAK protobuf is read
            ping = bytes(takproto.xml2proto(ping, takproto.TAKProtoVer.STREAM))
        self.send(ping)
        seen = len(self.events)
        # (pongs are alike: the one wanted is one that came after this ping was sent)
        await self.wait_for(
            lambda e: e["type"] == "t-x-c-t-r" and any(e is x for x in self.events[seen:])
        )

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class RunningHub:
    def __init__(self, server: HubServer) -> None:
        self.server = server
        self.hub = server.hub
        self.clients: list[TakClient] = []

    def tcp_port(self, party: str) -> int:
        return next(ln.port for ln in self.server.listeners if ln.config.party == party)

    async def connect(self, party: str, settle: float = 0.05) -> TakClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.tcp_port(party))
        client = TakClient(reader, writer, party=party)
        self.clients.append(client)
        await asyncio.sleep(settle)
        return client

    async def received_before_barrier(
        self, observer: TakClient, *senders: TakClient
    ) -> list[dict[str, Any]]:
        """What `observer` received before a barrier, the exact way to show that something
        did NOT arrive (never a wait of some fraction of a second). First each of `senders`
        syncs (its input is all taken in, so whatever it routed to `observer` is queued
        there); then another connection of the observer's party sends a track, which every
        connection of a party receives and which is queued behind all that: once it is
        in, nothing routed before it is still on the way. Returns the items before it."""
        for sender in senders:
            await sender.sync()
        mate = await self.connect(observer.party, settle=0)
        uid = f"barrier-{next(_barriers)}"
        mate.send(barrier_event(uid))
        event = await observer.wait_for(lambda e: e["uid"] == uid)
        before = observer.events[: observer.events.index(event)]
        return [e for e in before if not str(e["type"]).startswith("t-x-")]

    async def connect_all(self, parties: tuple[str, ...]) -> list[TakClient]:
        return [await self.connect(p) for p in parties]

    async def connect_tls(self, cert: Path, key: Path, ca: Path) -> TakClient:
        context = ssl.create_default_context(cafile=str(ca))
        context.load_cert_chain(cert, key)
        port = self.server.port("tak-tls")
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost"
        )
        client = TakClient(reader, writer)
        self.clients.append(client)
        return client

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"


@contextlib.asynccontextmanager
async def running_hub(
    config: HubConfig, init: bool = False, clock: Callable[[], float] = time.time
) -> AsyncIterator[RunningHub]:
    server = HubServer(config, init=init, clock=clock)
    await server.start()
    running = RunningHub(server)
    try:
        yield running
    finally:
        for client in running.clients:
            await client.close()
        await server.stop()


@pytest.fixture
def held_port() -> Iterator[Callable[[], int]]:
    """`held_port()`: a port of 127.0.0.1 held (bench/ports.reserve_port) until the test ends,
    for a process that must be told its port before it starts; no other `bind(0)` gets it."""
    with HeldPorts() as held:
        yield held.port


@pytest.fixture
def make_hub(tmp_path: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[RunningHub]]:
    def factory(
        agreements: list[dict[str, Any]] | None = None, **kw: Any
    ) -> contextlib.AbstractAsyncContextManager[RunningHub]:
        return running_hub(base_config(tmp_path, agreements, **kw))

    return factory


# ---- the middle level: the API through an in-process client ------------------------------


class ApiHub:
    """A hub with no sockets: its HTTP app driven by httpx in this process (datasette's
    `ds_client` habit). Requests run the same handlers, policy, store and ledger as the real
    server; only uvicorn and the TAK listeners are left out, so a test costs milliseconds."""

    def __init__(self, server: HubServer) -> None:
        from commonsky.http.app import build_app

        self.server = server
        self.hub = server.hub
        self.app = build_app(server.services)
        self.clients: list[httpx.AsyncClient] = []

    def client(self, party: str | None = None, token: str | None = None) -> httpx.AsyncClient:
        """A client speaking as `party` (its bearer token), as `token`, or with no token."""
        token = token or (token_of(party) if party else None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://hub", headers=headers
        )
        self.clients.append(client)
        return client


@contextlib.asynccontextmanager
async def api_hub(
    config: HubConfig, clock: Callable[[], float] | None = None
) -> AsyncIterator[ApiHub]:
    server = HubServer(config, **({"clock": clock} if clock else {}))
    server.hub.call_soon = asyncio.get_running_loop().call_soon
    running = ApiHub(server)
    try:
        yield running
    finally:
        for client in running.clients:
            await client.aclose()
        server._release()


@pytest.fixture
def make_api(tmp_path: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[ApiHub]]:
    """`async with make_api(agreements, server={...}) as hub:` then `hub.client("USA")`."""

    def factory(
        agreements: list[dict[str, Any]] | None = None,
        clock: Callable[[], float] | None = None,
        **kw: Any,
    ) -> contextlib.AbstractAsyncContextManager[ApiHub]:
        return api_hub(base_config(tmp_path, agreements, **kw), clock)

    return factory
