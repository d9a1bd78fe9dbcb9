# Rule: a notice tells a party only what it is entitled to know about the other side.
#
# Under "full" and "generalized" disclosure the notice may name the other item (its uid, and
# under "full" its kind of volume). Under "conflicts-only" it carries the intersection alone:
# the overlap geometry, the altitude and time intervals of the overlap, the conflict kind and
# the other party's id -- never the other item's uid, extent, kind of volume or details. A
# protected site under conflicts-only is revealed only this way. Notices are built from the
# Conflict alone, which holds nothing of either item beyond the intersection and the two sides,
# so nothing outside the overlap can leak in.

from __future__ import annotations

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
    other_uid: str | None = None  # never under conflicts-only
    other_kind: str | None = None  # only under full
    geometry: dict[str, Any] | None
    floor_m: float
    ceiling_m: float
    start_s: float
    end_s: float
    tcpa_s: float | None = None
    dcpa_m: float | None = None
    # A track in it reported no altitude: screened horizontally alone; the band is the
    # other item's (null for two such tracks).
    altitude_unknown: bool = False


def notice_for(conflict: Conflict, recipient_party: str, disclosure: Disclosure) -> Notice:
    """The notice `recipient_party` gets about `conflict`, given how much the other side's
    agreement discloses to it."""
    own, other = _sides(conflict, recipient_party)
    if conflict.kind == "line-crossing" and other.item == "line":
        # The other "party" of a crossing is whoever's side was entered.
        other_party = conflict.entered_party or other.party
    else:
        other_party = other.party
    named = disclosure in ("full", "generalized")
    return Notice(
        conflict_id=conflict.id,
        kind=conflict.kind,
        recipient=recipient_party,
        own_uid=own.uid,
        own_item=own.item,
        other_party=other_party,
        other_uid=other.uid if named else None,
        other_kind=other.kind if disclosure == "full" else None,
        geometry=conflict.geometry,
        floor_m=conflict.floor_m,
        ceiling_m=conflict.ceiling_m,
        start_s=conflict.start_s,
        end_s=conflict.end_s,
        tcpa_s=conflict.tcpa_s,
        dcpa_m=conflict.dcpa_m,
        altitude_unknown=conflict.altitude_unknown,
    )


def _sides(conflict: Conflict, party: str) -> tuple[Side, Side]:
    if conflict.a.party == party and conflict.b.party != party:
        return conflict.a, conflict.b
    if conflict.b.party == party and conflict.a.party != party:
        return conflict.b, conflict.a
    if conflict.a.party == party == conflict.b.party:
        # A line crossing by the line owner's own item: the line is the other side.
        return (conflict.b, conflict.a) if conflict.a.item == "line" else (conflict.a, conflict.b)
    raise ValueError(f"party {party!r} is not a side of conflict {conflict.id}")
