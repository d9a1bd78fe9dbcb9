"""Simulated participants: TAK clients that connect through the hub's real listeners.

Each speaks the same wire as ATAK (CoT XML, or TAK protobuf after negotiation; TLS with a
certificate from the hub CA where the scenario says so) and records what it receives, with
the wall time, so the checks can judge the hub only by what reached the clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from commonsky.model import CotEvent
from commonsky.protocol.cot import XmlLimits
from commonsky.protocol.stream import EventReceived, TakStream


@dataclass
class Received:
    at: float  # wall clock (for latency)
    event: CotEvent
    t: float = 0.0  # scenario clock (for validity windows)


@dataclass
class SimClient:
    id: str
    party: str
    transport: str
    received: list[Received] = field(default_factory=list)
    listeners: list[Callable[[SimClient, CotEvent], None]] = field(default_factory=list)
    stream: TakStream = field(default_factory=lambda: TakStream(XmlLimits(), role="client"))
    clock: Callable[[], float] = time.time

    async def open(self, port: int, tls: ssl.SSLContext | None) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname="localhost" if tls else None
        )
        if self.transport.endswith("-proto"):
            self.writer.write(self.stream.request_protobuf(self.clock()))
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.CancelledError):
            while data := await self.reader.read(65536):
                now = time.time()
                for event in self.stream.receive_data(data, self.clock()):
                    if isinstance(event, EventReceived):
                        self.received.append(Received(now, event.event, self.clock()))
                        for listener in self.listeners:
                            listener(self, event.event)
                reply = self.stream.data_to_send()
                if reply:
                    self.writer.write(reply)

    def send(self, event: CotEvent) -> None:
        self.writer.write(self.stream.encode(event))

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task
        self.writer.close()


def tls_context(ca_dir: Path, client_dir: Path, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_dir / "ca.pem"))
    context.load_cert_chain(client_dir / f"{name}.pem", client_dir / f"{name}-key.pem")
    return context
