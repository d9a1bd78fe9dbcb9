# Rule: a notice never tells a party more about the other side's item than that party's
# disclosure of the item allows.
#
# Every notice may say where and when the recipient's OWN item meets the other side's: the
# intersection (the overlap of two volumes, a track's path inside a volume, the point where
# a line is crossed) with its altitude and time intervals, the conflict kind and the other
# party -- what `conflicts-only` grants, and so every level above it too. Two tracks have no
# intersection: the notice gives the recipient's own position and altitude at the closest
# approach and its time, never the other track's (nor the midpoint between them, which
# would place it to a few metres).
# Beyond that, by level:
#   conflicts-only  nothing: no uid, no kind of volume, no miss distance;
#   generalized     the other item's opaque handle -- the same `PARTY::g-...` its
#                   generalized copy is delivered under (policy.opaque_uid), never its uid;
#   full            its uid, its kind of volume and the miss distance at closest approach.
# Notices are built from the Conflict alone, which holds nothing of either item beyond the
# intersection, the two sides and (tracks) each side's own point at closest approach.

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import msgspec

from commonsky.deconflict.engine import Conflict, ConflictKind, Side

Disclosure = Literal["full", "generalized", "conflicts-only"]


class Notice(msgspec.Struct, frozen=True, kw_only=True):
    conflict_id: str
    kind: ConflictKind
    recipient: str
    own_uid: str  # the recipient's own item in conflict
    own_item: str
    other_party: str
    other_uid: str | None = None  # full: the uid; generalized: the opaque handle; else None
    other_kind: str | None = None  # only under full
    geometry: dict[str, Any] | None
    floor_m: float
    ceiling_m: float
    start_s: float
    end_s: float
    tcpa_s: float | None = None
    dcpa_m: float | None = None  # only under full
    thread: str | None = None  # the hotline thread both parties acknowledge, if one opened
    # A track in it reported no altitude: screened horizontally alone; the band is the
    # other item's, or the recipient's own altitude (null when that is the unknown one).
    altitude_unknown: bool = False


Handle = Callable[[str, str], str]  # (party, uid) -> the opaque handle generalized copies use


def notice_for(
    conflict: Conflict,
    recipient_party: str,
    disclosure: Disclosure,
    handle: Handle | None = None,
    thread: str | None = None,
) -> Notice:
    """The notice `recipient_party` gets about `conflict`, given how much the other side's
    agreement discloses to it; `handle` names the other item under `generalized` (without
    one, a generalized notice names it no more than a conflicts-only one)."""
    own, other = _sides(conflict, recipient_party)
    if conflict.kind == "line-crossing" and other.item == "line":
        # The other "party" of a crossing is whoever's side was entered.
        other_party = conflict.entered_party or other.party
    else:
        other_party = other.party
    full = disclosure == "full"
    if full:
        other_uid: str | None = other.uid
    elif disclosure == "generalized" and handle is not None:
        other_uid = handle(other.party, other.uid)
    else:
        other_uid = None
    geometry, floor_m, ceiling_m = conflict.geometry, conflict.floor_m, conflict.ceiling_m
    at = _own_point(conflict, own)
    if at is not None and not full:  # two tracks: the recipient's own point, not theirs
        lon, lat, alt = at
        geometry = {"type": "Point", "coordinates": [lon, lat]}
        floor_m = ceiling_m = alt
    return Notice(
        conflict_id=conflict.id,
        kind=conflict.kind,
        recipient=recipient_party,
        own_uid=own.uid,
        own_item=own.item,
        other_party=other_party,
        other_uid=other_uid,
        other_kind=other.kind if full else None,
        geometry=geometry,
        floor_m=floor_m,
        ceiling_m=ceiling_m,
        start_s=conflict.start_s,
        end_s=conflict.end_s,
        tcpa_s=conflict.tcpa_s,
        dcpa_m=conflict.dcpa_m if full else None,
        thread=thread,
        altitude_unknown=conflict.altitude_unknown,
    )


def _own_point(conflict: Conflict, own: Side) -> tuple[float, float, float] | None:
    if own is conflict.a:
        return conflict.a_at
    if own is conflict.b:
        return conflict.b_at
    return None


def _sides(conflict: Conflict, party: str) -> tuple[Side, Side]:
    if conflict.a.party == party and conflict.b.party != party:
        return conflict.a, conflict.b
    if conflict.b.party == party and conflict.a.party != party:
        return conflict.b, conflict.a
    if conflict.a.party == party == conflict.b.party:
        # A line crossing by the line owner's own item: the line is the other side.
        return (conflict.b, conflict.a) if conflict.a.item == "line" else (conflict.a, conflict.b)
    raise ValueError(f"party {party!r} is not a side of conflict {conflict.id}")
