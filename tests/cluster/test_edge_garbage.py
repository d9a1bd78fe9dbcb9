"""What an edge is sent that it cannot use writes a few lines, not one per frame:

- On its TAK sockets: an event whose acceptance meets a bug of ours (here the link to the
  stream raises) is counted each time and logged with its traceback at most
  `RateLimitedLog.per_key` times a window per connection (hub/listeners.py `_failed`);
  the connection and the rest of its read go on.
- On its delivery subject (`<name>.out.<edge>`, which anyone on NATS may publish to): a
  message that is not a delivery the edge can apply (garbage, an output index past its
  outputs, an unknown category) is dropped, counted, said in a rate-limited line without a
  traceback; the edge serves on."""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import pytest
from nats.aio.client import Client as Nats

from commonsky.bench.cluster import Client, Cluster, track, until, until_async
from commonsky.bench.hubproc import http_get, parse_metrics
from commonsky.cluster.edge import EdgeHub
from commonsky.cluster.wire import Delivery, Names, Output, encode
from commonsky.config import ListenerConfig
from commonsky.hub.core import Hub
from commonsky.hub.listeners import TakListener
from commonsky.policy import Policy
from commonsky.settings import defaults
from tests.cluster.test_trust_cluster import edge_roster


class BuggyLink:
    """An edge's link to the stream that fails on every event (a bug of ours)."""

    def attached(self, conn: object) -> None:
        pass

    def detached(self, conn: object) -> None:
        pass

    def ingest(self, *args: object) -> None:
        raise RuntimeError("a bug of ours")


async def test_a_bug_met_by_every_frame_logs_a_few_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = EdgeHub("e1", Policy([], []), defaults())
    hub.link = cast(Any, BuggyLink())
    listener = TakListener(cast(Hub, hub), ListenerConfig("tak-tcp", "127.0.0.1", 0, "USA"),
                           None, None)  # fmt: skip
    await listener.start()
    frames = 300
    try:
        client = await Client("USA", listener.port).connect()
        now = time.time()
        with caplog.at_level(logging.INFO, logger="commonsky"):
            await client.send(b"".join(track(f"t-{n}", now) for n in range(frames)))

            def counted() -> float:
                found = hub.metrics.registry.get_sample_value(
                    "commonsky_internal_errors_total", {"where": "accept"}
                )
                return found or 0.0

            await until(lambda: counted() == frames, f"{frames} internal errors counted")
        assert not client.closed.is_set()  # (the connection goes on)
        await client.close()
    finally:
        await listener.stop_accepting()
        for task in list(listener.tasks):
            task.cancel()
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert 1 <= len(tracebacks) <= hub.logs.per_key, len(tracebacks)
    assert "accepting 't-0' failed" in tracebacks[0].getMessage()


async def test_deliveries_an_edge_cannot_use_are_dropped_in_a_few_lines(
    cluster: Cluster, nc: Nats, cluster_name: str
) -> None:
    names = Names(cluster_name)
    await cluster.core()
    edge, ports = await cluster.edge()
    usa = await Client("USA", ports["USA"]).connect()
    rus = await Client("RUS", ports["RUS"]).connect()
    for client in (usa, rus):
        await client.send(track(f"hello-{client.party}", time.time()))
    roster = await edge_roster(nc, names, 2)
    conn = roster.conns[0].conn
    out = Output("USA", "forged", "track", 0.0, False, "xml", b'<event uid="forged"/>')
    garbage = [
        b"\xc1not a delivery",
        encode(Delivery(outputs=[out], sends=[([conn], [0, 5])])),
        encode(Delivery(outputs=[out], sends=[([conn], [-1])])),
        encode(
            Delivery(
                outputs=[Output("USA", "forged", "weather", 0, False, "xml", b"")],
                sends=[([conn], [0])],
            )
        ),
    ] * 25
    for data in garbage:
        await nc.publish(names.out(roster.edge), data)

    async def counted() -> bool:
        _, body = await http_get(cluster.edge_http[0], "/metrics")
        dropped = parse_metrics(body.decode()).get("commonsky_cluster_dropped_total", {})
        return dropped.get('{reason="delivery"}') == len(garbage)

    await until_async(counted, f"the edge counts {len(garbage)} dropped deliveries")
    await usa.send(track("after-garbage", time.time()))
    await until(lambda: rus.got("after-garbage") >= 1, "the edge serves on")
    text = edge.text()
    lines = [line for line in text.splitlines() if "delivery it cannot read" in line]
    assert 1 <= len(lines) <= 5, lines
    assert "Traceback" not in text
    for client in (usa, rus):
        assert client.got('uid="forged"') == 0
        await client.close()
