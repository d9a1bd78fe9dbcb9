# Rule: airspace items are typed, frozen and checked when built: a refusal always names the
# field at fault. Geometry is exact on the WGS-84 earth.
#
# Coordinates are (lon, lat) in degrees, GeoJSON order. Polygon edges are geodesics: before
# any planar operation they are densified along the geodesic (every EDGE_STEP_M at most), then
# projected into a local azimuthal-equidistant frame (pyproj) centred on the items compared,
# where shapely does the set operations; results are projected back to (lon, lat). Because
# the frame is centred on the items, the antimeridian and the poles are ordinary places, and
# because the edges are densified, the answer does not depend (beyond millimetres) on where
# exactly the frame is centred. Circles are geodesic circles (points at the radius on 72
# azimuths); corridors are a polyline buffered by half the width in the frame.

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt
import shapely
from pyproj import Geod, Proj, Transformer

from commonsky import times
from commonsky.protocol.bounds import MAX_TIME_S, MIN_TIME_S

LonLat = tuple[float, float]
FloatArray = npt.NDArray[np.float64]

GEOD = Geod(ellps="WGS84")
EARTH_R_M = 6_371_008.8
MAX_ACROSS_M = 2_000_000.0  # "absurdly large": more than 2,000 km across
EDGE_STEP_M = 5_000.0
CIRCLE_POINTS = 72
VolumeKind = Literal["operating-area", "strike-area", "route", "reservation"]


class GeometryError(ValueError):
    """An airspace item refused; `field` names the part at fault."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class TooManyFeatures(GeometryError):
    """A document with more features (placemarks) than the caller allows in one go."""


def flight_level(fl: float) -> float:
    """Flight level (hundreds of feet) to metres."""
    return float(fl) * 30.48


def _check_point(field: str, p: LonLat) -> None:
    if len(p) != 2:
        raise GeometryError(field, f"expected [lon, lat], got {list(p)!r}")
    lon, lat = p
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise GeometryError(field, f"coordinate is not finite: {list(p)!r}")
    if not -90.0 <= lat <= 90.0:
        raise GeometryError(field, f"latitude {lat!r} outside [-90, 90]")
    if not -180.0 <= lon <= 180.0:
        raise GeometryError(field, f"longitude {lon!r} outside [-180, 180]")


def _unit(lon: FloatArray, lat: FloatArray) -> FloatArray:
    la, lo = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def cap_of(points: list[LonLat], pad_m: float = 0.0) -> tuple[FloatArray, float]:
    """(unit centre vector, angular radius in radians) of a cap covering the points."""
    arr = np.asarray(points, dtype=np.float64)
    u = _unit(arr[:, 0], arr[:, 1])
    c = u.sum(axis=0)
    n = float(np.linalg.norm(c))
    c = u[0] if n < 1e-9 else c / n
    ang = float(np.arccos(np.clip(u @ c, -1.0, 1.0)).max())
    return c, ang + pad_m / EARTH_R_M


def centre_lonlat(c: FloatArray) -> LonLat:
    return math.degrees(math.atan2(c[1], c[0])), math.degrees(
        math.asin(float(np.clip(c[2], -1, 1)))
    )


def _check_extent(
    field: str,
    points: list[LonLat],
    pad_m: float = 0.0,
    cap: tuple[FloatArray, float] | None = None,
) -> None:
    _, ang = cap_of(points, pad_m) if cap is None else cap
    if 2 * ang * EARTH_R_M > MAX_ACROSS_M:
        raise GeometryError(field, f"more than {MAX_ACROSS_M / 1000:.0f} km across")


def _ring_points(ring: tuple[LonLat, ...]) -> list[LonLat]:
    pts = [(float(x), float(y)) for x, y in ring]
    if len(pts) > 1 and pts[0] == pts[-1]:
        pts = pts[:-1]
    return pts


class Frame:
    """A local azimuthal-equidistant projection centred on (lon0, lat0)."""

    def __init__(self, lon0: float, lat0: float) -> None:
        self.lon0, self.lat0 = lon0, lat0
        # Centres are snapped to a FRAME_GRID_DEG grid so projections can be reused; any centre
        # near the items serves (edges are densified, so the answer does not move).
        self.key = frame_key(lon0, lat0)
        self._tr = _transformer(*self.key)

    @property
    def proj(self) -> Proj:
        """The same projection as a pyproj Proj (fwd/inv use a cached Transformer)."""
        return _proj(*self.key)

    @classmethod
    def around(cls, *caps: tuple[FloatArray, float]) -> Frame:
        c: FloatArray = np.sum([cap[0] for cap in caps], axis=0)
        n = float(np.linalg.norm(c))
        return cls(*centre_lonlat(caps[0][0] if n < 1e-9 else c / n))

    def fwd(self, lonlat: FloatArray) -> FloatArray:
        x, y = self._tr.transform(lonlat[:, 0], lonlat[:, 1])
        return np.column_stack([x, y])

    def inv(self, xy: FloatArray) -> FloatArray:
        lon, lat = self._tr.transform(xy[:, 0], xy[:, 1], direction="INVERSE")
        return np.column_stack([lon, lat])

    def to_geojson(self, g: shapely.Geometry) -> dict[str, Any] | None:
        """A planar geometry in this frame back to a GeoJSON geometry in (lon, lat)."""
        return self.to_geojson_many([g])[0]

    def to_geojson_many(self, gs: list[shapely.Geometry]) -> list[dict[str, Any] | None]:
        """Several planar geometries back to GeoJSON, projected in one call."""
        arr = np.asarray(gs, dtype=object)
        back = shapely.transform(shapely.normalize(arr), self.inv)
        out: list[dict[str, Any] | None] = []
        for g, b in zip(gs, back, strict=True):
            out.append(None if g.is_empty else _mapping(b))
        return out


def _mapping(g: shapely.Geometry) -> dict[str, Any]:
    """shapely.geometry.mapping, the same output, without its slow path for polygons."""
    if not isinstance(g, shapely.Polygon) or g.is_empty or shapely.has_z(g):
        return dict(shapely.geometry.mapping(g))
    rings = (shapely.get_coordinates(r).tolist() for r in (g.exterior, *g.interiors))
    return {"type": "Polygon", "coordinates": tuple(tuple(map(tuple, r)) for r in rings)}


#: Frame centres snap to this grid. Coarse, so that one new volume's conflicts with its
#: neighbours mostly share one frame (one projection call each way instead of one per pair,
#: and a stored volume's projection is reused); with edges densified every EDGE_STEP_M, an
#: overlap worked out in a frame up to ~1.4 steps away moves by centimetres (tested).
FRAME_GRID_DEG = 2.0


def frame_key(lon0: float, lat0: float) -> tuple[float, float]:
    """The grid point a frame centred near (lon0, lat0) is snapped to."""
    return round(lon0 / FRAME_GRID_DEG) * FRAME_GRID_DEG, round(
        lat0 / FRAME_GRID_DEG
    ) * FRAME_GRID_DEG


@functools.lru_cache(maxsize=8192)
def _transformer(lon0: float, lat0: float) -> Transformer:
    # The same operation as _proj's (bit-identical results), at a seventh of the set-up cost.
    return Transformer.from_pipeline(
        f"+proj=aeqd +lon_0={lon0!r} +lat_0={lat0!r} +ellps=WGS84 +units=m"
    )


@functools.lru_cache(maxsize=256)
def _proj(lon0: float, lat0: float) -> Proj:
    return Proj(proj="aeqd", lon_0=lon0, lat_0=lat0, datum="WGS84", units="m")


def densify(points: list[LonLat], closed: bool) -> FloatArray:
    """Vertices with extra points along each geodesic edge, at most EDGE_STEP_M apart.

    All edges in two vectorised calls (their lengths and azimuths, then every point along
    them): a new volume's outline is built on the insert-and-check path.
    """
    seq = np.asarray([*points, points[0]] if closed else points, dtype=np.float64)
    start, end = seq[:-1], seq[1:]
    az, _, dist = GEOD.inv(start[:, 0], start[:, 1], end[:, 0], end[:, 1])
    extra = np.minimum(np.asarray(dist) // EDGE_STEP_M, 400).astype(np.int64)
    # Point j of edge e lies j / (extra[e] + 1) of the way along it (j = 0 is its vertex).
    edge = np.repeat(np.arange(len(extra)), extra + 1)
    j = np.arange(len(edge)) - np.repeat(np.cumsum(extra + 1) - (extra + 1), extra + 1)
    along = np.asarray(dist)[edge] * j / (extra[edge] + 1)
    lon, lat, _ = GEOD.fwd(start[edge, 0], start[edge, 1], np.asarray(az)[edge], along)
    out = np.column_stack([lon, lat])
    out[j == 0] = start  # the vertices exactly as given
    if not closed:
        out = np.vstack([out, seq[-1:]])
    return out


@functools.lru_cache(maxsize=65_536)
def _polygon_outline(ring: tuple[LonLat, ...]) -> FloatArray:
    return densify(_ring_points(ring), closed=True)


@functools.lru_cache(maxsize=65_536)
def _polygon_cap(ring: tuple[LonLat, ...]) -> tuple[FloatArray, float]:
    return cap_of(_ring_points(ring))


class Polygon(msgspec.Struct, frozen=True, tag="polygon"):
    ring: tuple[LonLat, ...]  # outer ring, closing point optional

    def __post_init__(self) -> None:
        pts = _ring_points(self.ring)
        for k, p in enumerate(pts):
            _check_point(f"ring[{k}]", p)
        if len(set(pts)) < 3:
            raise GeometryError("ring", f"needs at least 3 distinct points, got {len(set(pts))}")
        # Warm the caches cap() and outline() read (a ring built in code from lists is not
        # hashable: computed afresh then).
        hashable = isinstance(self.ring, tuple) and all(isinstance(p, tuple) for p in self.ring)
        cap = _polygon_cap(self.ring) if hashable else cap_of(pts)
        _check_extent("ring", pts, cap=cap)
        outline = _polygon_outline(self.ring) if hashable else densify(pts, closed=True)
        frame = Frame.around(cap)
        poly = shapely.Polygon(frame.fwd(outline))
        if not poly.is_valid:
            raise GeometryError("ring", f"not a simple polygon ({shapely.is_valid_reason(poly)})")
        if poly.area < 1.0:
            raise GeometryError("ring", "degenerate polygon (no area)")

    def outline(self) -> FloatArray:
        return _polygon_outline(self.ring)

    def cap(self) -> tuple[FloatArray, float]:
        c, ang = _polygon_cap(self.ring)
        return c.copy(), ang

    def planar(self, frame: Frame) -> shapely.Geometry:
        return shapely.Polygon(frame.fwd(self.outline()))


class Circle(msgspec.Struct, frozen=True, tag="circle"):
    centre: LonLat
    radius_m: float

    def __post_init__(self) -> None:
        _check_point("centre", self.centre)
        if not (math.isfinite(self.radius_m) and self.radius_m > 0):
            raise GeometryError("radius_m", f"must be a positive number, got {self.radius_m!r}")
        if 2 * self.radius_m > MAX_ACROSS_M:
            raise GeometryError("radius_m", f"more than {MAX_ACROSS_M / 1000:.0f} km across")

    def outline(self) -> FloatArray:
        az = np.linspace(0.0, 360.0, CIRCLE_POINTS, endpoint=False)
        lon = np.full(CIRCLE_POINTS, self.centre[0])
        lat = np.full(CIRCLE_POINTS, self.centre[1])
        lo, la, _ = GEOD.fwd(lon, lat, az, np.full(CIRCLE_POINTS, self.radius_m))
        return np.column_stack([lo, la])

    def cap(self) -> tuple[FloatArray, float]:
        c, _ = cap_of([self.centre])
        return c, self.radius_m / EARTH_R_M * 1.01

    def planar(self, frame: Frame) -> shapely.Geometry:
        return shapely.Polygon(frame.fwd(self.outline()))


class Corridor(msgspec.Struct, frozen=True, tag="corridor"):
    path: tuple[LonLat, ...]
    width_m: float  # full width; the corridor extends width_m / 2 either side

    def __post_init__(self) -> None:
        _check_path("path", self.path)
        if not (math.isfinite(self.width_m) and self.width_m > 0):
            raise GeometryError("width_m", f"must be a positive number, got {self.width_m!r}")
        _check_extent("path", list(self.path), self.width_m / 2)

    def outline(self) -> FloatArray:
        return densify(list(self.path), closed=False)

    def cap(self) -> tuple[FloatArray, float]:
        return cap_of(list(self.path), self.width_m / 2 * 1.01)

    def planar(self, frame: Frame) -> shapely.Geometry:
        line = shapely.LineString(frame.fwd(self.outline()))
        return line.buffer(self.width_m / 2, quad_segs=8)


class Point(msgspec.Struct, frozen=True, tag="point"):
    at: LonLat

    def __post_init__(self) -> None:
        _check_point("at", self.at)

    def outline(self) -> FloatArray:
        return np.asarray([self.at], dtype=np.float64)

    def cap(self) -> tuple[FloatArray, float]:
        return cap_of([self.at])

    def planar(self, frame: Frame) -> shapely.Geometry:
        return shapely.Point(frame.fwd(self.outline())[0])


def _check_path(field: str, path: tuple[LonLat, ...]) -> None:
    for k, p in enumerate(path):
        _check_point(f"{field}[{k}]", p)
    if len(path) < 2 or len(set(path)) < 2:
        raise GeometryError(field, "needs at least 2 distinct points")


Shape = Polygon | Circle | Corridor


def _check_times_and_levels(floor_m: float, ceiling_m: float, start_s: float, end_s: float) -> None:
    for name, v in (("floor_m", floor_m), ("ceiling_m", ceiling_m)):
        if not math.isfinite(v) or not -1_000.0 <= v <= 100_000.0:
            raise GeometryError(name, f"{v!r} outside [-1000, 100000] m")
    if floor_m >= ceiling_m:
        raise GeometryError("floor_m", f"floor {floor_m:g} m is not below ceiling {ceiling_m:g} m")
    for name, v in (("start_s", start_s), ("end_s", end_s)):
        # The times every CoT and protobuf client can carry (see protocol/bounds.py).
        if not MIN_TIME_S <= v <= MAX_TIME_S:
            raise GeometryError(name, f"{v!r} is not an epoch time in 1970-01-01..9999-12-31 (UTC)")
    if end_s <= start_s:
        raise GeometryError("end_s", f"end {end_s:g} is not after start {start_s:g}")


class Volume(msgspec.Struct, frozen=True, kw_only=True):
    """A 4-D region: a shape, an altitude band [floor, ceiling) in metres, a time window."""

    shape: Shape
    floor_m: float
    ceiling_m: float
    start_s: float  # epoch seconds
    end_s: float
    kind: VolumeKind | None = None

    def __post_init__(self) -> None:
        _check_times_and_levels(self.floor_m, self.ceiling_m, self.start_s, self.end_s)


class Line(msgspec.Struct, frozen=True, kw_only=True):
    """A deconfliction line; `left_party` is responsible on its left, seen along the path."""

    path: tuple[LonLat, ...]
    left_party: str
    right_party: str

    def __post_init__(self) -> None:
        _check_path("path", self.path)
        _check_extent("path", list(self.path))
        if not self.left_party or not self.right_party:
            raise GeometryError("left_party" if not self.left_party else "right_party", "empty")
        if self.left_party == self.right_party:
            raise GeometryError("right_party", "same party on both sides")

    def side_region(self, frame: Frame, side: Literal["left", "right"], reach_m: float) -> Any:
        """The band of the given side of the line, reach_m deep (flat at the line's ends)."""
        line = shapely.LineString(frame.fwd(densify(list(self.path), closed=False)))
        depth = reach_m if side == "left" else -reach_m
        return line.buffer(depth, single_sided=True)

    def cap(self) -> tuple[FloatArray, float]:
        return cap_of(list(self.path))


class Site(msgspec.Struct, frozen=True, kw_only=True):
    """A protected site on the ground; a bare point is protected within POINT_SITE_RADIUS_M."""

    shape: Polygon | Circle | Point
    floor_m: float = -1_000.0
    ceiling_m: float = 100_000.0

    def __post_init__(self) -> None:
        _check_times_and_levels(self.floor_m, self.ceiling_m, 0.0, 1.0)

    def area(self) -> Polygon | Circle:
        if isinstance(self.shape, Point):
            return Circle(centre=self.shape.at, radius_m=POINT_SITE_RADIUS_M)
        return self.shape


POINT_SITE_RADIUS_M = 1_000.0

# ---------------------------------------------------------------------------------------------
# GeoJSON and KML. Properties (GeoJSON `properties`, KML `ExtendedData/Data name=`):
#   item         "volume" | "line" | "site" (default: "line" for a LineString with
#                left_party, "site" for a Point without floor/ceiling, else "volume")
#   floor_m, ceiling_m      metres; or floor_fl, ceiling_fl (flight levels)
#   start, end   epoch seconds or RFC 3339 text (volumes)
#   kind         operating-area | strike-area | route | reservation (volumes)
#   radius_m     a Point with a radius is a circle; width_m: a LineString volume is a corridor
#   left_party, right_party   (lines)
# ---------------------------------------------------------------------------------------------

Item = Volume | Line | Site


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
            raise GeometryError(f"{where}.{exc.field}", exc.reason) from None
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
            raise GeometryError(f"{where}.{exc.field}", exc.reason) from None
    return out
