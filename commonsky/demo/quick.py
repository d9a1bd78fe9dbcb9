"""A small two-party exchange played through real listeners by real TCP clients.

It stands in for the full scenario engine: a hub with USA and JPN (tracks shared under a
`full` agreement) and RUS (no agreement), clients that connect over TCP, exchange tracks and
a hotline message, and an independent check of every delivery against the agreements.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from commonsky.config import config_from_dict
from commonsky.hub.server import HubServer
from commonsky.model import CotEvent, Point
from commonsky.protocol.cot import encode_event
from commonsky.protocol.stream import EventReceived, TakStream


def demo_config(data_dir: Path, http: str) -> dict[str, Any]:
    return {
        "server": {"data_dir": str(data_dir), "http": http},
        "listener": [
            {"kind": "tak-tcp", "bind": "127.0.0.1:0", "party": p} for p in ("USA", "JPN", "RUS")
        ],
        "party": [
            {"id": "USA", "name": "United States"},
            {"id": "JPN", "name": "Japan"},
            {"id": "RUS", "name": "Russia"},
        ],
        "agreement": [
            {
                "name": "US-JP tracks",
                "from": "USA",
                "to": ["JPN"],
                "categories": ["track", "hotline"],
                "disclosure": "full",
            }
        ],
    }


class Client:
    def __init__(self, party: str) -> None:
        self.party = party
        self.stream = TakStream(role="client")
        self.received: list[CotEvent] = []

    async def open(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while data := await self.reader.read(65536):
            for event in self.stream.receive_data(data, time.time()):
                if isinstance(event, EventReceived):
                    self.received.append(event.event)

    def send(self, event: CotEvent) -> None:
        self.writer.write(encode_event(event))


def _event(uid: str, cot_type: str, lat: float, lon: float, detail: str = "") -> CotEvent:
    now = time.time()
    return CotEvent(
        uid=uid,
        type=cot_type,
        time=now,
        start=now,
        stale=now + 300,
        how="m-g",
        point=Point(lat, lon, 9000.0, 10.0, 10.0),
        detail=detail,
    )


async def run_quick_demo(
    data_dir: Path, http: str, keep_serving: asyncio.Event | None
) -> dict[str, Any]:
    config = config_from_dict(demo_config(data_dir, http), "built-in demo")
    server = HubServer(config)
    await server.start()
    try:
        clients = {p: Client(p) for p in ("USA", "JPN", "RUS")}
        for party, client in clients.items():
            await client.open(next(ln.port for ln in server.listeners if ln.config.party == party))
        for step in range(20):
            clients["USA"].send(
                _event(
                    "F15-1", "a-f-A-M-F", 35.0 + step * 0.01, 139.0, '<contact callsign="EAGLE 1"/>'
                )
            )
            clients["RUS"].send(
                _event(
                    "SU35-1",
                    "a-h-A-M-F",
                    43.0,
                    132.0 + step * 0.01,
                    '<contact callsign="FLANKER"/>',
                )
            )
            await asyncio.sleep(0.02)
        clients["USA"].send(
            _event(
                "GeoChat.usa.1",
                "b-t-f",
                35.0,
                139.0,
                '<marti><dest party="JPN"/></marti>'
                "<remarks>Launch warning exercise at 0300Z</remarks>",
            )
        )
        await asyncio.sleep(0.5)
        received = {
            p: [e.uid for e in c.received if not e.type.startswith("t-x-")]
            for p, c in clients.items()
        }
        checks = [
            {"name": "JPN receives USA tracks", "held": "USA::F15-1" in received["JPN"]},
            {
                "name": "JPN receives the USA hotline message",
                "held": "USA::GeoChat.usa.1" in received["JPN"],
            },
            {"name": "RUS receives nothing (no agreement)", "held": received["RUS"] == []},
            {
                "name": "USA receives nothing of RUS",
                "held": all(not u.startswith("RUS::") for u in received["USA"]),
            },
        ]
        summary = {
            "scenarios": [
                {
                    "name": "quick two-party exchange",
                    "checks": checks,
                    "deliveries": {p: len(v) for p, v in received.items()},
                }
            ],
            "all_held": all(c["held"] for c in checks),
        }
        (data_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if keep_serving is not None:
            await keep_serving.wait()
        return summary
    finally:
        await server.stop()
