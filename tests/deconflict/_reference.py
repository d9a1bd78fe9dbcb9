# Rule: a slow, obviously-correct reference for the CPA screening, used only by tests.
#
# It shares no code and no geometry with commonsky.deconflict.cpa: each aircraft flies along
# the WGS-84 geodesic of its track (pyproj `Geod.fwd`, Karney's algorithm, which cpa.py does
# not use), horizontal distance is the geodesic distance between the two positions
# (`Geod.inv`), the closest approach is found by sampling every few seconds and refining the
# best sample by golden-section search. Altitude
# is linear in time in both models, so the window where vertical separation is lost is the
# same closed-form interval.

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

from pyproj import Geod

GEOD = Geod(ellps="WGS84")
STEP_S = 5.0


@dataclass(frozen=True)
class Track:
    id: str
    lat: float
    lon: float
    alt_m: float
    gs_mps: float
    trk_deg: float
    vs_mps: float

    def at(self, t: float) -> tuple[float, float]:
        return _at(self, t)


def direct(lat: float, lon: float, azimuth: float, s: float) -> dict[str, float]:
    """The geodesic problem's direct solution: where `s` m along `azimuth` from (lat, lon)
    ends, and the forward azimuth there (`azi2`)."""
    lon2, lat2, back = GEOD.fwd(lon, lat, azimuth, s)
    return {"lat2": float(lat2), "lon2": float(lon2), "azi2": float(back) + 180.0}


@functools.lru_cache(maxsize=200_000)
def _at(track: Track, t: float) -> tuple[float, float]:
    g = direct(track.lat, track.lon, track.trk_deg, track.gs_mps * t)
    return g["lat2"], g["lon2"]


def distance(a: Track, b: Track, t: float) -> float:
    la, oa = a.at(t)
    lb, ob = b.at(t)
    return float(GEOD.inv(oa, la, ob, lb)[2])


def closest(
    a: Track, b: Track, lo: float, hi: float, above: float = math.inf
) -> tuple[float, float]:
    """(t, d) of the least horizontal distance over [lo, hi].

    If every sample is so far above `above` that the distance (which changes no faster than
    the sum of the speeds) cannot dip below it between samples, the best sample is returned
    without refinement.
    """
    # Sample on a shared grid (cached positions) plus both ends.
    ts = sorted(
        {lo, hi, *(STEP_S * k for k in range(math.ceil(lo / STEP_S), int(hi / STEP_S) + 1))}
    )
    ds = [distance(a, b, t) for t in ts]
    best = min(range(len(ts)), key=lambda k: ds[k])
    if ds[best] > above + (a.gs_mps + b.gs_mps) * STEP_S:
        return ts[best], ds[best]
    left, right = ts[max(0, best - 1)], ts[min(len(ts) - 1, best + 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(28):
        m1 = right - ratio * (right - left)
        m2 = left + ratio * (right - left)
        if distance(a, b, m1) <= distance(a, b, m2):
            right = m2
        else:
            left = m1
    t = (left + right) / 2
    candidates = [(ds[best], ts[best]), (distance(a, b, t), t)]
    d, t = min(candidates)
    return t, d


def vertical_window(a: Track, b: Track, hpz: float, horizon: float) -> tuple[float, float] | None:
    dz0 = b.alt_m - a.alt_m
    dvz = b.vs_mps - a.vs_mps
    if dvz == 0:
        return (0.0, horizon) if abs(dz0) < hpz else None
    t1, t2 = sorted(((-hpz - dz0) / dvz, (hpz - dz0) / dvz))
    lo, hi = max(t1, 0.0), min(t2, horizon)
    return (lo, hi) if lo < hi else None


class PairFigures(NamedTuple):
    window_min_m: float  # least horizontal distance while vertical separation is lost
    tcpa_s: float
    dcpa_m: float


def survey(
    tracks: list[Track], rpz: float, hpz: float, horizon: float
) -> dict[tuple[str, str], PairFigures]:
    """Figures for every pair that comes within 1.05 rpz while vertically too close.

    Pairs left out are certainly not in conflict, nor within 5 % of being so.
    """
    out: dict[tuple[str, str], PairFigures] = {}
    for x, a in enumerate(tracks):
        for b in tracks[x + 1 :]:
            reach = 1.05 * rpz + (a.gs_mps + b.gs_mps) * horizon
            if distance(a, b, 0.0) > reach:
                continue  # cannot come within reach: triangle inequality
            window = vertical_window(a, b, hpz, horizon)
            if window is None:
                continue
            wmin = closest(a, b, *window, above=1.05 * rpz)[1]
            if wmin >= 1.05 * rpz:
                continue
            tcpa, dcpa = closest(a, b, 0.0, horizon)
            key = (a.id, b.id) if a.id < b.id else (b.id, a.id)
            out[key] = PairFigures(wmin, tcpa, dcpa)
    return out
