"""An edge's HTTP side: the map page, its WebSocket live feed, and the API forwarded to the core.

Each edge binds `[server] http` (SO_REUSEPORT: the edges of one host share the port, as their
TAK listeners do) and serves, as the single process does at the same paths:

- here: `/healthz`; `/metrics` (this edge's own series, behind the same tokens); the map
  page and its files (`/`, `/app/…`, `/vendor/…`: `commonsky.web`); and `/api/ws`, the live
  feed, held like a TAK client (`http/routes/live.serve_page` on the `EdgeHub`): the party
  stamped from its token here, its picture read from the bucket for that party only and
  turned into the page's JSON (`picture_kv.entry_json`), then announced to the core, which
  sends it — per client, rendered as JSON, already disclosed — what its party may see.
- forwarded: every other path (`/api/…`, `/cap/…`, `/openapi.json`, and `/core/…`: the
  core's own `/metrics` and `/healthz` at `/core/metrics`, `/core/healthz`) goes to the core
  holding the lease over NATS request/reply (`<name>.http`, `wire.HttpCall`): method, path,
  query, headers (the bearer token: the core authenticates it again, trusting nothing the
  edge says) and the body, which the edge reads whole first, bounded by the smaller of
  `limit_http_body_bytes` and what one NATS message carries (413 past it). The core runs it
  through its own app and answers in `HttpReply` parts (core_http.py).

A token the edge does not know is a 401 here, and a request without one is forwarded only to
the public paths (`PUBLIC`): the core never sees traffic nobody may send. No core: 503 with
Retry-After at once (NATS's "no responders"); a core that does not answer within
`FORWARD_S`: 504. A forwarded request reaches at most one core, once (core NATS, never
retried by the edge); the core answers 503 without running it when it is older than its
budget (`HttpCall.budget_s`, FORWARD_S - SKEW_S: a core that was frozen, or lost its lease,
never applies a write the edge has given up on). So a client answered 503 knows its write
was not applied; one answered 504 does not know (the core may have applied it, as a single
process may have before its connection broke), but never twice by the edge; it may send it
again (API writes name their item by uid: the same uid is the same item, a new version of
it). An answer the edge cannot read: 502.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from commonsky.config import HubConfig, parse_hostport
from commonsky.http.app import serve_http
from commonsky.http.base import (
    ApiError,
    JSONResponse,
    bearer_token,
    json_error,
    read_body,
    token_caller,
    token_party,
)
from commonsky.http.routes.live import serve_page
from commonsky.hub.core import Hub
from commonsky.hub.listeners import bind_http

from .wire import HttpCall, HttpReply, Names, encode, reply_decoder

if TYPE_CHECKING:
    from nats.aio.client import Client

    from commonsky.metrics import Metrics
    from commonsky.services import Services

    from .edge import EdgeHub

log = logging.getLogger("commonsky.cluster")

FORWARD_S = 10.0  # how long an edge waits for the core's answer (then 504)
#: What the core's budget for a call leaves of FORWARD_S: the clocks of two machines may
#: differ this much, and the answer must still come back in time.
SKEW_S = 2.0
PART_S = 10.0  # and for each further part of a long answer (then the response is cut off)
#: What a forwarded call adds to its body in one NATS message (method, path, headers…).
CALL_OVERHEAD = 64 * 1024
#: Paths a request without a token may be forwarded to (the rest answer 401 here).
PUBLIC = ("/cap/", "/openapi.json", "/core/healthz")
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class Forwarder:
    """The edge's side of `<name>.http`: one call, its answer as a Starlette response."""

    def __init__(self, nc: Client, names: Names, limit: int, retry_after_s: float,
                 metrics: Metrics) -> None:  # fmt: skip
        self.nc, self.names, self.hub_metrics = nc, names, metrics
        # (NATS refuses a message over max_payload: the body must fit in one with the rest.)
        self.limit = max(0, min(limit, nc.max_payload - CALL_OVERHEAD))
        self.retry_after = str(max(1, math.ceil(retry_after_s)))

    def unavailable(self, why: str) -> Response:
        return JSONResponse({"error": why}, status_code=503,
                            headers={"Retry-After": self.retry_after})  # fmt: skip

    async def forward(self, request: Request, path: str) -> Response:
        """`request` (its body read here, bounded) answered by the core; 413, 503 or 504
        answered here (the module header)."""
        try:
            body = await read_body(request, self.limit)
        except ApiError as exc:
            return json_error(exc.status, exc.public())
        client = f"{request.client.host}:{request.client.port}" if request.client else ""
        call = HttpCall(request.method, path, request.scope.get("query_string", b""),
                        list(request.scope["headers"]), body, client, time.time(),
                        FORWARD_S - SKEW_S)  # fmt: skip
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, pending_bytes_limit=256 * 1024 * 1024)
        streaming = False  # (then the response's body iterator unsubscribes: `_rest`)
        try:
            await self.nc.publish(self.names.http, encode(call), reply=inbox)
            first = await self._part(sub, 0, FORWARD_S)
            if first.last:
                return _response(first, first.body)
            response = StreamingResponse(self._rest(sub, first), status_code=first.status)
            response.raw_headers = list(first.headers)
            streaming = True
            return response
        except TimeoutError:
            return json_error(504, f"the hub's core did not answer within {FORWARD_S:.0f} s; "
                              "a write may or may not have been applied")  # fmt: skip
        except _NoCore:
            return self.unavailable("no core is serving the hub now (failover); try again")
        except Exception as exc:  # (an answer we cannot read: our bug, or NATS's)
            self.hub_metrics.internal_error("edge_forward")
            log.exception("edge: forwarding %s %s failed", request.method, path[:200])
            return json_error(502, f"the hub's core gave no usable answer ({type(exc).__name__})")
        finally:
            if not streaming:
                await sub.unsubscribe()

    async def _part(self, sub: Any, n: int, timeout: float) -> HttpReply:
        msg = await sub.next_msg(timeout=timeout)
        if not msg.data and msg.headers and msg.headers.get("Status") == "503":
            raise _NoCore
        part = reply_decoder.decode(msg.data)
        if part.n != n:  # (a part lost: the edge was too slow for NATS)
            raise ConnectionError(f"answer part {part.n} came where {n} was due")
        return part

    async def _rest(self, sub: Any, first: HttpReply) -> AsyncIterator[bytes]:
        try:
            yield first.body
            n, last = 1, False
            while not last:
                part = await self._part(sub, n, PART_S)
                yield part.body
                n, last = n + 1, part.last
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


class _NoCore(Exception):
    """NATS said nobody listens on `<name>.http`: no core holds the lease now."""


def _response(part: HttpReply, body: bytes) -> Response:
    response = Response(body, status_code=part.status)
    response.raw_headers = list(part.headers)
    return response


def edge_app(hub: EdgeHub, forwarder: Forwarder) -> Starlette:
    """The edge's routes (the module header)."""
    from commonsky.web import web_routes

    policy, operator = hub.policy, str(hub.settings.operator_token)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        try:
            who = token_caller(policy, operator, bearer_token(request))
        except ApiError as exc:
            return json_error(exc.status, exc.public())
        text = hub.metrics.render() if who is None else hub.metrics.render_for(who)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def websocket(ws: WebSocket) -> None:
        try:
            party = token_party(policy, ws.query_params.get("token"))
        except ApiError:
            await ws.close(code=4401)
            return
        await serve_page(cast(Hub, hub), ws, party)

    async def forward(request: Request) -> Response:
        path = request.url.path
        token = bearer_token(request)
        try:
            if token or not path.startswith(PUBLIC):
                token_caller(policy, operator, token)  # (401 here; the core checks again)
        except ApiError as exc:
            return json_error(exc.status, exc.public())
        if path.startswith("/core/"):
            path = path[len("/core") :]
        return await forwarder.forward(request, path)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        WebSocketRoute("/api/ws", websocket),
        *web_routes(cast("Services", None)),
        Route("/{path:path}", forward, methods=_METHODS),
    ]
    return Starlette(routes=routes)


class EdgeHttp:
    """The edge's HTTP server on `[server] http` (uvicorn, as `server.HubServer` runs it)."""

    def __init__(self, hub: EdgeHub, config: HubConfig) -> None:
        self.hub, self.config = hub, config
        self.host, self.port = parse_hostport(str(config.settings.http), "http")
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self, nc: Client, names: Names) -> None:
        """Bind (UsageError, one line, for a busy port) and serve."""
        assert self.config.cluster is not None
        s = self.config.settings
        where = f"{self.config.source}: [server] http"
        sock = bind_http(self.host, self.port, where, reuse_port=True)
        forwarder = Forwarder(nc, names, s.limit_http_body_bytes, self.config.cluster.lease_ttl_s,
                              self.hub.metrics)  # fmt: skip
        self.server, self.task = await serve_http(edge_app(self.hub, forwarder), sock, s, where)
        self.port = sock.getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, timeout=5.0)
