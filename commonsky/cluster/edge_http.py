"""An edge's HTTP side: the map page, its WebSocket live feed, and the API forwarded to the core.

Each edge binds `[server] http` (SO_REUSEPORT: the edges of one host share the port, as their
TAK listeners do) and serves, as the single process does at the same paths:

- here: `/healthz`; `/metrics` (this edge's own series, behind the same tokens; without
  one, the public series only, as http/app.metrics_answer answers); the map
  page and its files (`/`, `/app/…`, `/vendor/…`: `commonsky.web`); and `/api/ws`, the live
  feed, held like a TAK client (`http/routes/live.serve_page` on the `EdgeHub`): the party
  stamped from its token here, its picture read from the bucket for that party only and
  turned into the page's JSON (`picture_kv.entry_json`), then announced to the core, which
  sends it — per client, rendered as JSON, already disclosed — what its party may see.
- forwarded: every other path (`/api/…`, `/cap/…`, `/openapi.json`, and `/core/…`: the
  core's own `/metrics` and `/healthz` at `/core/metrics`, `/core/healthz`; but
  `/core/metrics` without a token is answered here, with the public series — up and build,
  the same for every process — as `/metrics` is) goes to the core
  holding the lease over NATS (cluster/forward.py, the one forwarder of every edge face):
  method, path, query, headers (the bearer token: the core authenticates it again, trusting
  nothing the edge says) and the body in acknowledged parts, bounded by
  `limit_http_body_bytes` (413 past it, here). The core runs it through its own app.

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
from typing import TYPE_CHECKING, cast

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from commonsky.config import HubConfig
from commonsky.http.app import metrics_answer, serve_http
from commonsky.http.base import (
    ApiError,
    JSONResponse,
    bearer_token,
    json_error,
    token_caller,
    token_party,
)
from commonsky.http.routes.live import serve_page
from commonsky.hub.core import Hub
from commonsky.hub.listeners import bind_http
from commonsky.settings import parse_hostport

from .forward import FORWARD_S as FORWARD_S
from .forward import Face, Forwarder
from .wire import Names

if TYPE_CHECKING:
    from nats.aio.client import Client

    from commonsky.services import Services

    from .edge import EdgeHub

log = logging.getLogger("commonsky.cluster")

#: Paths a request without a token may be forwarded to (the rest answer 401 here).
PUBLIC = ("/cap/", "/openapi.json", "/core/healthz")
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def api_face(limit: int) -> Face:
    """The API as a forwarded face: bodies up to `limit_http_body_bytes`, errors as JSON."""

    def error(status: int, message: str, headers: dict[str, str]) -> Response:
        return JSONResponse({"error": message}, status_code=status, headers=headers or None)

    return Face("api", limit, f"body over limit_http_body_bytes={limit}", error)


def edge_app(hub: EdgeHub, forwarder: Forwarder) -> Starlette:
    """The edge's routes (the module header)."""
    from commonsky.web import web_routes

    policy, operator = hub.policy, str(hub.settings.operator_token)
    face = api_face(hub.settings.limit_http_body_bytes)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        return metrics_answer(request, hub.metrics, policy, operator)

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
        if token is None and path == "/core/metrics":  # (the public series: answered here)
            if request.method not in ("GET", "HEAD"):
                return json_error(405, "method not allowed")
            return metrics_answer(request, hub.metrics, policy, operator)
        try:
            if token or not path.startswith(PUBLIC):
                token_caller(policy, operator, token)  # (401 here; the core checks again)
        except ApiError as exc:
            return json_error(exc.status, exc.public())
        if path.startswith("/core/"):
            path = path[len("/core") :]
        return await forwarder.forward(request, path, face)

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
        forwarder = Forwarder(nc, names, self.config.cluster.lease_ttl_s, self.hub.metrics)
        self.server, self.task = await serve_http(edge_app(self.hub, forwarder), sock, s, where)
        self.port = sock.getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, timeout=5.0)
