"""The live map in Debian's chromium, served by a cluster's edge (cluster/edge_http.py): the
page, its files and its API calls through edge A, its live feed held there, showing a track a
TAK client sent on edge B — under the agreements, as on the single process (tests/web)."""

from __future__ import annotations

import time

import pytest
from playwright.async_api import Page, async_playwright

from commonsky.bench.cluster import Client, Cluster, track, until
from commonsky.bench.hubproc import token
from commonsky.web.shots import CHROMIUM, CHROMIUM_ARGS, chromium_missing
from tests.web.conftest import open_page

pytestmark = pytest.mark.browser


async def test_the_map_on_one_edge_shows_a_track_sent_on_the_other(cluster: Cluster) -> None:
    missing = chromium_missing()
    if missing:
        pytest.fail(missing)
    await cluster.core()
    a, ports_a = await cluster.edge()
    _, ports_b = await cluster.edge()
    usa = await Client("USA", ports_b["USA"]).connect()
    kor = await Client("KOR", ports_b["KOR"]).connect()
    kor_a = await Client("KOR", ports_a["KOR"]).connect()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page, watched = await open_page(
                browser, f"http://127.0.0.1:{a.http}/#token={token('RUS')}"
            )
            await page.wait_for_function(
                "() => window.commonsky && window.commonsky.state === 'live'"
            )
            await usa.send(track("us-map-1", time.time()))
            await shown(page, "us-map-1")
            # KOR shares nothing with RUS. Barrier: KOR's track reached a KOR client on
            # edge A (the core applied it), then a later USA track reached the page.
            await kor.send(track("kor-map-1", time.time()))
            await until(lambda: kor_a.got("kor-map-1") >= 1, "KOR's track reached edge A")
            await usa.send(track("us-map-2", time.time()))
            await shown(page, "us-map-2")
            snap = await page.evaluate("window.commonsky.snapshot()")
            callsigns = [t["callsign"] for t in snap["tracks"]]
            assert "kor-map-1" not in callsigns, snap
            await page.wait_for_load_state("networkidle")
            assert watched.problems() == [], watched.problems()
        finally:
            await browser.close()
    for client in (usa, kor, kor_a):
        await client.close()


async def shown(page: Page, callsign: str) -> None:
    await page.wait_for_function(
        "(c) => window.commonsky.snapshot().tracks.some((t) => t.callsign === c)",
        arg=callsign,
        timeout=60_000,
    )
