"""The live map: a static page and its assets, served by the hub itself (nothing from the web).

Rule: the hub serves exactly three things here — the page (`/`), the page's own sources
(`/app/…`) and a fixed allow-list of front-end library files installed from npm
(`/vendor/…`, listed in `web/vendor.json`). Nothing else is reachable: a name outside the
allow-list, or a file that is not there, is a 404 (never a 500). The page loads nothing from
any other origin (its Content-Security-Policy says so, so a slip shows up as a blocked
request in the browser tests).

Where the files are (`find_assets`): an installed wheel carries them in
`commonsky/web/static/` (copied by `web/build.py` when the wheel is built); a checkout with
an editable install serves `web/` and `web/node_modules/` directly, so an edit to the page
shows on the next reload.

The page is only a client of the API: every item it shows came from `/api/…` or the
WebSocket, already filtered by the hub's policy for the signed-in party.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from commonsky.services import Services

log = logging.getLogger("commonsky.web")

#: Inside an installed package (built by web/build.py).
PACKAGED = Path(__file__).resolve().parent / "static"
#: In a checkout (editable install): the page's sources and npm's files beside the package.
CHECKOUT = Path(__file__).resolve().parents[2] / "web"

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
NOT_INSTALLED = (
    "The live map is not in this installation: it was built without npm. Install npm and "
    "reinstall CommonSky (or run `make install` in a checkout). The API works without it."
)


@dataclass(frozen=True)
class WebAssets:
    """Where the page (`root/index.html`, `root/app/`) and its vendor files are."""

    root: Path
    vendor_dir: Path
    vendor: dict[str, str] = field(default_factory=dict)  # URL name -> path under vendor_dir

    def page(self) -> Path:
        return self.root / "index.html"

    def missing(self) -> list[str]:
        """Files the page needs that are not on disk."""
        wanted = [self.page()] + [self.vendor_dir / rel for rel in self.vendor.values()]
        return [str(p) for p in wanted if not p.is_file()]

    def vendor_file(self, name: str) -> Path | None:
        rel = self.vendor.get(name)
        return None if rel is None else self.vendor_dir / rel

    def app_file(self, name: str) -> Path | None:
        """A file under `app/`, or None for anything else (no `..`, no hidden files)."""
        parts = name.split("/")
        if not name or any(not p or p.startswith(".") for p in parts):
            return None
        path = self.root / "app" / Path(*parts)
        return path if path.is_file() else None


def _vendor_list(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def find_assets(packaged: Path = PACKAGED, checkout: Path = CHECKOUT) -> WebAssets:
    """The installed map if the package carries one, else the checkout's `web/`."""
    if (packaged / "index.html").is_file():
        return WebAssets(packaged, packaged / "vendor", _vendor_list(packaged / "vendor.json"))
    if (checkout / "index.html").is_file() and (checkout / "vendor.json").is_file():
        vendor = _vendor_list(checkout / "vendor.json")
        return WebAssets(checkout, checkout / "node_modules", vendor)
    return WebAssets(packaged, packaged / "vendor", {})


def web_routes(services: Services, assets: WebAssets | None = None) -> list[BaseRoute]:
    """Routes for `/`, `/app/…` and `/vendor/…`."""
    assets = assets or find_assets()
    missing = assets.missing()
    if missing:
        # The API keeps working without the page; say once what to do.
        log.warning("%s (missing: %s)", NOT_INSTALLED, ", ".join(missing[:3]))

    def not_found() -> Response:
        return PlainTextResponse("not found", 404, headers=_HEADERS)

    async def index(request: Request) -> Response:
        if not assets.page().is_file():
            return PlainTextResponse(NOT_INSTALLED, 503, headers=_HEADERS)
        return FileResponse(assets.page(), media_type="text/html", headers=_HEADERS)

    async def vendor(request: Request) -> Response:
        path = assets.vendor_file(request.path_params["name"])
        if path is None or not path.is_file():
            return not_found()
        return FileResponse(path, headers=_HEADERS)

    async def app(request: Request) -> Response:
        path = assets.app_file(request.path_params["name"])
        if path is None:
            return not_found()
        return FileResponse(path, headers=_HEADERS)

    return [
        Route("/", index),
        # Leaflet's CSS names its images relative to itself: /vendor/images/….
        Route("/vendor/{name:path}", vendor),
        Route("/app/{name:path}", app),
    ]
