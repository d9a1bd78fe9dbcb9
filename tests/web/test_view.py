"""What the page frames and draws, in a real browser: a basemap without antimeridian stripes,
views framed on what a party is doing, decluttered labels, and a hotline form that offers only
the parties an agreement lets the party reach."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.async_api import Browser, Page

from commonsky.web.shots import screenshot

from .conftest import TOKENS, signed_in, snapshot
from .test_map import AGREEMENTS, bearer, cot, wait_tracks

# One chromium for the module (conftest `browser`): its tests share the module's loop.
pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

OCEAN = (0x0E, 0x22, 0x33)  # the map's background (style.css): what a stripe would cover
SYRIA = [(34.6 + 0.15 * i, 37.5 + 0.3 * i) for i in range(10)]  # (lat, lon)
KOREA = [(37.6, 127.0), (37.9, 127.4)]


async def view_of(page: Page, lat: float, lon: float, zoom: int) -> Image.Image:
    await page.wait_for_function("() => window.commonsky.basemap === true")
    await page.evaluate("([a, o, z]) => window.commonsky.setView(a, o, z)", [lat, lon, zoom])
    await asyncio.sleep(0.5)  # the canvas renderer redraws on the next frames
    return Image.open(io.BytesIO(await page.screenshot())).convert("RGB")


LAND = (0x1B, 0x2A, 0x35)  # the basemap's land fill (layers.js)


def near(pixel: tuple[int, int, int], colour: tuple[int, int, int], tolerance: int = 6) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))


async def map_box(page: Page) -> tuple[int, int, int, int]:
    box = await page.locator("#map").bounding_box()
    assert box is not None
    x, y, w, h = int(box["x"]), int(box["y"]), int(box["width"]), int(box["height"])
    return x + 2, y, x + w - 2, y + h


async def y_of(page: Page, lat: float) -> int:
    return round((await page.evaluate("(a) => window.commonsky.project(a, 0)", lat))["y"])


def longest_stroke(image: Image.Image, y: int, x0: int, x1: int) -> int:
    """The longest run of pixels along row y that are neither sea nor land: drawn lines. A
    coastline or border crosses a row in a few pixels; a ring drawn across the antimeridian
    lays its edge along the whole row."""
    pixels = image.load()
    assert pixels is not None
    best = run = 0
    for x in range(x0, x1):
        p = pixels[x, y]
        run = 0 if near(p, OCEAN) or near(p, LAND) else run + 1
        best = max(best, run)
    return best


def land_share(image: Image.Image, y: int, x0: int, x1: int) -> float:
    pixels = image.load()
    assert pixels is not None
    return sum(1 for x in range(x0, x1) if not near(pixels[x, y], OCEAN)) / (x1 - x0)


async def test_the_world_view_has_no_antimeridian_stripes(web_hub: Any, browser: Browser) -> None:
    async with web_hub(AGREEMENTS) as hub:
        page, watched = await signed_in(browser, hub, "USA")
        image = await view_of(page, 45, 0, 2)
        x0, top, x1, bottom = await map_box(page)
        # Every pixel row from 80 N down to 60 S: the rings of Russia, Fiji and Antarctica
        # that touch +-180 drew their edges (and filled bands between them) along whole rows,
        # the worst of them around 70 N.
        rows = range(max(top, await y_of(page, 80)), min(bottom, await y_of(page, -60)))
        assert len(rows) > 300
        worst = max((longest_stroke(image, y, x0, x1), y) for y in rows)
        assert worst[0] < (x1 - x0) // 4, f"a line {worst[0]} px long across row {worst[1]}"
        assert longest_stroke(image, await y_of(page, 70), x0, x1) < 60
        assert watched.problems() == []


async def test_the_world_goes_on_east_of_180(web_hub: Any, browser: Browser) -> None:
    async with web_hub(AGREEMENTS) as hub:
        page, _ = await signed_in(browser, hub, "USA")
        # Centred on the antimeridian over Chukotka: land on both sides of 180.
        image = await view_of(page, 66, 180, 4)
        x0, _, x1, _ = await map_box(page)
        y = await y_of(page, 66.5)
        middle = (x0 + x1) // 2
        assert land_share(image, y, x0, middle) > 0.1
        assert land_share(image, y, middle, x1) > 0.1, "no land east of 180"


async def post_tracks(hub: Any, party: str, points: list[tuple[float, float]], tag: str) -> None:
    async with httpx.AsyncClient(base_url=hub.http) as http:
        for i, (lat, lon) in enumerate(points):
            item = cot(f"{tag}{i}", "a-f-A-M-F", lat, lon, f"{tag}{i}")
            assert (await http.post("/api/cot", content=item, headers=bearer(party))).is_success


def contains(view: dict[str, float], points: list[tuple[float, float]]) -> bool:
    return all(
        view["south"] <= lat <= view["north"] and view["west"] <= lon <= view["east"]
        for lat, lon in points
    )


async def test_a_screenshot_is_framed_on_its_scenario(web_hub: Any, tmp_path: Path) -> None:
    async with web_hub(AGREEMENTS) as hub:
        await post_tracks(hub, "USA", SYRIA, "SY")
        await post_tracks(hub, "USA", KOREA, "KR")
        lats, lons = [p[0] for p in SYRIA], [p[1] for p in SYRIA]
        extent = (min(lons), min(lats), max(lons), max(lats))
        out = tmp_path / "syria-USA.png"
        view = await screenshot(hub.http, TOKENS["USA"], out, bbox=extent)
    assert out.stat().st_size > 10_000
    assert contains(view, SYRIA), view
    assert not contains(view, KOREA[:1]) and view["east"] - view["west"] < 20, view


async def test_the_first_view_is_the_partys_own_area(web_hub: Any, browser: Browser) -> None:
    async with web_hub(AGREEMENTS) as hub:
        await post_tracks(hub, "USA", SYRIA, "SY")
        await post_tracks(hub, "USA", KOREA, "KR")
        await post_tracks(hub, "RUS", [(35.1, 36.2)], "RU")  # one lonely track
        page, watched = await signed_in(browser, hub, "USA")
        await wait_tracks(page, "SY9")
        await page.wait_for_function("() => window.commonsky.snapshot().areas.length === 2")
        await asyncio.sleep(2.5)  # the second framing, once the whole replay has landed
        view = await page.evaluate("window.commonsky.bounds()")
        assert contains(view, SYRIA) and not contains(view, KOREA[:1]), view
        names = [a["name"] for a in (await snapshot(page))["areas"]]
        assert names[0] == "Syria" and "Korea" in names[1], names
        # The selector moves to the other area; "fit mine" comes back to the largest.
        await page.select_option("#area", "1")
        assert contains(await page.evaluate("window.commonsky.bounds()"), KOREA)
        await page.click("#fit-mine")
        assert contains(await page.evaluate("window.commonsky.bounds()"), SYRIA)
        # A party with a single track still gets a view that says where it is.
        ru, _ = await signed_in(browser, hub, "RUS")
        await wait_tracks(ru, "RU0")
        await asyncio.sleep(0.3)
        small = await ru.evaluate("window.commonsky.bounds()")
        assert contains(small, [(35.1, 36.2)]) and small["north"] - small["south"] >= 3.5
        assert watched.problems() == []


async def test_labels_are_decluttered_and_generalized_tracks_say_so(
    web_hub: Any, browser: Browser
) -> None:
    async with web_hub(AGREEMENTS) as hub:
        crowd = [(38.0 + 0.001 * i, 128.0 + 0.001 * i) for i in range(30)]
        await post_tracks(hub, "USA", crowd, "CROWD")
        await post_tracks(hub, "KOR", [(36.0, 129.5)], "KR")  # generalized to JPN
        page, _ = await signed_in(browser, hub, "JPN")
        await wait_tracks(page, "CROWD29")
        await asyncio.sleep(0.5)
        snap = await snapshot(page)
        labels = snap["labels"]
        assert len(snap["tracks"]) == 31
        assert 1 <= sum(lb.startswith("CROWD") for lb in labels) < 10, labels
        assert "≈ KOR" in labels


async def test_the_hotline_form_offers_only_parties_it_can_reach(
    web_hub: Any, browser: Browser
) -> None:
    async with web_hub(AGREEMENTS) as hub:
        usa, _ = await signed_in(browser, hub, "USA")
        await usa.wait_for_function("() => window.commonsky.snapshot().recipients.length > 0")
        assert (await snapshot(usa))["recipients"] == ["JPN"]
        options = await usa.locator("#compose-to option").all_inner_texts()
        assert options == ["JPN"]
        # KOR has no hotline agreement: no form, and the page says why.
        kor, _ = await signed_in(browser, hub, "KOR")
        await kor.locator("#compose-none").wait_for()
        assert await kor.locator("#compose").is_hidden()
        assert "No hotline agreement in force" in await kor.locator("#compose-none").inner_text()
