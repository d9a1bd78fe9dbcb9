from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import shapely
from alerts_scenarios import SEA_SHOT, T0, at, jpn_descent, kor_boost
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Point

from commonsky.alerts.fusion import fuse
from commonsky.alerts.hazard import assess_launch
from commonsky.alerts.regions import RegionRegistry
from commonsky.alerts.simulate import Ballistic
from commonsky.errors import UsageError
from commonsky.geo import GEOD as WGS84
from commonsky.geo import corridor_pieces


def test_builtin_regions_cover_the_three_countries(regions: RegionRegistry) -> None:
    ids = {r.id for r in regions}
    assert {"JP-01", "JP-02", "JP-13", "JP-47", "KR-11", "KR-26", "UA-30", "UA-32"} <= ids
    kinds = {r.kind for r in regions}
    assert {"prefecture", "province", "oblast", "city"} <= kinds
    # Capitals fall in their own region (and Seoul is a hole in Gyeonggi, Kyiv in its oblast).
    for lon, lat, rid in (
        (139.69, 35.69, "JP-13"),
        (126.98, 37.57, "KR-11"),
        (30.52, 50.45, "UA-30"),
    ):
        assert [r.id for r in regions.touched_by(Point(lon, lat))] == [rid]
    assert regions.touched_by(Point(135.0, 40.0)) == []  # Sea of Japan


def test_load_from_file_and_refuse_bad_ones(tmp_path: Path) -> None:
    good = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"id": "X-1", "name": "Square", "kind": "district"},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]],
                },
            }
        ],
    }
    f = tmp_path / "r.geojson"
    f.write_text(json.dumps(good))
    reg = RegionRegistry.load(f)
    assert [r.id for r in reg] == ["X-1"]
    assert reg["X-1"].kind == "district"
    bowtie = [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]
    good["features"][0]["geometry"]["coordinates"] = bowtie  # type: ignore[index]
    f.write_text(json.dumps(good))
    with pytest.raises(UsageError, match="invalid geometry"):
        RegionRegistry.load(f)
    f.write_text("{}")
    with pytest.raises(UsageError, match=str(f)):
        RegionRegistry.load(f)
    with pytest.raises(UsageError, match="cannot read"):
        RegionRegistry.load(tmp_path / "missing.geojson")


def test_sea_shot_warns_nobody(regions: RegionRegistry) -> None:
    # The November 2022 J-Alert error: a missile that stays over the Sea of Japan, ~200 km
    # from the coast, must not warn Miyagi, Yamagata, Niigata or anyone else — at any stage.
    rng = np.random.default_rng(11)
    kor, jpn = kor_boost(SEA_SHOT, rng), jpn_descent(SEA_SHOT, rng)
    for now, reps in ((at(151), [kor]), (at(SEA_SHOT.flight_s - 39), [kor, jpn])):
        ev = fuse(reps)
        assert ev is not None
        hz = assess_launch(ev, regions, now)
        assert hz.threatened == (), hz.threatened


def test_overflight_warns_the_prefecture_under_the_track(regions: RegionRegistry) -> None:
    # October 2022: an IRBM over Aomori into the Pacific. Aomori is warned (overflight), no
    # region is warned for impact, and Tokyo/Okinawa/Korea are not warned at all.
    az, _b, _d = WGS84.inv(126.5, 40.6, 140.9, 40.8)
    irbm = Ballistic(40.6, 126.5, T0, float(az), 4_000_000.0, 970_000.0)
    ev = fuse([kor_boost(irbm, np.random.default_rng(12))])
    assert ev is not None
    hz = assess_launch(ev, regions, at(151))
    reasons = {t.region_id: t.reason for t in hz.threatened}
    assert reasons.get("JP-02") == "overflight"
    assert "impact" not in reasons.values()
    assert not {"JP-13", "JP-47", "KR-11", "KR-26"} & set(reasons)
    # Once the missile is past Japan, Aomori is no longer on the remaining path.
    later = assess_launch(ev, regions, at(600))
    assert "JP-02" not in {t.region_id for t in later.threatened}
    done = assess_launch(ev, regions, irbm.impact_time + timedelta(minutes=5))
    assert done.over
    assert "sea" in done.outcome


@settings(max_examples=60, deadline=None)
@given(
    st.floats(-70.0, 70.0),
    st.floats(-170.0, 170.0),  # pieces are lon/lat polygons: not across the antimeridian (geo.py)
    st.floats(500.0, 100_000.0),
    st.floats(0.0, 360.0),
)
def test_a_corridor_piece_contains_its_whole_geodesic_discs(
    lat: float, lon: float, radius: float, heading: float
) -> None:
    # The pieces are polygons with few vertices; they must still contain every point at the
    # stated distance from the path, or a region at the edge of a threat would go unwarned.
    lon2, lat2, _ = WGS84.fwd(lon, lat, heading, 3 * radius)
    (piece,) = corridor_pieces([lon, lon2], [lat, lat2], [radius, radius * 1.1])
    for centre_lat, centre_lon, r in ((lat, lon, radius), (lat2, lon2, radius * 1.1)):
        az = np.linspace(0.0, 360.0, 97)
        edge_lon, edge_lat, _ = WGS84.fwd(
            np.full(az.shape, centre_lon), np.full(az.shape, centre_lat), az, np.full(az.shape, r)
        )
        assert shapely.contains_xy(piece, edge_lon, edge_lat).all()
