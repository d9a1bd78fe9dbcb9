"""Items: what parties share, in the users' CoT vocabulary, tagged with our concepts.

An item is decoded once at the edge (CoT XML or TAK protobuf) into a `CotEvent`, then the
hub attaches who sent it (from the connection, never from the content) and its category.
Categories drive policy; the CoT-type mapping table below is the only place that decides.
"""

from __future__ import annotations

import enum

import msgspec


class Category(enum.StrEnum):
    POSITION = "position"
    TRACK = "track"
    LAUNCH = "launch"
    AIRSPACE = "airspace"
    SITE = "site"
    HOTLINE = "hotline"
    IMAGERY = "imagery"
    ALERT = "alert"
    CONFLICT = "conflict"


# Durable categories are stored before they are relayed and replayed on reconnect; the
# others are live (latest per uid wins, and a slow reader may miss intermediate updates).
DURABLE: frozenset[Category] = frozenset(
    {
        Category.HOTLINE,
        Category.LAUNCH,
        Category.AIRSPACE,
        Category.SITE,
        Category.ALERT,
        Category.CONFLICT,
    }
)


class Disclosure(enum.StrEnum):
    FULL = "full"
    GENERALIZED = "generalized"
    CONFLICTS_ONLY = "conflicts-only"


# CoT type prefix -> category. Longest prefix wins; documented in the README.
COT_CATEGORY_TABLE: tuple[tuple[str, Category], ...] = (
    ("a-", Category.TRACK),
    ("b-t-f", Category.HOTLINE),
    ("b-m-r", Category.AIRSPACE),
    ("u-d-f", Category.AIRSPACE),
    ("u-d-r", Category.AIRSPACE),
    ("u-d-c-c", Category.AIRSPACE),
    ("u-d-c-e", Category.AIRSPACE),
    ("u-d-p", Category.SITE),
    ("b-m-p-s-p-i", Category.SITE),
    ("b-i-x-i", Category.IMAGERY),
    ("b-r-f-h-c", Category.ALERT),
    ("b-a-o", Category.ALERT),
    ("t-x-csky-launch", Category.LAUNCH),
    ("t-x-csky-conflict", Category.CONFLICT),
    ("b-l", Category.LAUNCH),
)
_SORTED_TABLE = sorted(COT_CATEGORY_TABLE, key=lambda pair: -len(pair[0]))


def category_of(cot_type: str) -> Category | None:
    """The category of a CoT type, or None when the hub does not share that type."""
    for prefix, category in _SORTED_TABLE:
        if cot_type.startswith(prefix):
            return category
    return None


class Point(msgspec.Struct, frozen=True):
    lat: float
    lon: float
    hae: float = 9999999.0
    ce: float = 9999999.0
    le: float = 9999999.0


class CotEvent(msgspec.Struct, frozen=True):
    """One CoT event as decoded from XML or protobuf.

    `detail` keeps the children of <detail> as canonical XML text (re-serialised by our
    parser, so it never carries a DTD or an entity). Times are epoch seconds (UTC).
    """

    uid: str
    type: str
    time: float
    start: float
    stale: float
    how: str
    point: Point
    detail: str = ""
    access: str = ""
    qos: str = ""
    opex: str = ""
    # Fields lifted out of <detail> because routing or the map needs them.
    callsign: str = ""
    speed: float | None = None
    course: float | None = None
    dest_callsigns: tuple[str, ...] = ()
    dest_parties: tuple[str, ...] = ()
    dest_uids: tuple[str, ...] = ()  # `marti/dest@uid` as written (iTAK addresses by uid)


# The detail of the stale version a delete (`t-x-d-d`) leaves of its target: stored, recorded
# and shown to the desks, which take it as the item withdrawn (hub/core.py).
DELETED = "<__deleted/>"


def is_deleted(event: CotEvent) -> bool:
    return event.detail == DELETED


HUB = "HUB"  # the originator of items the hub makes itself (notices, fused events, alerts)


class Item(msgspec.Struct, frozen=True):
    """A CoT event accepted by the hub: who sent it, in which category, in which order."""

    party: str  # originator, from the connection
    user: str  # the sender's user/device (TLS CN or the event's own uid)
    category: Category
    event: CotEvent
    received: float  # hub wall clock at acceptance, for latency figures
    seq: int = 0  # store sequence for durable items, 0 for live ones
    origin: str = ""  # id of the connection it came from (it is not echoed there)
    audience: tuple[str, ...] = ()  # hub-made items: exactly these parties receive it

    @property
    def uid(self) -> str:
        return self.event.uid

    @property
    def key(self) -> tuple[str, str]:
        """Items are keyed by (originator party, uid): one party cannot touch another's."""
        return (self.party, self.event.uid)
