"""What a TAK client lists of the hub: the files its party may fetch, and its party as a group.

`GET /Marti/sync/search` (ATAK's "import a data package from the server":
`?keywords=missionpackage&tool=public`) answers TAK Server's search shape, `resultCount` and
`results`, each result in TAK Server's metadata field names with its values as text
(`Keywords` a list): `UID` and `Hash` (the SHA-256), `Name`, `PrimaryKey` (a number from the
hash: the hub keeps none), `SubmissionDateTime` (milliseconds, as ATAK parses it),
`SubmissionUser`, `CreatorUid` (`PARTY::uid` for another party's device, as its
`b-f-t-r` named it), `MIMEType`, `Size`, `Tool`, `EXPIRATION` (`-1`: never).

Rules:

- A file is listed exactly when `ingest.may_fetch` would let the caller's party fetch it
  now (one result per file, newest matching first); a file it may not fetch is in no
  answer, whatever the filters (no oracle for other parties' files).
- Filters (parameter names in any case, TAK Server's; query.py reads them): `keywords`/
  `keyword` (comma-separated; any of them), `tool` (equal), `name`/`filename`,
  `mimetype`/`mime`, `uid`/`hash`, `creatorUid` (against `PARTY::uid`) — each a substring,
  capitals folded (TAK Server takes regular expressions; the hub matches text only);
  `startTime`, `stopTime` (`endTime`), `submissionDateTime` (that millisecond): TAK's
  `2025-01-31T12:00:00.000Z` (no offset: UTC), bounds included to the millisecond;
  `bbox`/`box` `west,south,east,north` (a west east of its east: across the antimeridian)
  and `circle` `lon,lat,metres` (degrees; on a sphere), never both: a file without a
  position is outside every area; `minAltitude`/`maxAltitude`: the hub keeps no altitude,
  so, as TAK Server for a file without one, no file matches. A file's keywords:
  `missionpackage` for an uploaded data package (not the hub's quick-pic packages of an
  image, one per form), then those its upload gave. `primaryKey`, `permissions`,
  `remarks`, `mission` are accepted and do not filter (`UNFILTERED`).
- Any other parameter is ignored, value and all, as TAK Server ignores what it does not
  know: clients add their own (a cache-buster `_=…`, a newer server's filter), and a 400
  would leave such a client with no list at all.
- Refused with 400 and one line naming the parameter: a value of a known parameter over
  PARAM_MAX_CHARS or with a control character, more than MAX_KEYWORDS keywords, a time or
  number that does not parse (NaN, infinities included), a latitude, longitude or radius
  out of range, a start after the stop, both a box and a circle.
- The store selects the matching rows (files.py / pgfiles.py `matching`: every filter in
  its SQL), so a match is found whatever its age; off the event loop (a worker thread, as
  every blocking store call of marti/), in pages of SEARCH_SCAN_ROWS rows, the newest
  first. At most SEARCH_MAX_RESULTS results are answered; when more of the files the caller
  may fetch match, the answer carries the header `CommonSky-Search: truncated` (narrow the
  filters to see the rest). Files it may not fetch never cut it (no oracle of them).

`GET /Marti/api/groups/all` answers TAK Server's group list with one group, the caller's
party (no other party's name: who else is on the hub is not the caller's to know): `OUT`,
and `IN` too when `useCache=true`, as TAK Server answers a client (ATAK asks with it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from commonsky.marti.files import StoredFile
from commonsky.marti.ingest import Refused, fetchable
from commonsky.marti.query import PageKey, Query, fold, keywords, matches
from commonsky.marti.state import MartiState
from commonsky.namespace import foreign_uid

__all__ = ["Query", "keywords", "matches", "parse_query", "search"]

SEARCH_MAX_RESULTS = 1000  # results one search answers at most
# Matching store rows one page of a search reads, newest first (in a worker thread: the
# policy is asked of each other party's file, ~10 us a row).
SEARCH_SCAN_ROWS = 5_000
PARAM_MAX_CHARS = 1024  # TAK Server's longest search parameter value
MAX_KEYWORDS = 64  # keywords one search may ask for
MAX_RADIUS_M = 20_100_000.0  # half the earth's circumference, and a little more
TEXT = {"name": "name", "filename": "name", "mimetype": "mime", "mime": "mime",
        "uid": "hash", "hash": "hash", "creatoruid": "creator"}  # fmt: skip
OTHER = {"keywords": "keywords", "keyword": "keywords", "tool": "tool",
         "starttime": "start", "submissiondatetime": "at", "stoptime": "stop",
         "endtime": "stop", "bbox": "box", "box": "box", "circle": "circle",
         "minaltitude": "low", "maxaltitude": "high"}  # fmt: skip
UNFILTERED = frozenset({"primarykey", "permissions", "remarks", "mission"})
TIME_FORMAT = "2025-01-31T12:00:00.000Z"
GROUP_TYPE = "com.bbn.marti.remote.groups.Group"


def _bad(message: str) -> Refused:
    return Refused(400, "bad_search", message)


def parse_query(params: Iterable[tuple[str, str]]) -> Query:
    """The filters of a search's query parameters (the first value of each counts, as in
    TAK Server); Refused (400, one line) for what the module's header refuses."""
    seen: dict[str, str] = {}
    for key, value in params:
        name = key.lower()
        if name not in TEXT and name not in OTHER and name not in UNFILTERED:
            continue  # (a parameter TAK Server does not know either: ignored, as it does)
        if len(value) > PARAM_MAX_CHARS:
            raise _bad(f"{name} is over {PARAM_MAX_CHARS} characters")
        if not value.isprintable():
            raise _bad(f"{name} has a control character")
        seen.setdefault(TEXT.get(name) or OTHER.get(name) or name, value)
    words = tuple(dict.fromkeys(fold(w.strip()) for w in seen.get("keywords", "").split(",")))
    words = tuple(w for w in words if w)
    if len(words) > MAX_KEYWORDS:
        raise _bad(f"keywords: more than {MAX_KEYWORDS}")
    start, stop = _times(seen)
    if "box" in seen and "circle" in seen:
        raise _bad("give bbox or circle, not both")
    low, high = (_number(n, seen[n]) if n in seen else None for n in ("low", "high"))
    if low is not None and high is not None and low > high:
        raise _bad("minAltitude is above maxAltitude")
    return Query(
        keywords=words,
        tool=seen.get("tool") or None,  # (empty, as every other filter: not a filter)
        name=fold(seen.get("name", "")),
        mime=fold(seen.get("mime", "")),
        hash=fold(seen.get("hash", "")),
        creator=fold(seen.get("creator", "")),
        start=start,
        stop=stop,
        box=_box(seen["box"]) if "box" in seen else None,
        circle=_circle(seen["circle"]) if "circle" in seen else None,
        altitude=low is not None or high is not None,
    )


def _times(seen: dict[str, str]) -> tuple[float | None, float | None]:
    """(start, stop) in seconds, the stop excluded: a bound's whole millisecond is in."""
    if "at" in seen:
        if "start" in seen or "stop" in seen:
            raise _bad("give submissionDateTime or startTime/stopTime, not both")
        at = _time("submissionDateTime", seen["at"])
        return at, at + 0.001
    start = _time("startTime", seen["start"]) if "start" in seen else None
    stop = _time("stopTime", seen["stop"]) if "stop" in seen else None
    if start is not None and stop is not None and start > stop:
        raise _bad("startTime is after stopTime")
    return start, None if stop is None else stop + 0.001


def _time(name: str, text: str) -> float:
    try:
        moment = datetime.fromisoformat(text.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (ValueError, OverflowError):
        raise _bad(f"{name} is not a time like {TIME_FORMAT}") from None


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad(f"{name} is not a number") from None
    if not math.isfinite(value):
        raise _bad(f"{name} is not a finite number")
    return value


def _numbers(name: str, text: str, count: int) -> list[float]:
    parts = text.replace(",", " ").split()
    if len(parts) != count:
        raise _bad(f"{name} needs {count} numbers")
    return [_number(name, part) for part in parts]


def _lon_lat(name: str, lon: float, lat: float) -> None:
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise _bad(f"{name}: longitude or latitude out of range")


def _box(text: str) -> tuple[float, float, float, float]:
    """(west, south, east, north) as given: a west east of the east is a box across the
    antimeridian (170,-10,-170,10: the 20 degrees about it, not the 340 others)."""
    west, lat1, east, lat2 = _numbers("bbox", text, 4)
    _lon_lat("bbox", west, lat1)
    _lon_lat("bbox", east, lat2)
    return (west, min(lat1, lat2), east, max(lat1, lat2))


def _circle(text: str) -> tuple[float, float, float]:
    lon, lat, metres = _numbers("circle", text, 3)
    _lon_lat("circle", lon, lat)
    if not 0.0 <= metres <= MAX_RADIUS_M:
        raise _bad(f"circle: the radius is not between 0 and {MAX_RADIUS_M:.0f} metres")
    return (lon, lat, metres)


@dataclass(frozen=True)
class Found:
    rows: list[StoredFile]  # one per file, the newest matching first
    complete: bool  # False: a bound cut the answer (the module's header)


def search(state: MartiState, party: str, query: Query) -> Found:
    """The rows `party` may fetch now that `query` matches (blocking: a worker thread),
    read in pages of SEARCH_SCAN_ROWS, the newest first, until SEARCH_MAX_RESULTS and one
    more are found or no row is left. Only a file `party` may fetch ever cuts the answer:
    a bound on the rows read cut it by how many rows of others' files matched — an oracle
    of how many files the caller may not see (counted in time windows, say)."""
    # Only the caller's own files and those of parties some agreement grants it anything of
    # can be fetched: the store leaves out the rest (a rival's files cost nothing to pass).
    query = replace(query, holders=(party, *sorted(state.port.providers_to(party))))
    found: list[StoredFile] = []
    done: set[str] = set()  # files (sha256) judged, on an earlier page
    after: PageKey | None = None
    while True:
        page = state.files.matching(query, SEARCH_SCAN_ROWS, after)
        order = [sha for sha in dict.fromkeys(r.sha256 for r in page) if sha not in done]
        done.update(order)
        holders: dict[str, list[StoredFile]] = {}
        for row in state.files.rows_of(order):  # (every holder: the policy chooses)
            holders.setdefault(row.sha256, []).append(row)
        for sha in order:
            chosen = fetchable(state, party, holders.get(sha, []))
            if chosen is None or not matches(query, chosen):
                continue
            if len(found) == SEARCH_MAX_RESULTS:  # one more it may fetch: the answer is cut
                return Found(found, False)
            found.append(chosen)
        if len(page) < SEARCH_SCAN_ROWS:
            return Found(found, True)
        last = page[-1]
        after = (last.received, last.sha256, last.party)


def search_answer(state: MartiState, party: str, query: Query) -> tuple[bytes, bool]:
    """TAK Server's answer to `query` from `party` (JSON), and whether it is complete: the
    search and the answer's making both in the worker thread (a thousand results take a
    few milliseconds to render)."""
    found = search(state, party, query)
    body = {"resultCount": len(found.rows), "results": [result(r, party) for r in found.rows]}
    text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode(), found.complete


def result(row: StoredFile, party: str) -> dict[str, Any]:
    """One search result in TAK Server's field names (values as text, as it sends them)."""
    moment = datetime.fromtimestamp(row.received, UTC)
    creator = row.creator_uid
    if creator and row.party != party:
        creator = foreign_uid(row.party, creator)
    return {
        "UID": row.sha256,
        "Hash": row.sha256,
        "Name": row.name or row.sha256,
        "PrimaryKey": str(int(row.sha256[:7], 16)),
        "SubmissionDateTime": moment.isoformat(timespec="milliseconds")[:-6] + "Z",
        "SubmissionUser": row.user,
        "CreatorUid": creator,
        "Keywords": keywords(row),
        "MIMEType": row.mime or "application/octet-stream",
        "Size": str(row.size),
        "Tool": row.tool,
        "EXPIRATION": "-1",
    }


def groups(party: str, use_cache: str, created: float, version: str) -> dict[str, Any]:
    """TAK Server's `groups/all` answer (API `version`) for a caller of `party` (`use_cache`:
    the query's `useCache`, a boolean as TAK Server reads it; Refused (400) otherwise)."""
    if use_cache.lower() not in ("", "true", "false"):
        raise Refused(400, "bad_groups", "useCache must be true or false")
    directions = ["IN", "OUT"] if use_cache.lower() == "true" else ["OUT"]
    day = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%d")
    data = [
        {
            "name": party,
            "direction": d,
            "created": day,
            "type": "SYSTEM",
            "bitpos": 0,
            "active": True,
        }
        for d in directions
    ]
    return {"version": version, "type": GROUP_TYPE, "data": data, "nodeId": "commonsky"}
