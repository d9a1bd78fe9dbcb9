"""Screenshots of a party's live map, for the demo's record of each scenario's final state.

Headless Debian chromium driven by Playwright (never Playwright's own browser download:
nothing is fetched at run time). The page is opened with the token in the URL fragment, so
the token is never sent to the server in a URL and never lands in a log.
"""

from __future__ import annotations

import asyncio
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


async def screenshot(base_url: str, token: str, path: Path, timeout_s: float = 20.0) -> None:
    """Save a PNG of the live map as the party owning `token` sees it at `base_url`."""
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
            await page.goto(f"{base_url.rstrip('/')}/#token={quote(token, safe='')}")
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
            await asyncio.sleep(0.5)
            await page.screenshot(path=str(path))
        finally:
            await browser.close()
