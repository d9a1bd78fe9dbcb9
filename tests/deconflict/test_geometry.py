# Rule: airspace items refuse bad input naming the field, parse from GeoJSON and locked-down
# KML, and intersect correctly anywhere on earth (antimeridian included).

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from commonsky.deconflict.formats import parse_geojson, parse_kml
from commonsky.deconflict.shapes import (
    Circle,
    Corridor,
    GeometryError,
    Line,
    Point,
    Polygon,
    Site,
    Volume,
    flight_level,
)
from commonsky.geo import EDGE_STEP_M, FRAME_GRID_DEG, GEOD, Frame, densify

SQUARE = ((10.0, 50.0), (10.5, 50.0), (10.5, 50.5), (10.0, 50.5))


def _vol(**kw: object) -> Volume:
    args: dict[str, object] = {
        "shape": Polygon(ring=SQUARE),
        "floor_m": 0.0,
        "ceiling_m": 3000.0,
        "start_s": 0.0,
        "end_s": 3600.0,
    }
    args.update(kw)
    return Volume(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Polygon(ring=((0.0, 0.0), (1.0, 1.0), (1.0, 0.0), (0.0, 1.0))), "ring"),
        (lambda: Polygon(ring=((0.0, 0.0), (1.0, 0.0))), "ring"),
        (lambda: Polygon(ring=((0.0, 0.0), (1.0, 0.0), (2.0, 0.0))), "ring"),
        (lambda: Polygon(ring=((0.0, 0.0), (1.0, 0.0), (1.0, math.nan))), "ring[2]"),
        (lambda: Polygon(ring=((0.0, 0.0), (1.0, 0.0), (1.0, 91.0))), "ring[2]"),
        (lambda: Polygon(ring=((0.0, 0.0), (30.0, 0.0), (30.0, 20.0))), "ring"),
        (lambda: Circle(centre=(0.0, 0.0), radius_m=-5.0), "radius_m"),
        (lambda: Corridor(path=((0.0, 0.0),), width_m=100.0), "path"),
        (lambda: _vol(floor_m=3000.0, ceiling_m=1000.0), "floor_m"),
        (lambda: _vol(start_s=10.0, end_s=5.0), "end_s"),
        (lambda: _vol(end_s=math.inf), "end_s"),
        (
            lambda: Line(path=((0.0, 0.0), (1.0, 1.0)), left_party="A", right_party="A"),
            "right_party",
        ),
    ],
)
def test_refusals_name_the_field(build: object, field: str) -> None:
    with pytest.raises(GeometryError) as err:
        build()  # type: ignore[operator]
    assert err.value.field == field


def test_flight_levels() -> None:
    assert flight_level(350) == pytest.approx(10668.0)


def test_antimeridian_polygon_intersection_has_the_right_area() -> None:
    a = Polygon(ring=((179.8, -1.0), (-179.8, -1.0), (-179.8, 1.0), (179.8, 1.0)))
    b = Polygon(ring=((179.9, -1.0), (-179.7, -1.0), (-179.7, 1.0), (179.9, 1.0)))
    frame = Frame.around(a.cap(), b.cap())
    pa = a.planar(frame)
    inter = shapely.intersection(pa, b.planar(frame))
    # 0.4 deg x 2 deg box and 0.3 deg of overlap in longitude, near the equator.
    assert pa.area == pytest.approx(0.4 * 2 * 111_320**2, rel=0.01)
    assert inter.area == pytest.approx(0.3 * 2 * 111_320**2, rel=0.01)
    geo = frame.to_geojson(inter)
    assert geo is not None
    lons = [p[0] for p in geo["coordinates"][0]]
    assert all(abs(x) > 179.79 for x in lons)
    # The overlap runs from 179.9 E across the antimeridian to 179.8 W.
    assert max(x for x in lons if x < 0) == pytest.approx(-179.8, abs=1e-6)
    assert min(x for x in lons if x > 0) == pytest.approx(179.9, abs=1e-6)


def test_circle_near_the_pole_is_a_circle() -> None:
    c = Circle(centre=(0.0, 89.9), radius_m=50_000.0)
    frame = Frame.around(c.cap())
    assert c.planar(frame).area == pytest.approx(math.pi * 50_000.0**2, rel=0.01)


GEOJSON = b"""{"type": "FeatureCollection", "features": [
 {"type": "Feature", "geometry": {"type": "Polygon", "coordinates":
   [[[36.0, 34.5], [36.5, 34.5], [36.5, 35.0], [36.0, 35.0], [36.0, 34.5]]]},
  "properties": {"floor_fl": 100, "ceiling_m": 9000, "start": "2026-01-01T00:00:00Z",
                 "end": 1767229200, "kind": "operating-area"}},
 {"type": "Feature",
  "geometry": {"type": "LineString", "coordinates": [[38.0, 35.5], [40.1, 35.3]]},
  "properties": {"left_party": "RUS", "right_party": "USA"}},
 {"type": "Feature", "geometry": {"type": "Point", "coordinates": [38.27, 34.55]},
  "properties": {"radius_m": 5000}}
]}"""


def test_geojson() -> None:
    vol, line, site = parse_geojson(GEOJSON)
    assert isinstance(vol, Volume)
    assert vol.floor_m == pytest.approx(3048.0)
    assert vol.start_s == 1767225600.0
    assert vol.kind == "operating-area"
    assert isinstance(line, Line)
    assert line.left_party == "RUS"
    assert isinstance(site, Site)
    assert isinstance(site.shape, Circle)


def test_geojson_errors_name_feature_and_property() -> None:
    bad = GEOJSON.replace(b'"ceiling_m": 9000', b'"ceiling_m": "high"')
    with pytest.raises(GeometryError, match=r"features\[0\]\.properties\.ceiling_m"):
        parse_geojson(bad)
    bad = GEOJSON.replace(b'"end": 1767229200', b'"end": 1767225000')
    with pytest.raises(GeometryError, match=r"features\[0\]\..*end"):
        parse_geojson(bad)


KML = b"""<?xml version="1.0" encoding="UTF-8"?>
<kml xmlns="http://www.opengis.net/kml/2.2"><Document>
<Placemark><name>A</name>
 <ExtendedData><Data name="floor_m"><value>0</value></Data>
  <Data name="ceiling_m"><value>5000</value></Data>
  <Data name="start"><value>0</value></Data>
  <Data name="end"><value>3600</value></Data></ExtendedData>
 <Polygon><outerBoundaryIs><LinearRing><coordinates>
  36.0,34.5,0 36.5,34.5,0 36.5,35.0,0 36.0,34.5,0</coordinates></LinearRing>
 </outerBoundaryIs></Polygon>
</Placemark>
<Placemark><ExtendedData><Data name="left_party"><value>RUS</value></Data>
 <Data name="right_party"><value>USA</value></Data></ExtendedData>
 <LineString><coordinates>38.0,35.5 40.1,35.3</coordinates></LineString></Placemark>
<Placemark><Point><coordinates>38.27,34.55,0</coordinates></Point></Placemark>
</Document></kml>"""


def test_kml() -> None:
    vol, line, site = parse_kml(KML)
    assert isinstance(vol, Volume)
    assert vol.ceiling_m == 5000.0
    assert isinstance(line, Line)
    assert isinstance(site, Site)
    assert isinstance(site.shape, Point)


def test_kml_refuses_doctype_and_entities() -> None:
    evil = b"""<?xml version="1.0"?><!DOCTYPE kml [<!ENTITY x "boom">]>
<kml xmlns="http://www.opengis.net/kml/2.2"><Placemark><name>&x;</name></Placemark></kml>"""
    with pytest.raises(GeometryError, match="DOCTYPE"):
        parse_kml(evil)
    with pytest.raises(GeometryError, match="document"):
        parse_kml(b"<kml><unclosed></kml>")


def _densify_edge_by_edge(points: list[tuple[float, float]], closed: bool) -> list[tuple]:
    """Reference: each edge on its own, with pyproj's npts (points between its ends)."""
    seq = [*points, points[0]] if closed else list(points)
    out: list[tuple[float, float]] = []
    for (lo1, la1), (lo2, la2) in itertools.pairwise(seq):
        out.append((lo1, la1))
        _, _, dist = GEOD.inv(lo1, la1, lo2, la2)
        n = min(int(dist // EDGE_STEP_M), 400)
        if n:
            out.extend(GEOD.npts(lo1, la1, lo2, la2, n))
    if not closed:
        out.append(seq[-1])
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-180.0, 180.0), st.floats(-85.0, 85.0)), min_size=2, max_size=6),
    st.floats(0.001, 3.0),
    st.booleans(),
)
def test_densify_matches_edge_by_edge_geodesics(
    offsets: list[tuple[float, float]], scale: float, closed: bool
) -> None:
    # Small shapes anywhere (the antimeridian and high latitudes included): the outline has
    # the same points as densifying each edge on its own, to well under a millimetre.
    lon0, lat0 = offsets[0]
    points = [
        (
            ((lon0 + dx * scale / 180.0 + 180.0) % 360.0) - 180.0,
            max(-89.0, min(89.0, lat0 + dy * scale / 85.0)),
        )
        for dx, dy in offsets
    ]
    got = densify(points, closed)
    want = np.asarray(_densify_edge_by_edge(points, closed))
    assert got.shape == want.shape
    _, _, gap = GEOD.inv(got[:, 0], got[:, 1], want[:, 0], want[:, 1])
    assert float(np.max(gap)) < 1e-3


@settings(max_examples=40, deadline=None)
@given(
    st.floats(-70.0, 70.0),
    st.floats(-180.0, 180.0),
    st.floats(0.02, 0.6),
    st.floats(-0.5, 0.5),
    st.floats(-0.5, 0.5),
)
def test_an_overlap_does_not_depend_on_where_the_frame_sits(
    lat: float, lon: float, half: float, dx: float, dy: float
) -> None:
    # Frames snap to a FRAME_GRID_DEG grid, so a pair is worked out in a frame up to about
    # 1.4 grid steps from it. The overlap, back in lon/lat, must be the same (to centimetres)
    # as in a frame centred on the pair itself.
    def square(x: float, y: float, h: float) -> Polygon:
        corners = ((x - h, y - h), (x + h, y - h), (x + h, y + h), (x - h, y + h))
        return Polygon(ring=tuple((((cx + 180.0) % 360.0) - 180.0, cy) for cx, cy in corners))

    a = square(lon, lat, half)
    b = square(lon + dx * half, lat + dy * half, half * 0.8)
    reach = 1.4 * FRAME_GRID_DEG
    outlines = []
    for frame in (Frame(lon, lat), Frame(lon + reach / 1.4, lat + reach / 1.4)):
        overlap = shapely.intersection(a.planar(frame), b.planar(frame))
        back = frame.to_geojson(overlap)
        assert back is not None
        outlines.append(np.asarray(back["coordinates"][0]))
    near, far = outlines
    # Every vertex of one outline lies on the other (the same crossings and corners).
    ring = shapely.LinearRing(near)
    for x, y in far:
        _, _, gap = GEOD.inv(
            x, y, *shapely.line_interpolate_point(ring, ring.project(shapely.Point(x, y))).coords[0]
        )
        assert gap < 0.05
