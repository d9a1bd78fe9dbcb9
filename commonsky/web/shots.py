"""Screenshots of a party's live map, for the demo's record of each scenario's final state.

Headless Debian chromium driven by Playwright (never Playwright's own browser download:
nothing is fetched at run time). The page is opened with the token in the URL fragment, so
the token is never sent to the server in a URL and never lands in a log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 1000}


class ScreenshotError(RuntimeError):
    pass


def chromium_missing() -> str | None:
    """Why the browser cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)"
    return None


def screenshots_unavailable() -> str | None:
    """Why screenshots cannot be taken here (an extra or the browser missing), or None."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "they need the screenshots extra: pip install 'commonsky[screenshots]'"
    return chromium_missing()


def page_url(base_url: str, token: str, bbox: Sequence[float] | None = None) -> str:
    """The map signed in as `token` (in the fragment, never sent to the server), framed on
    `bbox` = (west, south, east, north) degrees when given."""
    url = f"{base_url.rstrip('/')}/#token={quote(token, safe='')}"
    if bbox is not None:
        url += "&bbox=" + ",".join(f"{v:.4f}" for v in bbox)
    return url


async def screenshot(
    base_url: str,
    token: str,
    path: Path,
    timeout_s: float = 20.0,
    bbox: Sequence[float] | None = None,
) -> dict[str, float]:
    """Save a PNG of the live map as the party owning `token` sees it at `base_url`, framed
    on `bbox` (west, south, east, north) when given; returns the view it shows (`west`,
    `south`, `east`, `north` in degrees, `zoom`). Raises ScreenshotError."""
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import async_playwright

    missing = chromium_missing()
    if missing:
        raise ScreenshotError(missing)
    path.parent.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
            await page.goto(page_url(base_url, token, bbox))
            try:
                await page.wait_for_function(
                    "() => ['live', 'refused'].includes(window.commonsky?.state)",
                    timeout=timeout_s * 1000,
                )
            except PlaywrightError as exc:
                raise ScreenshotError(f"map did not come up at {base_url}: {exc}") from None
            if await page.evaluate("window.commonsky.state") == "refused":
                reason = await page.evaluate("window.commonsky.error")
                raise ScreenshotError(f"token refused at {base_url}: {reason}")
            # Let the first WebSocket batch, the basemap and CAP areas arrive and be drawn.
            await page.wait_for_load_state("networkidle", timeout=timeout_s * 1000)
            await page.wait_for_function("() => window.commonsky.basemap === true")
            await asyncio.sleep(0.5)
            await page.screenshot(path=str(path))
            view: dict[str, float] = await page.evaluate("window.commonsky.bounds()")
            return view
        finally:
            await browser.close()
