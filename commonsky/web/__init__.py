"""The live map: a static page and its assets, served by the hub itself (nothing from the web).

Rule: the hub serves exactly three things here — the page (`/`), the page's own sources
(`/app/…` from `web/app/`) and a fixed allow-list of front-end library files installed by
`npm ci` into `web/node_modules/` (`/vendor/…`). Nothing else under `node_modules` is
reachable, and the page loads nothing from any other origin (its Content-Security-Policy
says so, so a slip shows up as a blocked request in the browser tests).

The page is only a client of the API: every item it shows came from `/api/…` or the
WebSocket, already filtered by the hub's policy for the signed-in party.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

import commonsky

if TYPE_CHECKING:
    from commonsky.services import Services

log = logging.getLogger("commonsky.web")

#: The web sources live beside the package in the repository (not inside the wheel).
WEB_DIR = Path(commonsky.__file__).resolve().parents[1] / "web"

#: URL under /vendor/ -> file under web/node_modules/ (pinned in web/package-lock.json).
VENDOR_FILES: dict[str, str] = {
    "leaflet.js": "leaflet/dist/leaflet.js",
    "leaflet.css": "leaflet/dist/leaflet.css",
    "milsymbol.js": "milsymbol/dist/milsymbol.js",
    "topojson-client.js": "topojson-client/dist/topojson-client.min.js",
    # Natural Earth 1:50m admin-0 countries as TopoJSON: outlines, borders and coastlines.
    "countries-50m.json": "world-atlas/countries-50m.json",
}

#: Same-origin only; inline styles are allowed because Leaflet positions its panes with them.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def missing_assets(web_dir: Path = WEB_DIR) -> list[str]:
    """Files the page needs that are not on disk (e.g. `make install` not run yet)."""
    wanted = [web_dir / "index.html"] + [
        web_dir / "node_modules" / path for path in VENDOR_FILES.values()
    ]
    return [str(p) for p in wanted if not p.is_file()]


def web_routes(services: Services, web_dir: Path = WEB_DIR) -> list[BaseRoute]:
    """Routes for `/`, `/app/…` and `/vendor/…`."""
    missing = missing_assets(web_dir)
    if missing:
        # The API keeps working without the page; say once what to run, not a 404 per asset.
        log.warning("live map unavailable, run `make install` (missing: %s)", ", ".join(missing))

    async def index(request: Request) -> Response:
        page = web_dir / "index.html"
        if not page.is_file():
            return PlainTextResponse("live map not installed: run `make install`", 503)
        return FileResponse(page, media_type="text/html", headers=_HEADERS)

    async def vendor(request: Request) -> Response:
        rel = VENDOR_FILES.get(request.path_params["name"])
        if rel is None:
            return PlainTextResponse("not found", 404)
        path = web_dir / "node_modules" / rel
        if not path.is_file():
            return PlainTextResponse(f"{rel} not installed: run `make install`", 503)
        return FileResponse(path, headers=_HEADERS)

    return [
        Route("/", index),
        Route("/vendor/{name}", vendor),
        # Leaflet's CSS names its marker/layer images relative to itself.
        Mount(
            "/vendor/images",
            app=StaticFiles(
                directory=web_dir / "node_modules/leaflet/dist/images", check_dir=False
            ),
        ),
        Mount("/app", app=StaticFiles(directory=web_dir / "app", check_dir=False)),
    ]
