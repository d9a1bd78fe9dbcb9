"""A track of unknown altitude is screened horizontally and its notices say so; it is never
taken to fly at 0 m (issue #12 fault 8). CoT writes unknown as hae 9999999 (or NaN)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from commonsky.deconflict.cpa import exact_pairs, kinematics
from tests.engines.harness import drawing, event, make_world, square
from tests.engines.test_airspace_desk import RIVALS, notices

TRACKS = [
    {"name": n, "from": a, "to": [b], "categories": ["track", "airspace"],
     "disclosure": "conflicts-only"}
    for n, a, b in (("1", "USA", "RUS"), ("2", "RUS", "USA"))
]  # fmt: skip


def head_on(w, usa_hae: float, rus_hae: float) -> list[dict]:
    w.send("USA", event("F22", "a-f-A-M-F", 34.60, 38.00, hae=usa_hae, speed=250, course=90))
    w.send("RUS", event("SU35", "a-f-A-M-F", 34.60, 38.60, hae=rus_hae, speed=250, course=270))
    w.services.airspace.screen(budget_s=10.0)
    return [e for e in w.take("USA") if e.type == "t-x-csky-conflict"]


@pytest.mark.parametrize("unknown", [9999999.0, math.nan])
def test_a_conflict_at_3000_m_is_not_missed_for_an_unknown_altitude(
    tmp_path: Path, unknown: float
) -> None:
    """Read as 0 m, a Su-35 of unknown altitude was 3 km below the F-22 at 3,000 m."""
    w = make_world(tmp_path, TRACKS)
    (alert,) = head_on(w, 3000.0, unknown)
    (n,) = notices([alert])
    assert n["kind"] == "track-track" and n["altitude_unknown"] is True
    assert (n["floor_m"], n["ceiling_m"]) == (3000.0, 3000.0)  # the band of what is known
    assert "altitude unknown" in alert.detail


def test_against_a_track_at_60_m_it_is_raised_as_unknown_not_as_0_m(tmp_path: Path) -> None:
    w = make_world(tmp_path, TRACKS)
    (n,) = notices(head_on(w, 60.0, 9999999.0))
    assert n["altitude_unknown"] is True and n["floor_m"] == 60.0


def test_two_known_altitudes_keep_vertical_separation(tmp_path: Path) -> None:
    w = make_world(tmp_path, TRACKS)
    assert head_on(w, 3000.0, 9000.0) == []  # 6 km apart vertically: no conflict
    w2 = make_world(tmp_path / "b", TRACKS)
    (n,) = notices(head_on(w2, 9000.0, 9100.0))
    assert n["altitude_unknown"] is False


def test_two_unknown_altitudes_give_a_band_of_null(tmp_path: Path) -> None:
    w = make_world(tmp_path, TRACKS)
    (n,) = notices(head_on(w, 9999999.0, 9999999.0))
    assert n["altitude_unknown"] is True and n["floor_m"] is None and n["ceiling_m"] is None


def test_a_track_of_unknown_altitude_entering_a_volume_is_told_with_the_volumes_band(
    tmp_path: Path,
) -> None:
    """Read as 0 m, it passed under a 5,000-9,000 m operating area."""
    w = make_world(tmp_path, [*RIVALS, *TRACKS])
    w.send("RUS", drawing("RU-OPS", square(38.3, 34.3, 0.6), 5000, 9000))
    w.take("USA")
    w.send("USA", event("UAV", "a-f-A-M-F-Q", 34.60, 38.25, hae=9999999.0, speed=60, course=90))
    w.services.airspace.screen(budget_s=10.0)
    (n,) = notices(w.take("USA"))
    assert n["kind"] == "track-volume" and n["altitude_unknown"] is True
    assert (n["floor_m"], n["ceiling_m"]) == (5000.0, 9000.0)


def test_a_track_with_no_known_position_is_not_screened(tmp_path: Path) -> None:
    w = make_world(tmp_path, TRACKS)
    w.send("RUS", event("SU35", "a-f-A-M-F", 34.60, 38.60, hae=9100, speed=250, course=270))
    w.send("USA", event("F22", "a-f-A-M-F", 34.60, 38.00, hae=9000, speed=250, course=90))
    w.services.airspace.screen(budget_s=10.0)
    assert len(notices(w.take("USA"))) == 1
    w.clock.now += 60
    w.send("USA", event("F22", "a-f-A-M-F", math.nan, math.nan, hae=9000, now=w.clock.now))
    w.services.airspace.screen(budget_s=10.0)
    cleared = [e for e in w.take("USA") if e.type == "t-x-csky-conflict"]
    assert cleared and 'state="cleared"' in cleared[0].detail


def test_exact_pairs_screens_an_unknown_altitude_horizontally() -> None:
    k = kinematics([34.6, 34.6, 34.6], [38.0, 38.01, 38.01], [0.0, math.nan, 5000.0],
                   [0, 0, 0], [0, 0, 0], [0, 0, 0])  # fmt: skip
    ok, *_ = exact_pairs(k, np.array([0, 0]), np.array([1, 2]))
    assert ok.tolist() == [True, False]
