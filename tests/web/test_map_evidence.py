"""Evidence photos on the map: the footprint with its thumbnail in full, a coarse dashed
footprint (no picture) when generalized."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.async_api import Browser

from commonsky.evidence.extract import read_facts
from commonsky.evidence.marker import marker_event
from commonsky.evidence.render import aerial_geotiff
from commonsky.protocol.cot import encode_event

from .conftest import signed_in, snapshot

# One chromium for the module (conftest `browser`): its tests share the module's loop.
pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

AGREEMENTS = [
    {"name": "p1", "from": "USA", "to": ["JPN"], "disclosure": "full", "categories": ["imagery"]},
    {
        "name": "p2",
        "from": "USA",
        "to": ["KOR"],
        "disclosure": "generalized",
        "categories": ["imagery"],
    },
]


def photo_marker() -> bytes:
    box = (40.05, 35.33, 40.25, 35.47)
    facts = read_facts(aerial_geotiff(*box, 1474113600.0), "image/tiff", 10**8)
    assert facts.footprint and facts.centre
    evidence = {
        "sha256": "ab" * 32,
        "party": "USA",
        "user": "recce",
        "captured": "2016-09-17T12:00:00Z",
    }
    event = marker_event(
        "evidence-1",
        time.time(),
        facts.centre,
        "USA photo",
        evidence,
        facts.footprint,
        facts.thumbnail,
    )
    return encode_event(event)


async def test_photo_footprint_and_thumbnail(web_hub: Any, browser: Browser) -> None:
    async with web_hub(AGREEMENTS) as hub:
        us = await hub.connect("USA")
        us.send(photo_marker())
        page, watched = await signed_in(browser, hub, "JPN")
        await page.wait_for_function("() => window.commonsky.snapshot().counts.imagery === 1")
        [full] = (await snapshot(page))["photos"]
        assert full == {
            "uid": "USA::evidence-1",
            "party": "USA",
            "full": True,
            "thumbnail": True,
            "corners": 5,
        }
        assert watched.problems() == []
        coarse, _ = await signed_in(browser, hub, "KOR")
        await coarse.wait_for_function("() => window.commonsky.snapshot().counts.imagery === 1")
        [general] = (await snapshot(coarse))["photos"]
        assert general["full"] is False and general["thumbnail"] is False
        assert general["corners"] == 5  # the coarse footprint, drawn dashed
        await page.close()
        await coarse.close()
