"""Items: what parties share, in the users' CoT vocabulary, tagged with our concepts.

An item is decoded once at the edge (CoT XML or TAK protobuf) into a `CotEvent`, then the
hub attaches who sent it (from the connection, never from the content) and its category.
Categories drive policy; the CoT-type mapping table below is the only place that decides.
"""

from __future__ import annotations

import enum
import functools
import math

import msgspec

from commonsky.protocol.xmlsafe import detail_tree


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
    # What TAK users do every day (issue #12): each its own category, so that an agreement
    # says exactly which of them crosses.
    MARKER = "marker"  # spot markers, points, waypoints, checkpoints (b-m-p-*)
    DRAWING = "drawing"  # telestration, range & bearing, vehicle outlines: not airspace
    VIDEO = "video"  # video feeds (b-i-v)
    FILE = "file"  # file transfers: requests and acknowledgements (b-f-t-*)
    EMERGENCY = "emergency"  # 911, troops in contact, ring the bell, geofence breach
    CASEVAC = "casevac"  # CASEVAC / MEDEVAC requests (b-r-f-h-c): medical, not public
    OTHER = "other"  # every type the table does not name


# Durable categories are stored before they are relayed and replayed on reconnect (also
# after a hub restart); the others are live (latest per uid wins, kept in memory while not
# stale, and a slow reader may miss intermediate updates). The line is drawn by what a TAK
# user expects after a reconnect: a marker, a drawing, a video feed, an emergency or a
# CASEVAC request still on the map; a track's or an unknown type's latest state if fresh.
# Imagery (a quick-pic marker, the hub's evidence markers) is kept like a marker: a photo
# is evidence, and it is recorded in the ledger as every durable item is.
DURABLE: frozenset[Category] = frozenset(
    {
        Category.IMAGERY,
        Category.HOTLINE,
        Category.LAUNCH,
        Category.AIRSPACE,
        Category.SITE,
        Category.ALERT,
        Category.CONFLICT,
        Category.MARKER,
        Category.DRAWING,
        Category.VIDEO,
        Category.EMERGENCY,
        Category.CASEVAC,
    }
)


class Disclosure(enum.StrEnum):
    FULL = "full"
    GENERALIZED = "generalized"
    CONFLICTS_ONLY = "conflicts-only"


# CoT type prefix -> category. Longest prefix wins; a type no prefix matches is `other`.
# Documented in the README; demo/checks.py keeps its own, independent copy.
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
    ("b-m-p", Category.MARKER),
    ("u-d-f-m", Category.DRAWING),  # telestration (ATAK "MultiPolyline"): strokes
    ("u-d-k", Category.DRAWING),  # keyhole
    ("u-d-v", Category.DRAWING),  # vehicle outlines (u-d-v, u-d-v-m)
    ("u-rb", Category.DRAWING),  # range & bearing line (u-rb-a)
    ("u-r-b", Category.DRAWING),  # range & bearing circle, bullseye
    ("b-i-v", Category.VIDEO),
    ("b-i-x-i", Category.IMAGERY),
    ("b-f-t", Category.FILE),
    ("b-r-f-h-c", Category.CASEVAC),
    ("b-a-o", Category.EMERGENCY),
    ("b-a-g", Category.EMERGENCY),
    ("b-a-o-csky", Category.ALERT),  # the public warnings parties issue through the hub
    ("t-x-csky-launch", Category.LAUNCH),
    ("t-x-csky-conflict", Category.CONFLICT),
    ("b-l", Category.LAUNCH),
)
_SORTED_TABLE = sorted(COT_CATEGORY_TABLE, key=lambda pair: -len(pair[0]))

# Types no category routes. Deletes have their own path (hub/deletes.py: only the owner's,
# relayed to whoever received the item, under that party's name for it), taken before any
# category is looked up; should one reach routing, it stays inside the sender's party.
PARTY_ONLY_TYPES: tuple[str, ...] = ("t-x-d-d",)

# Messages about other items, not items: relayed once to whoever is connected and entitled,
# never kept in the picture and never replayed (a cancel removes what it cancels).
TRANSIENT_TYPES: tuple[str, ...] = (
    "b-t-f-d",  # GeoChat delivered receipt
    "b-t-f-r",  # GeoChat read receipt
    "b-f-t",  # file-transfer request (b-f-t-r) and acknowledgement (b-f-t-a)
    "b-a-o-can",  # emergency cancelled
    "t-x-d-d",  # delete
)

# TAK Server's notices about its own missions (Data Sync: create, delete, change, invite,
# role; `DistributedSubscriptionManager.java`). This hub keeps no missions, so one sent by
# a client speaks for a server that is not there: refused as `mission_notice`.
SERVER_ONLY_TYPES: tuple[str, ...] = ("t-x-m-",)


@functools.lru_cache(maxsize=4096)  # (every accepted item asks; a few types make most)
def category_of(cot_type: str) -> Category | None:
    """The category of a CoT type (`other` when the table names none), or None for types
    that never leave the sender's party (`PARTY_ONLY_TYPES`)."""
    if cot_type.startswith(PARTY_ONLY_TYPES):
        return None
    for prefix, category in _SORTED_TABLE:
        if cot_type.startswith(prefix):
            return category
    return Category.OTHER


# CommonSky's detail extension that makes a TAK drawing an airspace item (desks/drawings.py).
AIRSPACE_EXTENSION = "csky_airspace"
# (An enum member read from its class costs about a function call on Python 3.11, and this is
# asked for every accepted event: a module name instead. Likewise in the desks' `observe`.)
_DRAWING = Category.DRAWING


def category_of_event(event: CotEvent) -> Category | None:
    """`category_of` the event's type, except that a drawing (a telestration, say) that
    carries our `<csky_airspace>` extension is declared airspace by its sender."""
    category = category_of(event.type)
    if (
        category is _DRAWING
        and f"<{AIRSPACE_EXTENSION}" in event.detail
        and detail_tree(event.detail).find(AIRSPACE_EXTENSION) is not None
    ):
        return Category.AIRSPACE
    return category


def is_transient(cot_type: str) -> bool:
    """Whether events of this type are messages (relayed, never kept in the picture)."""
    return cot_type.startswith(TRANSIENT_TYPES)


def is_server_only(cot_type: str) -> bool:
    """Whether only a TAK server may send this type (a client's is refused)."""
    return cot_type.startswith(SERVER_ONLY_TYPES)


UNKNOWN = 9999999.0  # CoT's "not known" value for hae, ce and le


class Point(msgspec.Struct, frozen=True):
    """A CoT `<point>`: WGS-84 degrees, height above ellipsoid and errors in metres.

    Unknown is `UNKNOWN` (9999999) as CoT writes it, or NaN when the sender wrote `NaN`
    (ATAK's file-transfer acknowledgements do); both are kept as written so a relay changes
    nothing. Ask `known(value)` rather than comparing either.
    """

    lat: float
    lon: float
    hae: float = UNKNOWN
    ce: float = UNKNOWN
    le: float = UNKNOWN

    @property
    def hae_known(self) -> bool:
        return known(self.hae)

    @property
    def position_known(self) -> bool:
        return not (math.isnan(self.lat) or math.isnan(self.lon))


def known(value: float) -> bool:
    """Whether a CoT number is a value: not NaN, not infinite, not CoT's 9999999."""
    return math.isfinite(value) and value < UNKNOWN


class CotText(msgspec.Struct, frozen=True):
    """What the sender wrote in `<event>` and `<point>`, as written (issue #12: "nothing the
    sender wrote is changed or invented in a relay").

    The hub reads values (`CotEvent.time`, `CotEvent.point`…) and decides with them; CoT XML
    is written back from this text, so `ce="9999999"` stays `"9999999"`, `…18.1Z` stays
    `…18.1Z`, `version="2"` stays `"2"` and an event without `<detail>` gets none. A value the
    hub changes on purpose (a uid under the documented mapping, a delete's stale time) is
    written from the value, and only that one: each attribute is taken from here while its
    value is still the one it was read as (`time`, `start`, `stale`, `at`). TAK protobuf and
    JSON carry numbers and have no place for this text.
    """

    event: tuple[tuple[str, str], ...]  # every <event> attribute (name, value), in order
    point: tuple[tuple[str, str], ...]  # every <point> attribute (name, value), in order
    detail: bool  # whether the sender wrote a <detail> element (even an empty one)
    time: float  # the values the text was read as
    start: float
    stale: float
    at: Point


class CotEvent(msgspec.Struct, frozen=True):
    """One CoT event as decoded from XML or protobuf.

    `detail` keeps the children of <detail> as canonical XML text (re-serialised by our
    parser, so it never carries a DTD or an entity). Times are epoch seconds (UTC). `text`
    is what the sender wrote in `<event>` and `<point>` (None for what the hub makes).
    """

    uid: str
    type: str
    time: float
    start: float
    stale: float
    how: str | None  # None: the sender wrote no `how` (and none is invented)
    point: Point
    detail: str = ""
    access: str | None = None  # None: absent; "" when the sender wrote access=""
    qos: str | None = None
    opex: str | None = None
    # Fields lifted out of <detail> because routing or the map needs them.
    callsign: str = ""
    speed: float | None = None
    course: float | None = None
    dest_callsigns: tuple[str, ...] = ()
    dest_parties: tuple[str, ...] = ()
    dest_uids: tuple[str, ...] = ()  # `marti/dest@uid` as written (iTAK addresses by uid)
    text: CotText | None = None  # the sender's own text of <event> and <point>


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
