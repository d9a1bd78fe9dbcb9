# Rule: a hub turns its own volumes, sites and lines into space-time cells such that whenever
# the single-hub engine (deconflict/engine.py) would find a conflict between an item of one hub
# and an item of the other, the two items' cell sets share a token. Over-covering is safe (it
# costs a little leak and a little geometry); under-covering misses a conflict: every rounding
# here rounds outwards.
#
# Grid: H3 (`h3` 4.x, Uber's hexagonal grid; C library with typed Python bindings and wheels).
# Chosen over S2 because the maintained S2 bindings for Python are either a heavy SWIG build
# (`s2geometry`) or unmaintained (`s2sphere`, 2017) or carry no region covering (`s2cell`);
# and hexagons have one kind of neighbour (every neighbour shares an edge), so a dilation is
# uniform in every direction. We do not use H3's polygon fill (it decides by cell centre, and
# treats a polygon wider than 180° of longitude as crossing the antimeridian): a cell is ours
# when its own outline meets our dilated region, tested in a local azimuthal-equidistant frame
# centred on the item (geo.Frame), so the antimeridian and the poles are ordinary places.
# Cell outlines are H3's vertices joined by great-circle arcs (H3's edges are straight on the
# icosahedron's gnomonic faces, i.e. great circles), sampled every EDGE_SAMPLE_M before
# projection; COVER_MARGIN_M (metres) absorbs what remains (sphere vs WGS-84, a chord vs the
# arc in the frame: centimetres at 1 km samples).
#
# Dilation. The engine's volume, site and line conflicts are overlaps of positive area, height
# and duration: an overlap contains an interior point of some cell, band and slot, which both
# items' exact coverings hold, so for those kinds no dilation would be needed. Separation (two
# things closer than the minima, as the engine's track checks use) and uncertainty do need it:
# if the distance between two items is d < rpz, and each item's true place lies within its own
# uncertainty u of what its hub holds, the held shapes are closer than rpz + uA + uB. Each side
# therefore dilates its OWN items by rpz/2 + its own u horizontally and hpz/2 + its own vertical
# u vertically: the two dilated regions then meet whenever the pair is within the minima. Half
# each rather than one side the whole minimum because (a) it is symmetric, so both hubs run the
# same code with no role to agree on, (b) each hub knows only its own uncertainty, and (c) each
# side's set reaches half as far past its own plans as it would under "one side the whole",
# which is what a match reveals about it. Time is not dilated (the engine has no time minimum):
# an overlap of positive duration shares a slot.
#
# Tokens (the PSI set elements) carry a cell and nothing of the item: `v:<h3>:<band>:<slot>`
# for volumes against volumes, `s:<h3>` for strike areas against protected sites (2-D: a
# site's band is usually everything; the geometry step checks heights), `l:<h3>:<party>` for
# a line's side that binds `party` against that party's volumes (2-D: a line has no height
# or time). A line's side reaches `line_reach_m` (the engine's band grows with the distance of
# the item it checks; the private one cannot, so a volume farther than that from the line is
# not checked across hubs: docs/private-deconfliction.md).

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Literal

import h3
import msgspec
import numpy as np
import shapely

from commonsky.deconflict.engine import line_frame
from commonsky.deconflict.shapes import Line, Site, Volume
from commonsky.errors import CommonSkyError
from commonsky.geo import EARTH_R_M, FloatArray, Frame, centre_lonlat
from commonsky.privdeconf.terms import Terms

Layer = Literal["v", "s", "l"]
Role = Literal["volume", "site", "line"]
EDGE_SAMPLE_M = 1_000.0
COVER_MARGIN_M = 5.0


class CellsError(CommonSkyError, ValueError):
    """Our own items cannot be put in cells within the agreement's cap (a local problem:
    coarsen `grid_level`, shorten the plans' horizon, or raise `max_cells`)."""

    reason = "privdeconf_cells"


class Holding(msgspec.Struct, frozen=True, kw_only=True):
    """One of our own airspace items as the private path sees it. `h_uncertainty_m` and
    `v_uncertainty_m` (metres, >= 0) are how far its true place may be from the shape held
    (e.g. a drawing's CoT `ce` / `le`)."""

    party: str
    uid: str
    item: Volume | Line | Site
    h_uncertainty_m: float = 0.0
    v_uncertainty_m: float = 0.0

    def __post_init__(self) -> None:
        for name in ("h_uncertainty_m", "v_uncertainty_m"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}: {v!r} is not a number >= 0")
        if not self.party or ":" in self.party:
            raise ValueError(f"party: {self.party!r} is empty or holds ':'")


@dataclass(eq=False)
class Claim:
    """One item in one layer: its undilated region (planar, in `frame`) and its cells."""

    holding: Holding
    layer: Layer
    role: Role
    party: str  # whose conduct the layer is about (for a line's side: the party it binds)
    region: shapely.Geometry
    frame: Frame
    cells: frozenset[str]
    bands: range = field(default_factory=lambda: range(0))
    slots: range = field(default_factory=lambda: range(0))
    entered: str | None = None  # a line's side: the party whose side it is

    def tokens(self) -> Iterator[str]:
        if self.layer == "v":
            for c in self.cells:
                for b in self.bands:
                    for s in self.slots:
                        yield f"v:{c}:{b}:{s}"
        elif self.layer == "s":
            for c in self.cells:
                yield f"s:{c}"
        else:
            for c in self.cells:
                yield f"l:{c}:{self.party}"

    def size(self) -> int:
        n = len(self.cells)
        return n * len(self.bands) * len(self.slots) if self.layer == "v" else n


def parse_token(token: str) -> tuple[str, str, str]:
    """(layer, cell, rest) of a token; rest is "band:slot", the party, or ""."""
    layer, _, tail = token.partition(":")
    cell, _, rest = tail.partition(":")
    return layer, cell, rest


def band_range(lo_m: float, hi_m: float, band_m: float) -> range:
    """The bands [k·band_m, (k+1)·band_m) that meet [lo_m, hi_m)."""
    lo = math.floor(lo_m / band_m)
    return range(lo, max(math.ceil(hi_m / band_m), lo + 1))


def band_bounds(k: int, band_m: float) -> tuple[float, float]:
    return k * band_m, (k + 1) * band_m


def claims_of(
    h: Holding, terms: Terms, at_s: float, peer_parties: Collection[str], limit: int
) -> list[Claim]:
    """The claims one of our items makes at round time `at_s` (epoch s): volumes still to end
    in "v" (and "s" for a strike area, "l" for line sides binding their party); sites in "s";
    a line in "l" for each side that binds one of `peer_parties`. CellsError past `limit`."""
    item = h.item
    dil_h = terms.rpz_m / 2 + h.h_uncertainty_m
    level = terms.grid_level
    if isinstance(item, Volume):
        if item.end_s <= at_s:
            return []
        frame = Frame(*centre_lonlat(item.shape.cap()[0]))
        region = item.shape.planar(frame)
        cells = cover(region.buffer(dil_h), frame, level, limit, h)
        dil_v = terms.hpz_m / 2 + h.v_uncertainty_m
        bands = band_range(item.floor_m - dil_v, item.ceiling_m + dil_v, terms.altitude_band_m)
        slots = band_range(max(item.start_s, at_s), item.end_s, terms.time_slot_s)
        out = [Claim(h, "v", "volume", h.party, region, frame, cells, bands, slots)]
        if item.kind == "strike-area":
            out.append(Claim(h, "s", "volume", h.party, region, frame, cells))
        out.append(Claim(h, "l", "volume", h.party, region, frame, cells))
        return out
    if isinstance(item, Site):
        area = item.area()
        frame = Frame(*centre_lonlat(area.cap()[0]))
        region = area.planar(frame)
        cells = cover(region.buffer(dil_h), frame, level, limit, h)
        return [Claim(h, "s", "site", h.party, region, frame, cells)]
    out = []
    frame = line_frame(item)  # where the engine draws a line's sides too
    sides = (
        ("right", item.left_party, item.right_party),
        ("left", item.right_party, item.left_party),
    )
    for side, bound, entered in sides:
        if bound not in peer_parties:
            continue
        region = item.side_region(frame, side, terms.line_reach_m)  # type: ignore[arg-type]
        cells = cover(region.buffer(dil_h), frame, level, limit, h)
        out.append(Claim(h, "l", "line", bound, region, frame, cells, entered=entered))
    return out


def cover(
    region: shapely.Geometry, frame: Frame, level: int, limit: int, h: Holding | None = None
) -> frozenset[str]:
    """The H3 cells at `level` whose outline meets `region` (planar, in `frame`) grown by
    COVER_MARGIN_M: a flood from a cell inside each part, outwards while cells meet it (the
    cells meeting a connected region are connected). CellsError past `limit` cells."""
    grown = shapely.buffer(region, COVER_MARGIN_M)
    shapely.prepare(grown)
    parts = list(getattr(grown, "geoms", [grown]))
    seeds: set[str] = set()
    for part in parts:
        if part.is_empty:
            continue
        p = part.representative_point()
        lon, lat = frame.inv(np.array([[p.x, p.y]]))[0]
        seeds.add(h3.latlng_to_cell(float(lat), float(lon), level))
    seen = set(seeds)
    found: set[str] = set()
    frontier = sorted(seeds)
    first = True
    while frontier:
        polys = cell_polygons(frontier, frame)
        hit = shapely.intersects(grown, polys)
        if first:  # a seed is in the region by construction: never lose one to rounding
            hit[:] = True
            first = False
        new = [c for c, ok in zip(frontier, hit.tolist(), strict=True) if ok]
        found.update(new)
        if len(found) > limit:
            who = f" {h.party}::{h.uid}" if h is not None else ""
            raise CellsError(
                f"item{who} covers more than {limit} cells at grid level {level}: coarsen "
                "grid_level or raise max_cells"
            )
        nxt: set[str] = set()
        for c in new:
            nxt.update(h3.grid_disk(c, 1))
        nxt -= seen
        seen |= nxt
        frontier = sorted(nxt)
    return frozenset(found)


def cell_polygons(cells: list[str], frame: Frame) -> FloatArray:
    """The cells' outlines as shapely polygons in `frame` (an object array)."""
    if not cells:
        return np.empty(0, dtype=object)
    rings = [h3.cell_to_boundary(c) for c in cells]
    counts = np.fromiter((len(r) for r in rings), dtype=np.int64, count=len(rings))
    latlng = np.asarray([p for r in rings for p in r], dtype=np.float64)
    p = _unit(latlng[:, 1], latlng[:, 0])
    # Each vertex's successor in its own ring (the edge p -> q).
    start = np.repeat(np.cumsum(counts) - counts, counts)
    pos = np.arange(len(p)) - start
    q = p[start + (pos + 1) % np.repeat(counts, counts)]
    theta = np.arccos(np.clip((p * q).sum(axis=1), -1.0, 1.0))
    n = np.maximum(np.ceil(theta * EARTH_R_M / EDGE_SAMPLE_M).astype(np.int64), 1)
    edge = np.repeat(np.arange(len(p)), n)
    t = (np.arange(len(edge)) - np.repeat(np.cumsum(n) - n, n)) / n[edge]
    th = theta[edge]
    sin_th = np.sin(th)
    small = sin_th < 1e-12
    safe = np.where(small, 1.0, sin_th)
    wa = np.where(small, 1.0 - t, np.sin((1.0 - t) * th) / safe)
    wb = np.where(small, t, np.sin(t * th) / safe)
    v = wa[:, None] * p[edge] + wb[:, None] * q[edge]
    v /= np.linalg.norm(v, axis=1)[:, None]
    lon = np.degrees(np.arctan2(v[:, 1], v[:, 0]))
    lat = np.degrees(np.arcsin(np.clip(v[:, 2], -1.0, 1.0)))
    xy = frame.fwd(np.column_stack([lon, lat]))
    ring_of = np.repeat(np.repeat(np.arange(len(cells)), counts), n)
    return shapely.polygons(shapely.linearrings(xy, indices=ring_of))  # type: ignore[no-any-return]


def _unit(lon: FloatArray, lat: FloatArray) -> FloatArray:
    la, lo = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def union_of_cells(cells: Collection[str], frame: Frame) -> shapely.Geometry:
    """The cells' union in `frame`, grown by COVER_MARGIN_M (what a piece is clipped to)."""
    polys = cell_polygons(sorted(cells), frame)
    return shapely.buffer(shapely.union_all(polys), COVER_MARGIN_M)


class CellSet:
    """All our claims for one round and the tokens they make."""

    def __init__(self, claims: list[Claim], tokens: frozenset[str] | None = None) -> None:
        self.claims = claims
        self.tokens = (
            tokens if tokens is not None else frozenset(t for c in claims for t in c.tokens())
        )

    @classmethod
    def build(
        cls,
        holdings: Collection[Holding],
        terms: Terms,
        at_s: float,
        peer_parties: Collection[str],
    ) -> CellSet:
        """Claims of every holding; CellsError when they pass `terms.max_cells` tokens."""
        claims: list[Claim] = []
        tokens: set[str] = set()
        cap = terms.max_cells
        for h in sorted(holdings, key=lambda h: (h.party, h.uid)):
            for c in claims_of(h, terms, at_s, peer_parties, cap):
                if c.size() <= cap:  # (a product too large is refused before it is made)
                    tokens.update(c.tokens())
                if c.size() > cap or len(tokens) > cap:
                    raise CellsError(
                        f"our items make more than max_cells = {cap} cells at grid level "
                        f"{terms.grid_level} (at {h.party}::{h.uid}): coarsen the grid, "
                        "lengthen time_slot_s / altitude_band_m, or raise max_cells"
                    )
                claims.append(c)
        return cls(claims, frozenset(tokens))
