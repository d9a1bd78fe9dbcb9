"""The core's side of one forwarded call's parts (the protocol: cluster/forward.py): the
body comes in as the app reads it — each part acknowledged only when the app asks for the
next one, so an edge never sends faster than the app takes — and the answer goes out as
the app writes it, in parts of one NATS message, at most `REPLY_WINDOW` ahead of the
edge's acknowledgements.

A part that does not come within `wait_s` (the edge or its client gone), one out of order,
or an `abort`: the app reads the end of its client (ASGI `http.disconnect`), as when a
client of the single process goes away mid-body — the Marti upload keeps nothing of it. An
edge that stops acknowledging the answer for `wait_s`: the app's send fails (`EdgeGone`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import TYPE_CHECKING, Any

from commonsky.errors import CommonSkyError

from .wire import (
    REPLY_WINDOW,
    BodyAck,
    BodyPart,
    HttpCall,
    HttpReply,
    ReplyAck,
    encode,
    to_core_decoder,
)

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

log = logging.getLogger("commonsky.cluster")

_PART_OVERHEAD = 4096  # what an HttpReply adds to its body part (status, headers, framing)


class EdgeGone(CommonSkyError):
    """The edge stopped acknowledging the answer: nobody takes the rest of it (raised into
    the app's send, as a socket's error would be; the core logs it, counts nothing)."""

    reason = "edge_gone"


class Exchange:
    """One call's ASGI `receive` and `send` over NATS (the module header). `reply`: the
    edge's inbox; `wait_s`: how long a part or an acknowledgement may take."""

    def __init__(self, nc: Client, call: HttpCall, reply: str, wait_s: float) -> None:
        self.nc, self.call, self.reply, self.wait_s = nc, call, reply, wait_s
        self.inbox = ""
        self.sub: Any = None
        self.incoming: asyncio.Queue[BodyPart | ReplyAck] = asyncio.Queue()
        self.taken = -1  # the last body part handed to the app
        self.ended = not call.more  # the body's last part handed to the app
        self.broken = ""  # why the body did not come whole ("" while it may)
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.buffer = bytearray()
        self.sent = 0  # answer parts published
        self.acked = -1  # the last answer part the edge acknowledged
        self.finished = False  # the answer's last part is out
        self.gone = ""  # why the edge no longer takes the answer ("" while it does)

    async def open(self) -> None:
        """The core's inbox for this call (needed for a body in parts or a long answer)."""
        if self.sub is None:
            # (nats-py's inboxes follow one another predictably; an edge may publish to any
            # core inbox, and must not guess the one of another edge's call: a random tail.)
            self.inbox = f"{self.nc.new_inbox()}.{secrets.token_hex(12)}"
            self.sub = await self.nc.subscribe(self.inbox, cb=self._on_message)

    async def close(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()

    async def _on_message(self, msg: Msg) -> None:
        try:
            self.incoming.put_nowait(to_core_decoder.decode(msg.data))
        except Exception:  # (junk on our inbox: the body is broken)
            self.incoming.put_nowait(BodyPart(-1, b"", True, abort=True))

    # ---- the body, in ---------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        """ASGI receive: the body's parts in order, then nothing (wait to be cancelled)."""
        if self.taken < 0:
            self.taken = 0
            return {"type": "http.request", "body": self.call.body, "more_body": self.call.more}
        if self.ended or self.broken:
            # (Starlette listens for a disconnect while it streams an answer: none comes.)
            await asyncio.Event().wait()
        await self.open()
        await self._publish(self.reply, encode(BodyAck(self.taken, self.inbox)))
        part = await self._body_part()
        if part is None:
            return {"type": "http.disconnect"}
        self.taken = part.n
        self.ended = part.last
        return {"type": "http.request", "body": part.data, "more_body": not part.last}

    async def _body_part(self) -> BodyPart | None:
        """Part `taken + 1`, or None (and `broken` says why)."""
        while True:
            try:
                got = await asyncio.wait_for(self.incoming.get(), self.wait_s)
            except TimeoutError:
                self.broken = f"no body part {self.taken + 1} within {self.wait_s:g} s"
                return None
            if isinstance(got, ReplyAck):
                continue  # (none is due while the body comes; a stray one changes nothing)
            if got.abort:
                self.broken = "the edge aborted the body"
                return None
            if got.n != self.taken + 1:
                self.broken = f"body part {got.n} came where {self.taken + 1} was due"
                return None
            return got

    # ---- the answer, out ------------------------------------------------------------------

    def part_size(self) -> int:
        head = sum(len(k) + len(v) + 8 for k, v in self.headers)
        return max(1024, self.nc.max_payload - _PART_OVERHEAD - head - len(self.inbox) - 64)

    async def send(self, message: dict[str, Any]) -> None:
        """ASGI send: the status and headers kept for part 0, the body sent in parts."""
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = list(message.get("headers", []))
            return
        if message["type"] != "http.response.body" or self.finished:
            return
        self.buffer += message.get("body", b"")
        more = bool(message.get("more_body", False))
        size = self.part_size()
        while len(self.buffer) > size or (not more and not self.finished):
            if self.sent == 0 and (more or len(self.buffer) > size):
                await self.open()  # (a long answer: the edge acknowledges its parts here)
            data = bytes(self.buffer[:size])
            del self.buffer[:size]
            last = not more and not self.buffer
            await self._publish_part(data, last)
            if last:
                self.finished = True

    async def _publish_part(self, data: bytes, last: bool) -> None:
        n = self.sent
        while n - self.acked > REPLY_WINDOW:
            try:
                got = await asyncio.wait_for(self.incoming.get(), self.wait_s)
            except TimeoutError:
                self.gone = f"no acknowledgement of answer part {self.acked + 1}"
                raise EdgeGone(self.gone) from None
            if isinstance(got, ReplyAck) and got.n > self.acked:
                self.acked = got.n
        headers = self.headers if n == 0 else []
        to = self.inbox if n == 0 else ""
        await self._publish(self.reply, encode(HttpReply(n, self.status, headers, data, last, to)))
        self.sent += 1

    async def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A whole answer of the core's own (a refusal, an error): sent unless one began."""
        if self.sent:
            return
        self.finished = False
        self.buffer.clear()
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def _publish(self, to: str, data: bytes) -> None:
        with contextlib.suppress(Exception):  # (the edge gone: nobody to answer)
            await self.nc.publish(to, data)
