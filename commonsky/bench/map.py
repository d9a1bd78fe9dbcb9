"""`commonsky bench map`: how the live map holds up in a real browser under many moving tracks.

The hub runs as its own process, filled over TAK TCP; Debian's chromium (headless, driven by
Playwright) signs in as a party that sees every track. Measured:

- first load: the navigation's `loadEventEnd` (HTML, scripts, styles, basemap);
- full picture: from opening the page to every track on the canvas;
- frame interval: time between animation frames while every track moves twice a second
  (what a user feels as jank);
- canvas draw: how long one redraw of the track layer takes (the page's own counter).

Timing belongs here, never in the test suite: the browser tests check what is drawn, this
checks how fast, and prints figures with the machine they were measured on.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from commonsky.bench.api import TOKENS, loaded_hub, track_events
from commonsky.errors import UsageError, finite_flags
from commonsky.web.shots import CHROMIUM, CHROMIUM_ARGS, chromium_missing

TARGET_FRAME_MS = 100.0
TARGET_LOAD_MS = 2000.0
MOVES_PER_S = 2.0

# Animation-frame timestamps for `ms` milliseconds: their differences are frame intervals.
FRAME_STAMPS = """
(ms) => new Promise((done) => {
  const times = [];
  const start = performance.now();
  const step = (t) => {
    times.push(t);
    if (t - start < ms) requestAnimationFrame(step); else done(times);
  };
  requestAnimationFrame(step);
})
"""


@dataclass
class MapFigures:
    load_ms: float
    full_picture_ms: float
    first_draw_ms: float
    frames_ms: np.ndarray
    draws_ms: np.ndarray


async def _measure(tracks: int, duration: float) -> MapFigures:
    from playwright.async_api import async_playwright

    async with loaded_hub(tracks, 0) as hub, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            started = time.perf_counter()
            await page.goto(f"{hub.base}/#token={quote(TOKENS['JPN'], safe='')}")
            await page.wait_for_function(
                "(n) => window.commonsky?.snapshot()?.tracks.length === n",
                arg=tracks,
                timeout=60_000,
            )
            full_picture_ms = (time.perf_counter() - started) * 1e3
            load_ms = await page.evaluate(
                "() => performance.getEntriesByType('navigation')[0].loadEventEnd"
            )
            # The first draw builds every symbol's sprite; count it apart from steady state.
            first_draw_ms = await page.evaluate("() => window.commonsky.perf.samples[0] ?? 0")
            await page.evaluate("() => { window.commonsky.perf.samples.length = 0; }")

            async def move() -> None:
                for step in range(1, int(duration * MOVES_PER_S) + 1):
                    hub.usa_tak.write(track_events(tracks, step))
                    await hub.usa_tak.drain()
                    await asyncio.sleep(1 / MOVES_PER_S)

            mover = asyncio.create_task(move())
            stamps = await page.evaluate(FRAME_STAMPS, duration * 1e3)
            await mover
            draws = await page.evaluate("() => window.commonsky.perf.samples")
        finally:
            await browser.close()
    return MapFigures(
        float(load_ms),
        full_picture_ms,
        float(first_draw_ms),
        np.diff(np.array(stamps, dtype=float)),
        np.array(draws, dtype=float),
    )


def bench(
    tracks: Annotated[int, typer.Option(help="live tracks, all moving")] = 2000,
    duration: Annotated[float, typer.Option(help="seconds of movement measured")] = 10.0,
) -> None:
    """Live-map frame times and first load in headless chromium, with moving tracks."""
    finite_flags(duration=duration)
    if tracks <= 0 or duration <= 0:
        raise UsageError("--tracks and --duration must be > 0")
    try:
        import playwright  # noqa: F401
    except ImportError:
        raise UsageError(
            "commonsky bench map drives chromium with playwright: pip install 'commonsky[bench]'"
        ) from None
    missing = chromium_missing()
    if missing:
        raise UsageError(missing)
    f = asyncio.run(_measure(tracks, duration))
    if len(f.frames_ms) == 0 or len(f.draws_ms) == 0:
        raise UsageError("the page drew nothing while tracks moved: is the map live?")
    table = Table(
        title=f"commonsky bench map: {tracks:,} tracks moving {MOVES_PER_S:g}×/s for "
        f"{duration:g} s, headless chromium, {os.cpu_count()} cores"
    )
    for col in ("figure", "p50 ms", "p99 ms", "max ms", "count", "target"):
        table.add_column(col)

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    for name, values in (("frame interval", f.frames_ms), ("canvas draw", f.draws_ms)):
        p99 = float(np.percentile(values, 99))
        table.add_row(
            name,
            f"{np.median(values):.1f}",
            f"{p99:.1f}",
            f"{values.max():.1f}",
            str(len(values)),
            f"p99 < {TARGET_FRAME_MS:g} ms ({verdict(p99 < TARGET_FRAME_MS)})",
        )
    table.add_row("first draw (builds symbols)", "", "", f"{f.first_draw_ms:.1f}", "1", "")
    table.add_row(
        "first load",
        "",
        "",
        f"{f.load_ms:.0f}",
        "1",
        f"< {TARGET_LOAD_MS:g} ms ({verdict(f.load_ms < TARGET_LOAD_MS)})",
    )
    table.add_row("open → every track drawn", "", "", f"{f.full_picture_ms:.0f}", "1", "")
    Console(width=120).print(table)
