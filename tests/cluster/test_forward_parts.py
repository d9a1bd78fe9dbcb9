"""The part protocol between an edge and the core (cluster/forward.py, parts.py, core_http.py)
on the machine's NATS, both sides in this process: the real `Forwarder` and `CoreHttp`, or one
of them against a hand-driven other side that loses, reorders or withholds messages."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client as Nats
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from commonsky.bench.cluster import until
from commonsky.cluster.core_http import CoreHttp
from commonsky.cluster.forward import Face, Forwarder
from commonsky.cluster.wire import (
    REPLY_WINDOW,
    BodyAck,
    BodyPart,
    HttpCall,
    HttpReply,
    Names,
    ReplyAck,
    call_decoder,
    encode,
    to_core_decoder,
    to_edge_decoder,
)
from commonsky.metrics import Metrics

from .conftest import NATS_URL


def _text(status: int, message: str, headers: dict[str, str]) -> Response:
    return PlainTextResponse(message, status_code=status, headers=headers or None)


FACE = Face("api", 50_000_000, "too big", _text)


class Toy:
    """The core's app: `/echo` keeps a body only when it came whole; `/download?n=` streams
    n bytes in 256 kB chunks (recording how far it got)."""

    def __init__(self) -> None:
        self.kept: list[bytes] = []
        self.yielded = 0
        self.data = os.urandom(6_000_000)

    def app(self) -> Starlette:
        async def echo(request: Request) -> Response:
            try:
                body = await request.body()
            except ClientDisconnect:
                return PlainTextResponse("aborted", status_code=400)
            self.kept.append(body)
            return PlainTextResponse(f"{len(body)} {hashlib.sha256(body).hexdigest()}")

        async def download(request: Request) -> Response:
            size = int(request.query_params["n"])

            async def chunks() -> AsyncIterator[bytes]:
                for at in range(0, size, 262_144):
                    self.yielded += 1
                    yield self.data[at : min(size, at + 262_144)]

            return StreamingResponse(chunks(), headers={"Content-Length": str(size)})

        return Starlette(routes=[Route("/echo", echo, methods=["POST"]),
                                 Route("/download", download)])  # fmt: skip


async def _nats(prefix: str) -> Nats:
    return await nats.connect(NATS_URL, inbox_prefix=prefix, max_reconnect_attempts=0)


class Spy:
    """Every part-protocol message on the inboxes of `prefixes`, in the order NATS routed them."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def start(self, nc: Nats, prefixes: list[str]) -> None:
        async def edge_side(msg: Any) -> None:
            if msg.data:
                self.seen.append(to_edge_decoder.decode(msg.data))

        async def core_side(msg: Any) -> None:
            self.seen.append(to_core_decoder.decode(msg.data))

        await nc.subscribe(f"{prefixes[0]}.>", cb=edge_side)
        await nc.subscribe(f"{prefixes[1]}.>", cb=core_side)
        await nc.flush()


@pytest.fixture
async def pair(cluster_name: str, nc: Nats) -> AsyncIterator[tuple[httpx.AsyncClient, Toy, Spy]]:
    """An edge (`Forwarder` in an ASGI app, called through httpx) and a core (`CoreHttp`
    with the toy app), each on its own NATS connection and inbox prefix, and a spy."""
    edge_nc = await _nats(f"_E{cluster_name}")
    core_nc = await _nats(f"_C{cluster_name}")
    names = Names(cluster_name)
    toy = Toy()
    core = CoreHttp(toy.app(), core_nc, names, Metrics(), wait_s=5.0)
    await core.start()
    forwarder = Forwarder(edge_nc, names, 5.0, Metrics())

    async def forward(request: Request) -> Response:
        return await forwarder.forward(request, request.url.path, FACE)

    app = Starlette(routes=[Route("/{p:path}", forward, methods=["GET", "POST"])])
    spy = Spy()
    await spy.start(nc, [f"_E{cluster_name}", f"_C{cluster_name}"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge", timeout=60) as c:
        yield c, toy, spy
    await core.stop()
    for each in (edge_nc, core_nc):
        await each.close()


async def test_a_body_goes_in_parts_each_only_after_the_last_was_acknowledged(
    pair: tuple[httpx.AsyncClient, Toy, Spy], nc: Nats
) -> None:
    client, toy, spy = pair
    body = os.urandom(5_000_000)

    async def chunks() -> AsyncIterator[bytes]:  # (no Content-Length: read as it comes)
        for at in range(0, len(body), 100_000):
            yield body[at : at + 100_000]

    r = await client.post("/echo", content=chunks())
    assert r.status_code == 200 and r.text == f"{len(body)} {hashlib.sha256(body).hexdigest()}"
    assert toy.kept == [body]
    await until(lambda: any(isinstance(m, HttpReply) for m in spy.seen), "the spy sees it all")
    flow = [(type(m).__name__, m.n) for m in spy.seen if isinstance(m, (BodyAck, BodyPart))]
    parts = len(flow) // 2
    assert parts >= 5  # (5 MB in parts of at most one NATS message: 1 MB)
    expected = [x for n in range(parts) for x in (("BodyAck", n), ("BodyPart", n + 1))]
    assert flow == expected  # part n + 1 leaves only after the core took part n
    assert all(len(m.data) <= nc.max_payload for m in spy.seen if isinstance(m, BodyPart))


async def test_a_long_answer_keeps_at_most_the_window_unacknowledged(
    pair: tuple[httpx.AsyncClient, Toy, Spy],
) -> None:
    client, toy, spy = pair
    r = await client.get("/download?n=6000000")
    assert r.status_code == 200 and r.content == toy.data
    await until(lambda: any(isinstance(m, HttpReply) and m.last for m in spy.seen), "the end")
    out = acked = 0
    most = 0
    for m in spy.seen:
        if isinstance(m, HttpReply):
            out += 1
        elif isinstance(m, ReplyAck):
            acked = max(acked, m.n + 1)
        most = max(most, out - acked)
    assert out >= 6 and most <= REPLY_WINDOW  # (exactly the window with no acks: below)


async def _fake_core(nc: Nats, names: Names, inbox: str,
                     script: Any) -> list[Any]:  # fmt: skip
    """A core that answers calls with `script(call, reply, seen)`; what it received."""
    seen: list[Any] = []

    async def on_call(msg: Any) -> None:
        call = call_decoder.decode(msg.data)
        seen.append(call)
        await script(call, msg.reply, seen)

    async def on_inbox(msg: Any) -> None:
        seen.append(to_core_decoder.decode(msg.data))
        await script(seen[-1], None, seen)

    await nc.subscribe(names.http, cb=on_call)
    await nc.subscribe(inbox, cb=on_inbox)
    await nc.flush()
    return seen


async def _edge(cluster_name: str, part_s: float = 1.0) -> tuple[httpx.AsyncClient, Nats]:
    edge_nc = await _nats(f"_E{cluster_name}")
    forwarder = Forwarder(edge_nc, Names(cluster_name), 5.0, Metrics(), part_s=part_s,
                          forward_s=5.0)  # fmt: skip

    async def forward(request: Request) -> Response:
        return await forwarder.forward(request, request.url.path, FACE)

    app = Starlette(routes=[Route("/{p:path}", forward, methods=["GET", "POST"])])
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://edge", timeout=60), edge_nc


async def test_a_lost_acknowledgement_is_503_and_the_body_aborted(
    cluster_name: str, nc: Nats
) -> None:
    names, inbox = Names(cluster_name), f"fake.{cluster_name}"

    async def script(got: Any, reply: str | None, seen: list[Any]) -> None:
        if isinstance(got, HttpCall):
            await nc.publish(str(reply), encode(BodyAck(0, inbox)))
        # (part 1 arrives: its acknowledgement is "lost" — never sent)

    seen = await _fake_core(nc, names, inbox, script)
    client, edge_nc = await _edge(cluster_name, part_s=1.0)
    started = time.monotonic()
    r = await client.post("/echo", content=os.urandom(3_000_000))
    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, r.text
    assert "part 1" in r.text and time.monotonic() - started < 5.0
    await until(lambda: any(isinstance(m, BodyPart) and m.abort for m in seen), "the abort")
    parts = [m for m in seen if isinstance(m, BodyPart)]
    assert [(m.n, m.abort) for m in parts] == [(1, False), (2, True)]
    await client.aclose()
    await edge_nc.close()


@pytest.mark.parametrize("wrong", ["reply", "ack"])
async def test_a_part_out_of_order_at_the_edge_is_502(
    cluster_name: str, nc: Nats, wrong: str
) -> None:
    names, inbox = Names(cluster_name), f"fake.{cluster_name}"

    async def script(got: Any, reply: str | None, seen: list[Any]) -> None:
        if isinstance(got, HttpCall):
            out = BodyAck(1, inbox) if wrong == "ack" else HttpReply(1, 200, [], b"x", True)
            await nc.publish(str(reply), encode(out))

    await _fake_core(nc, names, inbox, script)
    client, edge_nc = await _edge(cluster_name)
    r = await client.post("/echo", content=os.urandom(3_000_000))
    assert r.status_code == 502 and "no usable answer" in r.text, r.text
    await client.aclose()
    await edge_nc.close()


async def _core(cluster_name: str, toy: Toy) -> tuple[CoreHttp, Nats]:
    core_nc = await _nats(f"_C{cluster_name}")
    core = CoreHttp(toy.app(), core_nc, Names(cluster_name), Metrics(), wait_s=1.0)
    await core.start()
    return core, core_nc


def _call(path: str, body: bytes, more: bool) -> HttpCall:
    return HttpCall("POST", path, b"", [], body, "127.0.0.1:1", time.time(), 8.0, more=more)


@pytest.mark.parametrize("edge_does", ["nothing", "part 2 first", "junk"])
async def test_a_body_that_does_not_come_whole_is_not_kept_by_the_core(
    cluster_name: str, nc: Nats, edge_does: str
) -> None:
    toy = Toy()
    core, core_nc = await _core(cluster_name, toy)
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(Names(cluster_name).http, encode(_call("/echo", b"a" * 1000, True)),
                     reply=inbox)  # fmt: skip
    ack = to_edge_decoder.decode((await sub.next_msg(timeout=10)).data)
    assert ack == BodyAck(0, ack.to)
    if edge_does == "part 2 first":
        await nc.publish(ack.to, encode(BodyPart(2, b"b" * 1000, True)))
    elif edge_does == "junk":
        await nc.publish(ack.to, b"\xc1not a part")
    answer = to_edge_decoder.decode((await sub.next_msg(timeout=10)).data)
    assert isinstance(answer, HttpReply) and (answer.status, answer.body) == (400, b"aborted")
    assert toy.kept == []
    await core.stop()
    await core_nc.close()


async def test_a_core_stops_an_answer_its_edge_no_longer_acknowledges(
    cluster_name: str, nc: Nats
) -> None:
    toy = Toy()
    core, core_nc = await _core(cluster_name, toy)
    inbox = nc.new_inbox()
    got: list[HttpReply] = []

    async def keep(msg: Any) -> None:
        part = to_edge_decoder.decode(msg.data)
        assert isinstance(part, HttpReply)
        got.append(part)

    sub = await nc.subscribe(inbox, cb=keep)
    call = HttpCall("GET", "/download", b"n=6000000", [], b"", "127.0.0.1:1", time.time(), 8.0)
    await nc.publish(Names(cluster_name).http, encode(call), reply=inbox)
    await until(lambda: bool(got), "the answer begins")
    await until(lambda: not core.tasks, "the core gives the call up")  # (no acknowledgement)
    await core_nc.flush()  # (all it published is at the server)
    await nc.flush()  # (and all the server sent us is read: queued for `keep`)
    # (nats-py runs a subscription's callbacks from its own queue, after the read: `keep`
    # has seen every part once that queue is empty.)
    await until(lambda: sub.pending_msgs == 0, "every part kept")
    assert len(got) == REPLY_WINDOW and not any(p.last for p in got)
    assert toy.yielded * 262_144 < len(toy.data)  # (not run to its end)
    await core.stop()
    await core_nc.close()
