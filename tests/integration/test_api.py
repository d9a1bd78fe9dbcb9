"""The REST and WebSocket API on the real server: one policy, clear errors, nothing leaked."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from tests.conftest import RunningHub, token_of
from tests.integration.test_tak_tcp import FULL_TRACKS, track


def client(hub: RunningHub, party: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token_of(party)}"} if party else {}
    return httpx.AsyncClient(base_url=hub.http, headers=headers, timeout=10)


async def test_items_are_filtered_by_the_same_policy_as_tak(make_hub) -> None:
    async with make_hub([FULL_TRACKS]) as hub:
        usa = await hub.connect("USA")
        usa.send(track("F16-API", callsign="VIPER"))
        await usa.sync()  # the hub has taken it in
        async with client(hub, "JPN") as jpn, client(hub, "KOR") as kor:
            items = (await jpn.get("/api/items", params={"category": "track"})).json()
            assert [i["uid"] for i in items] == ["USA::F16-API"]
            assert (await kor.get("/api/items")).json() == []
            boxed = await jpn.get("/api/items", params={"bbox": "0,0,1,1"})
            assert boxed.json() == []
            assert (await jpn.get("/api/items", params={"bbox": "x"})).status_code == 400


async def test_websocket_streams_what_the_party_may_see(make_hub) -> None:
    async with make_hub([FULL_TRACKS]) as hub:
        url = hub.http.replace("http", "ws") + "/api/ws?token=" + token_of("JPN")
        async with websockets.connect(url) as ws:
            usa = await hub.connect("USA")
            usa.send(track("WS-1"))
            usa.send(track("WS-2"))
            got: list[str] = []
            while len(got) < 2:
                got += [i["uid"] for i in json.loads(await asyncio.wait_for(ws.recv(), 3))]
            assert got == ["USA::WS-1", "USA::WS-2"]
        bad = hub.http.replace("http", "ws") + "/api/ws?token=wrong"
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(bad) as ws:
                await ws.recv()


async def test_metrics_need_a_token_and_show_a_party_only_its_own(make_hub) -> None:
    from tests.conftest import OPERATOR_TOKEN

    async with make_hub([FULL_TRACKS]) as hub:
        usa_tak = await hub.connect("USA")
        await hub.connect("JPN")
        usa_tak.send(track("M-1"))
        async with client(hub, "USA") as usa, client(hub, None) as anon:
            # Barrier: the track is counted in once USA's figure shows it.
            for _ in range(100):
                own = (await usa.get("/metrics")).text
                if 'commonsky_items_in_total{category="track",party="USA"}' in own:
                    break
                await asyncio.sleep(0.02)
            assert 'party="USA"' in own and 'party="JPN"' not in own
            assert "commonsky_refusals" not in own and "latency" not in own
            assert (await anon.get("/metrics")).status_code == 401
            wrong = await anon.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            full = await anon.get("/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
            assert 'party="JPN"' in full.text and "commonsky_delivery_latency_seconds" in full.text
