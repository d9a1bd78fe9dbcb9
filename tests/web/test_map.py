"""The live map in a real browser, against a real hub: what each party sees, and nothing more."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser

from commonsky.web.shots import screenshot

from .conftest import TOKENS, open_page, signed_in, snapshot

# One chromium for the module (conftest `browser`): its tests share the module's loop.
pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

AGREEMENTS: list[dict[str, Any]] = [
    {
        "name": "us-jp",
        "from": "USA",
        "to": ["JPN"],
        "disclosure": "full",
        "categories": ["track", "airspace", "site", "hotline", "launch"],
    },
    {
        "name": "jp-us",
        "from": "JPN",
        "to": ["USA"],
        "disclosure": "full",
        "categories": ["track", "hotline", "launch"],
    },
    {
        "name": "kr-jp",
        "from": "KOR",
        "to": ["JPN"],
        "disclosure": "generalized",
        "categories": ["track"],
    },
]


def cot(
    uid: str, cot_type: str, lat: float, lon: float, callsign: str, stale: float = 300
) -> bytes:
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    now = time.time()
    t, s = time.strftime(fmt, time.gmtime(now)), time.strftime(fmt, time.gmtime(now + stale))
    return (
        f'<event version="2.0" uid="{uid}" type="{cot_type}" time="{t}" start="{t}" stale="{s}"'
        f' how="m-g"><point lat="{lat}" lon="{lon}" hae="9000" ce="10" le="10"/>'
        f'<detail><contact callsign="{callsign}"/></detail></event>'
    ).encode()


def bearer(party: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[party]}"}


async def wait_tracks(page: Any, callsign: str, timeout: float = 5.0) -> None:
    await page.wait_for_function(
        "(c) => window.commonsky.snapshot().tracks.some((t) => t.callsign === c)",
        arg=callsign,
        timeout=timeout * 1000,
    )


async def test_page_loads_without_a_failed_request(web_hub: Any, browser: Browser) -> None:
    async with web_hub(AGREEMENTS) as hub:
        async with httpx.AsyncClient(base_url=hub.http) as http:
            r = await http.post(
                "/api/cot", content=cot("v1", "a-f-A-M-F", 38, 128, "VIPER1"), headers=bearer("USA")
            )
            assert r.status_code == 201
        page, watched = await signed_in(browser, hub, "JPN")
        await wait_tracks(page, "VIPER1")
        await page.wait_for_load_state("networkidle")
        # Nothing but this hub was asked for anything (the CSP would block and report it).
        assert watched.problems() == []
        # How fast the page loads is measured by `commonsky bench map`, not asserted here.
        origins = await page.evaluate(
            "() => [...new Set(performance.getEntriesByType('resource')"
            ".map((e) => new URL(e.name).origin))]"
        )
        assert origins == [hub.http], origins
        await page.close()


async def test_party_sees_exactly_the_tracks_it_may(web_hub: Any, browser: Browser) -> None:
    async with web_hub(AGREEMENTS) as hub:
        us, kr, ru, jp = await hub.connect_all(("USA", "KOR", "RUS", "JPN"))
        us.send(cot("u1", "a-f-A-M-F", 38.0, 128.0, "VIPER1"))  # full to JPN
        kr.send(cot("k1", "a-f-A-M-F-Q", 37.5, 127.0, "KRDRONE"))  # generalized to JPN
        ru.send(cot("r1", "a-h-A-M-F", 36.0, 130.0, "BEAR1"))  # no agreement: never
        jp.send(cot("j1", "a-f-S", 36.5, 132.0, "KONGO"))  # JPN's own
        for sender in (us, kr, ru, jp):
            await sender.sync()  # all four are in the picture the page loads
        page, watched = await signed_in(browser, hub, "JPN")
        await wait_tracks(page, "VIPER1")
        # Live updates after load: the forbidden one is taken in first (ru.sync), the allowed
        # one after, so had the forbidden one been routed to the page it would be queued
        # ahead of the allowed one: once the allowed one is drawn, it would be too.
        ru.send(cot("r2", "a-h-A-M-F", 36.2, 130.2, "BEAR2"))
        await ru.sync()
        us.send(cot("u2", "a-f-A-M-F", 38.5, 128.5, "VIPER2"))
        await wait_tracks(page, "VIPER2")
        snap = await snapshot(page)
        by_party: dict[str, list[dict[str, Any]]] = {}
        for t in snap["tracks"]:
            by_party.setdefault(t["party"], []).append(t)
        assert sorted(by_party) == ["JPN", "KOR", "USA"], snap["tracks"]
        assert sorted(t["callsign"] for t in by_party["USA"]) == ["VIPER1", "VIPER2"]
        assert [t["callsign"] for t in by_party["JPN"]] == ["KONGO"]
        kor = by_party["KOR"]
        # Generalized: no callsign, type cut to three atoms, still a 2525 air symbol.
        assert len(kor) == 1 and not kor[0]["callsign"] and kor[0]["type"] == "a-f-A"
        assert kor[0]["sidc"] == "SFAP-----------"
        assert by_party["USA"][0]["sidc"] == "SFAPMF---------"
        text = await page.content()
        assert "BEAR" not in text and "r1" not in str(snap)
        # The page shows what the API gives JPN, track for track.
        async with httpx.AsyncClient(base_url=hub.http) as http:
            api = (await http.get("/api/items?category=track", headers=bearer("JPN"))).json()
        assert sorted(i["uid"] for i in api) == sorted(t["uid"] for t in snap["tracks"])
        # RUS on its own page sees its own tracks only (nothing is granted to it).
        ru_page, ru_watched = await signed_in(browser, hub, "RUS")
        await wait_tracks(ru_page, "BEAR2")
        assert sorted(t["callsign"] for t in (await snapshot(ru_page))["tracks"]) == [
            "BEAR1",
            "BEAR2",
        ]
        assert watched.problems() == [] and ru_watched.problems() == []


async def test_replay_slider_shows_the_past(web_hub: Any, browser: Browser) -> None:
    async with web_hub(AGREEMENTS) as hub:
        async with httpx.AsyncClient(base_url=hub.http) as http:
            await http.post(
                "/api/cot", content=cot("old", "a-f-A", 38, 128, "EARLY"), headers=bearer("USA")
            )
            page, _ = await signed_in(browser, hub, "USA")
            await wait_tracks(page, "EARLY")
            early_sent = time.time()
            await asyncio.sleep(3.2)
            late_sent = time.time()
            await http.post(
                "/api/cot", content=cot("new", "a-f-A", 39, 129, "LATE"), headers=bearer("USA")
            )
            await wait_tracks(page, "LATE")
        # Back to halfway between the two (CoT times are whole seconds, so LATE is stamped at
        # most 1 s before it was sent), counted when the page is asked: a slow page or
        # browser must not move the moment replayed.
        halfway = (early_sent + late_sent) / 2
        await page.evaluate("(t) => window.commonsky.setReplay(Date.now() / 1000 - t)", halfway)
        names = [t["callsign"] for t in (await snapshot(page))["tracks"]]
        assert names == ["EARLY"]
        await page.evaluate("() => window.commonsky.setReplay(0)")
        assert sorted(t["callsign"] for t in (await snapshot(page))["tracks"]) == ["EARLY", "LATE"]


async def test_acknowledging_from_the_page_reaches_the_sender(
    web_hub: Any, browser: Browser
) -> None:
    async with web_hub(AGREEMENTS) as hub:
        us = await hub.connect("USA")
        async with httpx.AsyncClient(base_url=hub.http) as http:
            sent = await http.post(
                "/api/hotline/send",
                json={"to": "JPN", "text": "Confirm launch"},
                headers=bearer("USA"),
            )
            assert sent.status_code == 201, sent.text
            page, watched = await signed_in(browser, hub, "JPN")
            button = page.get_by_role("button", name="Acknowledge")
            await button.wait_for()
            assert await page.locator("#hotline li").first.inner_text() != ""
            await button.click()
            await page.wait_for_function(
                "() => window.commonsky.snapshot().hotline.some((m) => m.acks.JPN)"
            )
            history = (await http.get("/api/hotline", headers=bearer("USA"))).json()
        assert history[0]["text"] == "Confirm launch" and "JPN" in history[0]["acks"]
        # ...and the sender's TAK client is told, by the hub, over its own stream.
        receipt = await us.wait_for(
            lambda e: e["type"] == "b-t-f-r" and "JPN acknowledged" in str(e.get("detail"))
        )
        assert receipt is not None
        assert await page.get_by_role("button", name="Acknowledge").count() == 0
        assert watched.problems() == []


async def test_wrong_token_is_refused_with_a_clear_message(web_hub: Any, browser: Browser) -> None:
    async with web_hub(AGREEMENTS) as hub:
        page, watched = await open_page(browser, hub.http + "/")
        await page.fill("#token", "not-a-real-token-at-all")
        await page.click("#signin-form button[type=submit]")
        error = page.locator("#signin-error")
        await error.filter(has_text="refused").wait_for()
        assert await error.inner_text() == "Token refused by the hub (unknown token)."
        assert await page.evaluate("() => window.commonsky.state") == "refused"
        # The only error is the hub's 401 to the sign-in check; no socket was opened.
        assert watched.bad_status == [f"401 {hub.http}/api/me"]
        assert watched.failed == []
        assert not any(c.listener == "websocket" for c in hub.hub.all_connections())
        # The right token then works from the same form.
        await page.fill("#token", TOKENS["KOR"])
        await page.click("#signin-form button[type=submit]")
        await page.wait_for_function("() => window.commonsky.state === 'live'")


async def test_screenshot_writes_a_png(web_hub: Any, tmp_path: Path) -> None:
    async with web_hub(AGREEMENTS) as hub:
        async with httpx.AsyncClient(base_url=hub.http) as http:
            await http.post(
                "/api/cot", content=cot("s1", "a-f-A-M-F", 38, 128, "SHOT"), headers=bearer("USA")
            )
        out = tmp_path / "shots" / "usa.png"
        await screenshot(hub.http, TOKENS["USA"], out)
        data = out.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
