"""Airspace on the map: each TAK drawing kind is drawn as the shape the hub read from it
(the page reads `geometry`, GeoJSON, from the item's JSON; it no longer parses the detail)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.async_api import Browser

from commonsky.model import CotEvent, Point
from commonsky.protocol.cot import encode_event

from .conftest import signed_in, snapshot

# One chromium for the module (conftest `browser`): its tests share the module's loop.
pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

AGREEMENTS = [
    {
        "name": "p1",
        "from": "USA",
        "to": ["JPN"],
        "disclosure": "full",
        "categories": ["airspace", "site"],
    },
]
RING = [(40.0, 35.0), (40.2, 35.0), (40.2, 35.2), (40.0, 35.2), (40.0, 35.0)]  # (lon, lat)
PATH = [(41.0, 35.0), (41.3, 35.2), (41.5, 35.1)]


def _links(points: list[tuple[float, float]]) -> str:
    return "".join(f'<link point="{lat},{lon}"/>' for lon, lat in points)


def drawing(uid: str, cot_type: str, detail: str, at: tuple[float, float] = (35.1, 40.1)) -> bytes:
    now = time.time()
    event = CotEvent(uid, cot_type, now, now, now + 3600, "h-e", Point(*at), detail, callsign=uid)
    return encode_event(event)


async def test_each_drawing_kind_is_drawn_as_its_shape(web_hub: Any, browser: Browser) -> None:
    async with web_hub(AGREEMENTS) as hub:
        us = await hub.connect("USA")
        us.send(drawing("poly", "u-d-f", _links(RING)))
        us.send(
            drawing(
                "circle",
                "u-d-c-c",
                '<shape><ellipse major="2500" minor="2500" angle="0"/></shape>',
                (36.0, 41.0),
            )
        )
        us.send(drawing("route", "b-m-r", _links(PATH) + '<csky_airspace width_m="3000"/>'))
        line = '<csky_airspace item="line" left_party="USA" right_party="JPN"/>'
        us.send(drawing("line", "u-d-f", _links(PATH) + line))
        us.send(drawing("site", "u-d-p", '<csky_airspace radius_m="750"/>', (36.5, 41.5)))
        page, watched = await signed_in(browser, hub, "JPN")
        await page.wait_for_function("() => window.commonsky.snapshot().counts.airspace === 5")
        shapes = {s["uid"]: s for s in (await snapshot(page))["shapes"]}
        assert shapes == {
            "USA::poly": {"uid": "USA::poly", "shape": "polygon", "vertices": 5, "radius_m": None},
            "USA::circle": {
                "uid": "USA::circle",
                "shape": "circle",
                "vertices": 1,
                "radius_m": 2500,
            },
            "USA::route": {
                "uid": "USA::route",
                "shape": "corridor",
                "vertices": 3,
                "radius_m": None,
            },
            "USA::line": {"uid": "USA::line", "shape": "line", "vertices": 3, "radius_m": None},
            "USA::site": {"uid": "USA::site", "shape": "circle", "vertices": 1, "radius_m": 750},
        }
        assert watched.problems() == []


RIVALS = [
    {
        "name": f"{a} to {b} areas, conflicts only",
        "from": a,
        "to": [b],
        "categories": ["airspace", "site"],
        "disclosure": "conflicts-only",
    }
    for a, b in (("USA", "RUS"), ("RUS", "USA"))
]


def _square(lon: float, lat: float, size: float) -> list[tuple[float, float]]:
    return [(lon, lat), (lon + size, lat), (lon + size, lat + size), (lon, lat + size), (lon, lat)]


async def test_conflict_is_drawn_as_its_overlap(web_hub: Any, browser: Browser) -> None:
    """The notice's overlap (`geometry`) is what the page draws, for a party that sees
    nothing of the other's plan."""
    async with web_hub(RIVALS) as hub:
        us, ru = await hub.connect("USA"), await hub.connect("RUS")
        levels = '<csky_airspace floor_m="3000" ceiling_m="9000"/>'
        us.send(drawing("us-plan", "u-d-f", _links(_square(38.0, 34.0, 1.0)) + levels))
        ru.send(drawing("ru-plan", "u-d-f", _links(_square(38.5, 34.5, 1.0)) + levels))
        page, watched = await signed_in(browser, hub, "RUS")
        await page.wait_for_function("() => window.commonsky.snapshot().counts.conflict === 1")
        [conflict] = (await snapshot(page))["conflicts"]
        assert (conflict["other"], conflict["area"]) == ("USA", "Polygon")
        assert watched.problems() == []


def _launch(a: str, b: str, categories: tuple[str, ...] = ("launch",)) -> dict[str, Any]:
    return {"name": f"{a}-{b}", "from": a, "to": [b], "categories": list(categories)}


async def test_alert_areas_are_drawn_from_the_items_geometry(
    web_hub: Any, browser: Browser
) -> None:
    """A warning's areas come typed with the alert item: the page draws each polygon of the
    CAP document without fetching the document."""
    from datetime import UTC, datetime, timedelta

    import httpx
    import msgspec
    import numpy as np
    from lxml import etree

    from commonsky.alerts.simulate import Ballistic, radar_report

    from .conftest import TOKENS

    pairs = (("USA", "JPN"), ("JPN", "USA"), ("USA", "KOR"), ("KOR", "USA"))
    agreements = [_launch(a, b) for a, b in (*pairs, ("KOR", "JPN"), ("JPN", "KOR"))]
    agreements.append(_launch("JPN", "USA", ("alert",)))
    # Over northern Japan, launched 600 s ago (tests/engines/test_launch_desk.py's flight).
    launch = datetime.now(UTC) - timedelta(seconds=600)
    truth = Ballistic(39.9, 127.5, launch, 84.0, 1_150_000.0, 420_000.0)
    rng = np.random.default_rng(7)
    kor = radar_report(truth, "KOR", "kor-1", 20, 140, 10, 400, 300, rng)
    end = truth.flight_s
    jpn = radar_report(truth, "JPN", "jpn-1", end - 260, end - 60, 10, 500, 400, rng)
    async with web_hub(agreements) as hub:
        async with httpx.AsyncClient(base_url=hub.http) as http:
            for report in (kor, jpn):
                r = await http.post(
                    "/api/launch",
                    content=msgspec.json.encode(report),
                    headers={"Authorization": f"Bearer {TOKENS[report.party]}"},
                )
                assert r.status_code == 201, r.text
            page, watched = await signed_in(browser, hub, "USA")
            asked: list[str] = []
            page.on("request", lambda request: asked.append(request.url))
            await page.wait_for_function("() => window.commonsky.snapshot().counts.alert >= 1")
            alerts = (await snapshot(page))["alerts"]
            documents = {}
            for alert in alerts:
                r = await http.get(f"/cap/alerts/{alert['identifier']}.xml")
                assert r.status_code == 200
                documents[alert["identifier"]] = etree.fromstring(r.content)
        for alert in alerts:
            polygons = documents[alert["identifier"]].iter("{*}polygon")
            rings = [len((node.text or "").split()) for node in polygons]
            assert rings and alert["areas"] == rings  # each polygon, every vertex
        assert not [url for url in asked if "/cap/alerts/" in url]  # (the feed is the panel's)
        assert watched.problems() == []
