"""Data packages through the Marti API: uploaded as ATAK and iTAK do, announced, fetched by an
entitled party, 404 to anyone else, recorded in the ledger."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlparse

from commonsky.bench.cluster import until
from commonsky.ledger.export import export
from tests.conftest import RunningHub, running_hub
from tests.integration.test_tak_tcp import track
from tests.marti.helpers import client_cert, free_loopback, https, make_ca, marti_config, marti_hub
from tests.marti.uploads import HEADERS, multipart, package, sha

FILES_US_JP = {
    "name": "US-JP files",
    "from": "USA",
    "to": ["JPN"],
    "categories": ["file"],
    "disclosure": "full",
}


def ledger_entries(hub: RunningHub, tmp_path: Path, kind: str) -> list[dict[str, object]]:
    assert hub.server.services.recorder is not None
    out = tmp_path / f"export-{kind}.jsonl"
    export(hub.server.services.recorder.ledger, out)
    entries = []
    for line in out.read_text().splitlines():
        obj = json.loads(line)
        if "entry" in obj and obj["entry"]["kind"] == kind:
            entries.append(obj["entry"])
    return entries


async def test_atak_upload_is_announced_fetched_refused_and_recorded(tmp_path: Path) -> None:
    async with marti_hub(tmp_path, [FILES_US_JP]) as (hub, host, ca):
        usa = client_cert(ca, "USA", "usa-ops", tmp_path / "usa")
        jpn_cert = client_cert(ca, "JPN", "jpn-ops", tmp_path / "jpn")
        kor_cert = client_cert(ca, "KOR", "kor-ops", tmp_path / "kor")
        jpn, kor, kor2 = (
            await hub.connect("JPN"),
            await hub.connect("KOR"),
            await hub.connect("KOR"),
        )
        data = package()
        digest = sha(data)
        async with https(hub, host, ca, "marti", usa) as client:
            before = await client.get(f"/Marti/sync/missionquery?hash={digest}")
            assert before.status_code == 404
            answer = await client.post(
                f"/Marti/sync/missionupload?hash={digest}&filename=MP-SABLE1.zip"
                "&creatorUid=ANDROID-976ffabe78fda5d9",
                content=multipart(data, "MP-SABLE1.zip"),
                headers=HEADERS,
            )
            assert answer.status_code == 200, answer.text
            url = answer.text
            assert (
                url == f"https://{host}:{hub.server.port('marti')}/Marti/sync/content?hash={digest}"
            )
            assert (await client.get(f"/Marti/sync/missionquery?hash={digest}")).text == url
        # The entitled party is told, in ATAK's fileshare shape, and can fetch it.
        offer = await jpn.wait_for(lambda e: e["type"] == "b-f-t-r")
        share = ET.fromstring(offer["detail"]).find("fileshare")
        assert share is not None
        assert share.get("sha256") == digest and share.get("sizeInBytes") == str(len(data))
        assert share.get("filename") == "MP-SABLE1.zip"
        assert share.get("senderUid") == "USA::ANDROID-976ffabe78fda5d9"  # as JPN knows it
        sender_url = urlparse(share.get("senderUrl", ""))
        assert sender_url.netloc == f"{host}:{hub.server.port('marti')}"
        async with https(hub, host, ca, "marti", jpn_cert) as client:
            got = await client.get(f"{sender_url.path}?{sender_url.query}")
            assert got.status_code == 200 and got.content == data
            head = await client.head(f"/Marti/sync/content?hash={digest}")
            assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
        # Another party: 404, exactly as if there were no such file.
        async with https(hub, host, ca, "marti", kor_cert) as client:
            assert (await client.get(f"/Marti/sync/content?hash={digest}")).status_code == 404
            assert (await client.get(f"/Marti/sync/missionquery?hash={digest}")).status_code == 404
            missing = "0" * 64
            assert (await client.get(f"/Marti/sync/content?hash={missing}")).status_code == 404
            tool = await client.put(f"/Marti/api/sync/metadata/{digest}/tool", content=b"private")
            assert tool.status_code == 404
        # Barrier: KOR hears its own traffic, and never the offer.
        kor2.send(track("KOR-1"))
        await kor.wait_for(lambda e: e["uid"] == "KOR-1")
        assert not [e for e in kor.events if e["type"].startswith("b-f-t")]
        [fact] = ledger_entries(hub, tmp_path, "file")
        payload = fact["payload"]
        assert isinstance(payload, dict)
        assert payload["sha256"] == digest and payload["size"] == len(data)
        assert payload["name"] == "MP-SABLE1.zip" and payload["user"] == "usa-ops"
        assert fact["originator"] == "USA" and fact["audience"] == ["JPN", "USA"]
        async with https(hub, host, ca, "marti", usa) as client:
            tool = await client.put(f"/Marti/api/sync/metadata/{digest}/tool", content=b"private")
            assert tool.status_code == 200


async def test_itak_raw_upload_and_metadata(tmp_path: Path) -> None:
    async with marti_hub(tmp_path, [FILES_US_JP]) as (hub, host, ca):
        usa = client_cert(ca, "USA", "usa-ios", tmp_path / "usa")
        data = package("iTAK-pkg")
        async with https(hub, host, ca, "marti", usa) as client:
            answer = await client.post(
                "/Marti/sync/upload?name=iTAK-pkg.zip&creatorUid=ITAK-1234",
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            )
            assert answer.status_code == 200, answer.text
            meta = json.loads(answer.text)
            assert meta["Hash"] == sha(data) and meta["Name"] == "iTAK-pkg.zip"
            assert meta["Size"] == len(data) and meta["CreatorUid"] == "ITAK-1234"
            fetched = await client.get(f"/Marti/sync/content?hash={sha(data)}")
            assert fetched.content == data
            assert (await client.get("/Marti/api/version")).text.startswith("CommonSky")
            config = (await client.get("/Marti/api/version/config")).json()
            assert config["type"] == "ServerConfig" and config["data"]["api"] == "3"


def device(uid: str, callsign: str) -> bytes:
    import time as _time

    fmt = "%Y-%m-%dT%H:%M:%SZ"
    now = _time.time()
    t, s = _time.strftime(fmt, _time.gmtime(now)), _time.strftime(fmt, _time.gmtime(now + 300))
    return (
        f'<event version="2.0" uid="{uid}" type="a-f-G-U-C" time="{t}" start="{t}" stale="{s}" '
        'how="m-g"><point lat="35.0" lon="40.0" hae="0" ce="10" le="10"/><detail>'
        f'<contact callsign="{callsign}" endpoint="*:-1:stcp"/>'
        '<__group name="Cyan" role="Team Member"/><takv platform="ATAK-CIV" version="4.10"/>'
        "</detail></event>"
    ).encode()


async def test_client_endpoints_list_only_what_the_party_may_see(tmp_path: Path) -> None:
    tracks = {
        "name": "t",
        "from": "USA",
        "to": ["JPN"],
        "categories": ["track"],
        "disclosure": "full",
    }
    async with marti_hub(tmp_path, [tracks]) as (hub, host, ca):
        usa, jpn, kor = await hub.connect("USA"), await hub.connect("JPN"), await hub.connect("KOR")
        usa.send(device("ANDROID-usa", "VIPER"))
        jpn.send(device("ANDROID-jpn", "SAKURA"))
        kor.send(device("ANDROID-kor", "TIGER"))
        await jpn.wait_for(lambda e: e["uid"] == "USA::ANDROID-usa")
        kor2 = await hub.connect("KOR")
        await kor2.wait_for(lambda e: e["uid"] == "ANDROID-kor")  # barrier: KOR's own is in
        listed = {}
        for party in ("JPN", "KOR"):
            cert = client_cert(ca, party, f"{party.lower()}-ops", tmp_path / party)
            async with https(hub, host, ca, "marti", cert) as client:
                answer = (await client.get("/Marti/api/clientEndPoints")).json()
            assert answer["type"] == "com.bbn.marti.remote.ClientEndpoint"
            listed[party] = {(d["uid"], d["callsign"]) for d in answer["data"]}
        assert listed["JPN"] == {("USA::ANDROID-usa", "VIPER"), ("ANDROID-jpn", "SAKURA")}
        assert listed["KOR"] == {("ANDROID-kor", "TIGER")}
        # USA's device goes: still listed (its position stands until stale), not connected.
        status = await statuses(hub, host, ca, tmp_path)
        assert status == {"USA::ANDROID-usa": "Connected", "ANDROID-jpn": "Connected"}
        usa.writer.close()
        await until(lambda: not hub.hub.wires.of("USA"), "USA's connection gone")
        status = await statuses(hub, host, ca, tmp_path)
        assert status == {"USA::ANDROID-usa": "Disconnected", "ANDROID-jpn": "Connected"}


async def statuses(hub: RunningHub, host: str, ca: Path, root: Path) -> dict[str, str]:
    """JPN's `clientEndPoints`: uid -> lastStatus."""
    cert = client_cert(ca, "JPN", "jpn-ops", root / "JPN")
    async with https(hub, host, ca, "marti", cert) as client:
        answer = (await client.get("/Marti/api/clientEndPoints")).json()
    return {d["uid"]: d["lastStatus"] for d in answer["data"]}


async def test_client_endpoints_remember_devices_across_a_restart(tmp_path: Path) -> None:
    """A device that went away is still listed after a restart (TAK Server's lastStatus
    "Disconnected"), from its last report, to exactly the parties that would see that
    report now: its own, and JPN under USA's full `track` agreement — in its area, so a
    device outside it is no more listed than it was live; KOR, with none, sees nothing."""
    area = [[30.0, 30.0], [50.0, 30.0], [50.0, 40.0], [30.0, 40.0], [30.0, 30.0]]
    tracks = {"name": "t", "from": "USA", "to": ["JPN"], "categories": ["track"],
              "disclosure": "full", "area": area}  # fmt: skip
    host = free_loopback()
    ca = make_ca(tmp_path, host)
    config = marti_config(tmp_path, host, ca, [tracks])
    async with running_hub(config) as hub:
        usa, jpn = await hub.connect("USA"), await hub.connect("JPN")
        usa.send(device("ANDROID-usa", "VIPER"))  # at 35N 40E: in the area
        usa.send(device("ANDROID-far", "FARAWAY").replace(b'lat="35.0"', b'lat="-35.0"'))
        jpn.send(device("ANDROID-jpn", "SAKURA"))
        await jpn.wait_for(lambda e: e["uid"] == "USA::ANDROID-usa")
        usa2 = await hub.connect("USA")
        await usa2.wait_for(lambda e: e["uid"] == "ANDROID-far")  # barrier: USA's are in
        live = {p: await endpoints(hub, host, ca, tmp_path, p) for p in ("USA", "JPN", "KOR")}
    assert live["JPN"] == {"USA::ANDROID-usa": ("VIPER", "Connected"),
                           "ANDROID-jpn": ("SAKURA", "Connected")}  # fmt: skip
    async with running_hub(config) as hub:
        after = {p: await endpoints(hub, host, ca, tmp_path, p) for p in ("USA", "JPN", "KOR")}
    assert after["JPN"] == {"USA::ANDROID-usa": ("VIPER", "Disconnected"),
                            "ANDROID-jpn": ("SAKURA", "Disconnected")}  # fmt: skip
    assert after["USA"] == {"ANDROID-usa": ("VIPER", "Disconnected"),
                            "ANDROID-far": ("FARAWAY", "Disconnected")}  # fmt: skip
    assert after["KOR"] == live["KOR"] == {}


async def endpoints(
    hub: RunningHub, host: str, ca: Path, root: Path, party: str
) -> dict[str, tuple[str, str]]:
    """`party`'s `clientEndPoints`: uid -> (callsign, lastStatus), with team and role."""
    cert = client_cert(ca, party, f"{party.lower()}-ops", root / party)
    async with https(hub, host, ca, "marti", cert) as client:
        answer = (await client.get("/Marti/api/clientEndPoints")).json()
    for d in answer["data"]:
        assert (d["team"], d["role"], d["lastEventTime"][:2]) == ("Cyan", "Team Member", "20")
    return {d["uid"]: (d["callsign"], d["lastStatus"]) for d in answer["data"]}
