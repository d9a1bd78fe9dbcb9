"""A TAK-Server-shaped federation peer for tests, written from fig.proto's shapes and TAK
Server's documented call order — deliberately NOT from commonsky.federation.link, so a
mistake there cannot hide itself by being symmetric. It uses only the generated message
classes and grpc.aio.

- `TakClient` dials like TAK's `TakFigClient`: ClientFederateGroupsStream, then
  ClientEventStream(Subscription) to receive, ServerEventStream to send, HealthCheck every
  interval, and after the first SERVING the ROL streams (it can push a ROL message).
- `TakServer` listens like TAK's federation server: answers HealthCheck SERVING, streams
  events down ClientEventStream, collects ServerEventStream, keeps ROL streams open (it can
  push a ROL message down ClientROLStream), does not implement getIdentity.
Both record the calls they see, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from commonsky.federation import federation_pb2 as pb
from commonsky.federation import federation_pb2_grpc as rpc


def read_identity(ca_dir: Path) -> tuple[bytes, bytes, bytes]:
    """(key, full chain, CA) of a `commonsky ca init` directory, as TAK would hold them."""
    cert = (ca_dir / "server.pem").read_bytes()
    ca = (ca_dir / "ca.pem").read_bytes()
    return (ca_dir / "server-key.pem").read_bytes(), cert + ca, ca


async def _wait(call: Any) -> Any:
    return await call


async def _queue_iter(queue: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    while True:
        item = await queue.get()
        if item is None:
            return
        yield item


class TakClient:
    def __init__(self, target: str, own: Path, peer_ca: bytes, health_s: float = 0.2):
        self.target = target
        self.key, self.chain, _ = read_identity(own)
        self.peer_ca = peer_ca
        self.health_s = health_s
        self.received: asyncio.Queue[pb.FederatedEvent] = asyncio.Queue()
        self.out: asyncio.Queue[pb.FederatedEvent | None] = asyncio.Queue()
        self.rol_out: asyncio.Queue[pb.ROL | None] = asyncio.Queue()
        self.health: list[int] = []
        self.calls: list[str] = []
        self.rol_open = asyncio.Event()
        self.tasks: list[asyncio.Task[Any]] = []
        self.channel: grpc.aio.Channel | None = None
        self._groups_q: asyncio.Queue[pb.FederateGroups | None] = asyncio.Queue()

    async def connect(self) -> None:
        creds = grpc.ssl_channel_credentials(self.peer_ca, self.key, self.chain)
        self.channel = grpc.aio.secure_channel(self.target, creds)
        stub = rpc.FederatedChannelStub(self.channel)
        sub = pb.Subscription(
            identity=pb.Identity(
                name="takserver-1",
                uid="tak-uid",
                server_id="tak-server-id",
                type=pb.Identity.FEDERATION_TAK_CLIENT,
            ),
            version=pb.TakServerVersion(major=5, minor=7, patch=14),
        )
        groups: asyncio.Queue[pb.FederateGroups | None] = asyncio.Queue()
        groups.put_nowait(pb.FederateGroups(federate_groups=["__ANON__"]))
        self._groups_q = groups
        self.calls.append("ClientFederateGroupsStream")
        self.tasks.append(
            asyncio.create_task(_wait(stub.ClientFederateGroupsStream(_queue_iter(groups))))
        )
        self.calls.append("ClientEventStream")
        events = stub.ClientEventStream(sub)
        self.tasks.append(asyncio.create_task(self._read(events)))
        self.calls.append("ServerEventStream")
        self.tasks.append(asyncio.create_task(_wait(stub.ServerEventStream(_queue_iter(self.out)))))
        self.tasks.append(asyncio.create_task(self._health(stub, sub)))

    async def _read(self, events: Any) -> None:
        async for message in events:
            self.received.put_nowait(message)

    async def _health(self, stub: Any, sub: pb.Subscription) -> None:
        while True:
            self.calls.append("HealthCheck")
            answer = await stub.HealthCheck(pb.ClientHealth(status=pb.ClientHealth.SERVING))
            self.health.append(answer.status)
            if answer.status == pb.ServerHealth.SERVING and not self.rol_open.is_set():
                self.calls.append("ClientROLStream")
                self.tasks.append(asyncio.create_task(self._drain(stub.ClientROLStream(sub))))
                self.calls.append("ServerROLStream")
                self.tasks.append(
                    asyncio.create_task(_wait(stub.ServerROLStream(_queue_iter(self.rol_out))))
                )
                self.rol_open.set()
            await asyncio.sleep(self.health_s)

    async def _drain(self, call: Any) -> None:
        async for _ in call:
            pass

    def send(self, message: pb.FederatedEvent) -> None:
        self.out.put_nowait(message)

    def send_rol(self, program: str) -> None:
        self.rol_out.put_nowait(pb.ROL(program=program))

    async def next_event(self, timeout: float = 10.0) -> pb.FederatedEvent:
        return await asyncio.wait_for(self.received.get(), timeout)

    async def close(self) -> None:
        self.rol_open.clear()
        self.out.put_nowait(None)
        self.rol_out.put_nowait(None)
        self._groups_q.put_nowait(None)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.channel is not None:
            await self.channel.close()
        self.tasks = []


class _Servicer(rpc.FederatedChannelServicer):
    def __init__(self, server: TakServer) -> None:
        self.s = server

    async def ClientEventStream(self, request, context):  # type: ignore[no-untyped-def]
        self.s.calls.append("ClientEventStream")
        self.s.subscriptions.append(request)
        self.s.connected.set()
        while True:
            message = await self.s.out.get()
            if message is None:
                return
            yield message

    async def ServerEventStream(self, request_iterator, context):  # type: ignore[no-untyped-def]
        self.s.calls.append("ServerEventStream")
        async for message in request_iterator:
            self.s.received.put_nowait(message)
        return pb.Subscription()

    async def HealthCheck(self, request, context):  # type: ignore[no-untyped-def]
        self.s.calls.append("HealthCheck")
        return pb.ServerHealth(status=pb.ServerHealth.SERVING)

    async def ClientROLStream(self, request, context):  # type: ignore[no-untyped-def]
        self.s.calls.append("ClientROLStream")
        while True:
            rol = await self.s.rol_out.get()
            if rol is None:
                return
            yield rol

    async def ServerROLStream(self, request_iterator, context):  # type: ignore[no-untyped-def]
        self.s.calls.append("ServerROLStream")
        async for _ in request_iterator:
            pass
        return pb.Subscription()

    async def ServerFederateGroupsStream(self, request, context):  # type: ignore[no-untyped-def]
        self.s.calls.append("ServerFederateGroupsStream")
        yield pb.FederateGroups(federate_groups=["__ANON__"])
        await asyncio.Event().wait()

    async def ClientFederateGroupsStream(self, request_iterator, context):  # type: ignore[no-untyped-def]
        self.s.calls.append("ClientFederateGroupsStream")
        async for _ in request_iterator:
            pass
        return pb.Subscription()


class TakServer:
    def __init__(self, own: Path, peer_ca: bytes, port: int = 0) -> None:
        self.key, self.chain, _ = read_identity(own)
        self.peer_ca = peer_ca
        self.port = port
        self.calls: list[str] = []
        self.subscriptions: list[pb.Subscription] = []
        self.received: asyncio.Queue[pb.FederatedEvent] = asyncio.Queue()
        self.out: asyncio.Queue[pb.FederatedEvent | None] = asyncio.Queue()
        self.rol_out: asyncio.Queue[pb.ROL | None] = asyncio.Queue()
        self.connected = asyncio.Event()
        self.server: grpc.aio.Server | None = None

    async def start(self) -> int:
        self.server = grpc.aio.server()
        rpc.add_FederatedChannelServicer_to_server(_Servicer(self), self.server)
        creds = grpc.ssl_server_credentials(
            [(self.key, self.chain)], root_certificates=self.peer_ca, require_client_auth=True
        )
        self.port = self.server.add_secure_port(f"127.0.0.1:{self.port}", creds)
        await self.server.start()
        return self.port

    def send(self, message: pb.FederatedEvent) -> None:
        self.out.put_nowait(message)

    async def next_event(self, timeout: float = 10.0) -> pb.FederatedEvent:
        return await asyncio.wait_for(self.received.get(), timeout)

    async def stop(self) -> None:
        self.out.put_nowait(None)
        self.rol_out.put_nowait(None)
        if self.server is not None:
            with contextlib.suppress(Exception):
                await self.server.stop(0)
