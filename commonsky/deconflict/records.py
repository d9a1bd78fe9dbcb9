# Rule: the conflict engine's vocabulary — items, sides, conflicts, stored records — and the
# helpers every pair check uses to name a conflict. No geometry happens here.

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable
from typing import Any, Literal

import msgspec
import numpy as np

from commonsky.deconflict import cpa
from commonsky.deconflict.index import Key
from commonsky.deconflict.shapes import Line, Site, Volume
from commonsky.geo import FloatArray

ItemType = Literal["volume", "line", "site", "track"]
ConflictKind = Literal[
    "volume-volume", "line-crossing", "track-volume", "track-site", "track-track", "volume-site"
]
MIN_AREA_M2 = 1.0  # touching edges are not an overlap
#: How deep each side of a deconfliction line reaches (m): a volume or track farther than
#: this from the line is on neither side. About a theatre's width; an engine parameter.
LINE_REACH_M = 250_000.0


class Track(msgspec.Struct, frozen=True, kw_only=True):
    """A live track's state at `time_s` (epoch seconds). `alt_m` is NaN when the track's
    altitude is unknown (CoT hae 9999999 or NaN): it is then screened horizontally alone."""

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
    # Two tracks: each side's own (lon, lat, alt_m) at the closest approach (notices give a
    # party its own point, never the other's).
    a_at: tuple[float, float, float] | None = None
    b_at: tuple[float, float, float] | None = None
    # A track in it has no known altitude: it was screened horizontally alone, and the band
    # is the other item's (NaN, shown as null, for two such tracks).
    altitude_unknown: bool = False


class ConflictChange(msgspec.Struct, frozen=True):
    action: Literal["raised", "updated", "cleared"]
    conflict: Conflict


Minima = Callable[[str, str], tuple[float, float]]  # (party, party) -> (rpz_m, hpz_m)


def default_minima(_a: str, _b: str) -> tuple[float, float]:
    return cpa.RPZ_M, cpa.HPZ_M


class PairRules(msgspec.Struct, frozen=True):
    """What a pair check needs of its engine, handed down instead of the engine itself (so
    the checks in records.py and tracks.py do not import engine.py, which imports them)."""

    id_key: bytes  # conflict ids are HMACs under it (records._conflict_id)
    lookahead_s: float  # how far ahead a track is projected
    minima: Minima  # (party, party) -> (rpz_m, hpz_m)
    max_rpz_m: float  # minima above it are capped (the index pads tracks by it)
    line_reach_m: float  # how deep each side of a line reaches


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
    # volumes: the outline in the last frame it was projected into (frame key, x/y metres):
    # a stored volume meets new ones nearby mostly in one frame, so it is projected once.
    planar: tuple[tuple[float, float], FloatArray] | None = None
    box: tuple[float, ...] = ()  # volumes: start, end, floor, ceiling, ang, centre x y z
    slot: int = -1  # its row in the engine's SlotTable, and what the index files


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
            return None if math.isnan(v) else round(v, 3)
        if isinstance(v, list | tuple):
            return tuple(r(x) for x in v)
        if isinstance(v, dict):
            return tuple(sorted((k, r(x)) for k, x in v.items()))
        return v

    return r(msgspec.to_builtins(c))


def _side(rec: _Rec) -> Side:
    kind = rec.obj.kind if isinstance(rec.obj, Volume) else None
    return Side(rec.key[0], rec.key[1], rec.item, kind)


def _make(
    rules: PairRules,
    kind: ConflictKind,
    x: _Rec,
    y: _Rec,
    geometry: dict[str, Any] | None,
    **figures: Any,
) -> Conflict:
    sx, sy = _side(x), _side(y)
    a, b = _ordered(sx, sy)
    cid = _conflict_id(rules.id_key, kind, a, b)
    at = figures.pop("at", None)  # (x's point, y's point), when the kind has them
    if at is not None and a is not sx:
        at = (at[1], at[0])
    if at is not None:
        figures["a_at"], figures["b_at"] = at
    return Conflict(id=cid, kind=kind, a=a, b=b, geometry=geometry, **figures)


def _caps_apart(x: _Rec, y: _Rec, pad: float = 0.0) -> bool:
    cosang = float(np.clip(x.centre @ y.centre, -1.0, 1.0))
    return math.acos(cosang) > x.ang + y.ang + pad
