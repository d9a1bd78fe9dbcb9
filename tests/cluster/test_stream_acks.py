"""An edge's publishes and their JetStream acknowledgements (cluster/stream_acks.py): each
future gets its own publish's answer — the stream sequence, or StreamRefused for an error
or a no-responders status — whatever order the answers come in; an answer for a future
given up (cancelled) or unknown changes nothing. Then on the machine's NATS: a publish to
a stream is acknowledged with its sequence, a second publish of one message id is taken
as the same, and a publish where no stream listens is refused."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from commonsky.cluster.stream_acks import StreamAcks, StreamRefused


@dataclass
class _Msg:
    subject: str
    data: bytes
    headers: dict[str, str] | None = None


def _answer(subject: str, data: bytes, headers: dict[str, str] | None = None) -> Any:
    return _Msg(subject, data, headers)


@dataclass
class _Nats:
    published: list[tuple[str, bytes, str, dict[str, str]]] = field(default_factory=list)

    def new_inbox(self) -> str:
        return "_INBOX.test"

    async def subscribe(self, subject: str, cb: Any) -> None:
        assert subject == "_INBOX.test.*"

    async def publish(self, subject: str, data: bytes, reply: str,
                      headers: dict[str, str]) -> None:  # fmt: skip
        self.published.append((subject, data, reply, headers))


async def test_each_future_gets_its_own_answer() -> None:
    nc = _Nats()
    acks = StreamAcks(cast(Any, nc))
    await acks.start()
    futures = [
        await acks.publish_async("s.in.e1", f"m{n}".encode(), headers={"Nats-Msg-Id": f"e1.{n}"})
        for n in range(4)
    ]
    assert [p[3] for p in nc.published] == [{"Nats-Msg-Id": f"e1.{n}"} for n in range(4)]
    replies = [p[2] for p in nc.published]
    assert len(set(replies)) == 4 and all(r.startswith("_INBOX.test.") for r in replies)
    futures[3].cancel()  # (given up by the edge's acker)
    await acks.answered(_answer(replies[3], b'{"stream":"S_IN","seq":9}'))
    await acks.answered(_answer(replies[2], b'{"stream":"S_IN","seq":8,"duplicate":true}'))
    await acks.answered(_answer(replies[1], b'{"error":{"code":503,"description":"full"}}'))
    await acks.answered(_answer(replies[0], b"", {"Status": "503"}))  # (no responders)
    await acks.answered(_answer("_INBOX.test.77", b'{"stream":"S_IN","seq":1}'))  # (unknown)
    assert futures[2].result() == 8
    for future in futures[:2]:
        with pytest.raises(StreamRefused):
            future.result()
    assert futures[3].cancelled()
    assert acks.futures == {}


async def test_on_nats_a_publish_is_acknowledged_once_per_message_id() -> None:
    import nats

    from commonsky.bench.cluster import forget

    url = "nats://127.0.0.1:4222"
    name = f"acks{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=f"{name}_IN", subjects=[f"{name}.in.>"])
        acks = StreamAcks(nc)
        await acks.start()
        first = await acks.publish_async(f"{name}.in.e1", b"a", headers={"Nats-Msg-Id": "e1.1"})
        again = await acks.publish_async(f"{name}.in.e1", b"a", headers={"Nats-Msg-Id": "e1.1"})
        other = await acks.publish_async(f"{name}.in.e1", b"b", headers={"Nats-Msg-Id": "e1.2"})
        nowhere = await acks.publish_async(f"{name}.none", b"c", headers={"Nats-Msg-Id": "x.1"})
        async with asyncio.timeout(10):
            assert await first == 1
            assert await again == 1  # (the same message: JetStream kept one)
            assert await other == 2
            with pytest.raises(StreamRefused):
                await nowhere
    finally:
        await nc.close()
        await forget(url, name)
