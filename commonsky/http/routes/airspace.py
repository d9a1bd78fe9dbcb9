"""`POST /api/airspace`: GeoJSON or KML airspace in, each feature checked by the
deconfliction desk and stored as the TAK drawing clients will see."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from commonsky.deconflict.formats import parse_geojson, parse_kml
from commonsky.desks.drawings import geojson_to_cot_detail
from commonsky.http.base import Api, JSONResponse, decode_json
from commonsky.model import CotEvent, Point
from commonsky.protocol.cot import quote


def routes(api: Api) -> list[BaseRoute]:
    return [Route("/api/airspace", api.party_route(post_airspace), methods=["POST"])]


async def post_airspace(api: Api, request: Request, party: str) -> Response:
    data = await api.body(request)
    # A GeometryError is answered by its own hints (400; 413 for TooManyFeatures).
    if data.lstrip()[:1] == b"<":  # KML (parsed with DTDs and entities refused)
        shapes = parse_kml(data, api.max_features)
        features: list[Any] = [{"properties": {}} for _ in shapes]
    else:
        doc = decode_json(data)
        shapes = parse_geojson(doc, api.max_features)
        features = doc["features"] if doc.get("type") == "FeatureCollection" else [doc]
    # Every feature is checked before any is stored. The work is bounded per request
    # (limit_airspace_features), and relaying goes on between features: each is screened
    # against every other party's items, and each conflict it raises is a stored,
    # recorded notice.
    events = []
    for f, shape in zip(features, shapes, strict=True):
        event = api.as_tak(feature_event(f, shape, api.hub.clock()))
        api.services.airspace_validate(party, event)
        events.append(event)
        await asyncio.sleep(0)
    made = []
    for event in events:
        made.append(api.accept(party, event))
        await asyncio.sleep(0)
    return JSONResponse(made, status_code=201)


def feature_event(feature: Any, shape: Any, now: float) -> CotEvent:
    """A GeoJSON airspace feature (with its checked shape, deconflict/shapes.py) as the TAK
    drawing clients will see: `u-d-f` for a polygon, corridor or line, `u-d-c-c` for a
    circular volume, `u-d-p` for a point or circular site."""
    from commonsky.deconflict.shapes import Line, Site, Volume

    props = dict(feature.get("properties") or {}) if isinstance(feature, dict) else {}
    uid = str(props.pop("uid", "") or f"airspace-{uuid.uuid4().hex[:12]}")
    callsign = str(props.pop("callsign", "") or uid)
    start, stale = now, now + 86400.0
    inner: Any = shape.shape if isinstance(shape, Volume | Site) else None
    # The checked shape, not the raw properties, says what the TAK drawing carries (levels
    # given as flight levels, KML's ExtendedData and GeoJSON all end up in metres).
    if isinstance(shape, Volume):
        start, stale = shape.start_s, shape.end_s
        props.update(
            item="volume",
            floor_m=shape.floor_m,
            ceiling_m=shape.ceiling_m,
            start=shape.start_s,
            end=shape.end_s,
        )
        props.pop("floor_fl", None), props.pop("ceiling_fl", None)
        if shape.kind:
            props["kind"] = shape.kind
    elif isinstance(shape, Line):
        props.update(item="line", left_party=shape.left_party, right_party=shape.right_party)
    else:
        props.update(item="site", floor_m=shape.floor_m, ceiling_m=shape.ceiling_m)
        props.pop("floor_fl", None), props.pop("ceiling_fl", None)
    cot_type, centre, coords = _drawing(shape, inner, props)
    detail = geojson_to_cot_detail(props, coords if cot_type == "u-d-f" else [])
    detail += f'<contact callsign="{quote(callsign)}"/>'
    return CotEvent(
        uid=uid,
        type=cot_type,
        time=now,
        start=min(start, now),
        stale=max(stale, now + 1.0),
        how="h-e",
        point=Point(centre[1], centre[0]),
        detail=detail,
    )


def _drawing(
    shape: Any, inner: Any, props: dict[str, Any]
) -> tuple[str, tuple[float, float], list[tuple[float, float]]]:
    """The CoT drawing type, its point (lon, lat) and its vertices (lon, lat) for a shape;
    a circle's radius goes into `props`."""
    from commonsky.deconflict.shapes import Circle, Corridor, Line, Volume
    from commonsky.deconflict.shapes import Point as GPoint
    from commonsky.deconflict.shapes import Polygon as GPolygon

    coords: list[tuple[float, float]] = []
    centre = (0.0, 0.0)
    cot_type = "u-d-f"
    if isinstance(shape, Line):
        coords = list(shape.path)
    elif isinstance(inner, GPolygon):
        coords = list(inner.ring)
        if coords[0] != coords[-1]:
            coords.append(coords[0])
    elif isinstance(inner, Corridor):
        coords = list(inner.path)
    elif isinstance(inner, Circle):
        centre = inner.centre
        props["radius_m"] = inner.radius_m
        cot_type = "u-d-c-c" if isinstance(shape, Volume) else "u-d-p"
    elif isinstance(inner, GPoint):
        centre = inner.at
        cot_type = "u-d-p"
    if coords:
        centre = coords[0]
    return cot_type, centre, coords
