"""Browser tests: a real hub on port 0, Debian's chromium driven by Playwright.

Chromium is required, not optional: CI installs it (`.ci/run`), so a missing browser is a
failure here, never a silent skip.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Page, Request, Response, async_playwright

from commonsky.config import config_from_dict
from commonsky.web.shots import CHROMIUM, CHROMIUM_ARGS, chromium_missing
from tests.conftest import RunningHub, running_hub

PARTIES = ["USA", "JPN", "KOR", "RUS"]
TOKENS = {p: f"{p.lower()}-token-0123456789abcdef" for p in PARTIES}


def web_config(tmp_path: Path, agreements: list[dict[str, Any]]) -> Any:
    return config_from_dict(
        {
            "server": {"data_dir": str(tmp_path / "hub"), "http": "127.0.0.1:0"},
            "listener": [{"kind": "tak-tcp", "bind": "127.0.0.1:0", "party": p} for p in PARTIES],
            "party": [{"id": p, "name": f"{p} duty desk", "token": TOKENS[p]} for p in PARTIES],
            "agreement": agreements,
        },
        "web-test",
    )


@contextlib.asynccontextmanager
async def web_running_hub(
    tmp_path: Path, agreements: list[dict[str, Any]]
) -> AsyncIterator[RunningHub]:
    async with running_hub(web_config(tmp_path, agreements)) as hub:
        yield hub


@pytest.fixture
def web_hub(
    tmp_path: Path,
) -> Callable[[list[dict[str, Any]]], contextlib.AbstractAsyncContextManager[RunningHub]]:
    def factory(
        agreements: list[dict[str, Any]],
    ) -> contextlib.AbstractAsyncContextManager[RunningHub]:
        return web_running_hub(tmp_path, agreements)

    return factory


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One chromium per test module (each test opens its own pages, each page its own
    browser context): starting Playwright and chromium costs ~1.9 s, once per test it was
    a tenth of the suite. The module's tests run in the module's event loop for it."""
    missing = chromium_missing()
    if missing:
        pytest.fail(missing)
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@dataclass
class Watched:
    """Everything that went wrong while a page loaded and ran."""

    failed: list[str] = field(default_factory=list)
    bad_status: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return self.failed + self.bad_status + self.console_errors


async def open_page(browser: Browser, url: str) -> tuple[Page, Watched]:
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    watched = Watched()

    def on_failed(request: Request) -> None:
        watched.failed.append(f"{request.method} {request.url}: {request.failure}")

    def on_response(response: Response) -> None:
        if response.status >= 400:
            watched.bad_status.append(f"{response.status} {response.url}")

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.console_errors.append(message.text)

    page.on("requestfailed", on_failed)
    page.on("response", on_response)
    page.on("console", on_console)
    page.on("pageerror", lambda exc: watched.console_errors.append(f"pageerror: {exc}"))
    await page.goto(url)
    return page, watched


async def signed_in(browser: Browser, hub: RunningHub, party: str) -> tuple[Page, Watched]:
    page, watched = await open_page(browser, f"{hub.http}/#token={TOKENS[party]}")
    await page.wait_for_function("() => window.commonsky && window.commonsky.state === 'live'")
    return page, watched


async def snapshot(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate("window.commonsky.snapshot()")
    return result
