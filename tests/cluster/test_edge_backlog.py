"""What an edge could not publish yet (NATS away) is bounded: past `EdgeLink.limit` a new
event is refused (`edge_backlog`, counted; the listener closes its connection), and what
was accepted before is published, in order, once the stream is back."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import pytest

from commonsky.cluster.edge import EdgeBacklogged, EdgeHub, EdgeLink, backlog_limit
from commonsky.cluster.wire import Names
from commonsky.hub.connection import Connection
from commonsky.policy import Policy
from commonsky.protocol.cot import parse_event
from commonsky.settings import defaults
from tests.integration.test_tak_tcp import track


class StreamAway:
    """A stream unreachable until `back` is set: the edge's publisher (`publish_async`)
    fails at once, and every publish again (the JetStream context's `publish`) waits for
    it (as one would time out), then is taken."""

    def __init__(self) -> None:
        self.back = asyncio.Event()
        self.taken: list[str] = []
        self.all_taken = asyncio.Event()
        self.expect = 0

    async def publish_async(self, subject: str, data: bytes, headers: dict[str, str]) -> Any:
        raise ConnectionError("nats: no servers available")

    async def publish(self, subject: str, data: bytes, timeout: float,
                      headers: dict[str, str]) -> None:  # fmt: skip
        await self.back.wait()
        self.taken.append(headers["Nats-Msg-Id"])
        if len(self.taken) >= self.expect:
            self.all_taken.set()


@dataclass
class FakeConn:
    id: str = "c1"
    party: str = "USA"
    devices: dict[str, str] = field(default_factory=dict)

    def mode(self) -> str:
        return "xml"


def test_the_bound_is_derived_from_the_outbox_limits() -> None:
    s = defaults()
    assert backlog_limit(s) == 10 * (s.limit_queue_tracks + s.limit_queue_durable)


async def test_past_the_bound_new_events_are_refused_and_nothing_accepted_is_lost() -> None:
    hub = EdgeHub("e1", Policy([], []), defaults())
    js = StreamAway()
    nats = SimpleNamespace(max_payload=1 << 20)  # (what the edge reads of its connection)
    link = EdgeLink(hub, cast(Any, nats), cast(Any, js), cast(Any, None), Names("t"), js)
    link.limit = 5
    conn = cast(Connection, FakeConn())
    publisher = asyncio.create_task(link._publisher())
    try:
        for n in range(5):
            hub.accept("USA", "u1", parse_event(track(f"T-{n}")), conn)
        accepted = [f"{link.run_id}.{n}" for n in range(1, 6)]
        with pytest.raises(EdgeBacklogged) as refused:
            hub.accept("USA", "u1", parse_event(track("T-5")), conn)
        assert refused.value.close and refused.value.reason == "edge_backlog"
        assert (
            hub.metrics.registry.get_sample_value(
                "commonsky_refusals_total", {"reason": "edge_backlog"}
            )
            == 1
        )
        assert link.unpublished == 5
        # The stream comes back: everything accepted is published, in order, and the edge
        # takes new events again.
        js.expect = 5
        js.back.set()
        await asyncio.wait_for(js.all_taken.wait(), 5)
        assert js.taken == accepted and link.unpublished == 0
        js.expect = 6
        js.all_taken.clear()
        hub.accept("USA", "u1", parse_event(track("T-6")), conn)
        await asyncio.wait_for(js.all_taken.wait(), 5)
        assert js.taken == [*accepted, f"{link.run_id}.6"]
    finally:
        publisher.cancel()
