"""The hub's HTTP face (Starlette under uvicorn): health, metrics, OpenAPI.

The OpenAPI document is written from the request and answer Structs of http/schemas.py
(its ENDPOINTS; a test checks every route is there). Feature packages add their routes
through `extra_routes`.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from commonsky import __version__
from commonsky.hub.core import Hub
from commonsky.services import Services


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
