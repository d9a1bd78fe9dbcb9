"""Imagery evidence: signed for its publisher, disclosed per agreement, verified offline."""

from __future__ import annotations

import base64
import io
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any

import pytest

from commonsky.cli import main
from commonsky.evidence.render import aerial_geotiff, aerial_jpeg
from commonsky.evidence.sign import EvidenceSigner, read_manifest
from commonsky.evidence.verify import verify_evidence
from commonsky.ledger.export import export
from commonsky.pki import init_ca
from tests.conftest import RunningHub, TakClient
from tests.integration.test_tak_tcp import track
from tests.marti.helpers import client_cert, https, marti_hub
from tests.marti.test_files import ledger_entries
from tests.marti.uploads import HEADERS, multipart, package, sha

CAPTURED = 1474113600.0  # 2016-09-17T12:00:00Z
BOX = (40.05, 35.33, 40.25, 35.47)  # north of Deir ez-Zor


def imagery(to: str, level: str) -> dict[str, Any]:
    return {
        "name": f"US-{to} imagery",
        "from": "USA",
        "to": [to],
        "categories": ["imagery"],
        "disclosure": level,
    }


AGREEMENTS = [
    imagery("JPN", "full"),
    imagery("KOR", "generalized"),
    imagery("RUS", "conflicts-only"),
]
RUS_TRACKS = {
    "name": "K-R",
    "from": "KOR",
    "to": ["RUS"],
    "categories": ["track"],
    "disclosure": "full",
}


def detail(event: dict[str, Any]) -> ET.Element:
    return ET.fromstring(event["detail"])


async def upload(
    hub: RunningHub, host: str, ca: Path, cert: tuple[Path, Path], data: bytes, name: str
) -> str:
    async with https(hub, host, ca, "marti", cert) as client:
        answer = await client.post(
            f"/Marti/sync/missionupload?hash={sha(data)}&filename={name}&creatorUid=ANDROID-1",
            content=multipart(data, name),
            headers=HEADERS,
        )
    assert answer.status_code == 200, answer.text
    return answer.text


async def fetch(
    hub: RunningHub, host: str, ca: Path, cert: tuple[Path, Path], digest: str
) -> tuple[int, bytes]:
    async with https(hub, host, ca, "marti", cert) as client:
        answer = await client.get(f"/Marti/sync/content?hash={digest}")
    return answer.status_code, answer.content


async def test_geotiff_is_signed_disclosed_per_agreement_and_verifies(tmp_path: Path) -> None:
    photo = aerial_geotiff(*BOX, CAPTURED, spots=[(40.15, 35.4)])
    async with marti_hub(tmp_path, [*AGREEMENTS, RUS_TRACKS]) as (hub, host, ca):
        usa = client_cert(ca, "USA", "usa-recce", tmp_path / "usa")
        jpn_cert = client_cert(ca, "JPN", "jpn-ops", tmp_path / "jpn")
        kor_cert = client_cert(ca, "KOR", "kor-ops", tmp_path / "kor")
        jpn, kor, rus = await hub.connect("JPN"), await hub.connect("KOR"), await hub.connect("RUS")
        await upload(hub, host, ca, usa, photo, "strike-area.tif")
        # full: the marker with footprint, hashes and thumbnail; the quick-pic package.
        marker = await jpn.wait_for(lambda e: e["type"] == "b-i-x-i")
        assert marker["uid"].startswith("USA::evidence-")
        ev = detail(marker).find("csky_evidence")
        assert (
            ev is not None
            and ev.get("party") == "USA"
            and ev.get("captured") == "2016-09-17T12:00:00Z"
        )
        vertices = [
            (float(v.get("lon", 0)), float(v.get("lat", 0))) for v in detail(marker).iter("vertex")
        ]
        assert vertices[0] == (BOX[0], BOX[3]) and len(vertices) == 5
        thumb = detail(marker).find("csky_thumbnail")
        assert thumb is not None and base64.b64decode(thumb.text or "")[:3] == b"\xff\xd8\xff"
        assert abs(marker["lat"] - 35.40) < 1e-6 and abs(marker["lon"] - 40.15) < 1e-6
        signed_sha = ev.get("sha256", "")
        status, signed = await fetch(hub, host, ca, jpn_cert, signed_sha)
        assert status == 200 and sha(signed) == signed_sha
        offer = await jpn.wait_for(
            lambda e: (
                e["type"] == "b-f-t-r"
                and "quick" not in str(e)
                and ".zip" in e["detail"]
                and "photo" in e["detail"]
            )
        )
        share = detail(offer).find("fileshare")
        assert share is not None
        status, quickpic = await fetch(hub, host, ca, jpn_cert, share.get("sha256", ""))
        with zipfile.ZipFile(io.BytesIO(quickpic)) as archive:
            cot = next(n for n in archive.namelist() if n.endswith(".cot"))
            assert ET.fromstring(archive.read(cot)).get("uid") == marker["uid"]
            assert any(archive.read(n) == signed for n in archive.namelist())
        # generalized: a coarse footprint and the time; no image, no hash, no thumbnail.
        coarse = await kor.wait_for(lambda e: e["type"] == "b-i-x-i")
        assert coarse["uid"].startswith("USA::g-")
        assert detail(coarse).find("csky_evidence") is None
        assert detail(coarse).find("csky_thumbnail") is None
        box = [
            (float(v.get("lon", 0)), float(v.get("lat", 0))) for v in detail(coarse).iter("vertex")
        ]
        assert box[0] == pytest.approx((40.0, 35.3)) and box[2] == pytest.approx((40.3, 35.5))
        assert (await fetch(hub, host, ca, kor_cert, signed_sha))[0] == 404
        assert (await fetch(hub, host, ca, kor_cert, sha(photo)))[0] == 404
        # conflicts-only: nothing at all (barrier: RUS hears KOR's track, sent after).
        kor2 = await hub.connect("KOR")
        kor2.send(track("KOR-LAST"))
        await rus.wait_for(lambda e: e["uid"] == "KOR::KOR-LAST")
        assert not [e for e in rus.events if e["type"] in ("b-i-x-i", "b-f-t-r")]
        assert not [e for e in kor.events if e["type"] == "b-f-t-r"]
        # The ledger records it; the file verifies offline against the export and the CA.
        [fact] = ledger_entries(hub, tmp_path, "evidence")
        assert fact["payload"]["sha256"] == signed_sha  # type: ignore[index]
        assert fact["payload"]["source_sha256"] == sha(photo)  # type: ignore[index]
        assert fact["audience"] == ["JPN", "USA"]
        exported = tmp_path / "ledger.jsonl"
        assert hub.server.services.recorder is not None
        export(hub.server.services.recorder.ledger, exported)
    downloaded = tmp_path / "downloaded.tif"
    downloaded.write_bytes(signed)
    verdict = verify_evidence(downloaded, exported, ca / "ca.pem")
    assert verdict.ok, verdict.lines
    text = "\n".join(verdict.lines)
    assert "published by USA (user usa-recce)" in text and "2016-09-17T12:00:00Z" in text
    assert "ledger entry" in text and "chains to the CA" in text
    # One byte of the picture changed: caught.
    changed = bytearray(signed)
    at = changed.find(b"\x00\x00", len(changed) // 2)
    changed[at] ^= 0x01
    tampered = tmp_path / "tampered.tif"
    tampered.write_bytes(bytes(changed))
    bad = verify_evidence(tampered, exported, ca / "ca.pem")
    assert not bad.ok
    assert any("changed" in line for line in bad.lines)
    # The command line says the same, with its exit status.
    with pytest.raises(SystemExit) as exit_:
        main(["evidence", "verify", str(tampered), "--ledger", str(exported)])
    assert exit_.value.code == 1
    main(
        [
            "evidence",
            "verify",
            str(downloaded),
            "--ledger",
            str(exported),
            "--ca",
            str(ca / "ca.pem"),
        ]
    )


async def test_exif_jpeg_and_an_image_already_signed_elsewhere(tmp_path: Path) -> None:
    # An image that arrives with a C2PA manifest of its own (signed under another CA).
    other = tmp_path / "other"
    init_ca(other / "ca")
    photo = aerial_jpeg(35.41, 40.12, CAPTURED)
    prior = EvidenceSigner(other, other / "ca").sign(
        "RUS", photo, "image/jpeg", "x.jpg", {"party": "RUS"}
    )
    async with marti_hub(tmp_path, [imagery("JPN", "full")]) as (hub, host, ca):
        usa = client_cert(ca, "USA", "usa-recce", tmp_path / "usa")
        jpn_cert = client_cert(ca, "JPN", "jpn-ops", tmp_path / "jpn")
        jpn = await hub.connect("JPN")
        await upload(hub, host, ca, usa, prior, "forwarded.jpg")
        marker = await jpn.wait_for(lambda e: e["type"] == "b-i-x-i")
        assert abs(marker["lat"] - 35.41) < 1e-6 and abs(marker["lon"] - 40.12) < 1e-6
        ev = detail(marker).find("csky_evidence")
        assert ev is not None and ev.get("located_from") == "exif-gps"
        status, signed = await fetch(hub, host, ca, jpn_cert, ev.get("sha256", ""))
        assert status == 200
        [fact] = ledger_entries(hub, tmp_path, "evidence")
        assert fact["payload"]["prior_manifest"] == "Valid"  # type: ignore[index]
    report = read_manifest(signed, "image/jpeg")
    assert report is not None and report.assertion is not None
    assert report.assertion["prior_manifest"]["issuer"] == "RUS"
    assert report.assertion["position"] == {"lat": 35.41, "lon": 40.12}


async def test_image_inside_a_data_package_becomes_evidence(tmp_path: Path) -> None:
    photo = aerial_jpeg(35.42, 40.13, CAPTURED, seed=5)
    data = package("MP-PHOTO", {"att/photo.jpg": photo})
    files = {
        "name": "US-JP files",
        "from": "USA",
        "to": ["JPN"],
        "categories": ["file", "imagery"],
        "disclosure": "full",
    }
    async with marti_hub(tmp_path, [files]) as (hub, host, ca):
        usa = client_cert(ca, "USA", "usa-recce", tmp_path / "usa")
        jpn: TakClient = await hub.connect("JPN")
        await upload(hub, host, ca, usa, data, "MP-PHOTO.zip")
        marker = await jpn.wait_for(lambda e: e["type"] == "b-i-x-i")
        ev = detail(marker).find("csky_evidence")
        assert ev is not None and ev.get("source_sha256") == sha(photo)
        [fact] = ledger_entries(hub, tmp_path, "file")
        assert fact["payload"]["categories"] == ["file", "imagery"]  # type: ignore[index]
