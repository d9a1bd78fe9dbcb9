"""The REST and WebSocket API: one policy for every party, the same as the TAK stream.

Reads go through `Hub.visible`, writes through `Hub.accept` — so an item reaches or is
shown to a party over HTTP exactly when it would over TAK. What every route shares (bearer
tokens, bounded bodies, JSON errors, `Api`) is `http/base.py`; the routes live by area in
`http/routes/`; this module composes them. The OpenAPI document describing them is
`http/schemas.py`'s.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from commonsky.http.base import (
    Api,
    ApiError,
    JSONResponse,
    authenticate,
    bearer_token,
    caller,
    decode_json,
    json_error,
    read_body,
    typed_body,
)
from commonsky.http.routes import airspace, hotline, items, launch, ledger, live
from commonsky.services import Services

__all__ = [
    "Api",
    "ApiError",
    "JSONResponse",
    "authenticate",
    "bearer_token",
    "build_api",
    "caller",
    "decode_json",
    "json_error",
    "read_body",
    "typed_body",
]

# Each area's routes; their paths do not overlap, so the order is only the listing's.
AREAS = (launch, items, airspace, hotline, ledger, live)


def build_api(services: Services) -> list[BaseRoute]:
    """The API's routes, every area's (`http/routes/*.routes`) over one shared `Api`."""
    api = Api(services)
    return [route for area in AREAS for route in area.routes(api)]
