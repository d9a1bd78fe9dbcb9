"""The edge publishes to the stream without waiting for the previous batch's
acknowledgements, and what JetStream did not acknowledge is published again, in order,
before anything new (cluster/edge.py, `EdgeLink._publisher`)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from commonsky.cluster import edge
from commonsky.cluster.edge import EdgeHub, EdgeLink
from commonsky.cluster.wire import Names
from commonsky.hub.connection import Connection
from commonsky.policy import Policy
from commonsky.protocol.cot import parse_event
from commonsky.settings import defaults
from tests.cluster.test_edge_backlog import FakeConn
from tests.integration.test_tak_tcp import track


class HeldAcks:
    """The edge's publisher (a `StreamPublisher`, `publish_async`) and its JetStream
    context (`publish`, the retry path) in one, whose acknowledgements the test gives (or
    refuses) itself."""

    def __init__(self) -> None:
        self.sent: list[str] = []  # publish_async, in order
        self.acks: dict[str, asyncio.Future[Any]] = {}
        self.again: list[str] = []  # publish (the retry path), in order, once taken
        self.trying: list[str] = []  # publish calls begun
        self.gate = asyncio.Event()  # a retry is taken once this is set
        self.gate.set()
        self.log: list[tuple[str, str]] = []  # ("sent" | "again", id), in order

    async def publish_async(self, subject: str, data: bytes, headers: dict[str, str]) -> Any:
        msg_id = headers["Nats-Msg-Id"]
        self.sent.append(msg_id)
        self.log.append(("sent", msg_id))
        self.acks[msg_id] = asyncio.get_running_loop().create_future()
        return self.acks[msg_id]

    async def publish(self, subject: str, data: bytes, timeout: float,
                      headers: dict[str, str]) -> None:  # fmt: skip
        self.trying.append(headers["Nats-Msg-Id"])
        await self.gate.wait()
        self.again.append(headers["Nats-Msg-Id"])
        self.log.append(("again", headers["Nats-Msg-Id"]))


async def until(condition: Any) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110  (a barrier on state the publisher changes)
            await asyncio.sleep(0.001)


class QuietNats:
    """A NATS connection that takes subscriptions and publishes and does nothing with them."""

    max_payload = 1 << 20  # (what the edge reads of its connection: the server's limit)

    async def subscribe(self, subject: str, cb: Any = None) -> None:
        pass

    async def publish(self, subject: str, data: bytes) -> None:
        pass


async def test_a_started_link_publishes_with_the_publisher_it_was_given() -> None:
    """The product hands `EdgeLink` its started StreamAcks; `start` keeps what it was given
    (it used to put a StreamAcks of its own in place of the JetStream context)."""
    hub = EdgeHub("e1", Policy([], []), defaults())
    acks = HeldAcks()
    link = EdgeLink(hub, cast(Any, QuietNats()), cast(Any, None), cast(Any, None), Names("t"),
                    acks)  # fmt: skip
    await link.start()
    try:
        hub.accept("USA", "u1", parse_event(track("T-1")), cast(Connection, FakeConn()))
        await until(lambda: len(acks.sent) == 1)
        assert link.stream is acks
        acks.acks[acks.sent[0]].set_result(1)
        await until(lambda: link.unpublished == 0)
    finally:
        await link.stop()


async def test_the_next_batch_goes_before_the_last_ones_acknowledgement() -> None:
    hub = EdgeHub("e1", Policy([], []), defaults())
    js = HeldAcks()
    link = EdgeLink(hub, cast(Any, QuietNats()), cast(Any, js), cast(Any, None), Names("t"), js)
    conn = cast(Connection, FakeConn())
    publisher = asyncio.create_task(link._publisher())
    try:
        hub.accept("USA", "u1", parse_event(track("T-1")), conn)
        await until(lambda: len(js.sent) == 1)
        hub.accept("USA", "u1", parse_event(track("T-2")), conn)
        # (T-1's acknowledgement has not come: T-2 is published all the same.)
        await until(lambda: len(js.sent) == 2)
        assert link.unpublished == 2
        for ack in js.acks.values():
            ack.set_result(None)
        await until(lambda: link.unpublished == 0)
        assert js.again == []
    finally:
        publisher.cancel()


async def test_an_unacknowledged_message_is_published_again_before_anything_new() -> None:
    hub = EdgeHub("e1", Policy([], []), defaults())
    js = HeldAcks()
    link = EdgeLink(hub, cast(Any, QuietNats()), cast(Any, js), cast(Any, None), Names("t"), js)
    conn = cast(Connection, FakeConn())
    publisher = asyncio.create_task(link._publisher())
    try:
        for n in range(3):
            hub.accept("USA", "u1", parse_event(track(f"T-{n}")), conn)
        await until(lambda: len(js.sent) == 3)
        first, second, third = js.sent
        js.gate.clear()  # (the stream is slow to take the retry)
        js.acks[first].set_exception(TimeoutError("no acknowledgement"))
        js.acks[second].set_result(None)
        js.acks[third].set_result(None)
        await until(lambda: js.trying == [first])
        hub.accept("USA", "u1", parse_event(track("T-3")), conn)  # while the retry waits
        js.gate.set()
        await until(lambda: len(js.sent) == 4)
        fourth = js.sent[3]
        js.acks[fourth].set_result(None)
        await until(lambda: link.unpublished == 0)
        # The retry was taken before the message accepted meanwhile was published.
        assert js.log == [("sent", first), ("sent", second), ("sent", third),
                          ("again", first), ("sent", fourth)]  # fmt: skip
    finally:
        publisher.cancel()


async def test_an_acknowledgement_that_never_comes_frees_its_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lost acknowledgement: the message is published again after the wait, and its
    future is cancelled — nats-py holds one of its bounded pending-publish slots per
    future until it is done, and every later publish would block once all were held."""
    monkeypatch.setattr(edge, "_ACK_TIMEOUT_S", 0.2)
    hub = EdgeHub("e1", Policy([], []), defaults())
    js = HeldAcks()
    link = EdgeLink(hub, cast(Any, QuietNats()), cast(Any, js), cast(Any, None), Names("t"), js)
    conn = cast(Connection, FakeConn())
    publisher = asyncio.create_task(link._publisher())
    try:
        hub.accept("USA", "u1", parse_event(track("T-1")), conn)
        hub.accept("USA", "u1", parse_event(track("T-2")), conn)
        await until(lambda: len(js.sent) == 2)
        first, second = js.sent
        js.acks[second].set_result(None)  # (the first one's never comes)
        await until(lambda: link.unpublished == 0)
        assert js.again == [first]
        assert js.acks[first].cancelled()
        assert not js.acks[second].cancelled()
    finally:
        publisher.cancel()
