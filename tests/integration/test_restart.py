"""A restart in the middle of a scenario, on the real server: the deconfliction and launch
desks are rebuilt from the store — stored plans still conflict, fused launch events carry
on, and nothing already told is told again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from commonsky.alerts.simulate import Ballistic, radar_report
from commonsky.desks.launch import report_event
from commonsky.protocol.cot import encode_event
from tests.conftest import base_config, running_hub, token_of
from tests.http.test_api import AIRSPACE, AIRSPACE_BACK, feature
from tests.integration.test_launch_rounds import SHARING, fused_body

AGREEMENTS = [AIRSPACE, AIRSPACE_BACK, *SHARING]


def api(hub, party: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token_of(party)}"}
    return httpx.AsyncClient(base_url=hub.http, headers=headers, timeout=10)


async def test_a_restart_mid_scenario_rebuilds_the_desks(tmp_path: Path) -> None:
    config = base_config(tmp_path, AGREEMENTS)
    rng = np.random.default_rng(3)
    async with running_hub(config) as hub:
        now = hub.hub.clock()
        truth = Ballistic(
            39.9, 127.5, datetime.fromtimestamp(now - 600, UTC), 84.0, 1_100_000.0, 420_000.0
        )
        usa_tak = await hub.connect("USA")
        jpn = await hub.connect("JPN")
        report = radar_report(truth, "JPN", "JPN-1", 300, 360, 10, 400, 300, rng)
        jpn.send(encode_event(report_event(report, now)))
        await usa_tak.wait_for(lambda e: e["type"] == "b-l-f")
        async with api(hub, "USA") as usa, api(hub, "RUS") as rus:
            assert (await usa.post("/api/airspace", json=feature("US-1", 38, 34))).status_code
            assert (await rus.post("/api/airspace", json=feature("RU-1", 38.5, 34.5))).status_code
            conflicts = {
                p: (await c.get("/api/conflicts")).json() for p, c in (("USA", usa), ("RUS", rus))
            }
            events = (await usa.get("/api/launch/events")).json()
        assert len(conflicts["USA"]) == len(conflicts["RUS"]) == 1 and len(events) == 1
        entries = hub.server.services.recorder.ledger.size

    async with running_hub(config) as hub:
        services = hub.server.services
        assert services.recorder.ledger.size == entries  # nothing told again
        async with api(hub, "USA") as usa, api(hub, "RUS") as rus:
            assert (await usa.get("/api/conflicts")).json() == conflicts["USA"]
            assert (await rus.get("/api/conflicts")).json() == conflicts["RUS"]
            assert (await usa.get("/api/launch/events")).json() == events
            # The stored plan is in the engine: a new plan against it is a new conflict.
            await rus.post("/api/airspace", json=feature("RU-2", 37.5, 33.5))
            assert len((await usa.get("/api/conflicts")).json()) == 2
        # Fusion carries on from the stored reports: KOR's look joins JPN's event.
        usa_tak = await hub.connect("USA")
        kor = await hub.connect("KOR")
        more = radar_report(truth, "KOR", "KOR-1", 20, 60, 10, 400, 300, rng)
        kor.send(encode_event(report_event(more, hub.hub.clock())))
        fused = await usa_tak.wait_for(
            lambda e: e["type"] == "b-l-f" and len(fused_body(e)["report_keys"]) == 2
        )
        assert fused_body(fused)["parties"] == ["JPN", "KOR"]
