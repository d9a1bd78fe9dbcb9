"""The hub's HTTP face (Starlette under uvicorn): health, metrics, OpenAPI.

The OpenAPI document is written from the request and answer Structs of http/schemas.py
(its ENDPOINTS; a test checks every route is there). Feature packages add their routes
through `extra_routes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from commonsky import __version__
from commonsky.errors import UsageError
from commonsky.http.websocket import HubWebSocketProtocol
from commonsky.hub.core import Hub
from commonsky.metrics import Metrics
from commonsky.policy import Policy
from commonsky.services import Services
from commonsky.settings import Settings

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def build_app(services: Services) -> Starlette:
    from commonsky.http.api import build_api
    from commonsky.http.schemas import openapi_paths
    from commonsky.web import web_routes

    hub: Hub = services.hub
    extra_routes = [*build_api(services), *web_routes(services)]
    paths, components = openapi_paths()

    async def healthz(request: Request) -> Response:
        # Anyone may ask, so it says nothing about who uses the hub (the roster is behind a
        # token: /api/parties).
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        return metrics_answer(request, hub.metrics, hub.policy, str(hub.settings.operator_token))

    document = {
        "openapi": "3.1.0",
        "info": {"title": "CommonSky hub", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/openapi.json", openapi),
        *extra_routes,
    ]
    return Starlette(routes=routes)


def metrics_answer(request: Request, metrics: Metrics, policy: Policy, operator: str) -> Response:
    """`GET /metrics` (the hub's and a cluster edge's): the operator (Prometheus, with
    `operator_token`) sees everything; a party's own token shows its own series only; no
    token at all, the public series (`Metrics.render_public`: up and build, nothing about
    any party), so a check that scrapes without one sees a hub that answers; a token
    nobody holds, or a credential that is no one bearer token (`presented_token`), 401."""
    from commonsky.http.base import ApiError, presented_token, token_caller

    token = presented_token(request)
    if token is None:
        text = metrics.render_public(__version__)
    else:
        try:
            who = token_caller(policy, operator, token)
        except ApiError as exc:
            return JSONResponse({"error": exc.public()}, status_code=exc.status)
        text = metrics.render() if who is None else metrics.render_for(who)
    return PlainTextResponse(text, media_type=PROMETHEUS_TEXT)


async def serve_http(
    app: ASGIApp, sock: socket.socket, settings: Settings, where: str
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """uvicorn serving `app` on the bound `sock`, returned once it has started, with the task
    that runs it (set `server.should_exit` and await the task to stop it).

    As every HTTP face of the hub runs it: the hub's WebSocket protocol (its own closes counted
    with a reason: http/websocket.py), a ping every `timeout_ws_ping_s`, and no signal
    handling of its own — the process owns SIGINT/SIGTERM and shuts down in order. Raises
    what uvicorn raised at start, or UsageError "{where}: the HTTP server did not start"."""
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        access_log=False,
        ws=HubWebSocketProtocol,
        ws_ping_interval=settings.timeout_ws_ping_s or None,
        ws_ping_timeout=settings.timeout_ws_ping_s or None,
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise UsageError(f"{where}: the HTTP server did not start")
        await asyncio.sleep(0.01)
    return server, task
