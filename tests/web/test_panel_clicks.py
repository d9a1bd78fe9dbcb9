"""A click on a conflict or launch row is never lost to the panel's redraw.

During a raid the conflicts and launch events change every few seconds, and each change
redraws its panel. The panels used to build every row anew each time, and a row replaced
between the press and the release of a click takes no click (the click goes to what both
nodes have in common: the list), so the map did not zoom to the conflict or the launch the
user clicked. The rows now keep their nodes between redraws (web/app/util.js `KeyedList`),
as the hotline's do (tests/web/test_hotline_clicks.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
from playwright.async_api import Browser, Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

from commonsky.alerts.simulate import Ballistic, radar_report

from .conftest import signed_in
from .test_map import bearer

# One chromium for the module (conftest `browser`): its tests share the module's loop.
pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

RIVALS = [
    {
        "name": f"{a} to {b} areas, conflicts only",
        "from": a,
        "to": [b],
        "categories": ["airspace"],
        "disclosure": "conflicts-only",
    }
    for a, b in (("USA", "RUS"), ("RUS", "USA"))
]
LAUNCHES = [{"name": "usa-jpn", "from": "USA", "to": ["JPN"], "categories": ["launch"]}]

# Far from everything the tests put on the map, zoomed out: a zoom to a row moves it.
AWAY = (-40.0, -100.0, 3)
_BOUNDS = "() => window.commonsky.bounds()"


def volume(uid: str, x: float, width: float = 2.0) -> str:
    now = time.time()
    ring = [[x, 38], [x + width, 38], [x + width, 40], [x, 40], [x, 38]]
    props = {"uid": uid, "floor_m": 0, "ceiling_m": 12000, "start": now - 60, "end": now + 7200}
    geometry = {"type": "Polygon", "coordinates": [ring]}
    return json.dumps({"type": "Feature", "geometry": geometry, "properties": props})


def _text(row: str) -> str:
    return f"() => document.querySelector('{row}').innerText"


async def press_across_redraw(
    page: Page, row: str, change: Callable[[], Awaitable[None]], redrawn: str
) -> dict[str, Any]:
    """Press on `row`, have `change` redraw its panel (`redrawn` says when), release; the
    map's view after."""
    await page.evaluate("(v) => window.commonsky.setView(...v)", list(AWAY))
    box = None
    for _ in range(50):  # (a row rebuilt between finding and measuring it has no box)
        box = await page.locator(row).first.bounding_box()
        if box is not None:
            break
    assert box is not None
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    await page.mouse.down()
    await change()
    await page.wait_for_function(redrawn)
    await page.mouse.up()
    # The click zooms the map (the old page's lost click left it where it was).
    try:
        await page.wait_for_function(f"(z) => ({_BOUNDS})().zoom > z", arg=AWAY[2], timeout=5000)
    except PlaywrightTimeout:
        raise AssertionError(f"the click on {row} was lost: the map did not zoom") from None
    view: dict[str, Any] = await page.evaluate(_BOUNDS)
    return view


async def test_a_press_held_on_a_conflict_across_a_redraw_still_zooms(
    web_hub: Any, browser: Browser
) -> None:
    """Two conflicts, USA's two areas each against RUS's: the one below the pressed row
    clears while the first row is held. (Not the pressed conflict's own update: the hub
    tells of an update at most every 30 s, `UPDATE_EVERY_S`; a new conflict may sort
    before the pressed one and move it from under the pointer.)"""
    areas = (("USA", "us-a", 128.0, 2.0), ("USA", "us-b", 131.0, 2.0), ("RUS", "ru", 129.0, 3.0))
    async with web_hub(RIVALS) as hub, httpx.AsyncClient(base_url=hub.http) as http:
        for party, uid, x, width in areas:
            body = volume(uid, x, width)
            r = await http.post("/api/airspace", content=body, headers=bearer(party))
            assert r.status_code == 201, r.text
        page, watched = await signed_in(browser, hub, "USA")
        rows = page.locator("#conflicts li")
        await page.wait_for_function("() => document.querySelectorAll('#conflicts li').length == 2")
        first = await rows.first.inner_text()
        pressed, other = ("us-a", "us-b") if "your us-a " in first else ("us-b", "us-a")

        async def clear_the_other() -> None:
            body = volume(other, 150.0)  # far from RUS's area: its conflict clears
            r = await http.post("/api/airspace", content=body, headers=bearer("USA"))
            assert r.status_code == 201, r.text

        one_left = "() => document.querySelectorAll('#conflicts li').length == 1"
        view = await press_across_redraw(page, "#conflicts li", clear_the_other, one_left)
        assert f"your {pressed} " in await rows.first.inner_text()
        # The pressed conflict's overlap: 129-130 E (us-a) or 131-132 E (us-b), 38-40 N.
        lon = 129.5 if pressed == "us-a" else 131.5
        assert view["west"] < lon < view["east"] and view["south"] < 39 < view["north"]
        assert watched.problems() == []


async def test_a_press_held_on_a_launch_across_its_update_still_zooms(
    web_hub: Any, browser: Browser
) -> None:
    truth = Ballistic(39.0, 125.7, datetime.now(UTC), 80.0, 1_000_000.0, 500_000.0)
    rng = np.random.default_rng(3)
    first = radar_report(truth, "USA", "u1", 30, 150, 5, 300.0, 300.0, rng)
    more = radar_report(truth, "USA", "u2", 150, 270, 5, 300.0, 300.0, rng)
    async with web_hub(LAUNCHES) as hub, httpx.AsyncClient(base_url=hub.http) as http:

        async def report(r: Any) -> None:
            sent = await http.post(
                "/api/launch", content=msgspec.json.encode(r), headers=bearer("USA")
            )
            assert sent.status_code == 201, sent.text

        await report(first)
        page, watched = await signed_in(browser, hub, "JPN")
        await page.locator("#launches li").wait_for()
        before = await page.evaluate(_text("#launches li"))
        # The same event (same id) fused again with more points: its row says so.
        changed = f"() => ({_text('#launches li')})() !== {json.dumps(before)}"
        view = await press_across_redraw(page, "#launches li", lambda: report(more), changed)
        [event] = (await http.get("/api/launch/events", headers=bearer("JPN"))).json()
        ring = event["impact"]["polygon"] if event["impact"] else event["launch"]["polygon"]
        lon = sum(p[0] for p in ring) / len(ring)
        lat = sum(p[1] for p in ring) / len(ring)
        assert view["west"] < lon < view["east"] and view["south"] < lat < view["north"]
        assert await page.locator("#launches li").count() == 1
        assert watched.problems() == []
