"""The edge's side of `<name>.http`: one request of any HTTP face (the API, Marti, enrolment)
forwarded to the core holding the lease, its answer as a Starlette response.

The part protocol (wire.py; the core's side: core_http.py, parts.py):

1. The edge reads the client's body in parts of at most one NATS message less
   `CALL_OVERHEAD` (or what arrived within `FLUSH_S`, for a slow client) and publishes the
   `HttpCall` with the first part to `<name>.http`, its own inbox as the reply subject.
   `more` says further parts follow. A body past the face's `limit` is refused here: 413
   at once when its Content-Length says so, before anything is forwarded; 413 and an
   `abort` to the core when it grows past it on the way.
2. While `more`: the core answers `BodyAck(n, to)` once its app has taken part n; only then
   does the edge send part n + 1 to `to`. So at most one part of a body is in flight, and
   no body is ever held whole by the edge or in one NATS message.
3. The answer comes to the edge's inbox as `HttpReply` parts; a long one names `to`, where
   the edge acknowledges each part once its client took it (`ReplyAck`): the core sends at
   most `REPLY_WINDOW` parts ahead (a download of `limit_file_bytes` streams through).

What the client gets from the edge itself: 503 with Retry-After when no core listens (NATS's
"no responders", at once) or when the core went away, or did not acknowledge a part within
`PART_S`, before the body was whole (nothing of it can have been applied); 504 when the
answer does not come within `FORWARD_S` (plus `1 s` per `ANSWER_RATE` bytes of body: a large
file takes its time to store) — a write may or may not have been applied; 502 for an answer
it cannot read (a part out of order). A call reaches at most one core, once: core NATS,
never retried by the edge; the core does not start it past `budget_s` or without the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from .wire import (
    BodyAck,
    BodyPart,
    HttpCall,
    HttpReply,
    Names,
    ReplyAck,
    encode,
    to_edge_decoder,
)

if TYPE_CHECKING:
    from nats.aio.client import Client

    from commonsky.metrics import Metrics

log = logging.getLogger("commonsky.cluster")

FORWARD_S = 10.0  # how long an edge waits for the core's answer (then 504)
#: What the core's budget for a call leaves of FORWARD_S: the clocks of two machines may
#: differ this much, and the answer must still come back in time.
SKEW_S = 2.0
PART_S = 10.0  # for each acknowledgement of a body part, and each further answer part
#: Bytes of body per second the edge allows the core, beyond FORWARD_S, to answer once the
#: body is whole (storing a 100 MB package in PostgreSQL takes seconds on a busy machine).
ANSWER_RATE = 2_000_000
#: What a forwarded call adds to its body in one NATS message (method, path, headers…).
CALL_OVERHEAD = 64 * 1024
FLUSH_S = 1.0  # a part is sent once this old even when not full (a slow client's body)

#: (status, message, headers) -> the face's own form of an answer the edge gives itself.
ErrorAnswer = Callable[[int, str, dict[str, str]], Response]


@dataclass(frozen=True)
class Face:
    """One HTTP face as the edge forwards it: its name on the wire (`HttpCall.face`), the
    largest body it takes (bytes), what it says past that (413), how it answers an error."""

    name: str
    limit: int
    too_big: str
    error: ErrorAnswer


class _NoCore(Exception):
    """NATS said nobody listens (on `<name>.http`, or on the core's inbox of a call)."""


class _TooBig(Exception):
    pass


class _Body:
    """The client's body in parts of at most `size` bytes, `limit` bytes in all (_TooBig)."""

    def __init__(self, request: Request, size: int, limit: int) -> None:
        self.chunks = request.stream().__aiter__()
        self.size, self.limit = size, limit
        self.buffer = bytearray()
        self.total = 0
        self.ended = False

    @property
    def done(self) -> bool:
        return self.ended and not self.buffer

    async def part(self) -> bytes:
        """The next part (ClientDisconnect: the client went away; _TooBig)."""
        began = time.monotonic()
        while not self.ended and len(self.buffer) < self.size:
            if self.buffer and time.monotonic() - began >= FLUSH_S:
                break
            try:
                chunk = await anext(self.chunks)
            except StopAsyncIteration:
                self.ended = True
                break
            self.total += len(chunk)
            if self.total > self.limit:
                raise _TooBig
            self.buffer += chunk
        part = bytes(self.buffer[: self.size])
        del self.buffer[: self.size]
        return part


class Forwarder:
    """Forwards requests of every face to the core (the module header)."""

    def __init__(self, nc: Client, names: Names, retry_after_s: float, metrics: Metrics,
                 part_s: float = PART_S, forward_s: float = FORWARD_S) -> None:  # fmt: skip
        self.nc, self.names, self.hub_metrics = nc, names, metrics
        self.part_size = max(1024, nc.max_payload - CALL_OVERHEAD)
        self.retry_after = str(max(1, math.ceil(retry_after_s)))
        self.part_s, self.forward_s = part_s, forward_s

    def declared_too_big(self, request: Request, face: Face) -> Response | None:
        """413 for a Content-Length past the face's limit (nothing forwarded), else None."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > face.limit:
            return self._too_big(face)
        return None

    def _too_big(self, face: Face) -> Response:
        return face.error(413, face.too_big, {})

    def unavailable(self, face: Face, why: str) -> Response:
        return face.error(503, why, {"Retry-After": self.retry_after})

    async def forward(self, request: Request, path: str, face: Face,
                      cert: bytes = b"") -> Response:  # fmt: skip
        """`request` answered by the core, or by the edge (the module header)."""
        refused = self.declared_too_big(request, face)
        if refused is not None:
            return refused
        body = _Body(request, self.part_size, face.limit)
        try:
            first = await body.part()
        except _TooBig:
            return self._too_big(face)
        except ClientDisconnect:
            return face.error(400, "the client went away before its body ended", {})
        client = f"{request.client.host}:{request.client.port}" if request.client else ""
        call = HttpCall(request.method, path, request.scope.get("query_string", b""),
                        list(request.scope["headers"]), first, client, time.time(),
                        self.forward_s - SKEW_S, face.name, cert, not body.done)  # fmt: skip
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, pending_bytes_limit=64 * 1024 * 1024)
        streaming = False  # (then the response's body iterator unsubscribes: `_rest`)
        try:
            await self.nc.publish(self.names.http, encode(call), reply=inbox)
            got = await self._next(sub, self.forward_s)
            if isinstance(got, BodyAck):
                sent = await self._send_body(sub, inbox, body, got, face)
                if isinstance(sent, Response):
                    return sent
                got = sent
            if got.n != 0:
                raise ConnectionError(f"answer part {got.n} came where 0 was due")
            if got.last:
                return _response(got, got.body)
            response = StreamingResponse(self._rest(sub, got), status_code=got.status)
            response.raw_headers = list(got.headers)
            streaming = True
            return response
        except TimeoutError:
            return face.error(504, f"the hub's core did not answer within {self.forward_s:.0f} s "
                              "(or its time for the body); a write may or may not have been "
                              "applied", {})  # fmt: skip
        except _NoCore:
            return self.unavailable(face, "no core is serving the hub now (failover); try again")
        except Exception as exc:  # (an answer we cannot read: our bug, or NATS's)
            self.hub_metrics.internal_error("edge_forward")
            log.exception("edge: forwarding %s %s failed", request.method, path[:200])
            return face.error(502, f"the hub's core gave no usable answer "
                              f"({type(exc).__name__})", {})  # fmt: skip
        finally:
            if not streaming:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _send_body(self, sub: Any, inbox: str, body: _Body, ack: BodyAck,
                         face: Face) -> HttpReply | Response:  # fmt: skip
        """The rest of the body, a part per acknowledgement: the core's answer (it may come
        before the body ends: a refusal), or the edge's own (a Response). While the core
        takes part n, part n + 1 is read from the client (sent only once n is acknowledged)."""
        n = 0
        got: HttpReply | BodyAck = ack
        ahead: asyncio.Task[bytes] | None = None
        try:
            while isinstance(got, BodyAck):
                if got.n != n:
                    raise ConnectionError(f"acknowledgement of part {got.n} came where {n} was due")
                to = got.to
                try:
                    data = await (ahead if ahead is not None else body.part())
                except _TooBig:
                    await self._abort(to, n + 1)
                    return self._too_big(face)
                except ClientDisconnect:
                    await self._abort(to, n + 1)
                    return face.error(400, "the client went away before its body ended", {})
                n += 1
                await self.nc.publish(to, encode(BodyPart(n, data, body.done)), reply=inbox)
                if body.done:
                    return await self._answer(sub, self.forward_s + body.total / ANSWER_RATE)
                ahead = asyncio.ensure_future(body.part())
                try:
                    got = await self._next(sub, self.part_s)
                except (_NoCore, TimeoutError) as exc:
                    if isinstance(exc, TimeoutError):
                        await self._abort(to, n + 1)
                        why = f"the hub's core did not take part {n} of the body in time"
                    else:
                        why = "the hub's core went away during the body"
                    return self.unavailable(face, f"{why}; nothing of it was kept; try again")
            return got
        finally:
            if ahead is not None:  # (cancelled if still reading; its error taken if it failed)
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)

    async def _answer(self, sub: Any, timeout: float) -> HttpReply:
        got = await self._next(sub, timeout)
        if not isinstance(got, HttpReply):
            raise ConnectionError(f"acknowledgement of part {got.n} after the body's end")
        return got

    async def _abort(self, to: str, n: int) -> None:
        with contextlib.suppress(Exception):  # (a core gone hears nothing: it times out)
            await self.nc.publish(to, encode(BodyPart(n, b"", True, abort=True)))

    async def _next(self, sub: Any, timeout: float) -> HttpReply | BodyAck:
        msg = await sub.next_msg(timeout=timeout)
        if not msg.data and msg.headers and msg.headers.get("Status") == "503":
            raise _NoCore
        got: HttpReply | BodyAck = to_edge_decoder.decode(msg.data)
        return got

    async def _rest(self, sub: Any, first: HttpReply) -> AsyncIterator[bytes]:
        to = first.to
        try:
            yield first.body
            if to:
                await self.nc.publish(to, encode(ReplyAck(0)))
            n, last = 1, False
            while not last:
                part = await self._next(sub, self.part_s)
                if not isinstance(part, HttpReply) or part.n != n:
                    # (a part lost: the edge was too slow for NATS; the client sees a cut)
                    raise ConnectionError(f"answer part {part.n} came where {n} was due")
                yield part.body
                if to and not part.last:
                    await self.nc.publish(to, encode(ReplyAck(n)))
                n, last = n + 1, part.last
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


def _response(part: HttpReply, body: bytes) -> Response:
    response = Response(body, status_code=part.status)
    response.raw_headers = list(part.headers)
    return response
