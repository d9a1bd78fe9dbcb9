# Rule: the fast screening must agree with a slow reference built on a different geometry
# (pyproj geodesics, sampled), and its broad phase must never lose a pair.

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from commonsky.deconflict import cpa

from . import _reference as ref

RPZ, HPZ, HORIZON = cpa.RPZ_M, cpa.HPZ_M, cpa.LOOKAHEAD_S
# Stated tolerances. Pairs whose least horizontal distance while vertically too close lies
# within 1 % of rpz are "on the boundary" and may go either way; for the rest the pair sets
# must be equal. dcpa within 5 m + 0.1 %, tcpa within 1 s where the relative speed exceeds
# 5 m/s (below that the time of closest approach is ill-conditioned).
BOUNDARY = 0.01
DCPA_ABS_M, DCPA_REL = 5.0, 1e-3
TCPA_S, TCPA_MIN_REL_SPEED = 1.0, 5.0


def _kin(tracks: list[ref.Track]) -> cpa.Kinematics:
    return cpa.kinematics(
        [t.lat for t in tracks],
        [t.lon for t in tracks],
        [t.alt_m for t in tracks],
        [t.gs_mps for t in tracks],
        [t.trk_deg for t in tracks],
        [t.vs_mps for t in tracks],
    )


def _fast(tracks: list[ref.Track], **kw: float) -> dict[tuple[str, str], tuple[float, float]]:
    r = cpa.screen(_kin(tracks), **kw)
    out = {}
    for i, j, tc, dc in zip(r.i, r.j, r.tcpa_s, r.dcpa_m, strict=True):
        a, b = sorted((tracks[i].id, tracks[j].id))
        out[a, b] = (float(tc), float(dc))
    return out


def _traffic(seed: int, lat0: float, lon0: float, n: int = 30) -> list[ref.Track]:
    rnd = random.Random(seed)
    out = []
    for x in range(n):
        g = ref.direct(lat0, lon0, rnd.uniform(0, 360), 60_000 * math.sqrt(rnd.random()))
        out.append(
            ref.Track(
                f"T{x:03d}",
                g["lat2"],
                g["lon2"],
                rnd.uniform(9000, 10500),
                rnd.uniform(0, 260) if x % 5 == 0 else rnd.uniform(200, 260),
                rnd.uniform(0, 360),
                0.0 if rnd.random() < 0.6 else rnd.uniform(-12, 12),
            )
        )
    return out


@pytest.mark.parametrize(
    ("seed", "lat0", "lon0"),
    [(1, 45.0, 7.0), (2, -12.0, 180.0), (3, 85.0, 30.0), (4, 89.95, 0.0)],
    ids=["mid-latitude", "antimeridian", "85N", "pole"],
)
def test_fast_screening_matches_reference(seed: int, lat0: float, lon0: float) -> None:
    tracks = _traffic(seed, lat0, lon0)
    if lat0 < 0:
        assert any(t.lon > 179 for t in tracks)
        assert any(t.lon < -179 for t in tracks)
    fast = _fast(tracks)
    survey = ref.survey(tracks, RPZ, HPZ, HORIZON)
    sure = {k for k, f in survey.items() if f.window_min_m < RPZ * (1 - BOUNDARY)}
    maybe = {k for k, f in survey.items() if f.window_min_m < RPZ * (1 + BOUNDARY)}
    assert len(sure) >= 5  # the traffic is dense enough to test something
    assert sure <= set(fast), sorted(sure - set(fast))
    assert set(fast) <= maybe, sorted(set(fast) - maybe)
    speeds = {t.id: t for t in tracks}
    for key in set(fast) & maybe:
        tcpa, dcpa = fast[key]
        f = survey[key]
        assert abs(dcpa - f.dcpa_m) <= DCPA_ABS_M + DCPA_REL * f.dcpa_m, key
        a, b = speeds[key[0]], speeds[key[1]]
        rel = _rel_speed(a, b)
        if rel > TCPA_MIN_REL_SPEED:
            assert abs(tcpa - f.tcpa_s) <= TCPA_S, key


def _rel_speed(a: ref.Track, b: ref.Track) -> float:
    ta, tb = math.radians(a.trk_deg), math.radians(b.trk_deg)
    dx = b.gs_mps * math.sin(tb) - a.gs_mps * math.sin(ta)
    dy = b.gs_mps * math.cos(tb) - a.gs_mps * math.cos(ta)
    return math.hypot(dx, dy)


@pytest.mark.slow
def test_broad_phase_never_loses_a_pair_anywhere_on_earth() -> None:
    # Clusters all round the globe (so the cube-face path runs), dense enough to conflict.
    rng = np.random.default_rng(7)
    centres = [(0, 0), (0, 179.9), (89.99, 0), (-89.9, 45), (45, -90), (-30, 120), (60, -179.5)]
    lat, lon = [], []
    for la, lo in centres:
        lat.append(np.clip(la + rng.normal(0, 0.6, 400), -90, 90))
        lon.append((lo + rng.normal(0, 1.5, 400) + 180) % 360 - 180)
    n = 400 * len(centres)
    k = cpa.kinematics(
        np.concatenate(lat),
        np.concatenate(lon),
        rng.uniform(9000, 11000, n),
        rng.uniform(0, 300, n),
        rng.uniform(0, 360, n),
        np.where(rng.random(n) < 0.5, 0.0, rng.uniform(-15, 15, n)),
    )
    fast = cpa.screen(k)
    naive = cpa.screen_all_pairs(k)
    assert len(naive.i) > 100
    assert set(zip(fast.i.tolist(), fast.j.tolist(), strict=True)) == set(
        zip(naive.i.tolist(), naive.j.tolist(), strict=True)
    )


def test_broad_phase_matches_naive_on_a_regional_box() -> None:
    rng = np.random.default_rng(11)
    n = 2500
    k = cpa.kinematics(
        rng.uniform(40, 44, n),
        rng.uniform(10, 16, n),
        rng.uniform(6096, 12192, n),
        rng.uniform(200, 260, n),
        rng.uniform(0, 360, n),
        np.where(rng.random(n) < 0.7, 0.0, rng.uniform(-15, 15, n)),
    )
    for slices in (1, 3, None):
        fast = cpa.screen(k, slices=slices)
        naive = cpa.screen_all_pairs(k)
        assert len(naive.i) > 100
        assert np.array_equal(np.sort(fast.i * n + fast.j), np.sort(naive.i * n + naive.j))


def _pair(a: ref.Track, b: ref.Track, **kw: float) -> dict[tuple[str, str], tuple[float, float]]:
    return _fast([a, b], **kw)


def test_head_on() -> None:
    g = ref.direct(50.0, 5.0, 90.0, 50_000.0)
    a = ref.Track("A", 50.0, 5.0, 10_000.0, 250.0, 90.0, 0.0)
    b = ref.Track("B", g["lat2"], g["lon2"], 10_000.0, 250.0, g["azi2"] + 180.0, 0.0)
    (tcpa, dcpa) = _pair(a, b)["A", "B"]
    assert tcpa == pytest.approx(100.0, abs=0.05)
    assert dcpa < 5.0
    r = cpa.screen(_kin([a, b]))
    assert float(r.t_in_s[0]) == pytest.approx((50_000 - RPZ) / 500, abs=0.1)


def test_parallel_zero_relative_speed() -> None:
    g5 = ref.direct(30.0, 30.0, 0.0, 5_000.0)
    g20 = ref.direct(30.0, 30.0, 0.0, 20_000.0)
    a = ref.Track("A", 30.0, 30.0, 10_000.0, 230.0, 90.0, 0.0)
    near = ref.Track("B", g5["lat2"], g5["lon2"], 10_000.0, 230.0, 90.0, 0.0)
    far = ref.Track("C", g20["lat2"], g20["lon2"], 10_000.0, 230.0, 90.0, 0.0)
    found = _fast([a, near, far])
    assert set(found) == {("A", "B")}
    tcpa, dcpa = found["A", "B"]
    assert tcpa == 0.0
    assert dcpa == pytest.approx(5_000.0, abs=2.0)


def test_both_stationary_same_point_conflicts() -> None:
    a = ref.Track("A", 10.0, 10.0, 100.0, 0.0, 0.0, 0.0)
    b = ref.Track("B", 10.0, 10.0, 200.0, 0.0, 0.0, 0.0)
    assert _pair(a, b) == {("A", "B"): (0.0, 0.0)}


def test_vertical_separation_exactly_at_minimum_is_not_a_conflict() -> None:
    base = ref.Track("A", 0.0, 0.0, 0.0, 200.0, 0.0, 0.0)
    at_min = ref.Track("B", 0.0, 0.0, 304.8, 200.0, 0.0, 0.0)  # dz == hpz exactly
    just_in = ref.Track("B", 0.0, 0.0, 304.7, 200.0, 0.0, 0.0)
    assert _pair(base, at_min) == {}
    assert ("A", "B") in _pair(base, just_in)
    diverging = ref.Track("B", 0.0, 0.0, 304.8, 200.0, 0.0, 5.0)  # lost only before t=0
    converging = ref.Track("B", 0.0, 0.0, 304.8, 200.0, 0.0, -5.0)
    assert _pair(base, diverging) == {}
    assert ("A", "B") in _pair(base, converging)


def test_antimeridian_is_like_anywhere_else() -> None:
    def pair(lon: float) -> tuple[float, float]:
        a = ref.Track("A", 20.0, lon - 0.3, 10_000.0, 240.0, 80.0, 0.0)
        b = ref.Track("B", 20.1, lon + 0.3, 10_050.0, 220.0, 260.0, 0.0)
        a = ref.Track("A", a.lat, (a.lon + 180) % 360 - 180, *_rest(a))
        b = ref.Track("B", b.lat, (b.lon + 180) % 360 - 180, *_rest(b))
        return _pair(a, b)["A", "B"]

    across = pair(180.0)
    elsewhere = pair(0.0)
    assert across == pytest.approx(elsewhere, abs=1e-3)


def _rest(t: ref.Track) -> tuple[float, float, float, float]:
    return t.alt_m, t.gs_mps, t.trk_deg, t.vs_mps


def test_crossing_over_the_pole() -> None:
    # Two aircraft 40 km either side of the North Pole flying towards it meet there.
    a = ref.Track("A", 90 - 40_000 / 111_694, 0.0, 10_000.0, 200.0, 0.0, 0.0)
    b = ref.Track("B", 90 - 40_000 / 111_694, 90.0, 10_000.0, 200.0, 0.0, 0.0)
    tcpa, dcpa = _pair(a, b)["A", "B"]
    assert tcpa == pytest.approx(200.0, abs=1.0)
    assert dcpa < 50.0


def test_outside_horizon_is_clamped_and_not_a_conflict() -> None:
    g = ref.direct(0.0, 0.0, 90.0, 200_000.0)
    a = ref.Track("A", 0.0, 0.0, 10_000.0, 250.0, 90.0, 0.0)
    b = ref.Track("B", g["lat2"], g["lon2"], 10_000.0, 250.0, 270.0, 0.0)
    assert _pair(a, b) == {}
    assert ("A", "B") in _pair(a, b, lookahead_s=400.0)
    k = _kin([a, b])
    _, tcpa, dcpa, _, _ = cpa.exact_pairs(k, np.array([0]), np.array([1]))
    assert float(tcpa[0]) == 300.0
    assert float(dcpa[0]) == pytest.approx(200_000 - 300 * 500, abs=20)
