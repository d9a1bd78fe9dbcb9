# Rule: every metric computation in the alerts package happens in one local frame — an
# azimuthal-equidistant (AEQD) projection on the WGS-84 ellipsoid centred on a chosen point
# (x east, y north, metres) — and only lat/lon leaves this module. Geod.inv/fwd are vectorised
# and exact on the ellipsoid, so no per-call Transformer set-up is needed.
#
# Limits: AEQD distorts bearings away from its centre (well under 1 % within ~1,000 km), and
# polygons are handled in lon/lat degrees by shapely, so nothing here is valid across the
# antimeridian or the poles — none of the served theatres (Korea/Japan, Ukraine) come near.

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import Geod
from shapely.geometry import LineString, Polygon

FloatArray = npt.NDArray[np.float64]

WGS84 = Geod(ellps="WGS84")


def to_local(
    lat0: float, lon0: float, lats: Sequence[float] | FloatArray, lons: Sequence[float] | FloatArray
) -> tuple[FloatArray, FloatArray]:
    """(x east, y north) in metres of each point in the AEQD frame centred on (lat0, lon0)."""
    la = np.asarray(lats, dtype=np.float64)
    lo = np.asarray(lons, dtype=np.float64)
    az, _back, dist = WGS84.inv(np.full(la.shape, lon0), np.full(la.shape, lat0), lo, la)
    azr = np.radians(np.asarray(az, dtype=np.float64))
    d = np.asarray(dist, dtype=np.float64)
    return d * np.sin(azr), d * np.cos(azr)


def from_local(
    lat0: float, lon0: float, xs: Sequence[float] | FloatArray, ys: Sequence[float] | FloatArray
) -> tuple[FloatArray, FloatArray]:
    """(lats, lons) of local AEQD points; inverse of `to_local`."""
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    az = np.degrees(np.arctan2(x, y))
    d = np.hypot(x, y)
    lon, lat, _back = WGS84.fwd(np.full(x.shape, lon0), np.full(x.shape, lat0), az, d)
    return np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    _a, _b, d = WGS84.inv(lon1, lat1, lon2, lat2)
    return float(d)


def destination(lat: float, lon: float, azimuth_deg: float, dist_m: float) -> tuple[float, float]:
    lon2, lat2, _b = WGS84.fwd(lon, lat, azimuth_deg, dist_m)
    return float(lat2), float(lon2)


def ellipse_polygon(
    lat: float,
    lon: float,
    semi_major_m: float,
    semi_minor_m: float,
    orientation_deg: float,
    n: int = 48,
) -> Polygon:
    """Ellipse centred at (lat, lon), major axis at `orientation_deg` clockwise from north."""
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    a = max(semi_major_m, 1.0)
    b = max(semi_minor_m, 1.0)
    th = math.radians(orientation_deg)
    # Along-major unit vector is (sin th, cos th) in (east, north).
    u = a * np.cos(t)
    v = b * np.sin(t)
    x = u * math.sin(th) + v * math.cos(th)
    y = u * math.cos(th) - v * math.sin(th)
    lats, lons = from_local(lat, lon, x, y)
    polygon: Polygon = shapely.polygons(np.column_stack([lons, lats]))
    return polygon


#: Vertices of each geodesic disc a corridor is built from. They lie on the circle of radius
#: r / cos(pi / DISC_POINTS), so the polygon's edges touch the disc of radius r from outside,
#: plus 0.5 % because the edges are straight in lon/lat, not geodesics (for discs up to
#: ~100 km that bows them by far less). A warning area so grows by at most 2.5 % of its width
#: and never shrinks; 16 vertices cost half of 32.
DISC_POINTS = 16
_CIRCUMSCRIBE = 1.005 / math.cos(math.pi / DISC_POINTS)


def corridor_pieces(
    lats: Sequence[float], lons: Sequence[float], half_widths_m: Sequence[float]
) -> npt.NDArray[np.object_]:
    """The lon/lat area swept by discs of growing radius along a path, as one convex piece per
    segment (the hull of the discs at its two ends; a single point gives its disc). Each piece
    contains its discs (see DISC_POINTS).

    Every disc is a true geodesic circle (Geod.fwd from its centre), all of them in one
    vectorised call, and the hulls are built by shapely in one call too: a warning engine asks
    this for every launch estimate, so it must not cost a Python loop per segment.
    """
    la = np.asarray(lats, dtype=np.float64)
    lo = np.asarray(lons, dtype=np.float64)
    w = np.maximum(np.asarray(half_widths_m, dtype=np.float64), 1.0) * _CIRCUMSCRIBE
    n = len(la)
    if n == 0:
        raise ValueError("empty path")
    az = np.linspace(0.0, 360.0, DISC_POINTS, endpoint=False)
    lon_c, lat_c, _back = WGS84.fwd(
        np.repeat(lo, DISC_POINTS),
        np.repeat(la, DISC_POINTS),
        np.tile(az, n),
        np.repeat(w, DISC_POINTS),
    )
    discs = np.stack([lon_c, lat_c], axis=1).reshape(n, DISC_POINTS, 2)
    pairs = discs if n == 1 else np.concatenate([discs[:-1], discs[1:]], axis=1)
    # A line through each piece's points has the same hull, and is far cheaper to build than a
    # multipoint (no point objects).
    hulls: npt.NDArray[np.object_] = shapely.convex_hull(shapely.linestrings(pairs))
    return hulls


def path_line(lats: Sequence[float], lons: Sequence[float]) -> LineString:
    return LineString(list(zip(lons, lats, strict=True)))
