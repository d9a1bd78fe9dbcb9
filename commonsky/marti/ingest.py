"""From a received upload to items: checked, signed, stored, recorded, announced — or nothing.

Order (so that a refused upload leaves nothing and a kept one is whole):

1. **Check** (off the event loop): a zip is inspected whole (packages.py); an image, or
   each image inside a package, is read (evidence/extract.py), any C2PA manifest it carries
   verified, and a copy signed for the uploading party (evidence/sign.py). Any failure
   refuses the upload: 400 naming the file or entry.
2. **Store**: the upload's bytes, then each signed copy and its quick-pic package, by
   SHA-256 (files.py); a row per (bytes, holder).
3. **Record**: a `file` fact (hash, size, name, type, uploader) and per image an `evidence`
   fact (signed and source hashes, signer certificate, capture time, footprint/position in
   1e-7 degrees, any prior manifest's verdict), audience the uploader and every party
   entitled to fetch it then.
4. **Publish**: each located image becomes the uploader's `b-i-x-i` marker (an imagery item
   under the agreements, disclosed per recipient); every party that may fetch a file is sent
   a `b-f-t-r` naming it (the upload itself; each image's quick-pic package).

Who may fetch bytes is decided by `may_fetch` each time it is asked: the holder's party
always; another party only when an agreement in force grants it `full` disclosure of every
category the file carries (`file`; `imagery` for an image or a package with images) at the
file's position.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from commonsky import errors
from commonsky.evidence.extract import ImageFacts, NotEvidence, read_facts
from commonsky.evidence.marker import marker_event
from commonsky.evidence.sign import read_manifest, rfc3339
from commonsky.marti.files import StoredFile
from commonsky.marti.packages import (
    Package,
    PackageRefused,
    inspect_package,
    is_zip,
    quickpic_package,
    sniff_image,
)
from commonsky.marti.state import MartiState
from commonsky.model import Category, CotEvent, Disclosure, Item, Point
from commonsky.namespace import foreign_uid
from commonsky.protocol.cot import encode_event

log = logging.getLogger("commonsky.marti")
TRANSFER_STALE_S = 600.0  # a b-f-t-r is an offer: it goes stale like ATAK's own (10 s is tight)


class Refused(errors.Refused):
    """A file the Marti API refuses (errors.Refused: its status, reason label and message)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(status, message, reason)


@dataclass
class Upload:
    party: str
    user: str
    name: str
    mime: str
    sha256: str
    size: int
    creator_uid: str
    tool: str = "public"
    keywords: tuple[str, ...] = ()  # given with the upload (search.py)


@dataclass
class _Image:
    entry: str
    mime: str
    data: bytes
    facts: ImageFacts
    prior: dict[str, Any] | None
    signed: bytes = b""
    signed_sha256: str = ""
    claim: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ingested:
    row: StoredFile
    new: bool
    evidence: list[str] = field(default_factory=list)  # signed image hashes


def _probe(row: StoredFile, category: str) -> Item:
    lat, lon = row.lat, row.lon
    event = CotEvent(
        uid=f"file-{row.sha256[:16]}",
        type="b-f-t-r",
        time=row.received,
        start=row.received,
        stale=row.received + 1.0,
        how="h-e",
        point=Point(lat=lat, lon=lon),
    )
    return Item(row.party, row.user, Category(category), event, row.received)


def fetchers(state: MartiState, row: StoredFile) -> set[str]:
    """Parties that may fetch `row`'s bytes now: its holder, and every party entitled to all
    its categories in full."""
    parties: set[str] | None = None
    for category in row.categories:
        levels = state.port.entitled(_probe(row, category))
        full = {p for p, level in levels.items() if level is Disclosure.FULL}
        parties = full if parties is None else parties & full
    return {row.party, *(parties or set())}


def may_fetch(state: MartiState, party: str, sha256: str) -> StoredFile | None:
    """The row that lets `party` fetch these bytes now, or None (then: 404, as if absent)."""
    return fetchable(state, party, state.files.rows(sha256))


def fetchable(state: MartiState, party: str, rows: list[StoredFile]) -> StoredFile | None:
    """Of the rows of one file's bytes, the one that lets `party` fetch them now: its own
    if it holds them, else the earliest whose holder's agreements grant it (in whatever
    order `rows` come); None if none does."""
    for row in rows:
        if row.party == party:
            return row
    for row in sorted(rows, key=lambda r: (r.received, r.party)):
        if party in fetchers(state, row):
            return row
    return None


def _check(
    state: MartiState, temp: Path, upload: Upload
) -> tuple[str, Package | None, list[_Image]]:
    """Step 1 (blocking: runs in a worker thread)."""
    settings = state.port.settings
    with open(temp, "rb") as fh:
        head = fh.read(16)
    images: list[tuple[str, str, bytes]]
    package: Package | None = None
    if is_zip(head):
        try:
            package = inspect_package(temp, settings)
        except PackageRefused as exc:
            raise Refused(400, exc.reason, f"{upload.name or 'upload'}: {exc}") from None
        kind, images = "package", package.images
    elif (mime := sniff_image(head)) is not None:
        kind, images = "image", [(upload.name or "image", mime, temp.read_bytes())]
    else:
        kind, images = "file", []
    if images and state.signer is None:
        raise Refused(500, "no_signer", "the hub has no CA to sign evidence with")
    checked: list[_Image] = []
    trust = state.signer.ca_pem() if state.signer is not None else None
    for entry, mime, data in images:
        try:
            facts = read_facts(data, mime, settings.limit_image_pixels)
        except NotEvidence as exc:
            raise Refused(400, "bad_image", f"{entry}: {exc}") from None
        report = read_manifest(data, mime, trust)
        checked.append(_Image(entry, mime, data, facts, report.summary() if report else None))
    return kind, package, checked


def _sign(state: MartiState, upload: Upload, image: _Image, now: float) -> None:
    facts = image.facts
    source = hashlib.sha256(image.data).hexdigest()
    footprint = (
        {"type": "Polygon", "coordinates": [[[lon, lat] for lon, lat in facts.footprint]]}
        if facts.footprint
        else None
    )
    position = {"lat": facts.position[0], "lon": facts.position[1]} if facts.position else None
    image.claim = {
        "party": upload.party,
        "user": upload.user,
        "published": rfc3339(now),
        "captured": rfc3339(facts.captured),
        "captured_from": facts.captured_from,
        "position": position,
        "footprint": footprint,
        "located_from": facts.located_from,
        "source_sha256": source,
        "source_name": image.entry[-200:],
        "prior_manifest": image.prior,
    }
    assert state.signer is not None
    try:
        image.signed = state.signer.sign(
            upload.party, image.data, image.mime, image.entry.rsplit("/", 1)[-1], image.claim
        )
    except Exception as exc:  # c2pa.C2paError and what the native library raises
        raise Refused(400, "unsignable", f"{image.entry}: cannot be signed ({exc})") from None
    image.signed_sha256 = hashlib.sha256(image.signed).hexdigest()


def _e7(value: float) -> int:
    return round(value * 1e7)


async def ingest(state: MartiState, temp: Path, upload: Upload) -> Ingested:
    """Steps 1–4 for one received upload (`temp`, already hashed). Raises Refused."""
    port = state.port
    held = [r for r in state.files.rows(upload.sha256) if r.party == upload.party]
    if held:  # the same bytes again from the same party: nothing new to check or say
        signed = [e.sha256 for e in state.files.derived(upload.sha256, "evidence")]
        return Ingested(held[0], False, signed)
    kind, package, images = await asyncio.to_thread(_check, state, temp, upload)
    now = port.clock()
    for image in images:
        await asyncio.to_thread(_sign, state, upload, image, now)
    located = next((i.facts.centre for i in images if i.facts.centre is not None), None)
    categories = ("imagery",) if kind == "image" else ("file", "imagery") if images else ("file",)
    row = StoredFile(
        upload.sha256,
        upload.party,
        upload.user,
        upload.creator_uid,
        upload.name or (package.name if package else "") or upload.sha256[:16],
        upload.mime or _mime(kind, images),
        upload.size,
        kind,
        categories,
        located[0] if located else math.nan,
        located[1] if located else math.nan,
        now,
        upload.tool,
        keywords=upload.keywords,
    )
    evidence = await _store(state, temp, upload, row, images, now)
    audience = _record(state, upload, row, images, now)
    await _publish(state, upload, row, images, now)
    log.info(
        "%s/%s uploaded %s (%s, %d bytes, %d images); offered to %s",
        upload.party,
        upload.user,
        row.name,
        kind,
        upload.size,
        len(images),
        ", ".join(sorted(audience)),
    )
    return Ingested(row, True, evidence)


async def _store(
    state: MartiState, temp: Path, upload: Upload, row: StoredFile, images: list[_Image], now: float
) -> list[str]:
    """Step 2: keep the upload and each signed image (its own row, `source` the upload);
    the signed images' SHA-256s. Bytes before rows, off the event loop (a database's copy
    of a large file takes a while)."""
    files = state.files
    await asyncio.to_thread(files.put, temp, upload.sha256)
    for image in images:
        await asyncio.to_thread(files.put_bytes, image.signed)
    files.add(row)
    evidence: list[str] = []
    for image in images:
        centre = image.facts.centre
        files.add(
            StoredFile(
                image.signed_sha256,
                upload.party,
                upload.user,
                upload.creator_uid,
                image.entry.rsplit("/", 1)[-1],
                image.mime,
                len(image.signed),
                "evidence",
                ("imagery",),
                centre[0] if centre else math.nan,
                centre[1] if centre else math.nan,
                now,
                source=upload.sha256,
            )
        )
        evidence.append(image.signed_sha256)
    return evidence


def _record(
    state: MartiState, upload: Upload, row: StoredFile, images: list[_Image], now: float
) -> set[str]:
    """Step 3: record the file and each signed image in the ledger, for the parties who may
    fetch it (returned)."""
    port = state.port
    kind, categories = row.kind, row.categories
    audience = fetchers(state, row)
    port.record(
        "file",
        upload.party,
        audience,
        {
            "sha256": upload.sha256,
            "size": upload.size,
            "name": row.name[:200],
            "mime": row.mime[:100],
            "kind": kind,
            "user": upload.user,
            "creator_uid": upload.creator_uid[:200],
            "categories": list(categories),
        },
        now,
    )
    serial = state.signer.serial(upload.party) if state.signer and images else ""
    for image in images:
        facts = image.facts
        payload: dict[str, Any] = {
            "sha256": image.signed_sha256,
            "source_sha256": image.claim["source_sha256"],
            "upload_sha256": upload.sha256,
            "name": image.entry[-200:],
            "user": upload.user,
            "signer_serial": serial,
            "published_us": round(now * 1e6),
            "prior_manifest": (image.prior or {}).get("state", "none"),
        }
        if facts.captured is not None:
            payload["captured_us"] = round(facts.captured * 1e6)
        if facts.footprint:
            payload["footprint_e7"] = [[_e7(lon), _e7(lat)] for lon, lat in facts.footprint]
        if facts.position:
            payload["lat_e7"], payload["lon_e7"] = _e7(facts.position[0]), _e7(facts.position[1])
        port.record("evidence", upload.party, audience, payload, now)
    return audience


async def _publish(
    state: MartiState, upload: Upload, row: StoredFile, images: list[_Image], now: float
) -> None:
    """Step 4: offer the file (and each image's quick-pic packages) to every party that may
    fetch it, as TAK file-transfer requests (`b-f-t-r`)."""
    base = state.base_url()
    offers: list[tuple[StoredFile, str]] = [(row, row.name)]
    for image in images:
        offers.extend(await _quickpic(state, upload, image, now, base))
    events: list[tuple[CotEvent, str]] = []
    for offered, name in offers:
        recipients = fetchers(state, offered)
        if offered.kind == "quickpic-own":
            recipients = {offered.party}
        elif offered.kind == "quickpic-other":
            recipients.discard(offered.party)
        for recipient in sorted(recipients):
            events.append((_transfer(offered, name, recipient, base, now), recipient))
    state.port.announce(events, Category.FILE)


def _mime(kind: str, images: list[_Image]) -> str:
    if kind == "package":
        return "application/x-zip-compressed"
    if kind == "image":
        return images[0].mime
    return "application/octet-stream"


async def _quickpic(
    state: MartiState, upload: Upload, image: _Image, now: float, base: str
) -> list[tuple[StoredFile, str]]:
    """The image's marker (accepted as the uploader's item) and its quick-pic packages: one
    naming the marker as the uploader's party knows it, one as every other party does."""
    facts = image.facts
    uid = f"evidence-{image.signed_sha256[:20]}"
    name = image.entry.rsplit("/", 1)[-1]
    title = f"{upload.party} photo {name}"[:80]
    url = f"{base}/Marti/sync/content?hash={image.signed_sha256}"
    marker: CotEvent | None = None
    centre = facts.centre
    if centre is not None:
        fields = {
            "sha256": image.signed_sha256,
            "source_sha256": image.claim["source_sha256"],
            "party": upload.party,
            "user": upload.user,
            "published": image.claim["published"] or "",
            "captured": image.claim["captured"] or "",
            "located_from": facts.located_from,
            "name": name[:200],
            "url": url,
        }
        marker = marker_event(uid, now, centre, title, fields, facts.footprint, facts.thumbnail)
        state.port.accept(upload.party, upload.user, marker)
    out: list[tuple[StoredFile, str]] = []
    for form, marker_uid in (("own", uid), ("other", foreign_uid(upload.party, uid))):
        cot = encode_event(_renamed(marker, marker_uid)) if marker is not None else b""
        data = quickpic_package(
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"{image.signed_sha256}/{form}")),
            title,
            marker_uid,
            cot,
            name,
            image.signed,
        )
        sha = await asyncio.to_thread(state.files.put_bytes, data)
        row = StoredFile(
            sha,
            upload.party,
            upload.user,
            upload.creator_uid,
            f"{title}.zip",
            "application/x-zip-compressed",
            len(data),
            f"quickpic-{form}",
            ("imagery",),
            centre[0] if centre else math.nan,
            centre[1] if centre else math.nan,
            now,
            source=image.signed_sha256,
        )
        state.files.add(row)
        out.append((row, row.name))
    return out


def _renamed(event: CotEvent | None, uid: str) -> CotEvent:
    from msgspec.structs import replace

    assert event is not None
    return replace(event, uid=uid)


def _transfer(row: StoredFile, name: str, recipient: str, base: str, now: float) -> CotEvent:
    """A `b-f-t-r` offering `row` to `recipient` (ATAK's fileshare shape; senderUid as the
    recipient knows the uploading device)."""
    from lxml import etree

    sender = row.creator_uid or row.user
    if recipient != row.party and sender:
        sender = foreign_uid(row.party, sender)
    share = etree.Element(
        "fileshare",
        filename=name[:200],
        name=name[:200],
        senderUrl=f"{base}/Marti/sync/content?hash={row.sha256}",
        sizeInBytes=str(row.size),
        sha256=row.sha256,
        senderUid=sender[:200],
        senderCallsign=f"{row.party}/{row.user}"[:100],
    )
    ack = etree.Element("ackrequest", uid=str(uuid.uuid4()), ackrequested="false", tag=name[:200])
    lat, lon = (row.lat, row.lon) if math.isfinite(row.lat) else (0.0, 0.0)
    return CotEvent(
        uid=f"transfer-{row.sha256[:20]}-{recipient}",
        type="b-f-t-r",
        time=now,
        start=now,
        stale=now + TRANSFER_STALE_S,
        how="h-e",
        point=Point(lat=lat, lon=lon),
        detail=(etree.tostring(share) + etree.tostring(ack)).decode(),
    )
