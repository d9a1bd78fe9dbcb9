"""An event crosses a cluster as one NATS message, and a NATS server takes none over its
`max_payload` (1 MiB unless its configuration says otherwise). An event the configuration
lets a client send (`limit_message_bytes`, any size on one process) but NATS would not take
was published by its edge again and again, forever: the edge published nothing behind it,
for any of its clients, until its backlog filled and it closed them one by one — while the
single process took the event. Now a process of the cluster whose largest event (as sent,
in its envelope of at most 64 KiB) cannot cross stops at start, in one line
(`trust.beyond_nats`); an edge whose server lowered `max_payload` since refuses such an
event (`oversized`, as one process refuses one over the limit) and goes on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from nats.aio.client import Client as Nats

from commonsky.bench.cluster import Client, Cluster, track, until
from commonsky.bench.hubproc import hub_config
from commonsky.cluster.edge import EdgeHub, EdgeLink
from commonsky.cluster.wire import Names
from commonsky.errors import RemoteProtocolError
from commonsky.hub.connection import Connection
from commonsky.policy import Policy
from commonsky.protocol.cot import parse_event
from commonsky.settings import defaults
from tests.cluster.test_edge_backlog import FakeConn


def with_limit(cluster: Cluster, limit: int) -> None:
    """Every process of `cluster` given `[server] limit_message_bytes = limit`."""

    def text(data_dir: Path, http: int, ports: dict[str, int], extra: str) -> str:
        return hub_config(data_dir, http, ports, f"{extra}limit_message_bytes = {limit}\n")

    cluster.base = text


async def test_a_process_whose_largest_event_nats_cannot_carry_stops_at_start(
    cluster: Cluster, nc: Nats
) -> None:
    limit = nc.max_payload  # (an event that large, in its envelope, is over it)
    with_limit(cluster, limit)
    for start in (cluster.edge, cluster.core):
        with pytest.raises(AssertionError, match="exited") as stopped:
            await start()  # type: ignore[operator]
        line = f"limit_message_bytes = {limit}: a cluster carries an event in one NATS message"
        assert line in str(stopped.value)
        assert f"over the NATS server's max_payload of {nc.max_payload}" in str(stopped.value)


async def test_the_largest_event_it_lets_through_crosses_the_edges(
    cluster: Cluster, nc: Nats
) -> None:
    limit = nc.max_payload - 64 * 1024  # (the largest `beyond_nats` lets start)
    with_limit(cluster, limit)
    a, b = await cluster.core_and_two_edges()
    usa = await Client("USA", a["USA"]).connect()
    rus = await Client("RUS", b["RUS"]).connect()
    event = track("huge-1", time.time())
    padding = (
        b"<remarks>" + b"x" * (limit - len(event) - len(b"<remarks></remarks>")) + b"</remarks>"
    )
    event = event.replace(b"</detail>", padding + b"</detail>")
    assert len(event) == limit
    await usa.send(event)
    await usa.send(track("after-1", time.time()))
    await until(lambda: rus.got("after-1") >= 1, "RUS (edge B) gets what came after")
    assert rus.got("huge-1") == 1 and max(map(len, rus.events)) >= limit
    for client in (usa, rus):
        await client.close()


class Stream:
    """A stream that takes every publish and keeps its message ids."""

    def __init__(self) -> None:
        self.taken: list[bytes] = []
        self.one = asyncio.Event()

    async def publish_async(self, subject: str, data: bytes, headers: dict[str, str]) -> Any:
        self.taken.append(data)
        self.one.set()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_an_edge_refuses_an_event_its_server_no_longer_carries_and_goes_on() -> None:
    hub = EdgeHub("e1", Policy([], []), defaults())
    stream = Stream()
    nats = SimpleNamespace(max_payload=4096)  # (lowered since the edge started)
    link = EdgeLink(hub, cast(Any, nats), cast(Any, None), cast(Any, None), Names("t"), stream)
    conn = cast(Connection, FakeConn())
    publisher = asyncio.create_task(link._publisher())
    try:
        big = track("T-big", time.time()).replace(b"</detail>", b"<remarks>" + b"x" * 5000
                                                  + b"</remarks></detail>")  # fmt: skip
        with pytest.raises(RemoteProtocolError) as refused:
            hub.accept("USA", "u1", parse_event(big), conn)
        assert refused.value.reason == "oversized" and "4096" in str(refused.value)
        assert link.unpublished == 0  # (nothing held that NATS would not take)
        hub.accept("USA", "u1", parse_event(track("T-small", time.time())), conn)
        await asyncio.wait_for(stream.one.wait(), 5)
        assert len(stream.taken) == 1 and b"T-small" in stream.taken[0]
    finally:
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)
