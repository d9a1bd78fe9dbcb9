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
from commonsky.services import Services
from commonsky.settings import Settings


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
        # The operator (Prometheus, with `operator_token`) sees everything; a party's own
        # token shows its own series only; no token, nothing.
        from commonsky.http.api import ApiError, bearer_token, caller

        try:
            who = caller(services, bearer_token(request))
        except ApiError as exc:
            return JSONResponse({"error": exc.public()}, status_code=exc.status)
        text = hub.metrics.render() if who is None else hub.metrics.render_for(who)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

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
