# Rule: GeoJSON and KML airspace documents become typed items (shapes.py) or a refusal naming
# the feature and field at fault; KML is read with DTDs, entities and the network refused.
#
# GeoJSON and KML. Properties (GeoJSON `properties`, KML `ExtendedData/Data name=`):
#   item         "volume" | "line" | "site" (default: "line" for a LineString with
#                left_party, "site" for a Point without floor/ceiling, else "volume")
#   floor_m, ceiling_m      metres; or floor_fl, ceiling_fl (flight levels)
#   start, end   epoch seconds or RFC 3339 text (volumes)
#   kind         operating-area | strike-area | route | reservation (volumes)
#   radius_m     a Point with a radius is a circle; width_m: a LineString volume is a corridor
#   left_party, right_party   (lines)
# ---------------------------------------------------------------------------------------------

from __future__ import annotations

from typing import Any

import msgspec

from commonsky import times
from commonsky.deconflict.shapes import (
    Circle,
    Corridor,
    GeometryError,
    Item,
    Line,
    Point,
    Polygon,
    Site,
    TooManyFeatures,
    Volume,
    flight_level,
)
from commonsky.geo import LonLat


def _number(props: dict[str, Any], name: str) -> float | None:
    if name not in props or props[name] is None:
        return None
    v = props[name]
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise GeometryError(f"properties.{name}", f"not a number: {v!r}")
    try:
        return float(v)
    except (ValueError, OverflowError):  # (an integer past any float overflows)
        raise GeometryError(f"properties.{name}", f"not a number: {str(v)[:40]!r}") from None


def _time(props: dict[str, Any], name: str) -> float:
    v = props.get(name)
    if v is None:
        raise GeometryError(f"properties.{name}", "missing")
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
        try:
            return times.parse_time(v)
        except (ValueError, OverflowError):
            raise GeometryError(f"properties.{name}", f"not a time: {v[:40]!r}") from None
    got = _number(props, name)
    assert got is not None
    return got


def _level(props: dict[str, Any], name: str, default: float | None) -> float:
    m = _number(props, f"{name}_m")
    if m is not None:
        return m
    fl = _number(props, f"{name}_fl")
    if fl is not None:
        return flight_level(fl)
    if default is None:
        raise GeometryError(f"properties.{name}_m", "missing (or give {name}_fl)")
    return default


def _coords(raw: Any, field: str, depth: int) -> Any:
    """Coordinates as nested tuples of (lon, lat), dropping any altitude."""
    if not isinstance(raw, list | tuple):  # (a dict or a string indexes too, wrongly)
        raise GeometryError(field, "malformed coordinates")
    try:
        if depth == 0:
            return (float(raw[0]), float(raw[1]))
        return tuple(_coords(c, field, depth - 1) for c in raw)
    except (TypeError, IndexError, ValueError, OverflowError):
        raise GeometryError(field, "malformed coordinates") from None


def item_from(gtype: str, coordinates: Any, props: dict[str, Any]) -> Item:
    """Build an item from a geometry type, its coordinates and the properties above."""
    try:
        return _item_from(gtype, coordinates, props)
    except msgspec.ValidationError as exc:
        raise GeometryError("properties", str(exc)) from None


def _item_from(gtype: str, coordinates: Any, props: dict[str, Any]) -> Item:
    has_levels = any(k in props for k in ("floor_m", "floor_fl", "ceiling_m", "ceiling_fl"))
    default_item = (
        "line"
        if gtype == "LineString" and "left_party" in props
        else ("site" if gtype == "Point" and not has_levels else "volume")
    )
    item = props.get("item", default_item)
    shape: Polygon | Circle | Corridor | Point
    if gtype == "Polygon":
        rings = _coords(coordinates, "geometry.coordinates", 2)
        if not rings:
            raise GeometryError("geometry.coordinates", "no ring")
        if len(rings) > 1:
            raise GeometryError("geometry.coordinates", "holes are not supported")
        shape = Polygon(ring=rings[0])
    elif gtype == "LineString":
        path = _coords(coordinates, "geometry.coordinates", 1)
        if item == "line":
            return Line(
                path=path,
                left_party=str(props.get("left_party", "")),
                right_party=str(props.get("right_party", "")),
            )
        width = _number(props, "width_m")
        if width is None:
            raise GeometryError("properties.width_m", "missing (a corridor needs a width)")
        shape = Corridor(path=path, width_m=width)
    elif gtype == "Point":
        at = _coords(coordinates, "geometry.coordinates", 0)
        radius = _number(props, "radius_m")
        shape = Point(at=at) if radius is None else Circle(centre=at, radius_m=radius)
    else:
        raise GeometryError("geometry.type", f"unsupported {gtype!r}")
    if item == "site":
        if isinstance(shape, Corridor):
            raise GeometryError("properties.item", "a site cannot be a corridor")
        return Site(
            shape=shape,
            floor_m=_level(props, "floor", -1_000.0),
            ceiling_m=_level(props, "ceiling", 100_000.0),
        )
    if item != "volume":
        raise GeometryError("properties.item", f"unknown item {item!r}")
    if isinstance(shape, Point):
        raise GeometryError("properties.radius_m", "a point volume needs a radius")
    kind = props.get("kind")
    if kind is not None and kind not in ("operating-area", "strike-area", "route", "reservation"):
        raise GeometryError("properties.kind", f"unknown kind {kind!r}")
    return Volume(
        shape=shape,
        floor_m=_level(props, "floor", None),
        ceiling_m=_level(props, "ceiling", None),
        start_s=_time(props, "start"),
        end_s=_time(props, "end"),
        kind=kind,
    )


def parse_geojson(data: bytes | str | Any, max_features: int | None = None) -> list[Item]:
    """A GeoJSON Feature or FeatureCollection (text, or already decoded) to items (errors
    prefixed features[i]). More than `max_features` features: `TooManyFeatures`, before any
    is built."""
    if isinstance(data, bytes | str):
        try:
            doc = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise GeometryError("document", f"not JSON: {exc}") from None
        except RecursionError:
            raise GeometryError("document", "JSON nested too deeply") from None
    else:
        doc = data
    if not isinstance(doc, dict):
        raise GeometryError("document", "expected a GeoJSON object")
    feats = doc.get("features") if doc.get("type") == "FeatureCollection" else [doc]
    if not isinstance(feats, list):
        raise GeometryError("features", "expected a list")
    if max_features is not None and len(feats) > max_features:
        raise TooManyFeatures(
            "features", f"{len(feats)} features, more than limit_airspace_features={max_features}"
        )
    out: list[Item] = []
    for k, f in enumerate(feats):
        where = f"features[{k}]" if doc.get("type") == "FeatureCollection" else "feature"
        try:
            if not isinstance(f, dict) or f.get("type") != "Feature":
                raise GeometryError("type", "expected a Feature")
            geom = f.get("geometry")
            if not isinstance(geom, dict):
                raise GeometryError("geometry", "missing")
            props = f.get("properties") or {}
            if not isinstance(props, dict):
                raise GeometryError("properties", "expected an object")
            out.append(item_from(str(geom.get("type")), geom.get("coordinates"), props))
        except GeometryError as exc:
            raise GeometryError(f"{where}.{exc.field}", exc.why) from None
    return out


_KML = "{http://www.opengis.net/kml/2.2}"


def _kml_coords(text: str | None, field: str) -> list[LonLat]:
    pts: list[LonLat] = []
    for tok in (text or "").split():
        parts = tok.split(",")
        try:
            pts.append((float(parts[0]), float(parts[1])))
        except (IndexError, ValueError):
            raise GeometryError(field, f"malformed coordinate {tok[:40]!r}") from None
    return pts


def parse_kml(data: bytes, max_features: int | None = None) -> list[Item]:
    """Polygon, LineString and Point placemarks to items. DTDs and entities are refused;
    more than `max_features` placemarks is `TooManyFeatures`, before any is built."""
    from lxml import etree

    if b"<!doctype" in data.lower():
        raise GeometryError("document", "DOCTYPE is not allowed")
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise GeometryError("document", f"not XML: {exc}") from None
    placemarks = list(root.iter(f"{_KML}Placemark", "Placemark"))
    if max_features is not None and len(placemarks) > max_features:
        raise TooManyFeatures(
            "document",
            f"{len(placemarks)} placemarks, more than limit_airspace_features={max_features}",
        )
    out: list[Item] = []
    for k, pm in enumerate(placemarks):
        where = f"Placemark[{k}]"
        props: dict[str, Any] = {}
        for d in pm.iter(f"{_KML}Data", "Data"):
            val = d.find(f"{_KML}value")
            if val is None:
                val = d.find("value")
            props[str(d.get("name"))] = (val.text or "").strip() if val is not None else ""
        try:
            poly = next(pm.iter(f"{_KML}Polygon", "Polygon"), None)
            line = next(pm.iter(f"{_KML}LineString", "LineString"), None)
            point = next(pm.iter(f"{_KML}Point", "Point"), None)
            if poly is not None:
                outer = next(poly.iter(f"{_KML}outerBoundaryIs", "outerBoundaryIs"), None)
                ring = None if outer is None else next(outer.iter(f"{_KML}coordinates"), None)
                ring = ring if ring is not None else next(poly.iter("coordinates"), None)
                coords: Any = [_kml_coords(None if ring is None else ring.text, "coordinates")]
                gtype = "Polygon"
            elif line is not None or point is not None:
                el = line if line is not None else point
                assert el is not None
                c = next(el.iter(f"{_KML}coordinates", "coordinates"), None)
                pts = _kml_coords(None if c is None else c.text, "coordinates")
                gtype = "LineString" if line is not None else "Point"
                coords = pts if line is not None else (pts[0] if pts else [])
            else:
                raise GeometryError("geometry", "no Polygon, LineString or Point")
            out.append(item_from(gtype, coords, props))
        except GeometryError as exc:
            raise GeometryError(f"{where}.{exc.field}", exc.why) from None
    return out
