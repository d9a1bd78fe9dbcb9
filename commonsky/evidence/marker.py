"""The map item an evidence image becomes: a TAK quick-pic marker (`b-i-x-i`).

The marker stands at the footprint's centre (or the camera's position). Its `<detail>`
carries, besides ATAK's `contact` (the title) and `remarks`:

- `<csky_evidence sha256 source_sha256 party user published captured located_from name
  url/>` — the signed image's hash (what `evidence verify` and the ledger name), the
  upload's, and where entitled parties fetch it;
- `<csky_footprint><vertex lat lon/>…</csky_footprint>` — the footprint ring, when known;
- `<csky_thumbnail mime="image/jpeg">BASE64</csky_thumbnail>` — for the map (TAK clients
  ignore details they do not know).

Disclosure (policy.generalize): `full` delivers the marker as it is; `generalized` keeps the
time and a footprint coarsened to the generalization grid (the bounding box snapped outward
to whole cells) and drops everything else — no image, no hash, no thumbnail; `conflicts-only`
delivers nothing.
"""

from __future__ import annotations

import base64
import math

from lxml import etree

from commonsky.model import UNKNOWN, CotEvent, Point

FOOTPRINT = "csky_footprint"
EVIDENCE = "csky_evidence"
THUMBNAIL = "csky_thumbnail"
MARKER_TYPE = "b-i-x-i"
STALE_S = 30 * 86400.0  # evidence stays on the map a month (it is kept in the ledger for good)


def _attrs(element: etree._Element, values: dict[str, str]) -> None:
    for key, value in values.items():
        if value:
            element.set(key, value)


def marker_event(
    uid: str,
    now: float,
    centre: tuple[float, float],
    title: str,
    evidence: dict[str, str],
    footprint: list[tuple[float, float]] | None,
    thumbnail: bytes,
) -> CotEvent:
    """The quick-pic marker (centre is (lat, lon); footprint a closed ring of (lon, lat))."""
    parts: list[bytes] = []
    contact = etree.Element("contact", callsign=title[:80] or "Photo")
    parts.append(etree.tostring(contact))
    ev = etree.Element(EVIDENCE)
    _attrs(ev, evidence)
    parts.append(etree.tostring(ev))
    if footprint:
        fp = etree.Element(FOOTPRINT)
        for lon, lat in footprint:
            etree.SubElement(fp, "vertex", lat=f"{lat:.7f}", lon=f"{lon:.7f}")
        parts.append(etree.tostring(fp))
    if thumbnail:
        th = etree.Element(THUMBNAIL, mime="image/jpeg")
        th.text = base64.b64encode(thumbnail).decode()
        parts.append(etree.tostring(th))
    remarks = etree.Element("remarks")
    remarks.text = (
        f"Evidence photo published by {evidence.get('party', '?')}"
        f"{', taken ' + evidence['captured'] if evidence.get('captured') else ''}"
        "; signed by the hub (C2PA)."
    )
    parts.append(etree.tostring(remarks))
    lat, lon = centre
    return CotEvent(
        uid=uid,
        type=MARKER_TYPE,
        time=now,
        start=now,
        stale=now + STALE_S,
        how="h-e",
        point=Point(lat=lat, lon=lon, hae=UNKNOWN, ce=UNKNOWN, le=UNKNOWN),
        detail=b"".join(parts).decode(),
        callsign=title[:80] or "Photo",
    )


def footprint_of(detail: str) -> list[tuple[float, float]] | None:
    """The footprint ring (lon, lat) in a marker's detail, or None."""
    if f"<{FOOTPRINT}" not in detail:
        return None
    from commonsky.protocol.cot import detail_tree

    element = detail_tree(detail).find(FOOTPRINT)
    if element is None:
        return None
    ring: list[tuple[float, float]] = []
    for vertex in element.iterfind("vertex"):
        try:
            lat, lon = float(vertex.get("lat", "")), float(vertex.get("lon", ""))
        except ValueError:
            return None
        if not (math.isfinite(lat) and math.isfinite(lon)):
            return None
        ring.append((lon, lat))
    return ring if len(ring) >= 4 else None


def generalized_footprint(detail: str, grid_deg: float) -> str:
    """The `<csky_footprint>` a `generalized` recipient gets: the bounding box of the ring,
    snapped outward to whole `grid_deg` cells ("" when the detail has no footprint)."""
    ring = footprint_of(detail)
    if ring is None:
        return ""
    west = math.floor(min(p[0] for p in ring) / grid_deg) * grid_deg
    east = math.ceil(max(p[0] for p in ring) / grid_deg) * grid_deg
    south = math.floor(min(p[1] for p in ring) / grid_deg) * grid_deg
    north = math.ceil(max(p[1] for p in ring) / grid_deg) * grid_deg
    box = [(west, south), (east, south), (east, north), (west, north), (west, south)]
    fp = etree.Element(FOOTPRINT)
    for lon, lat in box:
        etree.SubElement(fp, "vertex", lat=f"{lat:.4f}", lon=f"{lon:.4f}")
    return etree.tostring(fp).decode()
