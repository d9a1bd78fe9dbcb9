# Rule: the checks that involve a live track — its predicted path against areas and lines,
# and closest point of approach against other parties' tracks (vectorised per update).

from __future__ import annotations

import math
from typing import Any

import numpy as np
import shapely

from commonsky.deconflict import cpa
from commonsky.deconflict.records import (
    Conflict,
    ConflictKind,
    PairRules,
    Track,
    _caps_apart,
    _make,
    _Rec,
)
from commonsky.deconflict.shapes import Circle, Polygon, Site, Volume
from commonsky.geo import GEOD, Frame


def _track_at(t: Track, dt: float) -> tuple[float, float]:
    lon, lat, _ = GEOD.fwd(t.lon, t.lat, t.trk_deg, t.gs_mps * dt)
    return float(lon), float(lat)


PATH_SAMPLES = 16


def _path_through(
    t: Track, region: shapely.Geometry, frame: Frame, lookahead_s: float
) -> tuple[dict[str, Any] | None, float, float, float, float] | None:
    """Where the predicted path lies in the region: (geometry, t1, t2, alt low, alt high).

    Times are epoch seconds; the altitude band is the track's over [t1, t2].
    """
    dts = np.linspace(0.0, lookahead_s, PATH_SAMPLES + 1)
    lon, lat, _ = GEOD.fwd(
        np.full(len(dts), t.lon),
        np.full(len(dts), t.lat),
        np.full(len(dts), t.trk_deg),
        t.gs_mps * dts,
    )
    xy = frame.fwd(np.column_stack([lon, lat]))
    if t.gs_mps <= 0.0:
        if not region.contains(shapely.Point(xy[0])):
            return None
        t1, t2 = 0.0, lookahead_s
        geom: shapely.Geometry = shapely.Point(xy[0])
    else:
        path = shapely.LineString(xy)
        geom = shapely.intersection(path, region)
        if geom.is_empty:
            return None
        pts = shapely.get_coordinates(geom)
        along = shapely.line_locate_point(path, shapely.points(pts))
        frac = along / max(path.length, 1e-9)
        t1, t2 = float(frac.min()) * lookahead_s, float(frac.max()) * lookahead_s
    a1, a2 = t.alt_m + t.vs_mps * t1, t.alt_m + t.vs_mps * t2
    return frame.to_geojson(geom), t.time_s + t1, t.time_s + t2, min(a1, a2), max(a1, a2)


def _track_area(trk: _Rec, area: _Rec, rules: PairRules, now: float) -> Conflict | None:
    t = trk.obj
    assert isinstance(t, Track)
    obj = area.obj
    if _caps_apart(trk, area):
        return None
    frame = Frame.around((trk.centre, trk.ang), (area.centre, area.ang))
    shape: Polygon | Circle | Any
    if isinstance(obj, Volume):
        shape, floor, ceiling, start, end = (
            obj.shape,
            obj.floor_m,
            obj.ceiling_m,
            obj.start_s,
            obj.end_s,
        )
        kind: ConflictKind = "track-volume"
    else:
        assert isinstance(obj, Site)
        shape, floor, ceiling = obj.area(), obj.floor_m, obj.ceiling_m
        start, end, kind = -math.inf, math.inf, "track-site"
    hit = _path_through(t, shape.planar(frame), frame, rules.lookahead_s)
    if hit is None:
        return None
    geom, t1, t2, lo, hi = hit
    unknown = math.isnan(lo)
    # Unknown altitude: the track may be anywhere in the area's band (never assumed at 0 m).
    lo, hi = (floor, ceiling) if unknown else (max(lo, floor), min(hi, ceiling))
    s, e = max(t1, start, now), min(t2, end)
    if not (lo < hi or (lo == hi and floor < lo < ceiling)) or not s <= e:
        return None
    return _make(
        rules,
        kind,
        trk,
        area,
        geom,
        floor_m=lo,
        ceiling_m=hi,
        start_s=s,
        end_s=e,
        altitude_unknown=unknown,
    )


def _track_batch(x: _Rec, ys: list[_Rec], rules: PairRules, now: float) -> list[Conflict]:
    """Track x against tracks ys (other parties) in one vectorised CPA test.

    Same figures as `_track_pair` for each pair (each pair's own reference time); only the
    pairs found in conflict are built one by one.
    """
    if not ys:
        return []
    tx = x.obj
    assert isinstance(tx, Track)
    tys = [y.obj for y in ys]
    assert all(isinstance(t, Track) for t in tys)
    t_ref = np.array([max(tx.time_s, t.time_s, now) for t in tys])  # type: ignore[union-attr]
    n = len(ys)
    states = [tx] * n + tys
    refs = np.concatenate([t_ref, t_ref])
    t0 = np.array([t.time_s for t in states])  # type: ignore[union-attr]
    dt = refs - t0
    lon0 = np.array([t.lon for t in states])  # type: ignore[union-attr]
    lat0 = np.array([t.lat for t in states])  # type: ignore[union-attr]
    trk = np.array([t.trk_deg for t in states])  # type: ignore[union-attr]
    gs = np.array([t.gs_mps for t in states])  # type: ignore[union-attr]
    vs = np.array([t.vs_mps for t in states])  # type: ignore[union-attr]
    alt = np.array([t.alt_m for t in states]) + vs * dt  # type: ignore[union-attr]
    lon, lat, _ = GEOD.fwd(lon0, lat0, trk, gs * dt)
    k = cpa.kinematics(lat, lon, alt, gs, trk, vs)
    minima = {p: rules.minima(x.key[0], p) for p in {y.key[0] for y in ys}}
    rpz = np.array([min(minima[y.key[0]][0], rules.max_rpz_m) for y in ys])
    hpz = np.array([minima[y.key[0]][1] for y in ys])
    i, j = np.arange(n), np.arange(n, 2 * n)
    ok, _, _, _, _ = cpa.exact_pairs(k, i, j, rpz, hpz, rules.lookahead_s)
    out = []
    for h in np.flatnonzero(ok).tolist():
        c = _track_pair(x, ys[h], rules, now)
        if c is not None:
            out.append(c)
    return out


def _track_pair(x: _Rec, y: _Rec, rules: PairRules, now: float) -> Conflict | None:
    tx, ty = x.obj, y.obj
    assert isinstance(tx, Track)
    assert isinstance(ty, Track)
    t_ref = max(tx.time_s, ty.time_s, now)
    states = []
    for t in (tx, ty):
        lon, lat = _track_at(t, t_ref - t.time_s)
        states.append(
            (lat, lon, t.alt_m + t.vs_mps * (t_ref - t.time_s), t.gs_mps, t.trk_deg, t.vs_mps)
        )
    cols = list(zip(*states, strict=True))
    k = cpa.kinematics(*cols)
    rpz, hpz = rules.minima(x.key[0], y.key[0])
    rpz = min(rpz, rules.max_rpz_m)
    i, j = np.array([0]), np.array([1])
    ok, tcpa, dcpa, t_in, t_out = cpa.exact_pairs(k, i, j, rpz, hpz, rules.lookahead_s)
    if not bool(ok[0]):
        return None
    tc = float(tcpa[0])
    pa = _track_at(tx, t_ref - tx.time_s + tc)
    pb = _track_at(ty, t_ref - ty.time_s + tc)
    frame = Frame((pa[0] + pb[0]) / 2 if abs(pa[0] - pb[0]) < 180 else pa[0], (pa[1] + pb[1]) / 2)
    mid = frame.fwd(np.array([pa, pb])).mean(axis=0)
    za = states[0][2] + tx.vs_mps * tc
    zb = states[1][2] + ty.vs_mps * tc
    known = [z for z in (za, zb) if not math.isnan(z)]
    return _make(
        rules,
        "track-track",
        x,
        y,
        frame.to_geojson(shapely.Point(mid)),
        floor_m=min(known, default=math.nan),
        ceiling_m=max(known, default=math.nan),
        altitude_unknown=len(known) < 2,
        start_s=t_ref + float(t_in[0]),
        end_s=t_ref + float(t_out[0]),
        tcpa_s=tc,
        dcpa_m=float(dcpa[0]),
        at=((float(pa[0]), float(pa[1]), float(za)), (float(pb[0]), float(pb[1]), float(zb))),
    )
