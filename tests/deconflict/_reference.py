# Rule: a slow, obviously-correct reference for the CPA screening, used only by tests.
#
# It shares no code and no geometry with commonsky.deconflict.cpa: each aircraft flies along
# the WGS-84 geodesic of its track (geographiclib `Direct`), horizontal distance is the
# geodesic distance between the two positions (`Inverse`), the closest approach is found by
# sampling every few seconds and refining the best sample by golden-section search. Altitude
# is linear in time in both models, so the window where vertical separation is lost is the
# same closed-form interval.

from __future__ import annotations

import math
from dataclasses import dataclass

from geographiclib.geodesic import Geodesic

GEOD = Geodesic.WGS84
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
        g = GEOD.Direct(self.lat, self.lon, self.trk_deg, self.gs_mps * t)
        return float(g["lat2"]), float(g["lon2"])


def distance(a: Track, b: Track, t: float) -> float:
    la, oa = a.at(t)
    lb, ob = b.at(t)
    return float(GEOD.Inverse(la, oa, lb, ob)["s12"])


def closest(a: Track, b: Track, lo: float, hi: float) -> tuple[float, float]:
    """(t, d) of the least horizontal distance over [lo, hi]."""
    n = max(1, math.ceil((hi - lo) / STEP_S))
    ts = [lo + (hi - lo) * k / n for k in range(n + 1)]
    ds = [distance(a, b, t) for t in ts]
    best = min(range(len(ts)), key=lambda k: ds[k])
    left, right = ts[max(0, best - 1)], ts[min(len(ts) - 1, best + 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(40):
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


def conflicts(
    tracks: list[Track], rpz: float, hpz: float, horizon: float
) -> dict[tuple[str, str], tuple[float, float]]:
    """{(id1, id2): (tcpa_s, dcpa_m)} for every pair in conflict, id1 < id2."""
    out: dict[tuple[str, str], tuple[float, float]] = {}
    for x, a in enumerate(tracks):
        for b in tracks[x + 1 :]:
            reach = rpz + (a.gs_mps + b.gs_mps) * horizon
            if distance(a, b, 0.0) > reach:
                continue  # cannot come within rpz: triangle inequality
            window = vertical_window(a, b, hpz, horizon)
            if window is None or closest(a, b, *window)[1] >= rpz:
                continue
            key = (a.id, b.id) if a.id < b.id else (b.id, a.id)
            out[key] = closest(a, b, 0.0, horizon)
    return out
