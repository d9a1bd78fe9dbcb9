"""The core's side of the API the edges forward (`<name>.http`; cluster/edge_http.py).

The core holding the lease subscribes (a standby does not, so an edge's call finds no
responder and answers 503 at once) and runs each `HttpCall` through the hub's own ASGI app
(`http/app.build_app`), in this process, as uvicorn would hand it a request: the same routes,
the same authentication of the token the call carries (nothing the edge says is trusted), the
same answers. The answer goes back to the call's reply subject in `HttpReply` parts that each
fit in one NATS message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from .wire import HttpCall, HttpReply, Names, call_decoder, encode

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from commonsky.metrics import Metrics

log = logging.getLogger("commonsky.cluster")

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]
CONCURRENT = 64  # forwarded requests the core runs at once (the rest wait, within budget)
_PART_OVERHEAD = 4096  # what an HttpReply adds to its body part (status, headers, framing)
_JSON = [(b"content-type", b"application/json")]


class CoreHttp:
    """Answers the edges' forwarded requests with `app` (the module header)."""

    def __init__(self, app: ASGIApp, nc: Client, names: Names, metrics: Metrics,
                 serving: Callable[[], bool] = lambda: True) -> None:  # fmt: skip
        self.app, self.nc, self.names, self.metrics = app, nc, names, metrics
        self.serving = serving  # (the lease is held)
        self.gate = asyncio.Semaphore(CONCURRENT)
        self.tasks: set[asyncio.Task[None]] = set()
        self.sub: Any = None

    async def start(self) -> None:
        self.sub = await self.nc.subscribe(self.names.http, cb=self._on_call)

    async def stop(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _on_call(self, msg: Msg) -> None:
        # (NATS runs one subscription's callbacks one after another: each call its own task.)
        task = asyncio.create_task(self._serve(msg, time.monotonic()))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(self, msg: Msg, came: float) -> None:
        if not msg.reply:
            return
        try:
            call = call_decoder.decode(msg.data)
        except Exception:
            self.metrics.internal_error("cluster_http")
            log.exception("core: an unreadable forwarded request; dropped")
            return
        async with self.gate:
            late = max(time.time() - call.sent, time.monotonic() - came) > call.budget_s
            if late or not self.serving():
                # The edge answers 504 (or has): a write must not be applied behind its back.
                status, headers = 503, _JSON
                body = b'{"error":"the hub\'s core was too busy to take this request"}'
            else:
                status, headers, body = await self.run(call)
        await self._reply(msg.reply, status, headers, body)

    async def run(self, call: HttpCall) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """`call` through the app: (status, raw headers, body); a 500 if the app fails."""
        host, _, port = call.client.rpartition(":")
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": call.method,
            "scheme": "http",
            "path": call.path,
            "raw_path": call.path.encode("utf-8", "surrogateescape"),
            "query_string": call.query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in call.headers],
            "client": (host, int(port)) if port.isdigit() else None,
            "server": None,
        }
        sent: dict[str, Any] = {"status": 500, "headers": [], "body": bytearray()}
        given = False

        async def receive() -> dict[str, Any]:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": call.body, "more_body": False}
            await asyncio.Event().wait()  # (the client never leaves: wait to be cancelled)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
                sent["headers"] = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                sent["body"] += message.get("body", b"")

        try:
            await self.app(scope, receive, send)
        except Exception:
            self.metrics.internal_error("cluster_http")
            log.exception("core: forwarded %s %s failed", call.method, call.path[:200])
            return 500, _JSON, b'{"error":"internal error (logged)"}'
        return sent["status"], sent["headers"], bytes(sent["body"])

    async def _reply(self, to: str, status: int, headers: list[tuple[bytes, bytes]],
                     body: bytes) -> None:  # fmt: skip
        size = max(
            1024,
            self.nc.max_payload - _PART_OVERHEAD - sum(len(k) + len(v) + 8 for k, v in headers),
        )
        n, at = 0, 0
        while True:
            part = body[at : at + size]
            at += size
            last = at >= len(body)
            with contextlib.suppress(Exception):  # (the edge gone: nobody to answer)
                await self.nc.publish(to, encode(HttpReply(n, status, headers if n == 0 else [],
                                                           part, last)))  # fmt: skip
            if last:
                return
            n += 1
