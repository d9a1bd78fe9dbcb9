# Rule: the conflict engine is pure and incremental. Items are keyed by (party, uid); an upsert
# or removal re-checks only that item against the candidates a spatial/temporal index returns,
# and only across DIFFERENT parties (a line also binds its own party's side). It never reads a
# clock: every call takes `now` (epoch seconds). Output is a list of ConflictChange events:
# a conflict is raised once, updated while it lasts and its figures change, cleared when it
# ends (item removed or changed, or its time passed).
#
# Index: a hierarchical space/time grid (index.py) returns the candidates. Insert-and-check is
# O(items sharing those cells), not O(n).
#
# Volume against volume is checked in batches (the hot path at scale): exact, cheap rejections
# first (time, altitude, caps apart) over all candidates at once; the survivors are grouped by
# the pair's projection frame (the same frame a single pair check uses, snapped to 0.25 deg),
# each group's outlines (densified once per record and kept) are projected in one call and
# intersected with one vectorised shapely call. Results are the pair-by-pair ones, bit for bit.

from __future__ import annotations

import hashlib
import heapq
import hmac
import math
import os
from collections.abc import Callable, Iterator
from typing import Any, Literal

import msgspec
import numpy as np
import shapely

from commonsky.deconflict import cpa
from commonsky.deconflict.geometry import (
    EARTH_R_M,
    GEOD,
    Circle,
    FloatArray,
    Frame,
    Line,
    Polygon,
    Site,
    Volume,
    cap_of,
    frame_key,
)
from commonsky.deconflict.index import ALWAYS as ALWAYS
from commonsky.deconflict.index import SPACE_BASE_M as SPACE_BASE_M
from commonsky.deconflict.index import TIME_BASE_S as TIME_BASE_S
from commonsky.deconflict.index import Key as Key
from commonsky.deconflict.index import _Index as _Index

ItemType = Literal["volume", "line", "site", "track"]
ConflictKind = Literal[
    "volume-volume", "line-crossing", "track-volume", "track-site", "track-track", "volume-site"
]
MIN_AREA_M2 = 1.0  # touching edges are not an overlap


class Track(msgspec.Struct, frozen=True, kw_only=True):
    """A live track's state at `time_s` (epoch seconds)."""

    lat: float
    lon: float
    alt_m: float
    gs_mps: float
    trk_deg: float
    vs_mps: float
    time_s: float


class Side(msgspec.Struct, frozen=True):
    party: str
    uid: str
    item: ItemType
    kind: str | None = None  # the volume's kind, when it has one


class Conflict(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: ConflictKind
    a: Side
    b: Side
    geometry: dict[str, Any] | None  # GeoJSON geometry of the intersection, (lon, lat)
    floor_m: float
    ceiling_m: float
    start_s: float
    end_s: float
    tcpa_s: float | None = None
    dcpa_m: float | None = None
    entered_party: str | None = None  # line crossings: whose side was entered


class ConflictChange(msgspec.Struct, frozen=True):
    action: Literal["raised", "updated", "cleared"]
    conflict: Conflict


Minima = Callable[[str, str], tuple[float, float]]  # (party, party) -> (rpz_m, hpz_m)


def default_minima(_a: str, _b: str) -> tuple[float, float]:
    return cpa.RPZ_M, cpa.HPZ_M


class _Rec(msgspec.Struct):
    key: Key
    item: ItemType
    obj: Volume | Line | Site | Track
    centre: FloatArray
    ang: float
    t_lo: float
    t_hi: float
    cells: list[tuple[int, ...]]
    outline: FloatArray | None = None  # volumes: the densified (lon, lat) outline, once
    box: tuple[float, ...] = ()  # volumes: start, end, floor, ceiling, ang, centre x y z


def _conflict_id(key: bytes, kind: str, a: Side, b: Side) -> str:
    # Keyed, so that an id handed to one side says nothing about the other side's uid.
    text = f"{kind}|{a.party}|{a.uid}|{b.party}|{b.uid}"
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:24]


def _ordered(x: Side, y: Side) -> tuple[Side, Side]:
    return (x, y) if (x.party, x.uid) <= (y.party, y.uid) else (y, x)


def _rounded(c: Conflict) -> Any:
    """A conflict's figures with float noise removed, to decide whether it changed."""

    def r(v: Any) -> Any:
        if isinstance(v, float):
            return round(v, 3)
        if isinstance(v, list | tuple):
            return tuple(r(x) for x in v)
        if isinstance(v, dict):
            return tuple(sorted((k, r(x)) for k, x in v.items()))
        return v

    return r(msgspec.to_builtins(c))


class ConflictEngine:
    """Incremental conflict detection between parties' volumes, lines, sites and tracks."""

    def __init__(
        self,
        *,
        lookahead_s: float = cpa.LOOKAHEAD_S,
        minima: Minima = default_minima,
        max_rpz_m: float = 20_000.0,
        track_stale_s: float = 60.0,
        id_key: bytes | None = None,
    ) -> None:
        # Conflict ids are HMACs under id_key: stable for the life of the key (persist it to
        # keep ids across restarts), meaningless to anyone without it.
        self.id_key = id_key if id_key is not None else os.urandom(16)
        self.lookahead_s = lookahead_s
        self.minima = minima
        self.max_rpz_m = max_rpz_m  # index padding for tracks; minima above it are capped
        self.track_stale_s = track_stale_s
        self._recs: dict[Key, _Rec] = {}
        self._index = _Index()
        self._conflicts: dict[str, Conflict] = {}
        self._by_item: dict[Key, set[str]] = {}
        self._ends: list[tuple[float, Key]] = []  # heap: when volumes end / tracks go stale

    # -- public API --------------------------------------------------------------------------

    def upsert_volume(self, party: str, uid: str, v: Volume, now: float) -> list[ConflictChange]:
        c, ang = v.shape.cap()
        return self._upsert((party, uid), "volume", v, c, ang, v.start_s, v.end_s, now)

    def upsert_line(self, party: str, uid: str, line: Line, now: float) -> list[ConflictChange]:
        c, ang = line.cap()
        return self._upsert((party, uid), "line", line, c, ang, -math.inf, math.inf, now)

    def upsert_site(self, party: str, uid: str, site: Site, now: float) -> list[ConflictChange]:
        c, ang = site.area().cap()
        return self._upsert((party, uid), "site", site, c, ang, -math.inf, math.inf, now)

    def upsert_track(self, party: str, uid: str, t: Track, now: float) -> list[ConflictChange]:
        end = _track_at(t, self.lookahead_s)
        c, ang = cap_of([(t.lon, t.lat), end], self.max_rpz_m)
        t_hi = t.time_s + self.lookahead_s
        return self._upsert((party, uid), "track", t, c, ang, t.time_s, t_hi, now)

    def remove(self, party: str, uid: str, now: float) -> list[ConflictChange]:
        del now  # removal is immediate; kept for a uniform signature
        rec = self._recs.pop((party, uid), None)
        if rec is None:
            return []
        self._index.delete(rec)
        return self._settle((party, uid), {})

    def expire(self, now: float) -> list[ConflictChange]:
        """Drop volumes that have ended and stale tracks; clear conflicts whose time passed."""
        changes: list[ConflictChange] = []
        while self._ends and self._ends[0][0] <= now:
            when, key = heapq.heappop(self._ends)
            rec = self._recs.get(key)
            if rec is not None and self._end_of(rec) == when:
                changes += self.remove(key[0], key[1], now)
        for cid, c in list(self._conflicts.items()):
            if c.end_s <= now:
                changes.append(self._drop(cid))
        return changes

    def conflicts(self) -> list[Conflict]:
        return sorted(self._conflicts.values(), key=lambda c: c.id)

    def __len__(self) -> int:
        return len(self._recs)

    # -- bookkeeping -------------------------------------------------------------------------

    def _end_of(self, rec: _Rec) -> float:
        if rec.item == "track":
            return rec.t_lo + self.track_stale_s
        return rec.t_hi

    def _upsert(
        self,
        key: Key,
        item: ItemType,
        obj: Volume | Line | Site | Track,
        centre: FloatArray,
        ang: float,
        t_lo: float,
        t_hi: float,
        now: float,
    ) -> list[ConflictChange]:
        old = self._recs.get(key)
        if old is not None:
            self._index.delete(old)
        rec = _Rec(key, item, obj, centre, ang, t_lo, t_hi, [])
        if isinstance(obj, Volume):
            rec.box = (t_lo, t_hi, obj.floor_m, obj.ceiling_m, ang, *centre.tolist())
        self._recs[key] = rec
        self._index.insert(rec)
        if math.isfinite(self._end_of(rec)):
            heapq.heappush(self._ends, (self._end_of(rec), key))
        found: dict[str, Conflict] = {}
        q_lo, q_hi = max(t_lo, now), t_hi
        recs = self._recs
        others = [recs[k] for k in self._index.query(centre, ang, q_lo, q_hi) if k != key]
        batch: list[_Rec] = []  # same-kind pairs of other parties: checked together
        if item in ("volume", "track"):
            batch = [o for o in others if o.item == item and o.key[0] != key[0]]
            others = [o for o in others if o.item != item]
        for other in others:
            for c in _check(rec, other, self, now):
                found[c.id] = c
        pairs = _volume_batch if item == "volume" else _track_batch
        for c in pairs(rec, batch, self, now):
            found[c.id] = c
        return self._settle(key, found)

    def _settle(self, key: Key, found: dict[str, Conflict]) -> list[ConflictChange]:
        changes: list[ConflictChange] = []
        for cid in list(self._by_item.get(key, ())):
            if cid not in found:
                changes.append(self._drop(cid))
        for cid, c in found.items():
            before = self._conflicts.get(cid)
            if before is None:
                changes.append(ConflictChange("raised", c))
            elif _rounded(before) != _rounded(c):
                changes.append(ConflictChange("updated", c))
            else:
                continue
            self._conflicts[cid] = c
            for side in (c.a, c.b):
                self._by_item.setdefault((side.party, side.uid), set()).add(cid)
        return changes

    def _drop(self, cid: str) -> ConflictChange:
        c = self._conflicts.pop(cid)
        for side in (c.a, c.b):
            ids = self._by_item.get((side.party, side.uid))
            if ids is not None:
                ids.discard(cid)
                if not ids:
                    del self._by_item[(side.party, side.uid)]
        return ConflictChange("cleared", c)


# -- pair checks -----------------------------------------------------------------------------


def _side(rec: _Rec) -> Side:
    kind = rec.obj.kind if isinstance(rec.obj, Volume) else None
    return Side(rec.key[0], rec.key[1], rec.item, kind)


def _make(
    eng: ConflictEngine,
    kind: ConflictKind,
    x: _Rec,
    y: _Rec,
    geometry: dict[str, Any] | None,
    **figures: Any,
) -> Conflict:
    a, b = _ordered(_side(x), _side(y))
    cid = _conflict_id(eng.id_key, kind, a, b)
    return Conflict(id=cid, kind=kind, a=a, b=b, geometry=geometry, **figures)


def _caps_apart(x: _Rec, y: _Rec, pad: float = 0.0) -> bool:
    cosang = float(np.clip(x.centre @ y.centre, -1.0, 1.0))
    return math.acos(cosang) > x.ang + y.ang + pad


def _check(x: _Rec, y: _Rec, eng: ConflictEngine, now: float) -> Iterator[Conflict]:
    pair = {x.item, y.item}
    if "line" in pair:
        if pair != {"line"}:
            line, other = (x, y) if x.item == "line" else (y, x)
            c = _line_check(line, other, eng, now)
            if c is not None:
                yield c
        return
    if x.key[0] == y.key[0]:
        return  # only between different parties
    if pair == {"volume"}:
        c = _volume_pair(x, y, eng, now)
    elif pair == {"track"}:
        c = _track_pair(x, y, eng, now)
    elif "track" in pair and pair & {"volume", "site"}:
        trk, area = (x, y) if x.item == "track" else (y, x)
        c = _track_area(trk, area, eng, now)
    else:
        vol, site = (x, y) if x.item == "volume" else (y, x)
        c = _strike_site(vol, site, eng, now)
    if c is not None:
        yield c


def _strike_site(vol: _Rec, site: _Rec, eng: ConflictEngine, now: float) -> Conflict | None:
    """A strike area over another party's protected site (other plans over a site are not)."""
    v, s = vol.obj, site.obj
    assert isinstance(v, Volume)
    assert isinstance(s, Site)
    if v.kind != "strike-area" or _caps_apart(vol, site):
        return None
    lo, hi = max(v.floor_m, s.floor_m), min(v.ceiling_m, s.ceiling_m)
    start, end = max(v.start_s, now), v.end_s
    if not (lo < hi and start <= end):
        return None
    frame = Frame.around((vol.centre, vol.ang), (site.centre, site.ang))
    overlap = v.shape.planar(frame).intersection(s.area().planar(frame))
    if overlap.is_empty or overlap.area <= 0.0:
        return None
    return _make(
        eng,
        "volume-site",
        vol,
        site,
        frame.to_geojson(overlap),
        floor_m=lo,
        ceiling_m=hi,
        start_s=start,
        end_s=end,
    )


def _volume_pair(x: _Rec, y: _Rec, eng: ConflictEngine, now: float) -> Conflict | None:
    return next(iter(_volume_batch(x, [y], eng, now)), None)


def _outline(rec: _Rec) -> FloatArray | None:
    """A polygon's or circle's densified (lon, lat) outline, computed once per record."""
    obj = rec.obj
    if rec.outline is None and isinstance(obj, Volume) and isinstance(obj.shape, Polygon | Circle):
        rec.outline = obj.shape.outline()
    return rec.outline


def _planar(recs: list[_Rec], frame: Frame) -> FloatArray:
    """The records' shapes in the frame, as an array of shapely geometries."""
    out = np.empty(len(recs), dtype=object)
    rings = [(k, o) for k, r in enumerate(recs) if (o := _outline(r)) is not None]
    if rings:
        ks, outs = zip(*rings, strict=True)
        xy = frame.fwd(np.concatenate(outs))  # one projection call for the lot
        idx = np.repeat(np.arange(len(outs)), [len(o) for o in outs])
        out[list(ks)] = shapely.polygons(shapely.linearrings(xy, indices=idx))
    for k, r in enumerate(recs):
        if out[k] is None:
            assert isinstance(r.obj, Volume)
            out[k] = r.obj.shape.planar(frame)
    return out


def _volume_batch(x: _Rec, ys: list[_Rec], eng: ConflictEngine, now: float) -> list[Conflict]:
    """Volume x against volumes ys (of other parties): the conflicts, as pair checks give."""
    if not ys:
        return []
    vx = x.obj
    assert isinstance(vx, Volume)
    a = np.array([y.box for y in ys])
    start, end = np.maximum(a[:, 0], vx.start_s), np.minimum(a[:, 1], vx.end_s)
    floor, ceiling = np.maximum(a[:, 2], vx.floor_m), np.minimum(a[:, 3], vx.ceiling_m)
    cs = a[:, 5:8]
    apart = np.arccos(np.clip(cs @ x.centre, -1.0, 1.0)) > x.ang + a[:, 4]
    keep = np.flatnonzero((start < end) & (end > now) & (floor < ceiling) & ~apart)
    if len(keep) == 0:
        return []
    # Each pair's frame is centred between the two caps (symmetric: the same whichever was
    # stored first) and snapped to the grid; pairs sharing a snapped centre share a frame.
    s = cs[keep] + x.centre
    n = np.sqrt((s * s).sum(axis=1))
    u = np.where(n[:, None] < 1e-9, x.centre, s / np.maximum(n, 1e-300)[:, None])
    lon = np.degrees(np.arctan2(u[:, 1], u[:, 0]))
    lat = np.degrees(np.arcsin(np.clip(u[:, 2], -1.0, 1.0)))
    groups: dict[tuple[float, float], list[int]] = {}
    for k, lo, la in zip(keep.tolist(), lon.tolist(), lat.tolist(), strict=True):
        groups.setdefault(frame_key(lo, la), []).append(k)
    out: list[Conflict] = []
    for centre, ks in groups.items():
        frame = Frame(*centre)
        planar = _planar([x, *(ys[k] for k in ks)], frame)  # x too: one projection call
        inter = shapely.intersection(planar[0], planar[1:])
        hit = np.flatnonzero(shapely.area(inter) >= MIN_AREA_M2)
        geoms = frame.to_geojson_many([_areal(g) for g in inter[hit]])
        for k, geom in zip((ks[h] for h in hit.tolist()), geoms, strict=True):
            out.append(_make(eng, "volume-volume", x, ys[k], geom, floor_m=float(floor[k]),
                             ceiling_m=float(ceiling[k]), start_s=float(start[k]),
                             end_s=float(end[k])))  # fmt: skip
    return out


def _areal(g: shapely.Geometry) -> shapely.Geometry:
    """Keep only the polygonal part of an intersection (drop touching edges and points)."""
    if isinstance(g, shapely.GeometryCollection) and not isinstance(g, shapely.MultiPolygon):
        polys = [p for p in g.geoms if isinstance(p, shapely.Polygon | shapely.MultiPolygon)]
        return shapely.unary_union(polys)
    return g


def _line_check(line: _Rec, other: _Rec, eng: ConflictEngine, now: float) -> Conflict | None:
    ln = line.obj
    assert isinstance(ln, Line)
    party = other.key[0]
    if party == ln.left_party:
        wrong, entered = "right", ln.right_party
    elif party == ln.right_party:
        wrong, entered = "left", ln.left_party
    else:
        return None
    if _caps_apart(line, other):
        return None
    frame = Frame.around((line.centre, line.ang), (other.centre, other.ang))
    gap = math.acos(float(np.clip(line.centre @ other.centre, -1, 1)))
    reach = (gap + line.ang + 2 * other.ang) * EARTH_R_M + 1_000.0
    region = ln.side_region(frame, "right" if wrong == "right" else "left", reach)
    if isinstance(other.obj, Volume):
        v = other.obj
        if v.end_s <= now:
            return None
        inter = _areal(shapely.intersection(v.shape.planar(frame), region))
        if inter.area < MIN_AREA_M2:
            return None
        return _make(
            eng,
            "line-crossing",
            line,
            other,
            frame.to_geojson(inter),
            floor_m=v.floor_m,
            ceiling_m=v.ceiling_m,
            start_s=v.start_s,
            end_s=v.end_s,
            entered_party=entered,
        )
    if isinstance(other.obj, Track):
        hit = _path_through(other.obj, region, frame, eng.lookahead_s)
        if hit is None:
            return None
        geom, t1, t2, lo, hi = hit
        return _make(
            eng,
            "line-crossing",
            line,
            other,
            geom,
            floor_m=lo,
            ceiling_m=hi,
            start_s=t1,
            end_s=t2,
            entered_party=entered,
        )
    return None


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


def _track_area(trk: _Rec, area: _Rec, eng: ConflictEngine, now: float) -> Conflict | None:
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
    hit = _path_through(t, shape.planar(frame), frame, eng.lookahead_s)
    if hit is None:
        return None
    geom, t1, t2, lo, hi = hit
    lo, hi = max(lo, floor), min(hi, ceiling)
    s, e = max(t1, start, now), min(t2, end)
    if not (lo < hi or (lo == hi and floor < lo < ceiling)) or not s <= e:
        return None
    return _make(eng, kind, trk, area, geom, floor_m=lo, ceiling_m=hi, start_s=s, end_s=e)


def _track_batch(x: _Rec, ys: list[_Rec], eng: ConflictEngine, now: float) -> list[Conflict]:
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
    minima = {p: eng.minima(x.key[0], p) for p in {y.key[0] for y in ys}}
    rpz = np.array([min(minima[y.key[0]][0], eng.max_rpz_m) for y in ys])
    hpz = np.array([minima[y.key[0]][1] for y in ys])
    i, j = np.arange(n), np.arange(n, 2 * n)
    ok, _, _, _, _ = cpa.exact_pairs(k, i, j, rpz, hpz, eng.lookahead_s)
    out = []
    for h in np.flatnonzero(ok).tolist():
        c = _track_pair(x, ys[h], eng, now)
        if c is not None:
            out.append(c)
    return out


def _track_pair(x: _Rec, y: _Rec, eng: ConflictEngine, now: float) -> Conflict | None:
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
    rpz, hpz = eng.minima(x.key[0], y.key[0])
    rpz = min(rpz, eng.max_rpz_m)
    i, j = np.array([0]), np.array([1])
    ok, tcpa, dcpa, t_in, t_out = cpa.exact_pairs(k, i, j, rpz, hpz, eng.lookahead_s)
    if not bool(ok[0]):
        return None
    tc = float(tcpa[0])
    pa = _track_at(tx, t_ref - tx.time_s + tc)
    pb = _track_at(ty, t_ref - ty.time_s + tc)
    frame = Frame((pa[0] + pb[0]) / 2 if abs(pa[0] - pb[0]) < 180 else pa[0], (pa[1] + pb[1]) / 2)
    mid = frame.fwd(np.array([pa, pb])).mean(axis=0)
    za = states[0][2] + tx.vs_mps * tc
    zb = states[1][2] + ty.vs_mps * tc
    return _make(
        eng,
        "track-track",
        x,
        y,
        frame.to_geojson(shapely.Point(mid)),
        floor_m=min(za, zb),
        ceiling_m=max(za, zb),
        start_s=t_ref + float(t_in[0]),
        end_s=t_ref + float(t_out[0]),
        tcpa_s=tc,
        dcpa_m=float(dcpa[0]),
    )
