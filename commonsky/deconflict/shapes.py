# Rule: airspace items (shapes, volumes, lines, sites) are typed, frozen and checked when
# built: a refusal always names the field at fault. Geometry is exact on the WGS-84 earth.
#
# Coordinates are (lon, lat) in degrees, GeoJSON order. Polygon edges are geodesics: before
# any planar operation they are densified along the geodesic (every EDGE_STEP_M at most), then
# projected into a local azimuthal-equidistant frame (pyproj) centred on the items compared,
# where shapely does the set operations; results are projected back to (lon, lat). Because
# the frame is centred on the items, the antimeridian and the poles are ordinary places, and
# because the edges are densified, the answer does not depend (beyond millimetres) on where
# exactly the frame is centred. Circles are geodesic circles (points at the radius on 72
# azimuths); corridors are a polyline buffered by half the width in the frame.
#
# Frames and geodesy are commonsky/geo.py; reading GeoJSON and KML is formats.py.

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import msgspec
import numpy as np
import shapely

from commonsky.errors import CommonSkyError
from commonsky.geo import EARTH_R_M, GEOD, FloatArray, Frame, LonLat, cap_of, densify
from commonsky.protocol.bounds import MAX_TIME_S, MIN_TIME_S

MAX_ACROSS_M = 2_000_000.0  # "absurdly large": more than 2,000 km across
CIRCLE_POINTS = 72
VolumeKind = Literal["operating-area", "strike-area", "route", "reservation"]


class GeometryError(CommonSkyError, ValueError):
    """An airspace item refused (the sender's document is at fault: HTTP 400); `field`
    names the part at fault, `why` says what is wrong with it."""

    http_status = 400
    reason = "geometry"

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")
        self.field = field
        self.why = why


class TooManyFeatures(GeometryError):
    """A document with more features (placemarks) than the caller allows in one go."""

    http_status = 413


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
