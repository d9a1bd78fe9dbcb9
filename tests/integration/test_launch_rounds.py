"""On the real server, launch reports that arrive in one read are settled as one round: each
recipient gets one fused event for the lot, fused from all of them — the event loop
behaviour `commonsky bench warnings` models."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import numpy as np

from commonsky.alerts.simulate import Ballistic, radar_report
from commonsky.desks.launch import report_event
from commonsky.protocol.cot import encode_event

SENSORS = ("JPN", "KOR")
SHARING = [
    {
        "name": f"{p} launch",
        "from": p,
        "to": ["USA", *(q for q in SENSORS if q != p)],
        "categories": ["launch"],
    }
    for p in SENSORS
]


def fused_body(event: dict) -> dict:
    node = ET.fromstring(event["detail"]).find("csky_fused")
    assert node is not None and node.text
    return json.loads(node.text)


async def test_reports_in_one_read_are_fused_once(make_hub) -> None:
    async with make_hub(SHARING) as hub:
        usa = await hub.connect("USA")
        sensors = {p: await hub.connect(p) for p in SENSORS}
        now = hub.server.hub.clock()
        rng = np.random.default_rng(5)
        truth = Ballistic(
            39.9, 127.5, datetime.fromtimestamp(now - 600, UTC), 84.0, 1_100_000.0, 420_000.0
        )
        looks = {"KOR": [(20, 60), (70, 110), (120, 160)], "JPN": [(300, 360), (370, 430)]}
        keys = 0
        for party in ("KOR", "JPN"):
            # A sensor's looks go in one write: one read, so one round.
            data = b"".join(
                encode_event(
                    report_event(
                        radar_report(truth, party, f"{party}-{n}", a, b, 10, 400, 300, rng), now
                    )
                )
                for n, (a, b) in enumerate(looks[party])
            )
            sensors[party].send(data)
            keys += len(looks[party])
            event = await usa.wait_for(
                lambda e, k=keys: e["type"] == "b-l-f" and len(fused_body(e)["report_keys"]) == k
            )
            assert fused_body(event)["parties"] == sorted({"KOR", party})
            await sensors[party].sync()  # its write is all taken in: the round is over
        got = await hub.received_before_barrier(usa, *sensors.values())
        assert len([e for e in got if e["type"] == "b-l-r"]) == 5
        fused = [fused_body(e) for e in got if e["type"] == "b-l-f"]
        # One fused event per round (one per write here), never one per report.
        assert [len(f["report_keys"]) for f in fused] == [3, 5]
        assert fused[-1]["parties"] == ["JPN", "KOR"]
