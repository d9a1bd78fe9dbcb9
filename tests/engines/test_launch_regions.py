"""Warnings for an operator's own regions: a GeoJSON file (`regions_file`) and the party that
warns each country (`country` on a [[party]]), with clear errors for bad files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from commonsky.desks.launch import issuers_of
from commonsky.errors import UsageError
from commonsky.policy import Party
from tests.engines.harness import make_world
from tests.engines.test_launch_desk import TRUTH, link, reports, send_report


def test_who_warns_which_country() -> None:
    def issuers(*parties: Party) -> list[tuple[str, str]]:
        return [(i.country, i.party) for i in issuers_of({p.id: p for p in parties})]

    assert issuers(Party("JPN"), Party("KOR"), Party("USA")) == [("JP", "JPN"), ("KR", "KOR")]
    assert issuers(Party("POL", country="PL"), Party("UKR")) == [("PL", "POL"), ("UA", "UKR")]
    # A party that names a country warns that one only; another may take its default.
    assert issuers(Party("JPN", country="KR"), Party("KOR")) == [("KR", "JPN")]
    assert issuers(Party("KOR"), Party("CIV", country="KR")) == [("KR", "CIV")]


def _region_file(path: Path, features: list[dict]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _box(rid: str, country: str, lon: float, lat: float, half: float) -> dict:
    ring = [
        [lon - half, lat - half],
        [lon + half, lat - half],
        [lon + half, lat + half],
        [lon - half, lat + half],
        [lon - half, lat - half],
    ]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"id": rid, "name": f"Test {rid}", "kind": "district", "country": country},
    }


def test_a_region_file_and_its_country_party_issue_the_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lat, lon, _alt = TRUTH.at(TRUTH.flight_s)  # where the missile comes down
    regions = _region_file(
        tmp_path / "regions.geojson",
        [_box("XX-IMPACT", "XX", lon, lat, 0.5), _box("YY-FAR", "YY", lon + 20, lat, 0.5)],
    )
    shared = [link(a, b) for a in ("KOR", "JPN") for b in ("KOR", "JPN", "CIV") if a != b]
    with caplog.at_level(logging.WARNING, logger="commonsky.warnings"):
        w = make_world(
            tmp_path / "hub",
            shared,
            parties=("KOR", "JPN", "CIV"),
            server={"regions_file": str(regions)},
            countries={"CIV": "XX"},
        )
    assert "no party warns the regions of YY" in caplog.text
    for r in reports():
        send_report(w, r)
    feed = w.services.launch.feed()
    assert {a.info[0].areas[0].geocodes[0][1] for a in feed} == {"XX-IMPACT"}
    assert {a.sender for a in feed} == {"commonsky.civ"}  # not JPN: no Japanese regions here


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read region file"),
        ("{not json", "regions.geojson"),
        (json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature"}]}), "regions"),
    ],
)
def test_a_bad_region_file_stops_the_hub_with_one_line(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "regions.geojson"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=message):
        make_world(tmp_path / "hub", [], server={"regions_file": str(path)})
