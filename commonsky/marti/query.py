"""A file search's filters (search.py), as one rule with two readings: `matches`, which
decides, and `where`, the SQL each store (files.py, pgfiles.py) narrows its rows with, so a
match is found whatever its age.

`where` selects every row `matches` accepts (for the circle, a box around it: `matches`
then measures the distance), so the store's answer is never short of a match. Text is
compared folded to lower case in ASCII letters only, as SQLite's `lower` folds (PostgreSQL
folds with `translate`, whatever its collation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

MISSION_PACKAGE = "missionpackage"
EARTH_M = 6_371_008.8  # the mean radius of the earth (metres): circles are on a sphere
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_FOLD = str.maketrans(_UPPER, _UPPER.lower())


class Row(Protocol):
    """What the filters read of a stored file (files.StoredFile)."""

    @property
    def sha256(self) -> str: ...
    @property
    def party(self) -> str: ...
    @property
    def creator_uid(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def mime(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def lat(self) -> float: ...
    @property
    def lon(self) -> float: ...
    @property
    def received(self) -> float: ...
    @property
    def tool(self) -> str: ...
    @property
    def keywords(self) -> tuple[str, ...]: ...


def fold(text: str) -> str:
    """`text` with ASCII capitals lowered, nothing else changed (as the SQL folds it)."""
    return text.translate(_FOLD)


def is_package(kind: str) -> bool:
    """An uploaded data package (the hub's quick-pic packages, `quickpic-own`/`-other`, are
    not: each image would be listed twice, once per form)."""
    return kind == "package"


def keywords(row: Row) -> list[str]:
    """A file's keywords: `missionpackage` for a data package, then those given at upload."""
    words = [MISSION_PACKAGE] if is_package(row.kind) else []
    return words + [w for w in row.keywords if w not in words]


@dataclass(frozen=True)
class Query:
    """A search's filters; text ones folded (`fold`), times in seconds since 1970 (`stop`
    excluded), `box` (west, south, east, north: a west east of its east spans the antimeridian)
    and `circle` (lon, lat, metres) in degrees."""

    keywords: tuple[str, ...] = ()
    tool: str | None = None
    name: str = ""
    mime: str = ""
    hash: str = ""
    creator: str = ""
    start: float | None = None
    stop: float | None = None
    box: tuple[float, float, float, float] | None = None
    circle: tuple[float, float, float] | None = None
    altitude: bool = False  # an altitude bound was given: the hub keeps none, nothing matches
    holders: tuple[str, ...] = ()  # only files these parties hold (none: any party's)


def matches(query: Query, row: Row) -> bool:
    if query.altitude or (query.tool is not None and row.tool != query.tool):
        return False
    if query.holders and row.party not in query.holders:
        return False
    if query.keywords and not any(
        want in fold(have) for want in query.keywords for have in keywords(row)
    ):
        return False
    if query.start is not None and not row.received >= query.start:
        return False
    if query.stop is not None and not row.received < query.stop:
        return False
    if query.box is not None:
        west, south, east, north = query.box
        across = west > east  # (across the antimeridian: east of west, or west of east)
        inside = row.lon >= west or row.lon <= east if across else west <= row.lon <= east
        if not (south <= row.lat <= north and inside):
            return False
    if query.circle is not None:
        lon, lat, metres = query.circle
        if not distance_m(lat, lon, row.lat, row.lon) <= metres:  # (NaN: no position)
            return False
    return (
        query.name in fold(row.name)
        and query.mime in fold(row.mime)
        and query.hash in row.sha256
        and query.creator in fold(f"{row.party}::{row.creator_uid}")
    )


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The great-circle distance on the sphere of EARTH_M (haversine); NaN without a position."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_M * math.asin(min(1.0, math.sqrt(h)))


def circle_box(lon: float, lat: float, metres: float) -> tuple[float, float, float, float]:
    """A (west, south, east, north) box holding every point within `metres` of (lon, lat),
    a little wider (never short of one); the whole longitude range near a pole, across the
    antimeridian or for a circle of a quarter of the earth."""
    angle = metres / EARTH_M * 1.001 + 1e-9
    south, north = lat - math.degrees(angle), lat + math.degrees(angle)
    if angle >= math.pi / 2 or south <= -90 or north >= 90:
        return (-180.0, max(south, -90.0), 180.0, min(north, 90.0))
    spread = math.degrees(math.asin(min(1.0, math.sin(angle) / math.cos(math.radians(lat)))))
    west, east = lon - spread * 1.001, lon + spread * 1.001
    if west < -180 or east > 180:
        return (-180.0, south, 180.0, north)
    return (west, south, east, north)


# Where a page of a search ended: the last row's (received, sha256, party), in the order
# the stores list matching rows (received descending, then sha256 and party ascending).
PageKey = tuple[float, str, str]


def where(query: Query, postgres: bool, after: PageKey | None = None) -> tuple[str, list[object]]:
    """The SQL condition (`?` or `%s` placeholders) and its arguments selecting every row
    `matches` accepts (the module's header), for the file tables of both stores; with
    `after`, only the rows listed after that one."""
    mark = "%s" if postgres else "?"

    def folded(column: str) -> str:
        if postgres:
            return f"strpos(translate({column}, '{_UPPER}', '{_UPPER.lower()}'), {mark}) > 0"
        return f"instr(lower({column}), {mark}) > 0"

    terms: list[str] = []
    args: list[object] = []
    if query.altitude:
        terms.append("1 = 0")
    if query.tool is not None:
        terms.append(f"tool = {mark}")
        args.append(query.tool)
    if query.holders:
        terms.append(f"party IN ({', '.join([mark] * len(query.holders))})")
        args.extend(query.holders)
    if query.keywords:
        anyof = []
        for word in query.keywords:
            anyof.append(folded("keywords"))
            args.append(word)
            if word in MISSION_PACKAGE:
                anyof.append("kind = 'package'")
        terms.append("(" + " OR ".join(anyof) + ")")
    for column, text in (("name", query.name), ("mime", query.mime), ("sha256", query.hash),
                         ("party || '::' || creator_uid", query.creator)):  # fmt: skip
        if text:
            terms.append(folded(column))
            args.append(text)
    if query.start is not None:
        terms.append(f"received >= {mark}")
        args.append(query.start)
    if query.stop is not None:
        terms.append(f"received < {mark}")
        args.append(query.stop)
    box = query.box if query.circle is None else circle_box(*query.circle)
    if box is not None:
        join = "OR" if box[0] > box[2] else "AND"  # (OR: across the antimeridian)
        terms.append(f"lat >= {mark} AND lat <= {mark} AND (lon >= {mark} {join} lon <= {mark})")
        args.extend([box[1], box[3], box[0], box[2]])
    if after is not None:
        received, sha256, party = after
        terms.append(f"(received < {mark} OR (received = {mark} AND (sha256 > {mark} OR "
                     f"(sha256 = {mark} AND party > {mark}))))")  # fmt: skip
        args.extend([received, received, sha256, sha256, party])
    return " AND ".join(terms) or "1 = 1", args
