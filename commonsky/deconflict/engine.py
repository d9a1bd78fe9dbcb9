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
# the pair's projection frame (the same frame a single pair check uses, snapped to a grid),
# each group's outlines (densified once per record and kept, and each record's projection
# kept for the last frame it was seen in) are projected in one call and
# intersected with one vectorised shapely call. Results are the pair-by-pair ones, bit for bit.

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Iterator

import numpy as np
import shapely

from commonsky.deconflict import cpa
from commonsky.deconflict.index import ALWAYS as ALWAYS
from commonsky.deconflict.index import SPACE_BASE_M as SPACE_BASE_M
from commonsky.deconflict.index import TIME_BASE_S as TIME_BASE_S
from commonsky.deconflict.index import Key as Key
from commonsky.deconflict.index import _Index as _Index
from commonsky.deconflict.records import LINE_REACH_M as LINE_REACH_M
from commonsky.deconflict.records import MIN_AREA_M2 as MIN_AREA_M2
from commonsky.deconflict.records import Conflict as Conflict
from commonsky.deconflict.records import ConflictChange as ConflictChange
from commonsky.deconflict.records import ConflictKind as ConflictKind
from commonsky.deconflict.records import ItemType as ItemType
from commonsky.deconflict.records import Minima as Minima
from commonsky.deconflict.records import PairRules as PairRules
from commonsky.deconflict.records import Side as Side
from commonsky.deconflict.records import Track as Track
from commonsky.deconflict.records import _caps_apart as _caps_apart
from commonsky.deconflict.records import _make as _make
from commonsky.deconflict.records import _Rec as _Rec
from commonsky.deconflict.records import _rounded as _rounded
from commonsky.deconflict.records import default_minima as default_minima
from commonsky.deconflict.shapes import Circle, Line, Polygon, Site, Volume
from commonsky.deconflict.table import SlotTable, box_overlaps
from commonsky.deconflict.tracks import PATH_SAMPLES as PATH_SAMPLES
from commonsky.deconflict.tracks import _path_through as _path_through
from commonsky.deconflict.tracks import _track_area as _track_area
from commonsky.deconflict.tracks import _track_at as _track_at
from commonsky.deconflict.tracks import _track_batch as _track_batch
from commonsky.deconflict.tracks import _track_pair as _track_pair
from commonsky.geo import EARTH_R_M, FloatArray, Frame, cap_of, centre_lonlat, frame_key


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
        line_reach_m: float = LINE_REACH_M,
    ) -> None:
        # Conflict ids are HMACs under id_key: stable for the life of the key (persist it to
        # keep ids across restarts), meaningless to anyone without it.
        self.id_key = id_key if id_key is not None else os.urandom(16)
        self.lookahead_s = lookahead_s
        self.minima = minima
        self.max_rpz_m = max_rpz_m  # index padding for tracks; minima above it are capped
        self.track_stale_s = track_stale_s
        self.line_reach_m = line_reach_m  # how deep each side of a line reaches (_line_check)
        self.rules = PairRules(self.id_key, lookahead_s, minima, max_rpz_m, line_reach_m)
        self._recs: dict[Key, _Rec] = {}
        self._index = _Index()
        self._table = SlotTable()
        self._conflicts: dict[str, Conflict] = {}
        self._by_item: dict[Key, set[str]] = {}
        self._ends: list[tuple[float, Key]] = []  # heap: when volumes end / tracks go stale

    # -- public API --------------------------------------------------------------------------

    def upsert_volume(self, party: str, uid: str, v: Volume, now: float) -> list[ConflictChange]:
        c, ang = v.shape.cap()
        return self._upsert((party, uid), "volume", v, c, ang, v.start_s, v.end_s, now)

    def upsert_line(self, party: str, uid: str, line: Line, now: float) -> list[ConflictChange]:
        c, ang = line.cap()
        ang += self.line_reach_m / EARTH_R_M  # its sides reach past its own cap: file them too
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
        self._table.remove(rec)
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
            self._table.remove(old)
        rec = _Rec(key, item, obj, centre, ang, t_lo, t_hi, [])
        if isinstance(obj, Volume):
            rec.box = (t_lo, t_hi, obj.floor_m, obj.ceiling_m, ang, *centre.tolist())
        self._recs[key] = rec
        self._table.add(rec)
        self._index.insert(rec)
        if math.isfinite(self._end_of(rec)):
            heapq.heappush(self._ends, (self._end_of(rec), key))
        found: dict[str, Conflict] = {}
        near = self._index.query(centre, ang, max(t_lo, now), t_hi)
        near.discard(rec.slot)
        slots = np.fromiter(near, dtype=np.int64, count=len(near))
        batch: list[_Rec]  # same-kind pairs of other parties: checked together
        if item == "volume":
            batch, others = self._table.volumes_near(slots, rec, now)
        else:
            others = [self._table.rec(s) for s in slots.tolist()]
            batch = []
            if item == "track":
                batch = [o for o in others if o.item == item and o.key[0] != key[0]]
                others = [o for o in others if o.item != item]
        for other in others:
            for c in _check(rec, other, self.rules, now):
                found[c.id] = c
        pairs = _volume_batch if item == "volume" else _track_batch
        for c in pairs(rec, batch, self.rules, now):
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


def _check(x: _Rec, y: _Rec, rules: PairRules, now: float) -> Iterator[Conflict]:
    pair = {x.item, y.item}
    if "line" in pair:
        if pair != {"line"}:
            line, other = (x, y) if x.item == "line" else (y, x)
            c = _line_check(line, other, rules, now)
            if c is not None:
                yield c
        return
    if x.key[0] == y.key[0]:
        return  # only between different parties
    if pair == {"volume"}:
        c = _volume_pair(x, y, rules, now)
    elif pair == {"track"}:
        c = _track_pair(x, y, rules, now)
    elif "track" in pair and pair & {"volume", "site"}:
        trk, area = (x, y) if x.item == "track" else (y, x)
        c = _track_area(trk, area, rules, now)
    elif pair == {"volume", "site"}:
        vol, site = (x, y) if x.item == "volume" else (y, x)
        c = _strike_site(vol, site, rules, now)
    else:
        # Two parties' protected sites may overlap (a shared airfield): neither is a plan
        # that endangers the other, so there is nothing to deconflict.
        return
    if c is not None:
        yield c


def _strike_site(vol: _Rec, site: _Rec, rules: PairRules, now: float) -> Conflict | None:
    """A strike area over another party's protected site (other plans over a site are not)."""
    v, s = vol.obj, site.obj
    assert isinstance(v, Volume)
    assert isinstance(s, Site)
    if v.kind != "strike-area" or _caps_apart(vol, site):
        return None
    lo, hi = max(v.floor_m, s.floor_m), min(v.ceiling_m, s.ceiling_m)
    start, end = max(v.start_s, now), v.end_s
    if not (lo < hi and start < end):  # windows are [start, end): one ending now is over
        return None
    frame = Frame.around((vol.centre, vol.ang), (site.centre, site.ang))
    overlap = v.shape.planar(frame).intersection(s.area().planar(frame))
    if overlap.is_empty or overlap.area <= 0.0:
        return None
    return _make(
        rules,
        "volume-site",
        vol,
        site,
        frame.to_geojson(overlap),
        floor_m=lo,
        ceiling_m=hi,
        start_s=start,
        end_s=end,
    )


def _volume_pair(x: _Rec, y: _Rec, rules: PairRules, now: float) -> Conflict | None:
    return next(iter(_volume_batch(x, [y], rules, now)), None)


def _outline(rec: _Rec) -> FloatArray | None:
    """A polygon's or circle's densified (lon, lat) outline, computed once per record."""
    obj = rec.obj
    if rec.outline is None and isinstance(obj, Volume) and isinstance(obj.shape, Polygon | Circle):
        rec.outline = obj.shape.outline()
    return rec.outline


def _planar(recs: list[_Rec], frame: Frame) -> FloatArray:
    """The records' shapes in the frame, as an array of shapely geometries."""
    out = np.empty(len(recs), dtype=object)
    rings = [(k, r, o) for k, r in enumerate(recs) if (o := _outline(r)) is not None]
    if rings:
        fresh = [(r, o) for _k, r, o in rings if r.planar is None or r.planar[0] != frame.key]
        if fresh:  # one projection call for all outlines not yet in this frame
            xy = frame.fwd(np.concatenate([o for _r, o in fresh]))
            cuts = np.cumsum([len(o) for _r, o in fresh])[:-1]
            for (r, _o), part in zip(fresh, np.split(xy, cuts), strict=True):
                r.planar = (frame.key, part)
        parts = [r.planar[1] for _k, r, _o in rings if r.planar is not None]
        idx = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
        rings_xy = shapely.linearrings(np.concatenate(parts), indices=idx)
        out[[k for k, _r, _o in rings]] = shapely.polygons(rings_xy)
    for k, r in enumerate(recs):
        if out[k] is None:
            assert isinstance(r.obj, Volume)
            out[k] = r.obj.shape.planar(frame)
    return out


def _volume_batch(x: _Rec, ys: list[_Rec], rules: PairRules, now: float) -> list[Conflict]:
    """Volume x against volumes ys (of other parties): the conflicts, as pair checks give."""
    if not ys:
        return []
    assert isinstance(x.obj, Volume)
    a = np.array([y.box for y in ys])
    start, end, floor, ceiling, meet = box_overlaps(a, x, now)
    keep = np.flatnonzero(meet)
    cs = a[:, 5:8]
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
            out.append(_make(rules, "volume-volume", x, ys[k], geom, floor_m=float(floor[k]),
                             ceiling_m=float(ceiling[k]), start_s=float(start[k]),
                             end_s=float(end[k])))  # fmt: skip
    return out


def _areal(g: shapely.Geometry) -> shapely.Geometry:
    """Keep only the polygonal part of an intersection (drop touching edges and points)."""
    if isinstance(g, shapely.GeometryCollection) and not isinstance(g, shapely.MultiPolygon):
        polys = [p for p in g.geoms if isinstance(p, shapely.Polygon | shapely.MultiPolygon)]
        return shapely.unary_union(polys)
    return g


def line_frame(line: Line) -> Frame:
    """The frame a line's sides are drawn in: centred on the line's own cap."""
    return Frame(*centre_lonlat(line.cap()[0]))


def _line_check(line: _Rec, other: _Rec, rules: PairRules, now: float) -> Conflict | None:
    ln = line.obj
    assert isinstance(ln, Line)
    party = other.key[0]
    if party == ln.left_party:
        wrong, entered = "right", ln.right_party
    elif party == ln.right_party:
        wrong, entered = "left", ln.left_party
    else:
        return None
    if _caps_apart(line, other):  # (the line's cap is padded by its reach)
        return None
    # Each side of a line is the band beside it, flat at its ends, line_reach_m deep, drawn in
    # the line's own frame: a function of the line alone, so that a volume beside a line's
    # end is on its side however short the line (the line's cap once bounded the check), and
    # a hub holding only the line draws the very same band (privdeconf).
    frame = line_frame(ln)
    region = ln.side_region(frame, "right" if wrong == "right" else "left", rules.line_reach_m)
    if isinstance(other.obj, Volume):
        v = other.obj
        if v.end_s <= now:
            return None
        inter = _areal(shapely.intersection(v.shape.planar(frame), region))
        if inter.area < MIN_AREA_M2:
            return None
        return _make(
            rules,
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
        hit = _path_through(other.obj, region, frame, rules.lookahead_s)
        if hit is None:
            return None
        geom, t1, t2, lo, hi = hit
        return _make(
            rules,
            "line-crossing",
            line,
            other,
            geom,
            floor_m=lo,
            ceiling_m=hi,
            start_s=t1,
            end_s=t2,
            entered_party=entered,
            altitude_unknown=math.isnan(lo),  # (a line has no height: crossing is 2-D)
        )
    return None
