"""Uploads shaped as TAK clients send them, and data packages to send."""

from __future__ import annotations

import hashlib
import io
import zipfile

BOUNDARY = "----ATAKBoundary7MA4YWxkTrZu0gW"


def multipart(data: bytes, filename: str, part: str = "assetfile", close: bool = True) -> bytes:
    """A multipart/form-data body as ATAK's uploader writes it (one file part)."""
    head = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="{part}"; filename="{filename}"\r\n'
        "Content-Type: application/x-zip-compressed\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode() if close else b""
    return head + data + tail


HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def package(name: str = "MP-SABLE1", extra: dict[str, bytes] | None = None) -> bytes:
    """A small ATAK data package: manifest and a marker."""
    manifest = (
        '<MissionPackageManifest version="2"><Configuration>'
        f'<Parameter name="uid" value="{name}-uid"/><Parameter name="name" value="{name}"/>'
        '</Configuration><Contents><Content ignore="false" zipEntry="m1/m1.cot"/></Contents>'
        "</MissionPackageManifest>"
    ).encode()
    marker = (
        b'<event version="2.0" uid="m1" type="b-m-p-s-m" time="2024-01-01T00:00:00Z" '
        b'start="2024-01-01T00:00:00Z" stale="2024-01-02T00:00:00Z" how="h-g-i-g-o">'
        b'<point lat="35.1" lon="40.1" hae="0" ce="9" le="9"/><detail/></event>'
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("MANIFEST/manifest.xml", manifest)
        archive.writestr("m1/m1.cot", marker)
        for entry, data in (extra or {}).items():
            archive.writestr(entry, data)
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
