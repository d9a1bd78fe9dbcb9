"""Uid namespaces: one two-way mapping between the names a party uses and whose item they mean.

Every item is keyed by (originator party, uid as the originator's clients wrote it). A party
names things in its own namespace (`x`: its own item x) or in another party's (`A::x`: A's
item x; `A::g-…`: the opaque handle `generalized` disclosure gives one of A's items). The
hub reads every name a client writes with `read_name`, and writes every name it delivers by
the rule below; the two are inverse, so a party that writes back a name it was given means
exactly the item it was given — that is how a reply, a read receipt or a route waypoint
reaches the owner under the owner's own uid.

Delivering an item of party P to party R, each name it carries — its uid and every
reference in `<detail>` (where CoT carries them: `protocol/refs.py`) — becomes:
- R is P: unchanged; a party's own clients see exactly what it sent;
- a name of R's own item: R's own uid `x` (translated back for the owner);
- a name in P's own namespace (the item's own uid, its waypoints, its style link, its
  sender's device, its message id): `P::x` — `full` delivers the item as it is, and its own
  names come with it under P's prefix;
- a name of a third party Q's item: `Q::x` when R sees that item in `full` now, otherwise
  Q's opaque handle `Q::g-…` — exactly the name R sees the item under when it is
  generalized, and a name that tells nothing when R may not see the item at all. So what R
  receives is a function only of what R may see (the non-interference invariant: changing
  or deleting an item R may not see changes no byte R receives);
- names every client shares (`All Chat Rooms`, ATAK's team and role rooms, its contact-list
  groups) are not uids of anybody's and are never translated.
Under `generalized` the whole `<detail>` is dropped and the uid becomes the handle, so no
reference survives to be named.

Spoofing stays impossible whatever a party writes: an item is always stored under the
sending party (from its connection), a uid naming another party's namespace is refused as
the uid of a new item (`uid_spoof`; the sender segment of a GeoChat uid likewise), a delete
naming another party's item is refused, and every name delivered for another party's item
carries that party's prefix — so it can never collide with a recipient's own uid.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Container
from typing import NamedTuple

SEPARATOR = "::"
SHARED = ""  # the "party" of a name every client shares

# Names ATAK gives every client alike (`GeoChatService.DEFAULT_CHATROOM_NAME`, the legacy
# `All Streaming`, the contact-list roots in `Contacts`/`ChatManagerMapComponent`, the team
# colours of `squad_values` and the roles of `role_values` in ATAK's `arrays.xml`): chat
# rooms and groups, not items, so a party's `Cyan` means every party's `Cyan`.
SHARED_NAMES = frozenset(
    {
        "All Chat Rooms",
        "All Streaming",
        "Streaming",
        "RootContactGroup",
        "UserGroups",
        "TeamGroups",
        "TadilJGroup",
        "White",
        "Yellow",
        "Orange",
        "Magenta",
        "Red",
        "Maroon",
        "Purple",
        "Dark Blue",
        "Blue",
        "Cyan",
        "Teal",
        "Green",
        "Dark Green",
        "Brown",
        "Team Member",
        "Team Lead",
        "HQ",
        "Sniper",
        "Medic",
        "Forward Observer",
        "RTO",
        "K9",
    }
)

_HANDLE = re.compile(r"g-[0-9a-f]{16}")


class Key(NamedTuple):
    """Whose item a name means: the owner party and the uid in the owner's namespace.
    `party` is `SHARED` for a shared name (then `uid` is the name itself)."""

    party: str
    uid: str


def party_id_problem(pid: str) -> str | None:
    """Why `pid` cannot name a party (None when it can): letters, digits, - or _ (so never
    the separator), and not HUB, which names the hub itself. One rule for `[[party]] id`
    and for the certificates `cert issue` makes (their subject O is the party)."""
    if not pid or not pid.replace("-", "").replace("_", "").isalnum() or SEPARATOR in pid:
        return "must be letters, digits, - or _"
    if pid == "HUB":
        return "is reserved for the hub itself"
    return None


def foreign_uid(party: str, uid: str) -> str:
    """The name other parties see `party`'s uid under in `full`: `PARTY::uid`."""
    return f"{party}{SEPARATOR}{uid}"


def handle(secret: bytes, party: str, uid: str) -> str:
    """The opaque, stable name of `party`'s item `uid` for those who may not see it in full:
    `PARTY::g-` and 16 hex digits of HMAC-SHA256 under the hub's secret."""
    digest = hmac.new(secret, f"{party}\x00{uid}".encode(), hashlib.sha256).hexdigest()
    return f"{party}{SEPARATOR}g-{digest[:16]}"


def is_handle(uid: str) -> bool:
    """Whether a uid (without its party prefix) has the shape of an opaque handle."""
    return _HANDLE.fullmatch(uid) is not None


def read_name(writer: str, text: str, parties: Container[str]) -> Key:
    """The item a name written by party `writer` means.

    `A::x` with A a known party (or `HUB`) is A's item x; the writer's own prefix is
    stripped (a client echoing a name back); a shared name is `Key(SHARED, text)`; anything
    else — `::` after a prefix that names no party included (`fe80::1`) — is the writer's
    own item. A handle stays a handle here (`Key(A, "g-…")`); the hub resolves handles of
    items in its picture.
    """
    if text in SHARED_NAMES or not text:
        return Key(SHARED, text)
    prefix, sep, rest = text.partition(SEPARATOR)
    if not sep or prefix not in parties or not rest:
        return Key(writer, text)
    if prefix == writer:
        return read_name(writer, rest, parties)
    return Key(prefix, rest)


def own_uid(writer: str, uid: str, parties: Container[str]) -> str | None:
    """The uid a new item of `writer` is stored under, or None when the uid names another
    party's namespace (a spoof). `P::x` written by P is stored as `x`."""
    key = read_name(writer, uid, parties)
    # (A shared name used as a uid is simply the writer's own uid.)
    return key.uid if key.party in (writer, SHARED) else None
