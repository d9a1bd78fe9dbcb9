"""The map under load (2,000 live tracks) and with every kind of overlay at once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
from playwright.async_api import Browser

from commonsky.alerts.simulate import Ballistic, radar_report

from .conftest import signed_in, snapshot
from .test_map import AGREEMENTS, bearer, cot

pytestmark = pytest.mark.browser
# One chromium for the module (conftest `browser`): its async tests share the module's loop.
in_module_loop = pytest.mark.asyncio(loop_scope="module")

N_TRACKS = 2000


def traffic(n: int, step: int) -> bytes:
    return b"".join(
        cot(f"t{i}", "a-f-A-M-F", 30 + (i % 50) * 0.3 + step * 0.01, 120 + (i // 50) * 0.5, f"T{i}")
        for i in range(n)
    )


@in_module_loop
async def test_2000_live_tracks_are_all_drawn_and_follow_their_moves(
    web_hub: Any, browser: Browser
) -> None:
    # How fast is measured by `commonsky bench map`; this checks what is drawn.
    async with web_hub(AGREEMENTS) as hub:
        us = await hub.connect("USA")
        us.send(traffic(N_TRACKS, 0))
        page, watched = await signed_in(browser, hub, "JPN")
        await page.wait_for_function(
            "(n) => window.commonsky.snapshot().tracks.length === n", arg=N_TRACKS, timeout=20_000
        )
        for step in (1, 2, 3):  # every track moves; the page must end on the last position
            us.send(traffic(N_TRACKS, step))
        await page.wait_for_function(
            "(n) => { const ts = window.commonsky.snapshot().tracks;"
            " return ts.length === n && ts.every((t) => {"
            " const i = Number(t.uid.split('t').pop());"
            " return Math.abs(t.lat - (30 + (i % 50) * 0.3 + 0.03)) < 1e-6; }); }",
            arg=N_TRACKS,
            timeout=20_000,
        )
        draws = await page.evaluate("() => window.commonsky.perf.draws")
        assert draws >= 2  # the moves were drawn, not only stored
        assert watched.problems() == []


@in_module_loop
async def test_conflicts_launches_and_areas_are_drawn(web_hub: Any, browser: Browser) -> None:
    agreements = [
        *AGREEMENTS,
        {
            "name": "ru-us",
            "from": "RUS",
            "to": ["USA"],
            "categories": ["airspace"],
            "disclosure": "conflicts-only",
        },
        {
            "name": "us-ru",
            "from": "USA",
            "to": ["RUS"],
            "categories": ["airspace"],
            "disclosure": "conflicts-only",
        },
    ]
    now = time.time()

    def volume(uid: str, x: float, y: float) -> str:
        ring = [[x, y], [x + 2, y], [x + 2, y + 2], [x, y + 2], [x, y]]
        return json.dumps(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "uid": uid,
                    "floor_m": 0,
                    "ceiling_m": 12000,
                    "start": now - 60,
                    "end": now + 7200,
                },
            }
        )

    async with web_hub(agreements) as hub:
        async with httpx.AsyncClient(base_url=hub.http) as http:
            for party, uid, x in (("USA", "us-area", 128.0), ("RUS", "ru-area", 129.0)):
                r = await http.post(
                    "/api/airspace", content=volume(uid, x, 38), headers=bearer(party)
                )
                assert r.status_code == 201, r.text
            truth = Ballistic(39.0, 125.7, datetime.now(UTC), 80.0, 1_000_000.0, 500_000.0)
            rng = np.random.default_rng(3)
            report = radar_report(truth, "USA", "u1", 30, 150, 5, 300.0, 300.0, rng)
            r = await http.post(
                "/api/launch", content=msgspec.json.encode(report), headers=bearer("USA")
            )
            assert r.status_code == 201, r.text
            page, watched = await signed_in(browser, hub, "USA")
            await page.wait_for_function(
                "() => { const c = window.commonsky.snapshot().counts;"
                " return c.conflict >= 1 && c.launch >= 1 && c.airspace === 1; }"
            )
            api_conflicts = (await http.get("/api/conflicts", headers=bearer("USA"))).json()
        # USA sees its own area, never RUS's (conflicts-only): only the red overlap.
        assert (await snapshot(page))["counts"]["airspace"] == 1
        assert await page.locator("#conflicts li").count() == len(api_conflicts) >= 1
        assert await page.locator("#launches li").count() >= 1
        assert "ru-area" not in await page.content()
        assert watched.problems() == []


@pytest.mark.slow
def test_bench_map_runs_small() -> None:
    # The benchmark's figures are not judged here; it must run and report every row.
    result = subprocess.run(
        [sys.executable, "-m", "commonsky", "bench", "map", "--tracks", "50", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for row in ("frame interval", "canvas draw", "first load", "every track drawn"):
        assert row in result.stdout
