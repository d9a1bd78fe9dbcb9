"""The REST API through an in-process client (tests/conftest.py `make_api`): the hub's own
handlers, policy, store and ledger with no sockets. What needs a TAK connection or a real
WebSocket is tested on the real server in tests/integration/test_api.py."""

from __future__ import annotations

import json
import time

import msgspec
import pytest

from commonsky.desks.geochat import chat_event
from commonsky.http.schemas import ENDPOINTS, Error
from commonsky.protocol.cot import encode_event
from tests.integration.test_tak_tcp import HOTLINE

AIRSPACE = {
    "name": "US-RU conflicts only",
    "from": "USA",
    "to": ["RUS"],
    "categories": ["airspace", "site"],
    "disclosure": "conflicts-only",
}
AIRSPACE_BACK = dict(AIRSPACE, name="back", **{"from": "RUS", "to": ["USA"]})


def feature(uid: str, lon: float, lat: float, size: float = 1.0, **props) -> dict:
    ring = [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "uid": uid,
            "floor_m": 0,
            "ceiling_m": 9000,
            "start": "2020-01-01T00:00:00Z",
            "end": "2099-01-01T00:00:00Z",
            **props,
        },
    }


async def test_tokens_are_required_and_checked(make_api) -> None:
    async with make_api() as hub:
        async with hub.client() as anon:
            assert (await anon.get("/api/items")).status_code == 401
            bad = await anon.get("/api/items", headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401 and bad.json() == {"error": "unknown token"}
            assert (await anon.get("/healthz")).status_code == 200
            spec = (await anon.get("/openapi.json")).json()
            assert "/api/items" in spec["paths"] and "/cap/feed.atom" in spec["paths"]
        async with hub.client("JPN") as jpn:
            assert (await jpn.get("/api/me")).json()["party"] == "JPN"


async def test_malformed_geojson_is_refused_and_nothing_stored(make_api) -> None:
    async with make_api([AIRSPACE, AIRSPACE_BACK]) as hub:
        async with hub.client("USA") as usa:
            ok = await usa.post("/api/airspace", json=feature("US-1", 38, 34))
            assert ok.status_code == 201
            stored = len(list(hub.hub.store.since(0)))
            bad_cases = [
                b"{not json",
                json.dumps(
                    {
                        "type": "Feature",
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]],
                        },
                        "properties": {"floor_m": 0, "ceiling_m": 1, "start": 0, "end": 1},
                    }
                ).encode(),
                json.dumps(feature("X", 38, 34, floor_m=9000, ceiling_m=100)).encode(),
                json.dumps(
                    {
                        "type": "FeatureCollection",
                        "features": [
                            feature("GOOD-IN-BAD", 30, 30),
                            feature("NAN", float("nan"), 30),
                        ],
                    }
                )
                .replace("NaN", "null")
                .encode(),
            ]
            for body in bad_cases:
                response = await usa.post("/api/airspace", content=body)
                assert response.status_code == 400, body
                assert response.json()["error"]
            assert len(list(hub.hub.store.since(0))) == stored
            huge = b'{"type": "Feature", "x": "' + b"a" * (2 * 1024 * 1024) + b'"}'
            assert (await usa.post("/api/airspace", content=huge)).status_code == 413


async def test_conflict_notice_over_the_api(make_api) -> None:
    async with make_api([AIRSPACE, AIRSPACE_BACK]) as hub:
        async with hub.client("USA") as usa, hub.client("RUS") as rus:
            await usa.post("/api/airspace", json=feature("US-STRIKE", 38, 34, kind="strike-area"))
            await rus.post("/api/airspace", json=feature("RU-OPS", 38.5, 34.5))
            (notice,) = (await rus.get("/api/conflicts")).json()
            assert notice["other_party"] == "USA" and notice["other_uid"] is None
            assert "US-STRIKE" not in json.dumps(notice)
            assert (await usa.get("/api/items")).json()[0]["uid"] == "US-STRIKE"
            rus_items = (await rus.get("/api/items")).json()
            assert all("US-STRIKE" not in json.dumps(i) for i in rus_items)


async def test_hotline_send_ack_and_forbidden_ack(make_api) -> None:
    async with make_api([HOTLINE]) as hub:
        async with hub.client("USA") as usa, hub.client("RUS") as rus, hub.client("JPN") as jpn:
            sent = await usa.post("/api/hotline/send", json={"to": "RUS", "text": "Confirm?"})
            assert sent.status_code == 201
            (message,) = (await rus.get("/api/hotline")).json()
            assert message["pending"] == ["RUS"] and message["text"] == "Confirm?"
            # Not yours and not there get one answer: no oracle of others' messages.
            not_yours = await jpn.post(f"/api/hotline/{message['id']}/ack")
            not_there = await rus.post("/api/hotline/USA::nope/ack")
            assert not_yours.status_code == not_there.status_code == 404
            assert not_yours.json() == not_there.json()
            acked = await rus.post(f"/api/hotline/{message['id']}/ack")
            assert acked.status_code == 200 and acked.json()["acks"].keys() == {"RUS"}
            refused = await rus.post("/api/hotline/send", json={"to": "USA", "text": "hi"})
            assert refused.status_code == 403  # no RUS -> USA hotline agreement
            assert (await usa.post("/api/hotline/send", json={"to": "RUS"})).status_code == 400


async def test_a_hotline_message_no_agreement_routes_is_refused_before_it_is_kept(
    make_api,
) -> None:
    """POST /api/cot with a hotline GeoChat nobody may receive: 403, and nothing stored,
    recorded in the signed ledger or held in the picture (issue #14: refusal first)."""
    async with make_api([HOTLINE]) as hub:
        async with hub.client("RUS") as rus, hub.client("USA") as usa:
            recorder = hub.server.services.recorder
            assert recorder is not None
            stored, recorded = hub.hub.store.count(), recorder.ledger.size
            xml = encode_event(chat_event("GeoChat.RUS.hi", "hi", time.time(), ["USA"]))
            refused = await rus.post("/api/cot", content=xml)
            assert refused.status_code == 403, refused.text
            assert "no agreement" in refused.json()["error"]
            assert hub.hub.store.count() == stored and recorder.ledger.size == recorded
            assert (await rus.get("/api/items")).json() == []
            assert ("RUS", "GeoChat.RUS.hi") not in hub.hub.durable
            # Barrier: the same path with an agreement is stored and recorded.
            sent = encode_event(chat_event("GeoChat.USA.hi", "hi", time.time(), ["RUS"]))
            assert (await usa.post("/api/cot", content=sent)).status_code == 201
            assert hub.hub.store.count() > stored and recorder.ledger.size > recorded


async def test_receipt_with_inclusion_proof_only_for_the_audience(make_api) -> None:
    async with make_api([HOTLINE]) as hub:
        async with hub.client("USA") as usa, hub.client("JPN") as jpn:
            await usa.post("/api/hotline/send", json={"to": "RUS", "text": "recorded"})
            receipt = await usa.get("/api/ledger/receipts/0")
            assert receipt.status_code == 200 and receipt.json()["proof"] is not None
            outside = await jpn.get("/api/ledger/receipts/0")
            absent = await jpn.get("/api/ledger/receipts/999")
            assert outside.status_code == absent.status_code == 404  # no oracle either
            assert outside.json()["error"].replace("'0'", "") == absent.json()["error"].replace(
                "'999'", ""
            )
            assert "root" in (await usa.get("/api/ledger/checkpoint")).json()


KML = b"""<?xml version="1.0" encoding="UTF-8"?>
<kml xmlns="http://www.opengis.net/kml/2.2"><Document>
<Placemark><name>ops</name><ExtendedData>
  <Data name="floor_fl"><value>100</value></Data><Data name="ceiling_fl"><value>300</value></Data>
  <Data name="start"><value>2020-01-01T00:00:00Z</value></Data>
  <Data name="end"><value>2099-01-01T00:00:00Z</value></Data></ExtendedData>
 <Polygon><outerBoundaryIs><LinearRing><coordinates>
  36.0,34.5,0 36.5,34.5,0 36.5,35.0,0 36.0,34.5,0</coordinates></LinearRing></outerBoundaryIs>
 </Polygon></Placemark>
<Placemark><ExtendedData><Data name="left_party"><value>RUS</value></Data>
 <Data name="right_party"><value>USA</value></Data></ExtendedData>
 <LineString><coordinates>38.0,35.5 40.1,35.3</coordinates></LineString></Placemark>
</Document></kml>"""


async def test_kml_upload_and_hostile_kml(make_api) -> None:
    async with make_api([AIRSPACE, AIRSPACE_BACK]) as hub, hub.client("USA") as usa:
        made = await usa.post(
            "/api/airspace",
            content=KML,
            headers={"Content-Type": "application/vnd.google-earth.kml+xml"},
        )
        assert made.status_code == 201 and len(made.json()) == 2
        stored = len(list(hub.hub.store.since(0)))
        volume = next(
            i for i in (await usa.get("/api/items")).json() if 'item="volume"' in i["detail"]
        )
        assert 'floor_m="3048.0"' in volume["detail"]  # FL100 carried to TAK in metres
        hostile = KML.replace(b"<kml", b'<!DOCTYPE kml [<!ENTITY x "y">]><kml', 1)
        response = await usa.post("/api/airspace", content=hostile)
        assert response.status_code == 400
        assert len(list(hub.hub.store.since(0))) == stored


async def test_bad_launch_reports_are_refused_with_the_reason_and_nothing_stored(
    make_api,
) -> None:
    from datetime import UTC, datetime, timedelta

    import msgspec
    import numpy as np

    from commonsky.alerts.simulate import Ballistic, radar_report

    truth = Ballistic(39.0, 125.7, datetime.now(UTC) - timedelta(seconds=200), 80.0, 1e6, 5e5)
    good = msgspec.to_builtins(
        radar_report(truth, "USA", "r1", 30, 150, 5, 300.0, 300.0, np.random.default_rng(1))
    )
    future = json.loads(json.dumps(good))
    future["points"][0]["time"] = "2099-01-01T00:00:00Z"
    jump = json.loads(json.dumps(good))
    jump["points"][1]["lon"] = good["points"][1]["lon"] + 40.0  # thousands of km in seconds
    missing = {k: v for k, v in good.items() if k != "points"}
    async with make_api() as hub:
        async with hub.client("USA") as usa:
            ok = await usa.post("/api/launch", json=good)
            assert ok.status_code == 201, ok.text
            stored = len(list(hub.hub.store.since(0)))
            for body in (b"[1, 2]", b"{not json", json.dumps(missing).encode()):
                response = await usa.post("/api/launch", content=body)
                assert response.status_code == 400, body
                assert response.json()["error"]
            for bad, field in ((future, "time"), (jump, "points")):
                response = await usa.post("/api/launch", json=bad)
                assert response.status_code == 400, response.text
                assert field in response.json()["error"]
            assert len(list(hub.hub.store.since(0))) == stored


async def test_hotline_history_is_paged_with_a_cursor(make_api) -> None:
    async with make_api([HOTLINE]) as hub:
        async with hub.client("USA") as usa, hub.client("RUS") as rus:
            for i in range(5):
                sent = await usa.post("/api/hotline/send", json={"to": "RUS", "text": f"m{i}"})
                assert sent.status_code == 201
            texts: list[str] = []
            params: dict[str, str] = {"limit": "2"}
            while True:
                page = await rus.get("/api/hotline", params=params)
                assert page.status_code == 200 and len(page.json()) <= 2
                texts = [m["text"] for m in page.json()] + texts
                if "x-next-before" not in page.headers:
                    break
                params["before"] = page.headers["x-next-before"]
            assert texts == [f"m{i}" for i in range(5)]
            for bad in ({"limit": "0"}, {"limit": "501"}, {"before": "x"}):
                assert (await rus.get("/api/hotline", params=bad)).status_code == 400
            # A rewrite of a recorded message is refused with its reason; a retry is harmless.
            first = await usa.post(
                "/api/hotline/send", json={"to": "RUS", "text": "keep", "uid": "GeoChat.k"}
            )
            retry = await usa.post(
                "/api/hotline/send", json={"to": "RUS", "text": "keep", "uid": "GeoChat.k"}
            )
            rewrite = await usa.post(
                "/api/hotline/send", json={"to": "RUS", "text": "changed", "uid": "GeoChat.k"}
            )
            assert retry.status_code == 201 and retry.json()["seq"] == first.json()["seq"]
            assert rewrite.status_code == 400 and "never rewritten" in rewrite.json()["error"]


async def test_parties_get_checkpoints_no_fresher_than_the_interval(make_api) -> None:
    from tests.conftest import OPERATOR_TOKEN

    async with make_api([HOTLINE], server={"timeout_checkpoint_s": 3600}) as hub:
        async with hub.client("USA") as usa, hub.client("RUS") as rus:
            first = (await rus.get("/api/ledger/checkpoint")).json()
            await usa.post("/api/hotline/send", json={"to": "RUS", "text": "moves the log"})
            # Polling cannot time USA's traffic: the size stays until the interval passes.
            assert (await rus.get("/api/ledger/checkpoint")).json()["size"] == first["size"]
            pending = await usa.get(f"/api/ledger/receipts/{first['size']}")
            assert pending.status_code == 409 and int(pending.headers["retry-after"]) > 3000
            operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
            fresh = (await usa.get("/api/ledger/checkpoint", headers=operator)).json()
            assert fresh["size"] > first["size"]
        async with hub.client() as anon:
            assert (await anon.get("/api/ledger/checkpoint")).status_code == 401


async def test_our_bug_is_a_500_never_a_404(make_api) -> None:
    # The receipt endpoint answers 404 for what is not there; a fault of ours while reading
    # the ledger must not hide behind it (errors.py: only errors that say so get their status).
    async with make_api([HOTLINE]) as hub:
        async with hub.client("USA") as usa:
            await usa.post("/api/hotline/send", json={"to": "RUS", "text": "recorded"})
            ledger = hub.server.services.recorder.ledger

            def broken(seq: int) -> object:
                raise RuntimeError("a bug while reading entry")

            ledger.entry = broken
            answer = await usa.get("/api/ledger/receipts/0")
            assert answer.status_code == 500
            assert answer.json() == {"error": "internal error (logged)"}
            absent = await usa.get("/api/ledger/receipts/999")
            assert absent.status_code == 404  # still: not there is not a fault


API_PATHS = ("/api/", "/cap/", "/healthz", "/metrics", "/openapi.json")


async def test_the_openapi_document_names_every_route_and_only_those(make_api) -> None:
    async with make_api() as hub, hub.client() as anon:
        spec = (await anon.get("/openapi.json")).json()
    served = {
        route.path.replace("{ident}", "{id}")
        for route in hub.app.routes
        if route.path.startswith(API_PATHS)  # (the page's own files are not the API)
    }
    assert set(spec["paths"]) == served
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    send = spec["paths"]["/api/hotline/send"]["post"]
    body = send["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert spec["components"]["schemas"][body.rsplit("/", 1)[1]]["required"] == ["to", "text"]


async def test_answers_have_the_shapes_the_document_declares(make_api) -> None:
    answers = {e.path: e.answer for e in ENDPOINTS if e.answer is not None}
    async with make_api([HOTLINE]) as hub:
        async with hub.client("USA") as usa, hub.client("RUS") as rus:
            sent = await usa.post("/api/hotline/send", json={"to": "RUS", "text": "shape?"})
            got = {
                "/api/hotline/send": sent,
                "/api/me": await usa.get("/api/me"),
                "/api/parties": await usa.get("/api/parties"),
                "/api/hotline": await rus.get("/api/hotline"),
                "/api/ledger/checkpoint": await usa.get("/api/ledger/checkpoint"),
            }
            (message,) = got["/api/hotline"].json()
            got["/api/hotline/{message_id}/ack"] = await rus.post(
                f"/api/hotline/{message['id']}/ack"
            )
            got["/api/ledger/receipts/{seq}"] = await usa.get("/api/ledger/receipts/0")
            bad = await usa.post("/api/hotline/send", json={"to": "RUS"})
    for path, response in got.items():
        assert response.status_code in (200, 201), (path, response.text)
        msgspec.convert(response.json(), answers[path])  # raises on any other shape
    msgspec.convert(bad.json(), Error)
    assert set(answers) - set(got) == {"/api/cot", "/api/airspace", "/api/launch"}  # above


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"to": 5, "text": "x"}, "$.to: Expected str, got int"),
        ({"text": "x"}, "Object missing required field to"),
        ({"to": "RUS", "text": "x", "signature": "abc"}, "$.signature: Expected object"),
        ({"to": "RUS", "text": "   "}, "$.text: must not be blank"),
        ([1, 2], "$: Expected object, got array"),
    ],
)
async def test_a_bad_body_is_refused_with_the_path_of_the_bad_value(
    make_api, body: object, says: str
) -> None:
    async with make_api([HOTLINE]) as hub, hub.client("USA") as usa:
        response = await usa.post("/api/hotline/send", json=body)
        assert response.status_code == 400 and says in response.json()["error"]
        assert list(hub.hub.store.since(0)) == []
