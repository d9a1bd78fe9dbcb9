"""Hostile and broken uploads: each refused with a clear status, counted, and nothing kept."""

from __future__ import annotations

import io
import sqlite3
import stat
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.marti.helpers import client_cert, https, marti_hub
from tests.marti.uploads import HEADERS, multipart, package, sha

LIMITS = {
    "limit_file_bytes": 200_000,
    "limit_package_entries": 20,
    "limit_package_unpacked_bytes": 5_000_000,
}


def zipped(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def symlinked() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def corrupted() -> bytes:
    data = bytearray(zipped({"a.txt": b"hello world " * 100}, zipfile.ZIP_STORED))
    at = data.find(b"hello world")
    data[at] ^= 0xFF  # the stored bytes no longer match their CRC
    return bytes(data)


def nothing_kept(root: Path) -> None:
    objects = [p for p in (root / "hub/files/objects").rglob("*") if p.is_file()]
    assert objects == []
    assert [p for p in (root / "hub/files/tmp").iterdir()] == []
    with sqlite3.connect(root / "hub/files.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM file").fetchone() == (0,)


async def chunks(data: bytes, size: int = 16384) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


CASES = {
    # name: (body, query, headers, status, reason)
    "zip_bomb": (zipped({"bomb.bin": b"\0" * 3_000_000}), "", None, 400, "zip_bomb"),
    "declared_total": (
        zipped({f"f{i}.bin": b"\0" * 600_000 for i in range(9)}, zipfile.ZIP_DEFLATED),
        "",
        None,
        400,
        "zip_bomb",
    ),
    "traversal": (zipped({"../../etc/cron.d/x": b"* * * * * root sh"}), "", None, 400, "zip_path"),
    "absolute": (zipped({"/etc/passwd": b"root::0:0"}), "", None, 400, "zip_path"),
    "backslash": (zipped({"..\\..\\win.ini": b"x"}), "", None, 400, "zip_path"),
    "symlink": (symlinked(), "", None, 400, "zip_path"),
    "entries": (zipped({f"e{i}": b"x" for i in range(25)}), "", None, 400, "zip_entries"),
    "crc": (corrupted(), "", None, 400, "bad_zip"),
    "wrong_hash": (package(), f"hash={sha(b'other')}", None, 400, "wrong_hash"),
    "huge": (b"\0" * 300_000, "", None, 413, "too_big"),
    "huge_streamed": (b"\0" * 300_000, "stream", None, 413, "too_big"),
    "truncated": (package(), "truncate", None, 400, "truncated"),
    "not_multipart": (package(), "", {"Content-Type": "application/zip"}, 415, "not_multipart"),
    "bad_image": (b"\xff\xd8\xff\xe0" + b"junk" * 100, "", None, 400, "bad_image"),
    "empty": (b"", "", None, 400, "empty"),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_hostile_upload_is_refused_and_nothing_is_kept(tmp_path: Path, case: str) -> None:
    data, query, headers, status, reason = CASES[case]
    async with marti_hub(tmp_path, server=LIMITS) as (hub, host, ca):
        usa = client_cert(ca, "USA", "usa-ops", tmp_path / "usa")
        body: bytes | AsyncIterator[bytes] = multipart(data, "evil.zip", close=query != "truncate")
        if query == "stream":
            body = chunks(body)  # no Content-Length: refused as it streams past the limit
        params = query if "=" in query else ""
        async with https(hub, host, ca, "marti", usa) as client:
            answer = await client.post(
                f"/Marti/sync/missionupload?filename=evil.zip&{params}",
                content=body,
                headers=headers or HEADERS,
            )
            assert answer.status_code == status, answer.text
            assert answer.text.strip()
            nothing_kept(tmp_path)
            # The hub is unharmed: a good upload right after is kept.
            good = package()
            ok = await client.post(
                f"/Marti/sync/missionupload?filename=good.zip&hash={sha(good)}",
                content=multipart(good, "good.zip"),
                headers=HEADERS,
            )
            assert ok.status_code == 200
        refused = hub.hub.metrics.registry.get_sample_value(
            "commonsky_refusals_total", {"reason": f"upload_{reason}"}
        )
        assert refused == 1
        objects = [p.name for p in (tmp_path / "hub/files/objects").rglob("*") if p.is_file()]
        assert objects == [sha(good)]
        assert [p for p in (tmp_path / "hub/files/tmp").iterdir()] == []


async def test_limits_on_count_are_507_and_keep_nothing(tmp_path: Path) -> None:
    async with marti_hub(tmp_path, server={"limit_files_per_party": 1}) as (hub, host, ca):
        usa = client_cert(ca, "USA", "usa-ops", tmp_path / "usa")
        async with https(hub, host, ca, "marti", usa) as client:
            first, second = package("one"), package("two")
            assert (
                await client.post(
                    "/Marti/sync/missionupload?filename=1.zip",
                    content=multipart(first, "1.zip"),
                    headers=HEADERS,
                )
            ).status_code == 200
            full = await client.post(
                "/Marti/sync/missionupload?filename=2.zip",
                content=multipart(second, "2.zip"),
                headers=HEADERS,
            )
            assert full.status_code == 507 and "limit_files_per_party" in full.text
            assert (await client.get(f"/Marti/sync/content?hash={sha(second)}")).status_code == 404
