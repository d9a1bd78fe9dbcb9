# Rule: the engine's batched volume check (index candidates, cheap rejections, frames shared
# per snapped centre, vectorised shapely) finds exactly the conflicts a brute-force pair-by-pair
# check finds, through inserts, moves and removals.

from __future__ import annotations

import random

import shapely

from commonsky.deconflict.engine import MIN_AREA_M2, ConflictEngine
from commonsky.deconflict.shapes import Circle, Corridor, Polygon, Shape, Volume
from commonsky.geo import Frame


def _w(lon: float, lat: float) -> tuple[float, float]:
    return ((lon + 180.0) % 360.0 - 180.0, lat)


def _random_volume(rnd: random.Random, lon0: float, lat0: float) -> Volume:
    lon, lat, half = lon0 + rnd.uniform(0, 1.0), lat0 + rnd.uniform(0, 1.0), rnd.uniform(0.01, 0.2)
    kind = rnd.random()
    shape: Shape
    if kind < 0.6:
        lo, hi = lon - half, lon + half
        ring = (_w(lo, lat - half), _w(hi, lat - half), _w(hi, lat + half), _w(lo, lat + half))
        shape = Polygon(ring=ring)
    elif kind < 0.85:
        shape = Circle(centre=_w(lon, lat), radius_m=half * 100_000)
    else:
        shape = Corridor(path=(_w(lon - half, lat), _w(lon + half, lat + half)), width_m=2_000.0)
    floor, start = rnd.uniform(0, 6000), rnd.uniform(0, 20_000)
    return Volume(shape=shape, floor_m=floor, ceiling_m=floor + rnd.uniform(300, 3000),
                    start_s=start, end_s=start + rnd.uniform(600, 14_400))  # fmt: skip


def _brute(vols: dict[tuple[str, str], Volume]) -> set[frozenset[tuple[str, str]]]:
    out = set()
    items = sorted(vols.items())
    for i, (ka, a) in enumerate(items):
        for kb, b in items[i + 1 :]:
            if ka[0] == kb[0] or not (max(a.floor_m, b.floor_m) < min(a.ceiling_m, b.ceiling_m)):
                continue
            if not max(a.start_s, b.start_s) < min(a.end_s, b.end_s):
                continue
            frame = Frame.around(a.shape.cap(), b.shape.cap())
            inter = shapely.intersection(a.shape.planar(frame), b.shape.planar(frame))
            if inter.area >= MIN_AREA_M2:
                out.add(frozenset((ka, kb)))
    return out


def test_batched_volume_check_matches_brute_force() -> None:
    rnd = random.Random(7)
    for lon0, lat0 in ((30.0, 40.0), (179.6, -10.0)):  # the second straddles the antimeridian
        e = ConflictEngine(id_key=b"k")
        vols: dict[tuple[str, str], Volume] = {}
        for _ in range(160):
            key = (rnd.choice(("A", "B", "C")), f"v{rnd.randrange(120)}")  # some moves
            v = _random_volume(rnd, lon0, lat0)
            if rnd.random() < 0.1 and key in vols:
                e.remove(*key, now=0.0)
                del vols[key]
                continue
            e.upsert_volume(*key, v, now=0.0)
            vols[key] = v
        got = {frozenset(((c.a.party, c.a.uid), (c.b.party, c.b.uid))) for c in e.conflicts()}
        want = _brute(vols)
        assert len(want) > 20
        assert got == want
