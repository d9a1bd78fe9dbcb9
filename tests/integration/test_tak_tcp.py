"""The real hub on loopback, with pytak-made events and takproto-decoded deliveries."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytak
import takproto

from tests.conftest import OPERATOR_TOKEN, RunningHub, TakClient

FULL_TRACKS = {
    "name": "US-JP tracks",
    "from": "USA",
    "to": ["JPN"],
    "categories": ["track"],
    "disclosure": "full",
}
HOTLINE = {
    "name": "US-RU hotline",
    "from": "USA",
    "to": ["RUS"],
    "categories": ["hotline"],
    "disclosure": "full",
}


def track(
    uid: str, lat: float = 35.0, lon: float = 135.0, callsign: str = "VIPER", stale: int = 300
) -> bytes:
    data = pytak.gen_cot(
        lat=lat,
        lon=lon,
        hae=9000,
        ce=10,
        le=10,
        uid=uid,
        stale=stale,
        cot_type="a-f-A-M-F",
        callsign=callsign,
    )
    assert data is not None
    return data


# A client's request for TAK Protocol v1, written by hand (not by our codec).
PROTO_REQUEST = (
    b'<event version="2.0" uid="protouid" type="t-x-takp-q" time="2030-01-01T00:00:00Z"'
    b' start="2030-01-01T00:00:00Z" stale="2030-01-01T00:00:00Z" how="m-g">'
    b'<point lat="0" lon="0" hae="0" ce="0" le="0"/><detail><TakControl>'
    b'<TakRequest version="1"/></TakControl></detail></event>'
)


def chat(uid: str, text: str, dest_party: str) -> bytes:
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    stale = (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (
        f'<event version="2.0" uid="GeoChat.{uid}" type="b-t-f" time="{stamp}" '
        f'start="{stamp}" stale="{stale}" how="h-g-i-g-o">'
        f'<point lat="34.5" lon="38.3" hae="0" ce="9999999" le="9999999"/>'
        f'<detail><__chat chatroom="hotline" senderCallsign="OPS"/>'
        f'<marti><dest party="{dest_party}"/></marti><remarks>{text}</remarks></detail></event>'
    ).encode()


async def metric(hub: RunningHub, name: str, **labels: str) -> float:
    async with httpx.AsyncClient() as client:
        bearer = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        text = (await client.get(hub.http + "/metrics", headers=bearer)).text
    total = 0.0
    for line in text.splitlines():
        ours = line.startswith((name + "{", name + " "))
        if ours and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_entitled_party_receives_and_others_do_not(make_hub) -> None:
    async with make_hub([FULL_TRACKS]) as hub:
        usa, usa2, jpn, kor = await hub.connect_all(("USA", "USA", "JPN", "KOR"))
        usa.send(track("F16-1"))
        got = await jpn.wait_for(lambda e: e["uid"] == "USA::F16-1")
        assert got["callsign"] == "VIPER" and got["lat"] == 35.0
        assert (await usa2.wait_for(lambda e: e["uid"] == "F16-1"))["callsign"] == "VIPER"
        assert await hub.received_before_barrier(kor, usa) == []
        # never echoed to the sender
        assert [e["uid"] for e in await hub.received_before_barrier(usa)] == []


async def test_no_agreement_no_flow_in_either_direction(make_hub) -> None:
    async with make_hub([FULL_TRACKS]) as hub:
        usa, jpn = await hub.connect("USA"), await hub.connect("JPN")
        jpn.send(track("JPN-1"))  # the agreement is one-way: USA -> JPN
        assert await hub.received_before_barrier(usa, jpn) == []


async def test_area_of_interest_limits_what_flows(make_hub) -> None:
    boxed = dict(FULL_TRACKS, area=[[130, 30], [140, 30], [140, 40], [130, 40], [130, 30]])
    async with make_hub([boxed]) as hub:
        usa, jpn = await hub.connect("USA"), await hub.connect("JPN")
        usa.send(track("IN", lat=35, lon=135))
        usa.send(track("OUT", lat=10, lon=100))
        await jpn.wait_for(lambda e: e["uid"] == "USA::IN")
        assert [e["uid"] for e in await hub.received_before_barrier(jpn, usa)] == ["USA::IN"]


async def test_validity_window_limits_what_flows(make_hub) -> None:
    past = dict(FULL_TRACKS, valid_from="2001-01-01T00:00:00Z", valid_until="2002-01-01T00:00:00Z")
    future = dict(FULL_TRACKS, name="later", to=["KOR"], valid_from="2099-01-01T00:00:00Z")
    current = dict(
        FULL_TRACKS,
        name="now",
        to=["RUS"],
        valid_from="2001-01-01T00:00:00Z",
        valid_until="2099-01-01T00:00:00Z",
    )
    async with make_hub([past, future, current]) as hub:
        usa, jpn, kor, rus = await hub.connect_all(("USA", "JPN", "KOR", "RUS"))
        usa.send(track("T1"))
        await rus.wait_for(lambda e: e["uid"] == "USA::T1")
        assert await hub.received_before_barrier(jpn, usa) == []
        assert await hub.received_before_barrier(kor) == []


async def test_generalized_disclosure_coarsens_and_strips(make_hub) -> None:
    gen = dict(FULL_TRACKS, disclosure="generalized")
    async with make_hub([gen]) as hub:
        usa, jpn = await hub.connect("USA"), await hub.connect("JPN")
        usa.send(track("SECRET-F22", lat=35.1234, lon=135.6789, callsign="RAPTOR"))
        got = await jpn.wait_for(lambda e: e["type"] == "a-f-A")
        assert got["uid"].startswith("USA::g-") and "SECRET" not in got["uid"]
        assert (got["lat"], got["lon"]) == (35.15, 135.65)
        assert got["callsign"] is None and "RAPTOR" not in got["detail"]
        assert got["hae"] == 9000.0


async def test_uid_spoofing_is_refused_and_collisions_are_namespaced(make_hub) -> None:
    both = [FULL_TRACKS, dict(FULL_TRACKS, name="JP-US", **{"from": "JPN", "to": ["USA"]})]
    async with make_hub(both) as hub:
        usa, jpn = await hub.connect("USA"), await hub.connect("JPN")
        usa.send(track("SHARED", callsign="US-OWN"))
        await jpn.wait_for(lambda e: e["uid"] == "USA::SHARED")
        # JPN reuses the same uid and tries to write into USA's namespace.
        jpn.send(track("SHARED", callsign="JP-OWN"))
        jpn.send(track("USA::SHARED", callsign="IMPOSTOR"))
        got = await usa.wait_for(lambda e: e["uid"] == "JPN::SHARED")
        assert got["callsign"] == "JP-OWN"
        received = await hub.received_before_barrier(usa, jpn)
        assert all(e["callsign"] != "IMPOSTOR" for e in received)
        assert await metric(hub, "commonsky_refusals_total", reason="uid_spoof") == 1
        # USA's own item is untouched in the hub's picture.
        assert hub.hub.live[("USA", "SHARED")].item.event.callsign == "US-OWN"


async def test_ping_gets_pong(make_hub) -> None:
    async with make_hub() as hub:
        client = await hub.connect("USA")
        ping = pytak.gen_cot(lat=0, lon=0, uid="takPing", cot_type="t-x-c-t", stale=20)
        assert ping is not None
        client.send(ping)
        await client.wait_for(lambda e: e["type"] == "t-x-c-t-r")


async def test_protobuf_negotiation_and_cross_encoding_delivery(make_hub) -> None:
    async with make_hub(
        [FULL_TRACKS, dict(FULL_TRACKS, name="back", **{"from": "JPN", "to": ["USA"]})]
    ) as hub:
        usa, jpn = await hub.connect("USA"), await hub.connect("JPN")
        offer = await jpn.wait_for(lambda e: e["type"] == "t-x-takp-v")
        assert 'version="1"' in offer["detail"]
        jpn.send(PROTO_REQUEST)
        response = await jpn.wait_for(lambda e: e["type"] == "t-x-takp-r")
        assert 'status="true"' in response["detail"]
        # XML in from USA, protobuf out to JPN.
        usa.send(track("X2P", callsign="XML-SENDER"))
        got = await jpn.wait_for(lambda e: e["uid"] == "USA::X2P")
        assert got["wire"] == "proto" and got["callsign"] == "XML-SENDER"
        # Protobuf in from JPN (made by takproto from pytak XML), XML out to USA.
        proto = takproto.xml2proto(
            track("P2X", callsign="PROTO-SENDER"), takproto.TAKProtoVer.STREAM
        )
        jpn.send(bytes(proto))
        back = await usa.wait_for(lambda e: e["uid"] == "JPN::P2X")
        assert back["wire"] == "xml" and back["callsign"] == "PROTO-SENDER"
        # Pings keep working after the switch.
        ping = pytak.gen_cot(lat=0, lon=0, uid="takPing", cot_type="t-x-c-t", stale=20)
        jpn.send(bytes(takproto.xml2proto(ping, takproto.TAKProtoVer.STREAM)))
        await jpn.wait_for(lambda e: e["type"] == "t-x-c-t-r" and e["wire"] == "proto")


async def test_a_client_with_a_user_and_password_negotiates_and_reports_at_once(
    make_hub, caplog
) -> None:
    """ATAK with a user name and password (as after enrollment) writes its `<auth>` message
    first, then asks for TAK Protocol v1 and reports itself: the auth message is skipped (the
    party is the listener's), the negotiation answered, the first report delivered, and the
    password is in no log line."""
    async with make_hub([FULL_TRACKS]) as hub:
        usa, jpn = await hub.connect("USA"), await hub.connect("JPN")
        usa.send(
            b'<?xml version="1.0"?>\n<auth><cot username="viper-2" password="pw-s3cret"'
            b' uid="ANDROID-42"/></auth>' + PROTO_REQUEST
        )
        response = await usa.wait_for(lambda e: e["type"] == "t-x-takp-r")
        assert 'status="true"' in response["detail"]
        usa.send(bytes(takproto.xml2proto(track("ANDROID-42"), takproto.TAKProtoVer.STREAM)))
        await jpn.wait_for(lambda e: e["uid"] == "USA::ANDROID-42")
        assert await metric(hub, "commonsky_refusals_total") == 0
    assert "pw-s3cret" not in caplog.text


async def test_new_connection_gets_current_picture_not_stale(make_hub) -> None:
    async with make_hub([FULL_TRACKS]) as hub:
        usa = await hub.connect("USA")
        usa.send(track("OLD", stale=1))
        usa.send(track("A1", lat=30))
        usa.send(track("A1", lat=31))  # latest per uid wins
        await asyncio.sleep(1.3)
        jpn = await hub.connect("JPN")
        received = await hub.received_before_barrier(jpn)
        assert [(e["uid"], e["lat"]) for e in received] == [("USA::A1", 31.0)]


async def test_durable_items_replayed_to_a_party_that_comes_back(make_hub) -> None:
    async with make_hub([HOTLINE]) as hub:
        usa = await hub.connect("USA")
        rus = await hub.connect("RUS")
        await rus.close()
        await asyncio.sleep(0.05)
        usa.send(chat("m1", "Coalition strike package at 0400Z east of the line", "RUS"))
        await usa.sync()  # the hub has taken it in
        assert hub.hub.store.active(time.time())[0].event.uid == "GeoChat.m1"
        back = await hub.connect("RUS")
        got = await back.wait_for(lambda e: e["type"] == "b-t-f")
        assert got["uid"] == "USA::GeoChat.m1" and "0400Z" in got["detail"]


async def test_durable_items_survive_a_hub_restart(tmp_path) -> None:
    from tests.conftest import base_config, running_hub

    config = base_config(tmp_path, [HOTLINE])
    async with running_hub(config) as hub:
        usa = await hub.connect("USA")
        usa.send(chat("m2", "notice before restart", "RUS"))
        await usa.sync()  # the hub has taken it in
    async with running_hub(config) as hub:
        rus = await hub.connect("RUS")
        got = await rus.wait_for(lambda e: e["type"] == "b-t-f")
        assert "before restart" in got["detail"]


async def test_directed_hotline_reaches_only_its_destination(make_hub) -> None:
    to_both = dict(HOTLINE, to=["RUS", "JPN"])
    async with make_hub([to_both]) as hub:
        usa, rus, jpn = await hub.connect_all(("USA", "RUS", "JPN"))
        usa.send(chat("d1", "for RUS only", "RUS"))
        await rus.wait_for(lambda e: e["type"] == "b-t-f")
        assert await hub.received_before_barrier(jpn, usa) == []


async def test_a_reader_that_keeps_up_gets_every_update_of_a_burst(make_hub) -> None:
    """Twenty updates of one uid in one write reach a reader that keeps up, all of them, in
    order: merging is for readers that push back, not for bursts (issue #12 fault 11)."""
    async with make_hub([FULL_TRACKS]) as hub:
        usa = await hub.connect("USA")
        jpn: TakClient = await hub.connect("JPN")
        lats = [round(10 + i * 0.01, 2) for i in range(20)]
        usa.send(b"".join(track("T1", lat=lat) for lat in lats))
        await jpn.wait_for(lambda e: e["uid"] == "USA::T1" and e["lat"] == lats[-1])
        assert [e["lat"] for e in jpn.items() if e["uid"] == "USA::T1"] == lats
        assert await metric(hub, "commonsky_queue_drops_total") == 0


async def test_slow_reader_gets_latest_positions(make_hub) -> None:
    async with make_hub([FULL_TRACKS], server={"limit_queue_tracks": 50}) as hub:
        usa = await hub.connect("USA")
        jpn: TakClient = await hub.connect("JPN")
        jpn.writer.transport.pause_reading()  # does not read: the hub's socket buffer fills
        for round_ in range(40):
            usa.send(
                b"".join(
                    track(f"T{i}", lat=10 + round_ * 0.01, callsign="X" * 400) for i in range(100)
                )
            )
        await usa.sync()  # every round is taken in (and queued for JPN, or merged)
        jpn.writer.transport.resume_reading()
        received = await hub.received_before_barrier(jpn)
        latest = {}
        for event in received:
            latest[event["uid"]] = event["lat"]
        final = [uid for uid, lat in latest.items() if abs(lat - (10 + 39 * 0.01)) < 1e-9]
        assert final, "the newest update of some uid must arrive"
        assert len(received) < 40 * 100  # coalesced, not everything
        assert await metric(hub, "commonsky_queue_drops_total") > 0
