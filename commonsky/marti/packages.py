"""TAK data packages: reading the ones parties upload, and making the ones the hub hands out.

A data package is a zip with `MANIFEST/manifest.xml` (`<MissionPackageManifest version="2">`:
a `Configuration` naming it, `Contents` listing its entries; RESEARCH-TAK.md §3). ATAK,
WinTAK and iTAK import them; the hub makes three kinds:

- a **connection** package (`cert issue --package`): `certs/<name>.pref` with one
  `cot_streams` entry `host:port:ssl`, the truststore and the client PKCS#12, referenced as
  `cert/…` (where ATAK files certificates on import);
- an **enrollment** package: the `.pref` and truststore only, with
  `enrollForCertificateWithTrust0` and `useAuth0` set — the device asks its user for name
  and token and enrolls on port 8446;
- a **quick-pic** package (evidence): a `b-i-x-i` marker's CoT and its signed image, the
  image attached to the marker by uid, as ATAK's Quick Pic shares a photo.

Reading (`inspect_package`) trusts nothing in the zip: entry count, names (no absolute path,
drive letter, `..`, backslash, NUL or symbolic link), the declared sizes (total and per-entry
ratio: zip bombs) and every entry's CRC are checked before anything is kept.
"""

from __future__ import annotations

import io
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from commonsky.errors import RemoteProtocolError
from commonsky.settings import Settings

MANIFEST = "MANIFEST/manifest.xml"
MAX_RATIO = 200  # uncompressed / compressed, per entry over RATIO_FLOOR bytes
RATIO_FLOOR = 1 << 20
IMAGE_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


class PackageRefused(RemoteProtocolError):
    """A data package refused; `reason` is its metric label."""


def sniff_image(head: bytes) -> str | None:
    """The MIME type of a JPEG, PNG or TIFF by its first bytes, else None."""
    for magic, mime in IMAGE_SIGNATURES:
        if head.startswith(magic):
            return mime
    return None


def is_zip(head: bytes) -> bool:
    return head.startswith(b"PK\x03\x04")


@dataclass
class Package:
    name: str = ""  # from the manifest's `name` parameter, if any
    uid: str = ""
    entries: int = 0
    images: list[tuple[str, str, bytes]] = field(default_factory=list)  # (entry, mime, bytes)


def _unsafe_name(name: str) -> str | None:
    if not name or "\x00" in name:
        return "empty name or NUL in a name"
    if "\\" in name:
        return "backslash in a name (a Windows path)"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if any(part == ".." for part in name.split("/")):
        return "'..' in a path (path traversal)"
    return None


def inspect_package(path: Path, settings: Settings) -> Package:
    """Check a zip the way the module header says; the images in it (each at most
    `limit_file_bytes`) for evidence. Raises PackageRefused naming the first problem."""
    limit_entries = settings.limit_package_entries
    limit_total = settings.limit_package_unpacked_bytes
    limit_image = settings.limit_file_bytes
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise PackageRefused("bad_zip", f"not a readable zip ({exc})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > limit_entries:
            raise PackageRefused(
                "zip_entries", f"{len(infos)} entries (limit_package_entries={limit_entries})"
            )
        seen: set[str] = set()
        total = 0
        for info in infos:
            problem = _unsafe_name(info.filename)
            if problem is not None:
                raise PackageRefused("zip_path", f"entry {info.filename[:80]!r}: {problem}")
            if info.filename in seen:
                raise PackageRefused("zip_path", f"entry {info.filename[:80]!r} appears twice")
            seen.add(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise PackageRefused("zip_path", f"entry {info.filename[:80]!r} is a symbolic link")
            if info.flag_bits & 0x1:
                raise PackageRefused("zip_encrypted", f"entry {info.filename[:80]!r} is encrypted")
            total += info.file_size
            if total > limit_total:
                raise PackageRefused(
                    "zip_bomb",
                    f"entries declare over {limit_total} bytes uncompressed "
                    "(limit_package_unpacked_bytes)",
                )
            if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(
                info.compress_size, 1
            ):
                raise PackageRefused(
                    "zip_bomb",
                    f"entry {info.filename[:80]!r} expands {info.file_size} bytes from "
                    f"{info.compress_size} (over {MAX_RATIO}:1)",
                )
        package = Package(entries=len(infos))
        try:
            bad = archive.testzip()  # every entry decompressed once and its CRC checked
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise PackageRefused("bad_zip", f"an entry cannot be read ({exc})") from None
        if bad is not None:
            raise PackageRefused("bad_zip", f"entry {bad[:80]!r} fails its CRC (damaged)")
        for info in infos:
            if info.is_dir() or info.file_size > limit_image:
                continue
            with archive.open(info) as fh:
                head = fh.read(16)
                mime = sniff_image(head)
                if mime is not None:
                    package.images.append((info.filename, mime, head + fh.read()))
        if MANIFEST in seen:
            _read_manifest(archive.read(MANIFEST), package)
    return package


def _read_manifest(data: bytes, package: Package) -> None:
    from commonsky.protocol.cot import PARSER

    try:
        root = etree.fromstring(data, PARSER)
    except etree.XMLSyntaxError as exc:
        raise PackageRefused("bad_manifest", f"{MANIFEST} is not XML ({exc})") from None
    for parameter in root.iterfind("Configuration/Parameter"):
        if parameter.get("name") == "name":
            package.name = (parameter.get("value") or "")[:200]
        elif parameter.get("name") == "uid":
            package.uid = (parameter.get("value") or "")[:200]


# ---- making packages ------------------------------------------------------------------------


def manifest_xml(uid: str, name: str, contents: list[tuple[str, str | None]]) -> bytes:
    """`MANIFEST/manifest.xml`: entries as (zip entry, uid of the map item it belongs to)."""
    root = etree.Element("MissionPackageManifest", version="2")
    configuration = etree.SubElement(root, "Configuration")
    etree.SubElement(configuration, "Parameter", name="uid", value=uid)
    etree.SubElement(configuration, "Parameter", name="name", value=name)
    listing = etree.SubElement(root, "Contents")
    for entry, owner in contents:
        content = etree.SubElement(listing, "Content", ignore="false", zipEntry=entry)
        if owner is not None:
            etree.SubElement(content, "Parameter", name="uid", value=owner)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _entry(preference: etree._Element, key: str, kind: str, value: str) -> None:
    element = etree.SubElement(preference, "entry", key=key)
    element.set("class", f"class java.lang.{kind}")
    element.text = value


def pref_xml(
    description: str,
    connect: str,
    truststore: str,
    password: str,
    client_cert: str | None = None,
    callsign: str | None = None,
) -> bytes:
    """An ATAK preference file with one server connection (`cot_streams`, entry 0). Without
    `client_cert` the connection enrolls for its certificate (user name and token asked on
    the device)."""
    root = etree.Element("preferences")
    streams = etree.SubElement(root, "preference", version="1", name="cot_streams")
    _entry(streams, "count", "Integer", "1")
    _entry(streams, "description0", "String", description)
    _entry(streams, "enabled0", "Boolean", "true")
    _entry(streams, "connectString0", "String", connect)
    _entry(streams, "caLocation0", "String", truststore)
    _entry(streams, "caPassword0", "String", password)
    if client_cert is not None:
        _entry(streams, "certificateLocation0", "String", client_cert)
        _entry(streams, "clientPassword0", "String", password)
    else:
        _entry(streams, "enrollForCertificateWithTrust0", "Boolean", "true")
        _entry(streams, "useAuth0", "Boolean", "true")
        _entry(streams, "cacheCreds0", "String", "Cache credentials")
    app = etree.SubElement(root, "preference", version="1", name="com.atakmap.app_preferences")
    _entry(app, "displayServerConnectionWidget", "Boolean", "true")
    if callsign:
        _entry(app, "locationCallsign", "String", callsign)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _zip(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    # Stored, not deflated: what TAK's own tools write, and certificates do not compress.
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def connection_package(
    uid: str,
    name: str,
    connect: str,
    truststore: bytes,
    password: str,
    client_p12: bytes | None,
    callsign: str | None = None,
) -> bytes:
    """The zip ATAK and WinTAK import to connect (with `client_p12`) or to enroll (without)."""
    pref_name = f"certs/{name}.pref"
    files = [(f"certs/truststore-{name}.p12", truststore)]
    client = None
    if client_p12 is not None:
        files.append((f"certs/{name}.p12", client_p12))
        client = f"cert/{name}.p12"
    pref = pref_xml(
        f"CommonSky {name}", connect, f"cert/truststore-{name}.p12", password, client, callsign
    )
    files.insert(0, (pref_name, pref))
    manifest = manifest_xml(uid, name, [(entry, None) for entry, _ in files])
    return _zip([(MANIFEST, manifest), *files])


def quickpic_package(
    uid: str, name: str, marker_uid: str, marker_xml: bytes, image_name: str, image: bytes
) -> bytes:
    """A marker and its image, attached by uid (ATAK shows it as the marker's attachment)."""
    folder = "".join(c if c.isalnum() or c in "-_." else "_" for c in marker_uid)
    cot_entry = f"{folder}/{folder}.cot"
    image_entry = f"{folder}/{image_name}"
    manifest = manifest_xml(uid, name, [(cot_entry, marker_uid), (image_entry, marker_uid)])
    return _zip([(MANIFEST, manifest), (cot_entry, marker_xml), (image_entry, image)])
