"""Typed page fields: what the map page draws, read from an item's `<detail>` once, in Python.

The page (web/app/layers.js) used to parse `detail` itself with DOMParser; it now reads these
fields of `render.item_json`, computed once per (item, variant) by the same parsers the hub's
desks use — `desks.drawings.airspace_from_cot` (airspace and sites), `evidence.marker`
(photo footprints), the conflict and launch desks' JSON extensions. `detail` stays in the
JSON for API users.

| field | present for | value |
|---|---|---|
| `geometry` | airspace, site, imagery, conflict, alert | GeoJSON geometry (RFC 7946), [lon, lat] |
| `airspace` | airspace, site | `<csky_airspace>`: item, kind, levels (numbers), parties |
| `evidence` | imagery | `{captured, user, published, sha256}` (null if generalized) |
| `thumbnail` | imagery | the base64 JPEG of `<csky_thumbnail>`, or null |
| `notice` | conflict (`t-x-csky-conflict`) | the `<csky_conflict>` JSON |
| `fused`, `report` | launch | the `<csky_fused>` / `<csky_launch>` JSON |
| `cap` | alert | `{identifier, msgType}` |
| `remarks` | all of the above | the `<remarks>` text ("" when none) |

An alert's `geometry` is its warned areas, every CAP polygon of it, as one `MultiPolygon` (null
when it carries none), so the page needs no CAP XML.

GeoJSON has no circle or corridor: a circle is a `Point` with the foreign member `radius_m`
(metres), a route corridor a `LineString` with `width_m` (full width), a deconfliction line
a plain `LineString` (RFC 7946 §6.1 allows foreign members). A generalized drawing (its
details stripped) is its coarse spot: a `Point` with `radius_m` = its `ce`.

A detail that cannot be read gives null fields, never an error: the page then draws the
item at its point, as it did before.

A drawing is read once: the hub hands over what the deconfliction desk's check parsed from
the very event (`Rendered.parsed`, hub/core.py), so `geometry` costs a few µs instead of a
second parse (figures: docs/performance.md, "Page JSON").
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
from lxml import etree

from commonsky.deconflict import shapes
from commonsky.desks.drawings import EXTENSION, airspace_from_cot
from commonsky.errors import RemoteProtocolError
from commonsky.evidence.marker import EVIDENCE, THUMBNAIL, footprint_of
from commonsky.model import Category, CotEvent, known
from commonsky.protocol.cot import detail_tree

GENERALIZED_RADIUS_M = 1000.0  # a drawing with neither vertices nor a known ce
_AIRSPACE_ATTRS = ("item", "kind", "left_party", "right_party")
_AIRSPACE_NUMBERS = ("floor_m", "ceiling_m", "floor_fl", "ceiling_fl")
_EVIDENCE_ATTRS = ("captured", "user", "published", "sha256")
_DRAWN = frozenset(
    {Category.AIRSPACE, Category.SITE, Category.IMAGERY, Category.CONFLICT}
    | {Category.LAUNCH, Category.ALERT}
)


Drawing = shapes.Volume | shapes.Line | shapes.Site  # what `airspace_from_cot` reads


def page_fields(
    category: Category, event: CotEvent, drawing: Drawing | None = None
) -> dict[str, Any]:
    """The typed fields above for an item of `category` as `event` (one recipient's
    variant); {} for categories the page does not draw from their detail (tracks etc.).
    `drawing`: the airspace item already read from this very event (else it is read here)."""
    if category not in _DRAWN:
        return {}
    try:
        detail = detail_tree(event.detail or "")
    except (etree.XMLSyntaxError, ValueError):
        detail = None
    node = detail.find("remarks") if detail is not None else None
    out: dict[str, Any] = {"remarks": (node.text or "") if node is not None else ""}
    if category in (Category.AIRSPACE, Category.SITE):
        out["geometry"] = airspace_geometry(event, drawing)
        out["airspace"] = _airspace_attrs(detail, category)
    elif category is Category.IMAGERY:
        out.update(_imagery(event, detail))
    elif category is Category.CONFLICT:
        notice = _json_in(detail, "csky_conflict")
        out["notice"] = notice
        out["geometry"] = notice.get("geometry") if isinstance(notice, dict) else None
    elif category is Category.LAUNCH:
        out["fused"] = _json_in(detail, "csky_fused")
        out["report"] = _json_in(detail, "csky_launch")
    elif category is Category.ALERT:
        cap = detail.find("csky_cap") if detail is not None else None
        out["cap"] = (
            {"identifier": cap.get("identifier"), "msgType": cap.get("msgType")}
            if cap is not None
            else None
        )
        areas = _json_in(detail, "csky_cap")
        out["geometry"] = areas if isinstance(areas, dict) else None
    return out


def airspace_geometry(event: CotEvent, drawing: Drawing | None = None) -> dict[str, Any]:
    """The GeoJSON geometry of a drawing, as the deconfliction desk reads it (`drawing`:
    what it read from this very event, if it did)."""
    parsed = drawing
    if parsed is None:
        try:
            parsed = airspace_from_cot(event)
        except (RemoteProtocolError, etree.XMLSyntaxError, ValueError):
            # Generalized (vertices stripped) or unreadable: the item's coarse spot.
            p = event.point
            radius = p.ce if known(p.ce) and p.ce > 0 else GENERALIZED_RADIUS_M
            return {"type": "Point", "coordinates": [p.lon, p.lat], "radius_m": radius}
    if isinstance(parsed, shapes.Line):
        return {"type": "LineString", "coordinates": [list(v) for v in parsed.path]}
    return shape_geojson(parsed.area() if isinstance(parsed, shapes.Site) else parsed.shape)


def shape_geojson(shape: shapes.Polygon | shapes.Circle | shapes.Corridor) -> dict[str, Any]:
    """A deconfliction shape as GeoJSON (circle and corridor with their foreign members)."""
    if isinstance(shape, shapes.Circle):
        return {"type": "Point", "coordinates": list(shape.centre), "radius_m": shape.radius_m}
    if isinstance(shape, shapes.Corridor):
        coords = [list(v) for v in shape.path]
        return {"type": "LineString", "coordinates": coords, "width_m": shape.width_m}
    ring = [list(v) for v in shape.ring]
    if ring[0] != ring[-1]:
        ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


def _airspace_attrs(detail: etree._Element | None, category: Category) -> dict[str, Any]:
    ext = detail.find(EXTENSION) if detail is not None else None
    attrs: dict[str, Any] = {name: None for name in (*_AIRSPACE_ATTRS, *_AIRSPACE_NUMBERS)}
    if ext is not None:
        for name in _AIRSPACE_ATTRS:
            attrs[name] = ext.get(name)
        for name in _AIRSPACE_NUMBERS:
            with contextlib.suppress(ValueError):  # unreadable: shown as not given
                attrs[name] = float(ext.get(name, ""))
    if attrs["item"] is None:
        attrs["item"] = "site" if category is Category.SITE else "volume"
    return attrs


def _imagery(event: CotEvent, detail: etree._Element | None) -> dict[str, Any]:
    ring = footprint_of(event.detail) if detail is not None and event.detail else None
    p = event.point
    geometry: dict[str, Any] = (
        {"type": "Polygon", "coordinates": [[list(v) for v in ring]]}
        if ring
        else {"type": "Point", "coordinates": [p.lon, p.lat]}
    )
    ev = detail.find(EVIDENCE) if detail is not None else None
    thumb = detail.find(THUMBNAIL) if detail is not None else None
    return {
        "geometry": geometry,
        "evidence": {name: ev.get(name) for name in _EVIDENCE_ATTRS} if ev is not None else None,
        "thumbnail": (thumb.text or "").strip() or None if thumb is not None else None,
    }


def _json_in(detail: etree._Element | None, name: str) -> Any:
    node = detail.find(name) if detail is not None else None
    if node is None or not (node.text or "").strip():
        return None
    try:
        return msgspec.json.decode((node.text or "").encode())
    except msgspec.DecodeError:
        return None
