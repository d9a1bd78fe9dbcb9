"""The hub's HTTP face (Starlette under uvicorn): health, metrics, OpenAPI.

Routes are declared once in ROUTES; the OpenAPI document is built from the same table so
the two cannot drift apart. Feature packages add their routes through `extra_routes`.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from commonsky import __version__
from commonsky.hub.core import Hub
from commonsky.services import Services


def build_app(services: Services) -> Starlette:
    from commonsky.http.api import build_api

    hub: Hub = services.hub
    from commonsky.web import web_routes

    extra_routes, extra_paths = build_api(services)
    extra_routes = [*extra_routes, *web_routes(services)]

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

    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "Liveness: 200 while the hub serves (no token; says nothing else).",
                "responses": {"200": {"description": "serving"}},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics: all with the operator token, a party's own "
                "series with its token.",
                "security": [{"bearer": []}],
                "responses": {
                    "200": {"description": "text exposition format"},
                    "401": {"description": "no or wrong token"},
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document.",
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
        },
    }
    paths.update(extra_paths or {})
    document = {
        "openapi": "3.1.0",
        "info": {"title": "CommonSky hub", "version": __version__},
        "paths": paths,
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
