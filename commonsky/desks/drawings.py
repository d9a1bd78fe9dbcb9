"""TAK drawings to airspace items: the CoT side of `airspace` and `site`.

| CoT type | becomes |
|---|---|
| `u-d-f` (freehand; closed = polygon) | volume polygon, or a line / route corridor when open |
| `u-d-r` (rectangle, four corners) | volume polygon |
| `u-d-c-c`, `u-d-c-e` (centre = event point, radius = `ellipse@major`) | volume circle |
| `b-m-r` (route; waypoints in `<link point>`) | route corridor |
| `u-d-p`, `b-m-p-s-p-i` (point) | protected site, radius `radius_m` (default 1 km) |
| `u-d-f-m` (telestration) — only with `<csky_airspace>` | as `u-d-f`, from its one stroke |
| `u-r-b-c-c` (range & bearing circle) — only with `<csky_airspace>` | volume circle |

Telestration (`u-d-f-m`) and the range & bearing tools are category `drawing`, not
airspace: a user's scribble is not an operating area. Only when its sender adds the
extension below does one become airspace (`model.category_of_event`); a telestration then
must be one stroke, read like a `u-d-f` from the `<link point>`s of the event escaped in its
`<link line=…>`.

Vertices come from `<link point="lat,lon[,hae]"/>` in order. What CoT has no words for comes
in our detail extension, documented in the README:

    <csky_airspace item="volume|line|site" kind="operating-area|strike-area|route|reservation"
        floor_m= ceiling_m= (or floor_fl= ceiling_fl=) start= end= (RFC 3339 or epoch s)
        width_m= radius_m= left_party= right_party=/>

Without times a volume lasts from the event's `start` to its `stale`; without levels it spans
the surface to 20 km. Errors are `RemoteProtocolError("bad_airspace", "<field>: <reason>")`.

A TAK drawing its sender did not declare airspace (no `<csky_airspace>`) is a user's shape
first: one whose geometry the conflict engine cannot hold (a freehand that crosses itself, a
route of one waypoint) is valid TAK traffic all the same, relayed and kept like any drawing
and not screened for conflicts (`screened_shape` gives None). A declared one is refused.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from commonsky.deconflict.formats import item_from
from commonsky.deconflict.shapes import GeometryError, Item
from commonsky.errors import RemoteProtocolError
from commonsky.model import AIRSPACE_EXTENSION, CotEvent
from commonsky.protocol.cot import detail_tree, stroke_events

DEFAULT_FLOOR_M = 0.0
DEFAULT_CEILING_M = 20_000.0
EXTENSION = AIRSPACE_EXTENSION


def _points(detail: etree._Element) -> list[list[float]]:
    points = []
    for index, link in enumerate(detail.iter("link")):
        raw = link.get("point")
        if raw is None:
            continue
        parts = raw.split(",")
        try:
            lat, lon = float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            raise RemoteProtocolError(
                "bad_airspace", f"detail.link[{index}].point: {raw[:40]!r} is not 'lat,lon'"
            ) from None
        points.append([lon, lat])
    return points


def airspace_from_cot(event: CotEvent) -> Item:
    """The airspace item a drawing event describes (or RemoteProtocolError)."""
    detail = detail_tree(event.detail)
    ext = detail.find(EXTENSION)
    props: dict[str, Any] = {str(k): v for k, v in ext.attrib.items()} if ext is not None else {}
    for name in ("floor_m", "ceiling_m", "floor_fl", "ceiling_fl", "width_m", "radius_m"):
        if name in props:
            props[name] = _number(props[name], name)
    kind = event.type
    if kind.startswith("u-d-f-m"):
        strokes = stroke_events(detail)
        if len(strokes) != 1:
            raise RemoteProtocolError(
                "bad_airspace",
                f"detail.link@line: an airspace telestration is one stroke, not {len(strokes)}",
            )
        stroke_detail = strokes[0].find("detail")
        points = _points(stroke_detail) if stroke_detail is not None else []
        kind = "u-d-f"
    else:
        points = _points(detail)
    geometry: tuple[str, Any]
    if kind.startswith(("u-d-p", "b-m-p-s-p-i")):
        props.setdefault("item", "site")
        props.setdefault("radius_m", 1000.0)
        geometry = ("Point", [event.point.lon, event.point.lat])
    elif kind.startswith(("u-d-c-c", "u-d-c-e", "u-r-b-c-c")):
        ellipse = detail.find("shape/ellipse")
        radius = props.get("radius_m")
        if radius is None and ellipse is not None:
            radius = _number(ellipse.get("major", ""), "shape.ellipse.major")
        if radius is None:
            raise RemoteProtocolError("bad_airspace", "radius_m: a circle needs a radius")
        props["radius_m"] = radius
        geometry = ("Point", [event.point.lon, event.point.lat])
    elif len(points) >= 2 and points[0] == points[-1]:
        if len(points) < 4:
            raise RemoteProtocolError("bad_airspace", "ring: fewer than 3 distinct points")
        geometry = ("Polygon", [points])
    elif kind.startswith("u-d-r") and len(points) == 4:
        geometry = ("Polygon", [[*points, points[0]]])
    elif len(points) >= 2:
        if props.get("item") != "line":
            props.setdefault("item", "volume")
            props.setdefault("kind", "route")
            props.setdefault("width_m", 2000.0)
        geometry = ("LineString", points)
    else:
        raise RemoteProtocolError("bad_airspace", "detail.link: a drawing needs vertices")
    if props.get("item", "volume") in ("volume",) or "item" not in props:
        props.setdefault("start", event.start)
        props.setdefault("end", event.stale)
        if not any(k in props for k in ("floor_m", "floor_fl")):
            props["floor_m"] = DEFAULT_FLOOR_M
        if not any(k in props for k in ("ceiling_m", "ceiling_fl")):
            props["ceiling_m"] = DEFAULT_CEILING_M
    try:
        return item_from(geometry[0], geometry[1], props)
    except GeometryError as exc:
        raise RemoteProtocolError("bad_airspace", str(exc)) from None


def screened_shape(event: CotEvent) -> Item | None:
    """`airspace_from_cot`, or None for an undeclared TAK drawing whose geometry the engine
    cannot hold (the module's header); a declared one's bad geometry is refused."""
    try:
        return airspace_from_cot(event)
    except RemoteProtocolError:
        if detail_tree(event.detail).find(EXTENSION) is not None:
            raise
        return None


def _number(raw: str, name: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise RemoteProtocolError("bad_airspace", f"{name}: {raw[:40]!r} is not a number") from None


def geojson_to_cot_detail(feature_props: dict[str, Any], coords: list[tuple[float, float]]) -> str:
    """Detail text for an airspace item that came from GeoJSON (so TAK clients see a shape)."""
    from commonsky.protocol.cot import quote

    links = "".join(f'<link point="{lat},{lon}"/>' for lon, lat in coords)
    attrs = "".join(
        f' {k}="{quote(str(v))}"'
        for k, v in sorted(feature_props.items())
        if k
        in (
            "item",
            "kind",
            "floor_m",
            "ceiling_m",
            "floor_fl",
            "ceiling_fl",
            "start",
            "end",
            "width_m",
            "radius_m",
            "left_party",
            "right_party",
        )
        and v is not None
    )
    return f'{links}<{EXTENSION}{attrs}/><strokeColor value="-65536"/>'
