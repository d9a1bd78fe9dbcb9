"""The REST and WebSocket API on the real server: one policy, clear errors, nothing leaked."""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import urlsplit

import httpx
import pytest
import websockets
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from tests.conftest import RunningHub, token_of
from tests.integration.test_tak_tcp import FULL_TRACKS, metric, track


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


async def test_a_websocket_the_hub_closes_for_silence_is_closed_with_a_reason(
    make_hub, caplog: pytest.LogCaptureFixture
) -> None:
    """Every close the hub makes is counted and logged with its reason, a WebSocket's too:
    uvicorn's keepalive failing a client that answers no ping is `ping_timeout` (it used to be
    told to the app like a client that left, and counted nowhere), and the hub ends that
    socket; a client that leaves is not a close of the hub's."""
    caplog.set_level(logging.INFO, logger="commonsky.api")
    async with make_hub([FULL_TRACKS], server={"timeout_ws_ping_s": 0.2}) as hub:
        url = hub.http.replace("http", "ws") + "/api/ws?token=" + token_of("JPN")
        async with websockets.connect(url) as leaving:  # answers pings, then leaves
            await leaving.close()
        # A client that shakes hands, then reads but never writes: its pongs are never sent.
        silent = ClientProtocol(parse_uri(url))
        reader, writer = await asyncio.open_connection("127.0.0.1", urlsplit(url).port)
        silent.send_request(silent.connect())
        writer.write(b"".join(silent.data_to_send()))
        frames: list[Frame] = []
        while data := await asyncio.wait_for(reader.read(65536), 10):
            silent.receive_data(data)
            for event in silent.events_received():
                assert not isinstance(event, Response) or event.status_code == 101
                if isinstance(event, Frame):
                    frames.append(event)
        # The hub pinged, failed the connection (1011) and ended the socket (EOF above).
        assert Opcode.PING in [f.opcode for f in frames]
        assert frames[-1].opcode == Opcode.CLOSE and frames[-1].data[:2] == (1011).to_bytes(2)
        writer.close()
        ends: list[str] = []
        for _ in range(200):  # barrier: both ends logged (each after its close was counted)
            ends = [r.getMessage() for r in caplog.records if "disconnected" in r.getMessage()]
            if len(ends) == 2:
                break
            await asyncio.sleep(0.02)
        assert sorted(m.rpartition(" ")[2] for m in ends) == ["(client_gone)", "(ping_timeout)"]
        assert await metric(hub, "commonsky_connections_closed_total", reason="ping_timeout") == 1
        # The client that left is no close of the hub's.
        assert await metric(hub, "commonsky_connections_closed_total") == 1


async def test_metrics_show_the_operator_all_a_party_its_own_and_anyone_up(make_hub) -> None:
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
            # No token at all: Prometheus text an outside check can scrape, with nothing
            # that moves with any party's traffic; a token nobody holds: 401.
            public = await anon.get("/metrics")
            assert public.status_code == 200, public.text
            assert public.headers["content-type"].startswith("text/plain")
            assert "commonsky_up 1.0" in public.text and "commonsky_build_info{" in public.text
            assert public.text.startswith("# commonsky: the other series need a bearer token")
            for secret in ("party=", "items_in", "connections", "latency", "refusals"):
                assert secret not in public.text, secret
            wrong = await anon.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert (await anon.get("/metrics", params={"token": "nope"})).status_code == 401
            assert (await anon.get("/metrics", params={"token": ""})).status_code == 401
            full = await anon.get("/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
            assert 'party="JPN"' in full.text and "commonsky_delivery_latency_seconds" in full.text
