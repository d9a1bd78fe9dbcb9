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
  now (one result per file, newest first); a file it may not fetch is in no answer, whatever
  the filters (no oracle for other parties' files).
- Filters (parameter names in any case, TAK Server's): `keywords`/`keyword` (comma-separated;
  any of them), `tool` (equal), `name`/`filename`, `mimetype`/`mime`, `uid`/`hash` — each a
  case-insensitive substring (TAK Server takes regular expressions; the hub matches text
  only). A file's keywords: `missionpackage` for a data package (an uploaded zip, or the
  hub's quick-pic package of an image), none otherwise. TAK Server's other parameters
  (`IGNORED`: area, altitude, time) are accepted and do not filter; an unknown one, or a
  value over PARAM_MAX_CHARS, is 400, as TAK Server refuses them.
- Bounded: the newest SEARCH_SCAN_ROWS rows of the store are read, at most
  SEARCH_MAX_RESULTS results answered (a client fetches an older file by its hash, from
  the `b-f-t-r` that announced it).

`GET /Marti/api/groups/all` answers TAK Server's group list with one group, the caller's
party (no other party's name: who else is on the hub is not the caller's to know): `OUT`,
and `IN` too when `useCache=true`, as TAK Server answers a client (ATAK asks with it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from commonsky.marti.files import StoredFile
from commonsky.marti.ingest import Refused, fetchable
from commonsky.marti.state import MartiState
from commonsky.namespace import foreign_uid

SEARCH_MAX_RESULTS = 1000  # results one search answers at most
# Store rows one search reads at most, newest first. A search runs on the event loop that
# relays the hub's traffic: 10,000 rows held it ~0.2 s (every client's deliveries waited),
# 2,000 30-70 ms (a 50,000-row store; 70 ms for a party that may fetch none: the worst case).
SEARCH_SCAN_ROWS = 2_000
PARAM_MAX_CHARS = 1024  # TAK Server's longest search parameter value
MISSION_PACKAGE = "missionpackage"
PACKAGE_KINDS = frozenset({"package", "quickpic"})
TEXT = {"name": "name", "filename": "name", "mimetype": "mime", "mime": "mime",
        "uid": "hash", "hash": "hash"}  # fmt: skip
IGNORED = frozenset({"bbox", "box", "circle", "starttime", "stoptime", "endtime",
                     "submissiondatetime", "minaltitude", "maxaltitude", "primarykey",
                     "permissions", "remarks", "mission"})  # fmt: skip
GROUP_TYPE = "com.bbn.marti.remote.groups.Group"


@dataclass(frozen=True)
class Query:
    keywords: tuple[str, ...] = ()
    tool: str | None = None
    name: str = ""
    mime: str = ""
    hash: str = ""


def parse_query(params: Iterable[tuple[str, str]]) -> Query:
    """The filters of a search's query parameters (the first value of each counts, as in
    TAK Server); Refused (400) for an unknown parameter or an overlong value."""
    seen: dict[str, str] = {}
    for key, value in params:
        name = key.lower()
        if name not in TEXT and name not in IGNORED and name not in ("keywords", "keyword",
                                                                     "tool"):  # fmt: skip
            shown = "".join(c for c in key if c.isprintable())[:40]
            raise Refused(400, "bad_search", f"unknown search parameter {shown!r}")
        if len(value) > PARAM_MAX_CHARS:
            raise Refused(400, "bad_search", f"{name} is over {PARAM_MAX_CHARS} characters")
        seen.setdefault("keywords" if name == "keyword" else TEXT.get(name, name), value)
    words = tuple(w.strip().lower() for w in seen.get("keywords", "").split(",") if w.strip())
    return Query(
        keywords=words,
        tool=seen.get("tool"),
        name=seen.get("name", "").lower(),
        mime=seen.get("mime", "").lower(),
        hash=seen.get("hash", "").lower(),
    )


def keywords(row: StoredFile) -> list[str]:
    return [MISSION_PACKAGE] if row.kind in PACKAGE_KINDS else []


def matches(query: Query, row: StoredFile) -> bool:
    if query.tool is not None and row.tool != query.tool:
        return False
    if query.keywords and not any(
        want in have for want in query.keywords for have in keywords(row)
    ):
        return False
    return (
        query.name in row.name.lower()
        and query.mime in row.mime.lower()
        and query.hash in row.sha256
    )


def search(state: MartiState, party: str, query: Query) -> list[StoredFile]:
    """The rows `party` may fetch now that `query` matches, one per file, newest first."""
    files: dict[str, list[StoredFile]] = {}
    for row in state.files.recent(SEARCH_SCAN_ROWS):
        files.setdefault(row.sha256, []).append(row)
    found: list[StoredFile] = []
    for rows in files.values():
        if not any(matches(query, r) for r in rows):  # (cheap: before asking the policy)
            continue
        chosen = fetchable(state, party, rows)
        if chosen is None or not matches(query, chosen):
            continue
        found.append(chosen)
        if len(found) >= SEARCH_MAX_RESULTS:
            break
    return found


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
