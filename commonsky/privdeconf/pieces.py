# Rule: after the PSI, a hub sends the other only its own items CLIPPED to the cells both
# occupy (and to the heights and times of those cells), canonicalised so that the vertices
# say nothing of the item beyond the cells; the receiver clips again to its own matched cells
# (a peer that sends more is measured, and what lies outside is never used) and computes,
# from its own items and those pieces, the conflicts the single-hub engine would raise between
# them: the same kinds, figures and overlap (to the grid's resolution, see below).
#
# Why the pieces suffice. An overlap of positive area, height and duration lies in cells,
# bands and slots both items cover (cells.py), so every such token matched, and each side's
# piece of the item holds the whole overlap: own ∩ piece = own ∩ item. Heights and times of a
# volume piece are the item's, cut to its matched bands and slots; the overlap of the two
# intervals lies within those, so the overlap figures are the engine's exactly. One case: a
# window that began before the round; the round's first slot then holds "now", and the
# piece keeps its true start (the engine's start is the later of the two starts, past or not).
#
# Canonical pieces. An outline computed from densified edges carries vertices spaced along the
# item's edges at a spacing that depends on how long each edge is *outside* the cells (the
# notice's canonical_geometry removes the same trace). A piece keeps its corners (turns of
# more than CORNER_RAD: the item's vertices and where its edges cross cell edges) and between
# corners only points every PIECE_STEP_M measured from the corner before: what remains is a
# function of the clipped shape alone. The resampled outline lies on the old one (within a few
# millimetres of the edge between samples), so the overlap moves by less than a metre.

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Collection, Iterable
from typing import Any, Literal

import h3
import msgspec
import numpy as np
import shapely
import shapely.geometry

from commonsky.deconflict.engine import line_frame
from commonsky.deconflict.records import MIN_AREA_M2, Conflict, ConflictKind, Side
from commonsky.deconflict.shapes import Line, Site, Volume
from commonsky.errors import RemoteProtocolError
from commonsky.geo import EARTH_R_M, FloatArray, Frame, cap_of, centre_lonlat, densify
from commonsky.privdeconf.cells import (
    CellSet,
    Claim,
    Layer,
    Role,
    band_bounds,
    parse_token,
    union_of_cells,
)
from commonsky.privdeconf.terms import Terms

CORNER_RAD = 1e-3
PIECE_STEP_M = 1_000.0
MAX_PIECE_VERTICES = 50_000  # in one piece; more is a hostile peer (a piece is cells wide)
OUTSIDE_TOLERANCE_M2 = 1_000.0  # canonical rounding; more outside our cells is a breach


class Piece(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One item of the sender's clipped to the cells both occupy, in one layer.

    `handle` is the item's opaque name towards this peer (stable across rounds, so a conflict
    keeps its id; it says nothing of the uid); `party` the item's party. Volumes carry their
    band (m) and window (epoch s) cut to the matched bands and slots ("v") or as the engine's
    notice gives them ("s": start no earlier than the round; "l": as they are); sites their
    band; a line's side the party it binds and the party whose side it is."""

    layer: Layer
    role: Role
    handle: str
    party: str
    geometry: dict[str, Any]  # GeoJSON Polygon or MultiPolygon, (lon, lat)
    floor_m: float | None = None
    ceiling_m: float | None = None
    start_s: float | None = None
    end_s: float | None = None
    binds: str | None = None
    entered: str | None = None


def item_handle(secret: bytes, peer: str, party: str, uid: str) -> str:
    """Our item's name towards `peer`: HMAC-SHA-256 under our secret, 20 hex digits."""
    text = f"privdeconf|{peer}|{party}|{uid}".encode()
    return hmac.new(secret, text, hashlib.sha256).hexdigest()[:20]


def conflict_id(kind: str, one: tuple[str, str], other: tuple[str, str]) -> str:
    """The id both hubs give a conflict: from its kind and each side's (party, handle)."""
    a, b = sorted([f"{one[0]}:{one[1]}", f"{other[0]}:{other[1]}"])
    return hashlib.sha256(f"privdeconf|{kind}|{a}|{b}".encode()).hexdigest()[:24]


# -- the sender ------------------------------------------------------------------------------


def _by_layer(matched: Iterable[str]) -> dict[str, dict[str, set[str]]]:
    """Matched tokens as layer -> cell -> {rest}."""
    out: dict[str, dict[str, set[str]]] = {"v": {}, "s": {}, "l": {}}
    for t in matched:
        layer, cell, rest = parse_token(t)
        if layer in out:
            out[layer].setdefault(cell, set()).add(rest)
    return out


def make_pieces(
    cells: CellSet,
    matched: Collection[str],
    terms: Terms,
    at_s: float,
    secret: bytes,
    peer: str,
) -> list[Piece]:
    """Our pieces for the tokens of ours the peer also holds (`matched`), in a stable order."""
    index = _by_layer(matched)
    out: list[Piece] = []
    for claim in cells.claims:
        piece = _piece(claim, index[claim.layer], terms, at_s, secret, peer)
        if piece is not None:
            out.append(piece)
    out.sort(key=lambda p: (p.layer, p.handle, p.role, p.binds or ""))
    return out


def _piece(
    claim: Claim,
    index: dict[str, set[str]],
    terms: Terms,
    at_s: float,
    secret: bytes,
    peer: str,
) -> Piece | None:
    h = claim.holding
    item = h.item
    hit: set[str] = set()
    bands: set[int] = set()
    slots: set[int] = set()
    for cell in claim.cells:
        rests = index.get(cell)
        if not rests:
            continue
        if claim.layer == "v":
            for rest in rests:
                b, _, s = rest.partition(":")
                if int(b) in claim.bands and int(s) in claim.slots:
                    hit.add(cell)
                    bands.add(int(b))
                    slots.add(int(s))
        elif claim.layer == "s" or claim.party in rests:
            hit.add(cell)
    if not hit:
        return None
    clipped = _areal(shapely.intersection(claim.region, union_of_cells(hit, claim.frame)))
    if clipped.is_empty or clipped.area < MIN_AREA_M2:
        return None  # the item reaches those cells only by its dilation
    geometry = canonical_piece(clipped, claim.frame)
    if geometry is None:
        return None
    handle = item_handle(secret, peer, h.party, h.uid)
    common: dict[str, Any] = {"layer": claim.layer, "role": claim.role, "handle": handle}
    if isinstance(item, Volume):
        floor, ceiling, start, end = item.floor_m, item.ceiling_m, item.start_s, item.end_s
        if claim.layer == "v":
            floor = max(floor, band_bounds(min(bands), terms.altitude_band_m)[0])
            ceiling = min(ceiling, band_bounds(max(bands), terms.altitude_band_m)[1])
            if min(slots) != claim.slots.start:
                start = max(start, band_bounds(min(slots), terms.time_slot_s)[0])
            end = min(end, band_bounds(max(slots), terms.time_slot_s)[1])
        elif claim.layer == "s":
            start = max(start, at_s)
        return Piece(
            **common,
            party=h.party,
            geometry=geometry,
            floor_m=float(floor),
            ceiling_m=float(ceiling),
            start_s=float(start),
            end_s=float(end),
        )
    if isinstance(item, Site):
        return Piece(
            **common,
            party=h.party,
            geometry=geometry,
            floor_m=float(item.floor_m),
            ceiling_m=float(item.ceiling_m),
        )
    return Piece(
        **common, party=h.party, geometry=geometry, binds=claim.party, entered=claim.entered
    )


def _areal(g: shapely.Geometry) -> shapely.Geometry:
    """The polygonal part of a result (touching edges and points dropped)."""
    if isinstance(g, shapely.Polygon | shapely.MultiPolygon):
        return g
    parts = [
        p for p in getattr(g, "geoms", []) if isinstance(p, shapely.Polygon | shapely.MultiPolygon)
    ]
    return shapely.unary_union(parts) if parts else shapely.Polygon()


def _canonical_ring(xy: FloatArray) -> FloatArray:
    """A closed ring's corners, and between corners points every PIECE_STEP_M from the corner
    before (see the module rule)."""
    pts = xy[:-1] if len(xy) > 1 and np.array_equal(xy[0], xy[-1]) else xy
    n = len(pts)
    d_in = pts - np.roll(pts, 1, axis=0)
    d_out = np.roll(pts, -1, axis=0) - pts
    cross = d_in[:, 0] * d_out[:, 1] - d_in[:, 1] * d_out[:, 0]
    dot = (d_in * d_out).sum(axis=1)
    corners = np.flatnonzero(np.abs(np.arctan2(cross, dot)) > CORNER_RAD)
    if len(corners) == 0:
        corners = np.array([int(np.lexsort((pts[:, 1], pts[:, 0]))[0])])
    out: list[FloatArray] = []
    for k, i in enumerate(corners.tolist()):
        j = int(corners[(k + 1) % len(corners)])
        idx = np.arange(i, j + 1 if j > i else j + n + 1) % n
        chain = pts[idx]
        seg = np.sqrt((np.diff(chain, axis=0) ** 2).sum(axis=1))
        along = np.concatenate([[0.0], np.cumsum(seg)])
        total = float(along[-1])
        s = np.arange(0.0, total, PIECE_STEP_M) if total > 0 else np.array([0.0])
        out.append(
            np.column_stack([np.interp(s, along, chain[:, 0]), np.interp(s, along, chain[:, 1])])
        )
    ring = np.concatenate(out)
    return np.vstack([ring, ring[:1]])


def canonical_piece(g: shapely.Geometry, frame: Frame) -> dict[str, Any] | None:
    """A planar polygonal geometry in `frame` as canonical GeoJSON in (lon, lat): corners and
    resampled points (above), checked and oriented in the frame (exterior anticlockwise), each
    ring starting at its least (lat, lon) vertex and the polygons in that order, rounded to
    1e-7° (~1 cm). Nothing planar is done in (lon, lat), where the antimeridian would cut it."""
    polys = []
    for part in getattr(g, "geoms", [g]):
        if not isinstance(part, shapely.Polygon) or part.is_empty:
            continue
        rings = [
            _canonical_ring(shapely.get_coordinates(r)) for r in (part.exterior, *part.interiors)
        ]
        if len(rings[0]) >= 4:
            polys.append(shapely.Polygon(rings[0], [r for r in rings[1:] if len(r) >= 4]))
    if not polys:
        return None
    shape = shapely.MultiPolygon(polys) if len(polys) > 1 else polys[0]
    if not shape.is_valid:
        shape = _areal(shapely.make_valid(shape))
    out = []
    for p in getattr(shape, "geoms", [shape]):
        if not isinstance(p, shapely.Polygon) or p.is_empty:
            continue
        p = shapely.geometry.polygon.orient(p, 1.0)
        out.append(
            [_lonlat_ring(shapely.get_coordinates(r), frame) for r in (p.exterior, *p.interiors)]
        )
    if not out:
        return None
    out.sort(key=lambda rings: (rings[0][0][1], rings[0][0][0]))
    if len(out) == 1:
        return {"type": "Polygon", "coordinates": out[0]}
    return {"type": "MultiPolygon", "coordinates": out}


def _lonlat_ring(xy: FloatArray, frame: Frame) -> list[list[float]]:
    """A closed planar ring as (lon, lat), rounded, starting at its least (lat, lon)."""
    ll = np.round(frame.inv(xy[:-1]), 7)
    ll[:, 0] = np.where(ll[:, 0] <= -180.0, ll[:, 0] + 360.0, ll[:, 0])
    first = int(np.lexsort((ll[:, 0], ll[:, 1]))[0])
    ll = np.roll(ll, -first, axis=0)
    return [*ll.tolist(), ll[0].tolist()]


# -- the receiver ----------------------------------------------------------------------------


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError("bad_privdeconf_piece", message)


def _rings_of(geometry: dict[str, Any]) -> list[list[FloatArray]]:
    """A piece's GeoJSON as polygons of (lon, lat) rings, checked (RemoteProtocolError)."""
    kind = geometry.get("type")
    coords = geometry.get("coordinates")
    if kind == "Polygon":
        polys = [coords]
    elif kind == "MultiPolygon" and isinstance(coords, list):
        polys = coords
    else:
        raise _bad(f"geometry.type {kind!r} is not Polygon or MultiPolygon")
    out: list[list[FloatArray]] = []
    total = 0
    for p in polys:
        if not isinstance(p, list) or not p:
            raise _bad("geometry.coordinates: a polygon without rings")
        rings = []
        for r in p:
            try:
                arr = np.asarray(r, dtype=np.float64)
            except (TypeError, ValueError):
                raise _bad("geometry.coordinates: malformed ring") from None
            if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) < 4:
                raise _bad("geometry.coordinates: a ring is not 4 or more [lon, lat]")
            if (
                not np.isfinite(arr).all()
                or (np.abs(arr[:, 0]) > 180).any()
                or (np.abs(arr[:, 1]) > 90).any()
            ):
                raise _bad("geometry.coordinates: a coordinate outside the earth")
            total += len(arr)
            rings.append(arr)
        out.append(rings)
    if total > MAX_PIECE_VERTICES:
        raise _bad(f"geometry: {total} vertices, more than {MAX_PIECE_VERTICES}")
    return out


def piece_shape(piece: Piece, frame: Frame) -> shapely.Geometry:
    """A piece in `frame`, its edges taken as geodesics (as the engine takes an outline's)."""
    polys = []
    for rings in _rings_of(piece.geometry):
        xy = [
            frame.fwd(densify([(float(x), float(y)) for x, y in r[:-1]], closed=True))
            for r in rings
        ]
        polys.append(shapely.Polygon(xy[0], xy[1:]))
    g = shapely.union_all(shapely.make_valid(np.asarray(polys, dtype=object)))
    return _areal(g)


def piece_cap(piece: Piece) -> tuple[FloatArray, float]:
    pts = [(float(x), float(y)) for rings in _rings_of(piece.geometry) for x, y in rings[0]]
    return cap_of(pts)


def _figures_ok(p: Piece) -> None:
    need: tuple[str, ...] = ()
    if p.role == "volume":
        need = ("floor_m", "ceiling_m", "start_s", "end_s")
    elif p.role == "site":
        need = ("floor_m", "ceiling_m")
    for name in need:
        v = getattr(p, name)
        if v is None or not math.isfinite(v):
            raise _bad(f"{p.role} piece without a finite {name}")
    if p.role == "line" and (not p.binds or not p.entered):
        raise _bad("a line piece names no party it binds or whose side it is")
    expected = {"v": ("volume",), "s": ("volume", "site"), "l": ("volume", "line")}
    if p.role not in expected.get(p.layer, ()):
        raise _bad(f"a {p.role} piece in layer {p.layer!r}")


def check_pieces(
    pieces: list[Piece], matched: Collection[str], peer_parties: Collection[str]
) -> tuple[list[tuple[Piece, Frame, shapely.Geometry]], float]:
    """The peer's pieces checked (RemoteProtocolError) and clipped to OUR matched cells of
    their layer: [(piece, frame, planar shape)] and the area (m²) that lay outside them."""
    index = _by_layer(matched)
    out = []
    outside = 0.0
    for p in pieces:
        _figures_ok(p)
        if p.party not in peer_parties:
            raise _bad(f"a piece of party {p.party!r}, which the peer does not speak for")
        c, ang = piece_cap(p)
        frame = Frame(*centre_lonlat(c))
        shape = piece_shape(p, frame)
        party = p.binds if p.role == "line" else p.party
        cells = [cell for cell, rests in index[p.layer].items() if p.layer != "l" or party in rests]
        cells = _cells_near(cells, c, ang)
        inside = (
            _areal(shapely.intersection(shape, union_of_cells(cells, frame)))
            if cells
            else shapely.Polygon()
        )
        lost = shape.area - inside.area
        if lost > OUTSIDE_TOLERANCE_M2:
            outside += lost
        if not inside.is_empty:
            out.append((p, frame, inside))
    return out, outside


def _cells_near(cells: list[str], centre: FloatArray, ang: float) -> list[str]:
    """Of `cells`, those that may meet the cap (centre, ang): the rest cannot hold any of a
    piece inside it, and clipping to them all would cost pieces x matched cells."""
    if not cells:
        return cells
    ll = np.radians(np.asarray([h3.cell_to_latlng(cell) for cell in cells]))
    u = np.column_stack(
        [np.cos(ll[:, 0]) * np.cos(ll[:, 1]), np.cos(ll[:, 0]) * np.sin(ll[:, 1]), np.sin(ll[:, 0])]
    )
    reach = ang + 2.5 * h3.average_hexagon_edge_length(h3.get_resolution(cells[0]), "m") / EARTH_R_M
    near = np.arccos(np.clip(u @ centre, -1.0, 1.0)) <= reach
    return [cell for cell, ok in zip(cells, near.tolist(), strict=True) if ok]


def private_conflicts(
    cells: CellSet,
    received: list[tuple[Piece, Frame, shapely.Geometry]],
    terms: Terms,
    at_s: float,
    secret: bytes,
    peer: str,
) -> list[Conflict]:
    """The conflicts the single-hub engine would raise between our items (`cells.claims`) and
    the peer's checked pieces, sorted by id. The other side of each is (party, handle)."""
    found: dict[str, Conflict] = {}
    for piece, pframe, pshape in received:
        pc, pang = piece_cap(piece)
        for claim in cells.claims:
            kind = _kind(claim, piece)
            if kind is None:
                continue
            oc, oang = _item_cap(claim.holding.item)
            reach = terms.line_reach_m / EARTH_R_M if "line" in (claim.role, piece.role) else 0.0
            if math.acos(float(np.clip(oc @ pc, -1, 1))) > oang + pang + reach:
                continue
            c = _conflict(kind, claim, piece, pshape, pframe, terms, at_s, secret, peer)
            if c is not None:
                found[c.id] = c
    return [found[k] for k in sorted(found)]


def _item_cap(item: Volume | Line | Site) -> tuple[FloatArray, float]:
    if isinstance(item, Volume):
        return item.shape.cap()
    if isinstance(item, Site):
        return item.area().cap()
    return item.cap()


def _kind(claim: Claim, piece: Piece) -> ConflictKind | None:
    if claim.layer != piece.layer:
        return None
    if claim.layer == "v":
        return "volume-volume"
    if claim.layer == "s":
        return "volume-site" if {claim.role, piece.role} == {"volume", "site"} else None
    if claim.role == "volume" and piece.role == "line" and piece.binds == claim.party:
        return "line-crossing"
    if claim.role == "line" and piece.role == "volume" and piece.party == claim.party:
        return "line-crossing"
    return None


def _conflict(
    kind: ConflictKind,
    claim: Claim,
    piece: Piece,
    pshape: shapely.Geometry,
    pframe: Frame,
    terms: Terms,
    at_s: float,
    secret: bytes,
    peer: str,
) -> Conflict | None:
    h = claim.holding
    item = h.item
    # A line's side is drawn in the line's own frame, as the engine draws it (line_frame).
    frame = (
        line_frame(item)
        if isinstance(item, Line)
        else Frame.around(_item_cap(item), piece_cap(piece))
    )
    theirs = shapely.transform(pshape, lambda xy: frame.fwd(pframe.inv(xy)))
    if kind == "volume-volume":
        found = _volume_volume(item, piece, frame, at_s)
    elif kind == "volume-site":
        found = _volume_site(item, piece, frame, at_s)
    else:
        found = _line_crossing(claim, item, piece, frame, terms, at_s)
    if found is None:
        return None
    mine, figures, min_area = found
    overlap = _areal(shapely.intersection(mine, theirs))
    if overlap.is_empty or overlap.area < min_area:
        return None
    kind_of = item.kind if isinstance(item, Volume) else None
    own_item: Literal["volume", "line", "site"] = claim.role
    own = Side(h.party, h.uid, own_item, kind_of)
    other = Side(piece.party, piece.handle, piece.role, None)
    own_handle = item_handle(secret, peer, h.party, h.uid)
    cid = conflict_id(kind, (h.party, own_handle), (piece.party, piece.handle))
    a, b = (own, other) if (own.party, own.uid) <= (other.party, other.uid) else (other, own)
    return Conflict(id=cid, kind=kind, a=a, b=b, geometry=frame.to_geojson(overlap), **figures)


# What a kind of conflict compares: our item's region in the frame, the figures the notice
# carries (levels, window, who entered) and the least overlap that counts (m²); None when the
# two cannot conflict (no common levels or time).
_Compared = tuple[shapely.Geometry, dict[str, Any], float]


def _volume_volume(item: Any, piece: Piece, frame: Frame, at_s: float) -> _Compared | None:
    assert isinstance(item, Volume)
    assert piece.floor_m is not None and piece.ceiling_m is not None
    assert piece.start_s is not None and piece.end_s is not None
    start, end = max(item.start_s, piece.start_s), min(item.end_s, piece.end_s)
    low, high = max(item.floor_m, piece.floor_m), min(item.ceiling_m, piece.ceiling_m)
    if not (start < end and end > at_s and low < high):
        return None
    mine = item.shape.planar(frame)
    figures = {"floor_m": low, "ceiling_m": high, "start_s": start, "end_s": end}
    return mine, figures, MIN_AREA_M2


def _volume_site(item: Any, piece: Piece, frame: Frame, at_s: float) -> _Compared | None:
    if isinstance(item, Volume):  # our strike area, their site
        assert piece.floor_m is not None and piece.ceiling_m is not None
        s_floor, s_ceiling = piece.floor_m, piece.ceiling_m
        v_floor, v_ceiling, v_start, v_end = (
            item.floor_m,
            item.ceiling_m,
            item.start_s,
            item.end_s,
        )
        mine = item.shape.planar(frame)
    else:  # our site, their strike area
        assert isinstance(item, Site)
        assert piece.floor_m is not None and piece.ceiling_m is not None
        assert piece.start_s is not None and piece.end_s is not None
        s_floor, s_ceiling = item.floor_m, item.ceiling_m
        v_floor, v_ceiling, v_start, v_end = (
            piece.floor_m,
            piece.ceiling_m,
            piece.start_s,
            piece.end_s,
        )
        mine = item.area().planar(frame)
    low, high = max(v_floor, s_floor), min(v_ceiling, s_ceiling)
    start, end = max(v_start, at_s), v_end
    if not (low < high and start < end):
        return None
    figures = {"floor_m": low, "ceiling_m": high, "start_s": start, "end_s": end}
    return mine, figures, 1e-9  # the engine's strike check asks only for a positive area


def _line_crossing(
    claim: Claim, item: Any, piece: Piece, frame: Frame, terms: Terms, at_s: float
) -> _Compared | None:
    figures: dict[str, Any]
    if isinstance(item, Line):
        assert claim.entered is not None
        side = "right" if claim.party == item.left_party else "left"
        mine = item.side_region(frame, side, terms.line_reach_m)  # type: ignore[arg-type]
        vol = piece
        entered = claim.entered
    else:
        assert isinstance(item, Volume)
        mine = item.shape.planar(frame)
        vol = None
        assert piece.entered is not None  # (checked on receipt)
        entered = piece.entered
    if vol is not None:
        assert vol.floor_m is not None and vol.ceiling_m is not None
        assert vol.start_s is not None and vol.end_s is not None
        figures = {
            "floor_m": vol.floor_m,
            "ceiling_m": vol.ceiling_m,
            "start_s": vol.start_s,
            "end_s": vol.end_s,
        }
    else:
        assert isinstance(item, Volume)
        figures = {
            "floor_m": item.floor_m,
            "ceiling_m": item.ceiling_m,
            "start_s": item.start_s,
            "end_s": item.end_s,
        }
    if figures["end_s"] <= at_s:
        return None
    figures["entered_party"] = entered
    return mine, figures, MIN_AREA_M2
