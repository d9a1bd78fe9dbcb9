"""Issue 13: values the hub cannot carry, over TAK and the API, are refused at the edge the
same way on every path; nothing refused is stored; no item costs another its delivery."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import takproto

from commonsky.errors import RemoteProtocolError
from commonsky.ledger.agreement import disagreements
from commonsky.ledger.log import Ledger
from commonsky.model import Category, CotEvent, Item, Point
from commonsky.protocol.cot import encode_event, parse_event, quote
from commonsky.protocol.stream import frame_proto
from tests.conftest import RunningHub, token_of
from tests.integration.test_tak_tcp import FULL_TRACKS, HOTLINE, PROTO_REQUEST, chat, metric, track

SHARE_ALL = {
    "name": "US-RU everything",
    "from": "USA",
    "to": ["RUS"],
    "categories": ["hotline", "airspace", "site", "launch", "track"],
    "disclosure": "full",
}
SHARE_BACK = dict(SHARE_ALL, name="RU-US everything", **{"from": "RUS", "to": ["USA"]})
# What XML 1.0 cannot carry at all (the examples).
IMPOSSIBLE = ["\x00", "\x01", "\x0b", "\ufffe"]


def api(hub: RunningHub, party: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token_of(party)}"}
    return httpx.AsyncClient(base_url=hub.http, headers=headers, timeout=30)


def stored(hub: RunningHub) -> int:
    return len(list(hub.hub.store.since(0)))


def polygon(uid: str, lon: float, lat: float, **props: object) -> dict[str, object]:
    ring = [[lon, lat], [lon + 0.1, lat], [lon + 0.1, lat + 0.1], [lon, lat + 0.1], [lon, lat]]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"uid": uid, "floor_m": 0, "ceiling_m": 9000, **props},
    }


def line(uid: str, **props: object) -> dict[str, object]:
    return {
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": [[30, 30], [31, 31]]},
        "properties": {"uid": uid, "item": "line", **props},
    }


def site(uid: str, lon: float, lat: float) -> dict[str, object]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": {"uid": uid, "item": "site", "radius_m": 5000},
    }


def launch_report(report_id: str) -> dict[str, object]:
    from datetime import UTC, datetime, timedelta

    import msgspec
    import numpy as np

    from commonsky.alerts.simulate import Ballistic, radar_report

    truth = Ballistic(39.0, 125.7, datetime.now(UTC) - timedelta(seconds=200), 80.0, 1e6, 5e5)
    report = radar_report(
        truth, "USA", report_id, 30, 150, 5, 300.0, 300.0, np.random.default_rng(1)
    )
    raw: dict[str, object] = msgspec.to_builtins(report)
    return raw


# ---- class 1 and 14: the API refuses what TAK refuses, and stores nothing of it ----------


@pytest.mark.parametrize("char", IMPOSSIBLE, ids=lambda c: f"U+{ord(c):04X}")
async def test_the_api_refuses_characters_xml_cannot_carry_on_every_write(
    make_hub, tmp_path: Path, char: str
) -> None:
    async with make_hub([SHARE_ALL, SHARE_BACK]) as hub, api(hub, "USA") as usa:
        before = stored(hub)
        bad_requests = [
            ("/api/hotline/send", {"to": "RUS", "text": f"a{char}b"}),
            ("/api/hotline/send", {"to": "RUS", "text": "ok", "uid": f"GeoChat.{char}"}),
            ("/api/airspace", polygon(f"V{char}", 30, 30)),
            ("/api/airspace", polygon("V1", 30, 30, callsign=f"A{char}")),
            ("/api/airspace", line("L1", left_party=f"USA{char}", right_party="RUS")),
            ("/api/launch", launch_report(f"r{char}1")),
        ]
        for path, body in bad_requests:
            response = await usa.post(path, json=body)
            assert response.status_code == 400, (path, body, response.text)
            assert response.json()["error"]
        assert stored(hub) == before
        good = await usa.post("/api/hotline/send", json={"to": "RUS", "text": "after"})
        assert good.status_code == 201
    async with make_hub([SHARE_ALL, SHARE_BACK]) as again:  # and the hub starts again
        assert stored(again) > before


async def test_the_api_and_tak_give_the_same_verdict_on_uids(make_hub) -> None:
    uids = ["GeoChat.ok-1", "a b", "tab\tin", "x" * 256, "x" * 257, "a" * 900_000, "nul\x00"]
    async with make_hub([HOTLINE]) as hub, api(hub, "USA") as usa:
        for uid in uids:
            sent = await usa.post("/api/hotline/send", json={"to": "RUS", "text": "t", "uid": uid})
            xml = chat("x", "t", "RUS").replace(b'uid="GeoChat.x"', f'uid="{quote(uid)}"'.encode())
            try:
                hub.hub.accept("USA", "tak-client", parse_event(xml))
                tak = 201
            except RemoteProtocolError:
                tak = 400
            assert sent.status_code == tak, (uid[:20], sent.text[:200])


async def test_a_launch_report_id_the_tak_path_could_not_carry_is_refused(make_hub) -> None:
    async with make_hub() as hub, api(hub, "USA") as usa:
        for report_id in ("r\x00", "r\u0001x", "r" * 129):
            response = await usa.post("/api/launch", json=launch_report(report_id))
            assert response.status_code == 400, response.text
            assert "report_id" in response.json()["error"]
        assert stored(hub) == 0
        assert (await usa.post("/api/launch", json=launch_report("r-ok"))).status_code == 201


# ---- class 2: times no output can carry; one item never costs the batch -----------------


def with_times(data: bytes, **times: str) -> bytes:
    event = parse_event(data)
    text = encode_event(event).decode()
    for name, value in times.items():
        start = text.index(f' {name}="') + len(name) + 3
        text = text[:start] + value + text[text.index('"', start) :]
    return text.encode()


async def test_times_past_what_tak_can_carry_are_refused_over_xml_and_protobuf(
    make_hub,
) -> None:
    async with make_hub([FULL_TRACKS]) as hub:
        usa, jpn = await hub.connect_all(("USA", "JPN"))
        for uid, times in (
            ("y10000", {"stale": "9999-12-31T23:59:59-23:59"}),
            ("y1", {"time": "0001-01-01T00:00:00Z", "start": "0001-01-01T00:00:00Z"}),
            ("y1969", {"time": "1969-12-31T23:59:59Z", "start": "1969-12-31T23:59:59Z"}),
        ):
            usa.send(with_times(track(uid), **times))
        usa.send(track("after-xml"))
        await jpn.wait_for(lambda e: e["uid"] == "USA::after-xml")
        assert await metric(hub, "commonsky_refusals_total", reason="bad_time") == 3
        proto = await hub.connect("USA")
        proto.send(PROTO_REQUEST)
        await proto.wait_for(lambda e: e["type"] == "t-x-takp-r")
        message = takproto.parse_proto(
            bytearray(takproto.xml2proto(track("far"), takproto.TAKProtoVer.STREAM))
        )
        message.cotEvent.staleTime = 2**63  # milliseconds: far past year 9999
        proto.send(frame_proto(message.SerializeToString()))
        proto.send(bytes(takproto.xml2proto(track("after-proto"), takproto.TAKProtoVer.STREAM)))
        await jpn.wait_for(lambda e: e["uid"] == "USA::after-proto")
        assert await metric(hub, "commonsky_refusals_total", reason="bad_protobuf") == 1
        received = {e["uid"] for e in jpn.items()}
        assert received == {"USA::after-xml", "USA::after-proto"}


def unrenderable(party: str, uid: str, now: float) -> Item:
    """A track no wire form can carry (as if it slipped past the edge): no XML or protobuf
    time for it, and a lone surrogate JSON cannot encode."""
    event = CotEvent(uid + "\ud800", "a-h-A", -1e13, -1e13, now + 3600, "m-g", Point(0.0, 0.0))
    return Item(party, "x", Category.TRACK, event, received=now)


async def test_an_item_that_cannot_be_rendered_costs_only_itself(make_hub) -> None:
    import websockets

    tracks = dict(FULL_TRACKS, to=["RUS"])
    async with make_hub([HOTLINE, tracks]) as hub:
        rus_xml, kor = await hub.connect_all(("RUS", "KOR"))
        rus_proto = await hub.connect("RUS")
        rus_proto.send(PROTO_REQUEST)
        await rus_proto.wait_for(lambda e: e["type"] == "t-x-takp-r")
        ws_url = f"ws://127.0.0.1:{hub.server.http_port}/api/ws?token={token_of('RUS')}"
        async with websockets.connect(ws_url) as ws:
            now = hub.hub.clock()
            # In one burst: an unrenderable item to RUS, one to KOR (a party with no
            # agreement: its own connection renders it), then a good message.
            hub.hub.submit(unrenderable("USA", "bad-1", now))
            hub.hub.submit(unrenderable("KOR", "bad-2", now))
            usa = await hub.connect("USA")
            usa.send(chat("good-1", "still here", "RUS"))
            for client in (rus_xml, rus_proto):
                await client.wait_for(lambda e: e["uid"] == "USA::GeoChat.good-1")
            while b"GeoChat.good-1" not in (frame := await ws.recv()):
                assert b"bad-1" not in frame
            # The connections are still open, and a reconnect gets its replay.
            usa.send(chat("good-2", "and again", "RUS"))
            for client in (rus_xml, rus_proto):
                await client.wait_for(lambda e: e["uid"] == "USA::GeoChat.good-2")
            late = await hub.connect("RUS")
            await late.wait_for(lambda e: e["uid"] == "USA::GeoChat.good-2")
            assert not any(
                "bad" in str(e["uid"]) for c in (rus_xml, rus_proto, late) for e in c.items()
            )
        kor.send(track("kor-own"))
        kor_seen = await hub.connect("KOR")
        await kor_seen.wait_for(lambda e: e["uid"] == "kor-own")
        assert await metric(hub, "commonsky_render_failures_total") >= 3


# ---- class 3: every accepted durable item is recorded ------------------------------------


async def test_values_the_ledger_cannot_record_are_refused_and_store_and_ledger_agree(
    make_hub, tmp_path: Path
) -> None:
    async with make_hub([SHARE_ALL, SHARE_BACK]) as hub, api(hub, "USA") as usa:
        tak, rus = await hub.connect_all(("USA", "RUS"))
        tak.send(chat("deep", "hae", "RUS").replace(b'hae="0"', b'hae="-1e300"'))
        drawing = (
            encode_event(parse_event(track("area")))
            .replace(b'type="a-f-A-M-F"', b'type="u-d-f"')
            .replace(
                b"<detail>",
                b'<detail><link point="30,30"/><link point="30,31"/><link point="31,31"/>'
                b'<link point="30,30"/><csky_airspace floor_m="0" ceiling_m="100" end="1e301"/>',
            )
        )
        tak.send(drawing)
        far = await usa.post("/api/airspace", json=polygon("V", 30, 30, start=0, end=1e301))
        assert far.status_code == 400 and "end" in far.json()["error"]
        tak.send(chat("ok", "recorded", "RUS"))
        await rus.wait_for(lambda e: e["uid"] == "USA::GeoChat.ok")
        assert await metric(hub, "commonsky_refusals_total", reason="bad_value") == 1
        assert await metric(hub, "commonsky_refusals_total", reason="bad_airspace") == 1
        ledger = hub.server.services.recorder
        assert ledger is not None
        assert disagreements(hub.hub.store.since(0), ledger.ledger.entries()) == []
    with Ledger.open(tmp_path / "hub") as reopened:
        from commonsky.store.sqlite import SQLiteStore

        store = SQLiteStore(tmp_path / "hub")
        assert disagreements(store.since(0), reopened.entries()) == []
        assert [i.uid for i in store.since(0) if i.party == "USA"] == ["GeoChat.ok"]
        store.close()


# ---- class 7: legitimate input, bounded work ---------------------------------------------


async def test_two_parties_protected_sites_may_overlap(make_hub) -> None:
    async with make_hub([SHARE_ALL, SHARE_BACK]) as hub:
        async with api(hub, "USA") as usa, api(hub, "RUS") as rus:
            assert (
                await usa.post("/api/airspace", json=site("S-US", 38.0, 34.0))
            ).status_code == 201
            made = await rus.post("/api/airspace", json=site("S-RU", 38.01, 34.0))
            assert made.status_code == 201, made.text
            assert (await rus.get("/api/conflicts")).json() == []
        assert await metric(hub, "commonsky_internal_errors_total") == 0


async def test_a_track_faster_than_anything_flies_is_refused_and_the_connection_kept(
    make_hub,
) -> None:
    async with make_hub([FULL_TRACKS]) as hub:
        usa, jpn = await hub.connect_all(("USA", "JPN"))
        usa.send(track("fast").replace(b"<detail>", b'<detail><track speed="1e308" course="1"/>'))
        usa.send(track("normal"))
        await jpn.wait_for(lambda e: e["uid"] == "USA::normal")
        assert [e["uid"] for e in jpn.items()] == ["USA::normal"]
        assert await metric(hub, "commonsky_refusals_total", reason="bad_value") == 1


async def test_bad_and_deeply_nested_json_is_a_clear_400(make_hub) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    async with make_hub([SHARE_ALL]) as hub, api(hub, "USA") as usa:
        for path in ("/api/launch", "/api/hotline/send", "/api/airspace"):
            response = await usa.post(path, content=deep)
            assert response.status_code == 400, (path, response.text)
            assert "nested" in response.json()["error"]
        for body in (b'{"points": 1e400}', b'{"report_id": 7}', b"null", b'"x"'):
            response = await usa.post("/api/launch", content=body)
            assert response.status_code == 400, (body, response.text)
        huge_times = polygon("T", 30, 30, start="0001-01-01T00:00:00+14:00", end=1e18)
        assert (await usa.post("/api/airspace", json=huge_times)).status_code == 400
        assert stored(hub) == 0
        assert await metric(hub, "commonsky_internal_errors_total") == 0


async def test_one_request_may_not_carry_more_features_than_the_limit(make_hub) -> None:
    placemark = (
        "<Placemark><Polygon><outerBoundaryIs><LinearRing><coordinates>"
        "30,30 30.1,30 30.1,30.1 30,30.1 30,30</coordinates></LinearRing></outerBoundaryIs>"
        '</Polygon><ExtendedData><Data name="floor_m"><value>0</value></Data>'
        '<Data name="ceiling_m"><value>100</value></Data></ExtendedData></Placemark>'
    )
    kml = (
        f'<kml xmlns="http://www.opengis.net/kml/2.2"><Document>{placemark * 1500}</Document></kml>'
    )
    many = {
        "type": "FeatureCollection",
        "features": [polygon(f"P{i}", 30, 30, start=0, end=4e9) for i in range(3000)],
    }
    async with make_hub(server={"limit_http_body_bytes": 4_000_000}) as hub:
        async with api(hub, "USA") as usa:
            for body in (kml.encode(), json.dumps(many).encode()):
                response = await usa.post("/api/airspace", content=body)
                assert response.status_code == 413, response.text
                assert "limit_airspace_features=100" in response.json()["error"]
            assert stored(hub) == 0
            few = dict(many, features=many["features"][:100])
            assert (await usa.post("/api/airspace", json=few)).status_code == 201


# ---- what the fuzz found (each a small input of the same shape) --------------------------


async def test_inputs_the_fuzz_found_are_refused_cleanly(make_hub) -> None:
    from commonsky.times import format_time

    async with make_hub([SHARE_ALL, SHARE_BACK]) as hub, api(hub, "USA") as usa:
        for coordinates in ({"0": [30, 30]}, [[[30, 30], [10**400, 1], [1, 1], [30, 30]]]):
            feature = polygon("C", 30, 30)
            feature["geometry"] = {"type": "Polygon", "coordinates": coordinates}
            body = json.dumps(feature).encode()
            response = await usa.post("/api/airspace", content=body)
            assert response.status_code == 400, response.text
        huge_level = polygon("F", 30, 30, floor_m=10**400)
        response = await usa.post("/api/airspace", content=json.dumps(huge_level).encode())
        assert response.status_code == 400, response.text
        tak, rus = await hub.connect_all(("USA", "RUS"))
        report = (
            encode_event(parse_event(track("rep")))
            .replace(b'type="a-f-A-M-F"', b'type="b-l-r"')
            .replace(b"<detail>", b"<detail><csky_launch>{not json</csky_launch>")
        )
        tak.send(report)
        now = hub.hub.clock()
        # Dated in the future, stale between now and then, declared airspace, with no
        # vertices: the desk reads it (it is not stale), so the check must too.
        future = (
            with_times(
                track("future-area"),
                time=format_time(now + 1000),
                start=format_time(now + 1000),
                stale=format_time(now + 500),
            )
            .replace(b'type="a-f-A-M-F"', b'type="u-d-f"')
            .replace(b"<detail>", b"<detail><csky_airspace/>")
        )
        tak.send(future)
        tak.send(chat("after", "still here", "RUS"))
        await rus.wait_for(lambda e: e["uid"] == "USA::GeoChat.after")
        assert await metric(hub, "commonsky_refusals_total", reason="launch-report-invalid") == 1
        assert await metric(hub, "commonsky_refusals_total", reason="bad_airspace") == 1
        assert await metric(hub, "commonsky_internal_errors_total") == 0


def test_an_overlap_simplified_to_nothing_has_no_ring() -> None:
    from commonsky.desks.deconfliction import _ring

    assert _ring({"type": "Polygon", "coordinates": []}) == []
    assert _ring({"type": "MultiPolygon", "coordinates": []}) == []
    assert _ring({"type": "Polygon", "coordinates": [[[1, 2], [3, 4]]]}) == [(1.0, 2.0), (3.0, 4.0)]


async def test_a_notice_with_an_unknown_altitude_is_served_as_json(make_hub) -> None:
    # Two parties' tracks at one place, altitude unknown (NaN, as ATAK writes it): their
    # conflict's levels are unknown, which JSON writes as null — not a 500.
    tracks = [dict(FULL_TRACKS, to=["RUS"]), dict(FULL_TRACKS, name="back", to=["USA"])]
    tracks[1]["from"] = "RUS"
    async with make_hub(tracks, server={"timeout_track_screen_s": 0.2}) as hub:
        usa, rus = await hub.connect_all(("USA", "RUS"))
        for client, uid in ((usa, "T-US"), (rus, "T-RU")):
            client.send(track(uid).replace(b'hae="9000"', b'hae="NaN"'))
        async with api(hub, "RUS") as client:
            for _ in range(100):
                response = await client.get("/api/conflicts")
                assert response.status_code == 200, response.text
                if response.json():
                    break
                await asyncio.sleep(0.1)
            notices = response.json()
        assert notices and notices[0]["other_party"] == "USA"
        assert await metric(hub, "commonsky_internal_errors_total") == 0
