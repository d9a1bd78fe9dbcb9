"""Issue 12 fault 3 on the map: an item its owner deletes leaves the page that showed it."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.async_api import Browser

from .conftest import signed_in, snapshot
from .test_map import AGREEMENTS, cot, wait_tracks

# One chromium for the module (conftest `browser`): its tests share the module's loop.
pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


def delete(target: str) -> bytes:
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    now = time.time()
    t, s = time.strftime(fmt, time.gmtime(now)), time.strftime(fmt, time.gmtime(now + 20))
    return (
        f'<event version="2.0" uid="del-{target}" type="t-x-d-d" time="{t}" start="{t}"'
        f' stale="{s}" how="m-g"><point lat="0" lon="0" hae="0" ce="0" le="0"/><detail>'
        f'<link uid="{target}" relation="none" type="none"/><__forcedelete/></detail></event>'
    ).encode()


def area(uid: str) -> bytes:
    ring = ((38.0, 128.0), (38.0, 128.5), (38.5, 128.5), (38.5, 128.0), (38.0, 128.0))
    links = "".join(f'<link point="{lat},{lon}"/>' for lat, lon in ring)
    return cot(uid, "u-d-f", 38.0, 128.0, "OPS AREA", stale=3600).replace(
        b"<detail>", b"<detail>" + links.encode()
    )


async def test_the_page_drops_what_its_owner_deletes(web_hub: Any, browser: Browser) -> None:
    async with web_hub(AGREEMENTS) as hub:
        us = await hub.connect("USA")
        us.send(cot("u1", "a-f-A-M-F", 38.0, 128.0, "VIPER1"))
        us.send(area("ops-1"))
        page, watched = await signed_in(browser, hub, "JPN")
        await wait_tracks(page, "VIPER1")
        await page.wait_for_function("() => window.commonsky.snapshot().counts.airspace === 1")
        us.send(delete("u1"))
        us.send(delete("ops-1"))
        # Barrier: a later track JPN is entitled to, then neither deleted item is left.
        us.send(cot("u2", "a-f-A-M-F", 38.5, 128.5, "VIPER2"))
        await wait_tracks(page, "VIPER2")
        await page.wait_for_function("() => window.commonsky.snapshot().counts.airspace === 0")
        snap = await snapshot(page)
        assert [t["callsign"] for t in snap["tracks"]] == ["VIPER2"]
        assert watched.problems() == []
        await page.close()
