"""The party roster: behind a token (`/api/parties`), naming only the parties the caller has
agreements with, and whether a hotline message would reach each now. `/healthz` says nothing
about who uses the hub."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from commonsky.demo.clock import ScenarioClock
from tests.conftest import PARTIES, base_config, running_hub, token_of

AGREEMENTS = [
    {"name": "us-jp", "from": "USA", "to": ["JPN"], "categories": ["track", "hotline"]},
    {"name": "kr-us", "from": "KOR", "to": ["USA"], "categories": ["track"]},
    {
        "name": "us-kr hotline, later",
        "from": "USA",
        "to": ["KOR"],
        "categories": ["hotline"],
        "valid_from": datetime.fromtimestamp(time.time() + 3600, UTC).isoformat(),
    },
]


def bearer(party: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_of(party)}"}


async def test_the_roster_needs_a_token_and_names_only_related_parties(tmp_path: Path) -> None:
    async with running_hub(base_config(tmp_path, AGREEMENTS)) as hub:
        async with httpx.AsyncClient(base_url=hub.http) as http:
            assert (await http.get("/api/parties")).status_code == 401
            health = (await http.get("/healthz")).json()
            assert health == {"status": "ok"}
            assert not any(p in str(health) for p in PARTIES)
            usa = (await http.get("/api/parties", headers=bearer("USA"))).json()
            rus = (await http.get("/api/parties", headers=bearer("RUS"))).json()
            jpn = (await http.get("/api/parties", headers=bearer("JPN"))).json()
    assert [(p["id"], p["you"], p["hotline"]) for p in usa] == [
        ("USA", True, False),
        ("JPN", False, True),  # hotline agreement in force
        ("KOR", False, False),  # only from the future: not now
    ]
    # RUS has no agreement with anyone: it learns no other party's name.
    assert [p["id"] for p in rus] == ["RUS"]
    # JPN receives USA's hotline, but has none of its own to send to USA.
    assert [(p["id"], p["hotline"]) for p in jpn] == [("JPN", False), ("USA", False)]


async def test_me_tells_the_hubs_clock(tmp_path: Path) -> None:
    clock = ScenarioClock(10.0)
    config = base_config(tmp_path)
    from commonsky.server import HubServer

    server = HubServer(config, clock=clock)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            me = (await http.get("/api/me", headers=bearer("USA"))).json()
    finally:
        await server.stop()
    assert me["clock"]["rate"] == 10.0 and me["clock"]["scenario"] is True
    async with running_hub(base_config(tmp_path)) as hub:
        async with httpx.AsyncClient(base_url=hub.http) as http:
            me = (await http.get("/api/me", headers=bearer("USA"))).json()
    assert me["clock"]["rate"] == 1.0 and me["clock"]["scenario"] is False
    assert abs(me["clock"]["time"] - time.time()) < 5
