"""Geodesy, once, on the WGS-84 ellipsoid (pyproj): distances, directions, local frames.

Rule: every coordinate pair is (lon, lat) in degrees — GeoJSON's order and pyproj's — and
every array argument comes lons first. Two kinds of local plane, both azimuthal-equidistant
(AEQD, x east and y north in metres), both exact on the ellipsoid:

- `Frame`: a PROJ AEQD transformer centred on a grid point (FRAME_GRID_DEG) near the items;
  airspace shapes are densified along their geodesic edges (`densify`) before projecting, so
  the answer does not depend on where exactly the frame is centred.
- `to_local` / `from_local`: the same projection written with geodesic inverse/forward
  from an exact centre (the launch fusion's samples, whose centre `fusion.frame_centre`
  snaps to the same grid).

AEQD is exact in distance from its centre; the azimuthal scale error at distance d is about
(d/R)^2 / 6 — under 1e-5 at 40 km (the farthest a grid point is from the data at
FRAME_GRID_DEG), 4e-3 at 1,000 km. `corridor_pieces` and `ellipse_polygon` build lon/lat
polygons for shapely, so they are not valid across the antimeridian or the poles (no served
theatre comes near).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import Geod, Proj, Transformer
from shapely.geometry import LineString, Polygon

__all__ = [
    "EARTH_R_M",
    "EDGE_STEP_M",
    "FRAME_GRID_DEG",
    "GEOD",
    "FloatArray",
    "Frame",
    "LonLat",
    "cap_of",
    "centre_lonlat",
    "corridor_pieces",
    "densify",
    "destination",
    "distance_m",
    "ellipse_polygon",
    "frame_key",
    "from_local",
    "path_line",
    "to_local",
]

LonLat = tuple[float, float]
FloatArray = npt.NDArray[np.float64]

GEOD = Geod(ellps="WGS84")
EARTH_R_M = 6_371_008.8  # mean radius: caps and index sizes, never a distance reported
EDGE_STEP_M = 5_000.0

#: Local frames are centred on this grid (degrees), one value for the whole hub, so that
#: frames are shared and their projections reused (a new volume and its neighbours in one
#: frame; a fused launch's frame rarely moves as reports arrive, so each report is projected
#: once) — projecting is the costliest step of both. 0.5, not the airspace's former 2.0: the
#: launch fusion fits a flat-earth trajectory *in* the frame, so its estimate depends on the
#: centre — at 2.0 the impact ellipse held the true impact in 177 of 200 trials, below the 90 %
#: it claims (tests/alerts/test_fusion.py) — whereas an airspace overlap does not depend on the
#: centre beyond centimetres (edges densified every EDGE_STEP_M; tests/deconflict).
FRAME_GRID_DEG = 0.5


def distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Geodesic distance in metres between two (lon, lat) points."""
    _a, _b, d = GEOD.inv(lon1, lat1, lon2, lat2)
    return float(d)


def destination(lon: float, lat: float, azimuth_deg: float, dist_m: float) -> LonLat:
    """The (lon, lat) reached going `dist_m` metres along the geodesic at `azimuth_deg`
    (clockwise from north)."""
    lon2, lat2, _b = GEOD.fwd(lon, lat, azimuth_deg, dist_m)
    return float(lon2), float(lat2)


def to_local(
    lon0: float, lat0: float, lons: Sequence[float] | FloatArray, lats: Sequence[float] | FloatArray
) -> tuple[FloatArray, FloatArray]:
    """(x east, y north) in metres of each point in the AEQD frame centred on (lon0, lat0)."""
    lo = np.asarray(lons, dtype=np.float64)
    la = np.asarray(lats, dtype=np.float64)
    az, _back, dist = GEOD.inv(np.full(la.shape, lon0), np.full(la.shape, lat0), lo, la)
    azr = np.radians(np.asarray(az, dtype=np.float64))
    d = np.asarray(dist, dtype=np.float64)
    return d * np.sin(azr), d * np.cos(azr)


def from_local(
    lon0: float, lat0: float, xs: Sequence[float] | FloatArray, ys: Sequence[float] | FloatArray
) -> tuple[FloatArray, FloatArray]:
    """(lons, lats) of local AEQD points; inverse of `to_local`."""
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    az = np.degrees(np.arctan2(x, y))
    d = np.hypot(x, y)
    lon, lat, _back = GEOD.fwd(np.full(x.shape, lon0), np.full(x.shape, lat0), az, d)
    return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)


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
FRAME_GRID_DEG = 0.5


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


def ellipse_polygon(
    lon: float,
    lat: float,
    semi_major_m: float,
    semi_minor_m: float,
    orientation_deg: float,
    n: int = 48,
) -> Polygon:
    """Ellipse centred at (lon, lat), major axis at `orientation_deg` clockwise from north."""
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    a = max(semi_major_m, 1.0)
    b = max(semi_minor_m, 1.0)
    th = math.radians(orientation_deg)
    # Along-major unit vector is (sin th, cos th) in (east, north).
    u = a * np.cos(t)
    v = b * np.sin(t)
    x = u * math.sin(th) + v * math.cos(th)
    y = u * math.cos(th) - v * math.sin(th)
    lons, lats = from_local(lon, lat, x, y)
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
    lons: Sequence[float], lats: Sequence[float], half_widths_m: Sequence[float]
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
    lon_c, lat_c, _back = GEOD.fwd(
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


def path_line(lons: Sequence[float], lats: Sequence[float]) -> LineString:
    return LineString(list(zip(lons, lats, strict=True)))
