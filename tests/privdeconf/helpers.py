"""Two rival hubs' items, the single-hub engine's verdict on them, and the private path's.

Hub A speaks for A1 and A2, hub B for B1 and B2. Items of both are drawn around one centre
(anywhere, astride the antimeridian, by a pole) so that they meet often; one strategy puts
two volumes against each other across an edge of an H3 cell, overlapping by a strip from a
centimetre to a few hundred metres wide, on either side of the edge or astride it.
"""

from __future__ import annotations

import math
from typing import Any

import h3
import numpy as np
import shapely
from hypothesis import strategies as st
from shapely.geometry import shape

from commonsky.deconflict.engine import Conflict, ConflictEngine
from commonsky.deconflict.shapes import Circle, Corridor, Line, Polygon, Site, Volume
from commonsky.geo import GEOD, Frame
from commonsky.privdeconf import Holding, PrivateRound, Terms, run_in_memory
from commonsky.privdeconf.pieces import item_handle

T0 = 1_800_000_000.0  # a multiple of every slot length used here
A_PARTIES = ("A1", "A2")
B_PARTIES = ("B1", "B2")
SECRET = {"A": b"a" * 32, "B": b"b" * 32}
PEER = {"A": "hub-b", "B": "hub-a"}  # each hub's name for the other
TERMS = Terms(grid_level=5, time_slot_s=3600, altitude_band_m=4000, max_cells=40_000)


def circle(
    centre: tuple[float, float],
    radius_m: float = 9_000,
    floor_m: float = 0,
    ceiling_m: float = 9000,
    start_s: float = T0,
    end_s: float = T0 + 3600,
    kind: str | None = None,
) -> Volume:
    """A circular volume around `centre` (lon, lat), from `floor_m` to `ceiling_m` (m) and
    `start_s` to `end_s` (epoch s; by default the hour from T0)."""
    return Volume(
        shape=Circle(centre=centre, radius_m=radius_m),
        floor_m=floor_m,
        ceiling_m=ceiling_m,
        start_s=start_s,
        end_s=end_s,
        kind=kind,
    )


def circle_volume(party: str, uid: str, centre: tuple[float, float], **volume: Any) -> Holding:
    """`party`'s item `uid`: a `circle(centre, **volume)`."""
    return Holding(party=party, uid=uid, item=circle(centre, **volume))


def _offset(lon: float, lat: float, az: float, dist: float) -> tuple[float, float]:
    lo, la, _ = GEOD.fwd(lon, lat, az, dist)
    return float((lo + 180.0) % 360.0 - 180.0), float(la)


@st.composite
def centres(draw: st.DrawFn) -> tuple[float, float]:
    where = draw(st.sampled_from(["anywhere", "antimeridian", "pole"]))
    if where == "antimeridian":
        lon = draw(st.floats(179.6, 180.0)) * draw(st.sampled_from([1, -1]))
        return lon, draw(st.floats(-60.0, 60.0))
    if where == "pole":
        return draw(st.floats(-180.0, 180.0)), draw(st.floats(88.8, 89.7)) * draw(
            st.sampled_from([1, -1])
        )
    return draw(st.floats(-180.0, 180.0)), draw(st.floats(-70.0, 70.0))


@st.composite
def windows(draw: st.DrawFn) -> tuple[float, float]:
    """Start and end near slot boundaries, so that windows meet by a second or just touch."""
    k = draw(st.integers(0, 3))
    start = T0 + k * 3600 + draw(st.sampled_from([-1.0, 0.0, 1.0, 1800.0]))
    length = draw(st.sampled_from([1.0, 600.0, 3600.0, 7200.0]))
    return start, start + length


@st.composite
def bands(draw: st.DrawFn) -> tuple[float, float]:
    floor = draw(st.sampled_from([0.0, 3999.0, 4000.0, 6000.0, 8000.0]))
    return floor, floor + draw(st.sampled_from([1.0, 500.0, 4000.0]))


@st.composite
def shapes(draw: st.DrawFn, lon: float, lat: float) -> Polygon | Circle | Corridor:
    """A convex polygon, a circle or a corridor within ~40 km of (lon, lat)."""
    az = draw(st.floats(0, 360))
    cx, cy = _offset(lon, lat, az, draw(st.floats(0, 30_000)))
    kind = draw(st.sampled_from(["polygon", "circle", "corridor"]))
    size = draw(st.floats(800, 15_000))
    if kind == "circle":
        return Circle(centre=(cx, cy), radius_m=size)
    if kind == "corridor":
        a = _offset(cx, cy, az, size)
        b = _offset(cx, cy, az + 180 + draw(st.floats(-40, 40)), size)
        return Corridor(path=(a, (cx, cy), b), width_m=draw(st.floats(500, 5_000)))
    n = draw(st.integers(3, 6))
    start = draw(st.floats(0, 360))
    ring = tuple(_offset(cx, cy, start + k * 360 / n, size) for k in range(n))
    return Polygon(ring=(*ring, ring[0]))


@st.composite
def volumes(draw: st.DrawFn, lon: float, lat: float) -> Volume:
    start, end = draw(windows())
    floor, ceiling = draw(bands())
    kind = draw(st.sampled_from(["operating-area", "strike-area", "strike-area", "route", None]))
    return Volume(
        shape=draw(shapes(lon, lat)),
        floor_m=floor,
        ceiling_m=ceiling,
        start_s=start,
        end_s=end,
        kind=kind,
    )


@st.composite
def lines(draw: st.DrawFn, lon: float, lat: float, own: str, other: str) -> Line:
    az = draw(st.floats(0, 360))
    n = draw(st.integers(2, 4))
    pts = [_offset(lon, lat, az + 180, draw(st.floats(5_000, 40_000)))]
    for _ in range(n - 1):
        pts.append(_offset(*pts[-1], az + draw(st.floats(-30, 30)), draw(st.floats(5_000, 30_000))))
    left, right = (own, other) if draw(st.booleans()) else (other, own)
    return Line(path=tuple(pts), left_party=left, right_party=right)


@st.composite
def sites(draw: st.DrawFn, lon: float, lat: float) -> Site:
    cx, cy = _offset(lon, lat, draw(st.floats(0, 360)), draw(st.floats(0, 12_000)))
    return Site(shape=Circle(centre=(cx, cy), radius_m=draw(st.floats(300, 6_000))))


@st.composite
def hub_items(
    draw: st.DrawFn,
    lon: float,
    lat: float,
    parties: tuple[str, ...],
    others: tuple[str, ...],
    tag: str,
) -> list[Holding]:
    out = []
    for k in range(draw(st.integers(1, 4))):
        party = draw(st.sampled_from(parties))
        what = draw(st.sampled_from(["volume", "volume", "line", "line", "site"]))
        if what == "volume":
            item: Any = draw(volumes(lon, lat))
        elif what == "line":
            item = draw(lines(lon, lat, party, draw(st.sampled_from(others))))
        else:
            item = draw(sites(lon, lat))
        out.append(Holding(party=party, uid=f"{tag}-{k}", item=item))
    return out


@st.composite
def rival_items(draw: st.DrawFn) -> tuple[list[Holding], list[Holding]]:
    lon, lat = draw(centres())
    a = draw(hub_items(lon, lat, A_PARTIES, B_PARTIES, "a"))
    b = draw(hub_items(lon, lat, B_PARTIES, A_PARTIES, "b"))
    return a, b


@st.composite
def across_an_edge(draw: st.DrawFn) -> tuple[list[Holding], list[Holding]]:
    """Two volumes meeting in a thin strip by an edge of an H3 cell at the test grid level."""
    lon, lat = draw(centres())
    cell = h3.latlng_to_cell(lat, lon, TERMS.grid_level)
    ring = h3.cell_to_boundary(cell)
    k = draw(st.integers(0, len(ring) - 1))
    (la1, lo1), (la2, lo2) = ring[k], ring[(k + 1) % len(ring)]
    t = draw(st.floats(0.1, 0.9))
    mid_lat, mid_lon = la1 + t * (la2 - la1), lo1 + t * ((lo2 - lo1 + 540) % 360 - 180)
    frame = Frame((mid_lon + 180) % 360 - 180, mid_lat)
    p1, p2 = frame.fwd(np.array([[lo1, la1], [lo2, la2]]))
    e = (p2 - p1) / np.linalg.norm(p2 - p1)
    n = np.array([-e[1], e[0]])
    s = draw(st.floats(1_000, 6_000))
    w = draw(st.floats(0.05, 300))
    d = draw(st.floats(-60, 60))  # where the strip lies: astride the edge or beside it

    def rect(lo_n: float, hi_n: float) -> Polygon:
        pts = [u * e * s / 2 + v * n for u, v in ((-1, lo_n), (1, lo_n), (1, hi_n), (-1, hi_n))]
        ll = frame.inv(np.array(pts))
        ring = tuple((float((x + 180) % 360 - 180), float(y)) for x, y in ll)
        return Polygon(ring=(*ring, ring[0]))

    start, end = draw(windows())
    va = Volume(shape=rect(d, s), floor_m=0, ceiling_m=5000, start_s=start, end_s=end)
    vb = Volume(shape=rect(-s, d + w), floor_m=4000, ceiling_m=9000, start_s=start, end_s=end)
    return [Holding(party="A1", uid="a-edge", item=va)], [
        Holding(party="B1", uid="b-edge", item=vb)
    ]


def engine_cross(a: list[Holding], b: list[Holding], now: float) -> list[Conflict]:
    """The single-hub engine's conflicts between an item of A and one of B."""
    eng = ConflictEngine()
    for h in (*a, *b):
        upsert = {Volume: eng.upsert_volume, Line: eng.upsert_line, Site: eng.upsert_site}
        upsert[type(h.item)](h.party, h.uid, h.item, now)  # type: ignore[operator]
    hub = {h.uid: "A" if h.party in A_PARTIES else "B" for h in (*a, *b)}
    return [c for c in eng.conflicts() if hub[c.a.uid] != hub[c.b.uid]]


def rounds(
    a: list[Holding],
    b: list[Holding],
    now: float,
    terms: Terms = TERMS,
    terms_b: Terms | None = None,
    seeds: tuple[bytes, bytes] | None = None,
) -> tuple[PrivateRound, PrivateRound]:
    """A round between hub A (initiator) and hub B, run to its end in memory."""
    ini = PrivateRound(
        role="initiator",
        terms=terms,
        holdings=a,
        peer=PEER["A"],
        peer_parties=B_PARTIES,
        secret=SECRET["A"],
        now=now,
        seed=seeds[0] if seeds else None,
    )
    res = PrivateRound(
        role="responder",
        terms=terms_b or terms,
        holdings=b,
        peer=PEER["B"],
        peer_parties=A_PARTIES,
        secret=SECRET["B"],
        now=now,
        seed=seeds[1] if seeds else None,
    )
    run_in_memory(ini, res)
    return ini, res


def handle_of(hub: str, party: str, uid: str) -> str:
    """The handle hub `hub` gives its item towards the other hub."""
    return item_handle(SECRET[hub], PEER[hub], party, uid)


def metres_apart(g1: dict[str, Any] | None, g2: dict[str, Any] | None) -> float:
    """Hausdorff distance (m) between two GeoJSON geometries, in a frame at the first one's
    first vertex (not its representative point: astride the antimeridian a (lon, lat)
    polygon spans the globe as a planar shape)."""
    s1, s2 = shape(g1), shape(g2)
    x0, y0 = shapely.get_coordinates(s1)[0]
    frame = Frame(float(x0), float(y0))

    def planar(g: Any) -> Any:
        def fwd(xy: Any) -> Any:
            lon = (xy[:, 0] - x0 + 540) % 360 - 180 + x0  # next to the frame's centre
            return frame.fwd(np.column_stack([lon, xy[:, 1]]))

        return shapely.transform(g, fwd)

    return float(planar(s1).hausdorff_distance(planar(s2)))


def same_figures(x: Conflict, y: Conflict) -> bool:
    return (
        all(
            math.isclose(getattr(x, f), getattr(y, f), rel_tol=0, abs_tol=1e-6)
            for f in ("floor_m", "ceiling_m", "start_s", "end_s")
        )
        and x.entered_party == y.entered_party
    )
