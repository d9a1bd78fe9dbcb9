"""A picture-bucket write whose acknowledgement never comes (lost in a NATS reconnect, or by
a server shedding load) is given up after `picture_kv.ACK_WAIT_S` and written again at the
next flush. Before, the flush waited for it forever: nats-py's future for a lost
acknowledgement never finishes, and the core's sender and its stream consumer wait on
flushes — the core stopped applying the stream for good, holding the lease (found by
tests/cluster/test_failover.py under load: "the stream applied to its end")."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest

from commonsky.cluster import picture_kv
from commonsky.cluster.picture_kv import PictureWriter, picture_key
from tests.conftest import RunningHub
from tests.integration.test_tak_tcp import track


class LosingJs:
    """A JetStream context that loses the acknowledgement of the first `lose` writes and
    gives every later one at once."""

    def __init__(self, lose: int) -> None:
        self.lose = lose
        self.sent: list[tuple[str, asyncio.Future[Any]]] = []

    async def publish_async(self, subject: str, value: bytes, headers: Any = None) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if len(self.sent) >= self.lose:
            future.set_result(len(self.sent) + 1)  # (its stream sequence)
        self.sent.append((subject, future))
        return future


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110  (a barrier on the hub's state)
            await asyncio.sleep(0.01)


async def test_a_write_never_acknowledged_is_given_up_and_written_again(
    make_hub: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(picture_kv, "ACK_WAIT_S", 0.2)
    running: RunningHub
    async with make_hub() as running:
        hub = running.server.hub
        js = LosingJs(lose=1)
        writer = PictureWriter(hub, cast(Any, None), hub.clock, cast(Any, js), "b")
        writer.full = False  # (only what is noted from here on)
        client = await running.connect("USA")
        client.send(track("T-LOST"))
        key = ("USA", "T-LOST")
        await until(lambda: key in hub.picture.live)
        async with asyncio.timeout(10):  # (forever on the old code)
            assert await writer.flush() >= 1
        lost_subject, lost = js.sent[0]
        assert lost_subject == "$KV.b." + picture_key("USA", key) and lost.cancelled()
        assert ("USA", key) not in writer.held  # (not confirmed: `covered` is false)
        rendered = hub.picture.live[key]
        assert key in writer.dirty  # written again at the next flush
        async with asyncio.timeout(10):
            await writer.flush(live=False)
        again = [f for s, f in js.sent[1:] if s == lost_subject]
        assert len(again) == 1 and again[0].done() and not again[0].cancelled()
        held = writer.held[("USA", key)]
        assert held.rendered is rendered
        await until(lambda: held.revision is not None)  # (its acknowledgement's callback)
