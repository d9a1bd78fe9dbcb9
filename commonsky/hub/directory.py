"""The callsign directory: which device of which party uses which callsign.

TAK clients address a message by callsign (`<marti><dest callsign=…/>`: ATAK, WinTAK) or by
uid (`<dest uid=…/>`: iTAK). The directory learns a device from the device's report of
itself — an `a-…` event with a `<contact callsign>` and either a contact `endpoint` or a
`<takv>` (every ATAK, WinTAK and iTAK position report has them; a marker placed on the map
has neither) — and keeps, per (party, device uid), the callsign reported last: a callsign is
forgotten when its user takes another. A callsign routes to a party only through that
party's own devices, so nobody can divert or block another party's messages by claiming a
callsign.

It also keeps each device's last report of itself (`Seen`: when, its type and position,
its team and role, and whether it was addressed), so that `clientEndPoints` lists a device
after its report has gone stale and after a restart, as TAK Server does (marti/port.py
decides who may see it, by the policy, as for a live report).

It survives a restart in `DATA_DIR/directory.json` (written atomically, at most once per
housekeeping tick, and a change of last reports only at most every SEEN_SAVE_S; a cluster
keeps it in its database instead, hub/shared.py): a chat to the callsign of a device that
is offline after a restart still reaches its party and waits there for the device. A file
that cannot be read is set aside (`directory.json.bad`) with a log line and the hub starts
with an empty directory; a bad device or last report in it is only left out (one log line). The
owner's delete of a device's item drops its last report (`deleted`: listed no more).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from commonsky.model import CotEvent

log = logging.getLogger("commonsky.directory")

T = TypeVar("T")

_LIMIT = 4096  # longest uid or callsign kept from the file (attributes are bounded alike)
_LAST_MAX = 253402300800.0  # year 10000: a later (or negative) time is no time to list
SEEN_SAVE_S = 30.0  # a device's newer report alone is written at most this often


class Seen(NamedTuple):
    """A device's last report of itself."""

    last: float  # hub clock at acceptance, epoch seconds
    type: str
    lat: float
    lon: float
    team: str
    role: str
    open: bool  # neither addressed nor given an audience: the policy alone routes it


def device_group(detail: str) -> tuple[str, str]:
    """(team, role) of a report's `<__group name role>` ("" for what it lacks)."""
    if "<__group" not in detail:
        return "", ""
    from commonsky.protocol.cot import detail_tree

    group = detail_tree(detail).find("__group")
    if group is None:
        return "", ""
    return group.get("name", ""), group.get("role", "")


def device_callsign(event: CotEvent) -> str | None:
    """The callsign a device reports for itself in this event, or None if it is not a
    device's own report (see the module header)."""
    if not event.callsign or not event.type.startswith("a-"):
        return None
    detail = event.detail
    if " endpoint=" in detail or "<takv" in detail:
        return event.callsign
    return None


class Directory:
    def __init__(self) -> None:
        self._devices: dict[tuple[str, str], str] = {}  # (party, uid) -> callsign
        self._by_callsign: dict[str, set[tuple[str, str]]] = defaultdict(set)
        self.epoch = 0  # bumped on every change: routes computed before it are out of date
        self.path: Path | None = None
        self._keep: Callable[[bytes], None] | None = None  # (a cluster's: `open_shared`)
        self._dirty = False
        self._seen: dict[tuple[str, str], Seen] = {}
        # Reports since the last save, as they came (read into `Seen` when asked or saved:
        # a report costs a dict store here).
        self._fresh: dict[tuple[str, str], tuple[CotEvent, float, bool]] = {}
        self._seen_dirty = False  # `_seen` changed since the last save (read or dropped)
        self._seen_saved = time.monotonic()

    def report(self, party: str, uid: str, callsign: str) -> bool:
        """A device of `party` reports `callsign`; True when that changed the directory."""
        key = (party, uid)
        old = self._devices.get(key)
        if old == callsign:
            return False
        if old is not None:
            self._forget(old, key)
        self._devices[key] = callsign
        self._by_callsign[callsign].add(key)
        self.epoch += 1
        self._dirty = True
        return True

    def saw(self, party: str, event: CotEvent, now: float, audience: bool) -> None:
        """`event` is a device's report of itself, accepted at `now` (`audience`: given one,
        as a federation link gives: not `Seen.open`)."""
        e = event
        addressed = audience or e.dest_parties or e.dest_callsigns or e.dest_uids
        self._fresh[(party, event.uid)] = (event, now, not addressed)

    def deleted(self, key: tuple[str, str]) -> None:
        """Its owner deleted the device's item `key`: its last report is listed no more."""
        self._fresh.pop(key, None)
        if self._seen.pop(key, None) is not None:
            self._seen_dirty = True

    def last_seen(self) -> Iterator[tuple[tuple[str, str], str, Seen]]:
        """Every device's (party, uid), callsign and last report."""
        self._settle()
        for key, seen in self._seen.items():
            callsign = self._devices.get(key)
            if callsign is not None:
                yield key, callsign, seen

    def _settle(self) -> None:
        if self._fresh:
            self._seen_dirty = True  # (read here, written at the next save: `save`)
        for key, (event, now, open_) in self._fresh.items():
            team, role = device_group(event.detail)
            point = event.point
            self._seen[key] = Seen(now, event.type, point.lat, point.lon, team, role, open_)
        self._fresh.clear()

    def _forget(self, callsign: str, key: tuple[str, str]) -> None:
        holders = self._by_callsign.get(callsign)
        if holders is not None:
            holders.discard(key)
            if not holders:
                del self._by_callsign[callsign]

    def callsign(self, party: str, uid: str) -> str | None:
        return self._devices.get((party, uid))

    def parties(self, callsign: str) -> set[str]:
        """The parties with a device using `callsign`."""
        return {party for party, _ in self._by_callsign.get(callsign, ())}

    def known(self, callsign: str) -> bool:
        return callsign in self._by_callsign

    def __len__(self) -> int:
        return len(self._devices)

    # ---- persistence --------------------------------------------------------------------

    @property
    def opened(self) -> bool:
        """Whether it is kept somewhere (`open`, `open_shared`)."""
        return self.path is not None or self._keep is not None

    def open(self, path: Path) -> None:
        """Load the directory kept at `path` (if any) and keep it there from now on."""
        self.path = path
        if path.exists():
            try:
                self._load(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self._set_aside(path, exc)
        self._dirty = False

    def _set_aside(self, path: Path, exc: Exception) -> None:
        """An unreadable file is renamed `….bad` (one log line); one that cannot be (a
        `….bad` directory in the way, say) is left as it is and not written this run."""
        bad = path.with_name(path.name + ".bad")
        try:
            os.replace(path, bad)
        except OSError as error:
            self.path = None
            log.warning("%s: cannot read the callsign directory (%s) nor set it aside (%s); "
                        "it is not kept this run", path, exc, error)  # fmt: skip
            return
        log.warning("%s: cannot read the callsign directory (%s); set aside as %s", path, exc, bad)

    def open_shared(self, load: Callable[[], bytes | None], keep: Callable[[bytes], None],
                    where: str) -> None:  # fmt: skip
        """Load the directory from, and keep it in, a cluster's database (hub/shared.py):
        `load()` gives the kept JSON (None: none yet), `keep(json)` replaces it. An
        unreadable one is logged and replaced at the next change."""
        self._keep = keep
        data = load()
        if data is not None:
            try:
                self._load(data.decode("utf-8"))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s: cannot read the callsign directory (%s); starting empty",
                            where, exc)  # fmt: skip
        self._dirty = False

    def _load(self, text: str) -> None:
        try:
            data = _json(text)
            rows = data["devices"] if isinstance(data, dict) else None
            if not isinstance(rows, list):
                raise ValueError("no list of devices")
            for party, uid, callsign in self._kept(rows, _device_row, "devices"):
                self.report(party, uid, callsign)
            self._seen.update(
                self._kept(data.get("seen", []), _seen_row, "last reports of devices")
            )
        except BaseException:
            self._devices.clear()
            self._by_callsign.clear()
            self._seen.clear()
            raise

    def _kept(self, rows: object, read: Callable[[object], T], what: str) -> list[T]:
        """The rows `read` takes; those it refuses (ValueError) are left out with one log
        line, naming `what` they are, and the rest kept."""
        kept: list[T] = []
        bad: list[object] = []
        for row in rows if isinstance(rows, list) else [rows]:
            try:
                kept.append(read(row))
            except ValueError:
                bad.append(row)
        if bad:
            where = self.path or "the callsign directory"
            log.warning("%s: %d bad %s left out (the first: %s)",
                        where, len(bad), what, str(bad[0])[:80])  # fmt: skip
        return kept

    def save(self, force: bool = False) -> None:
        """Write the directory if it changed since the last save (atomically); newer reports
        alone at most every SEEN_SAVE_S, unless `force` (at shutdown)."""
        if self.path is None and self._keep is None:
            return
        reports = (self._seen_dirty or bool(self._fresh)) and (
            force or time.monotonic() - self._seen_saved >= SEEN_SAVE_S
        )
        if not (self._dirty or reports):
            return
        self._settle()
        self._seen_saved = time.monotonic()
        rows = [[p, u, c] for (p, u), c in sorted(self._devices.items())]
        seen = [_seen_out(key, value) for key, value in sorted(self._seen.items())]
        text = json.dumps({"version": 2, "devices": rows, "seen": seen})
        if self._keep is not None:
            self._keep(text.encode("utf-8"))
        else:
            assert self.path is not None
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)
        self._dirty = self._seen_dirty = False


def _json(text: str) -> Any:
    """`json.loads`, a nesting deeper than it takes a ValueError (not a RecursionError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deep") from None


def _device_row(row: object) -> tuple[str, str, str]:
    """One kept device: [party, uid, callsign], each a text a load takes."""
    if not (
        isinstance(row, list)
        and len(row) == 3
        and all(isinstance(v, str) and 0 < len(v) <= _LIMIT for v in row)
    ):
        raise ValueError(f"bad device {str(row)[:80]}")
    return row[0], row[1], row[2]


def _seen_row(row: object) -> tuple[tuple[str, str], Seen]:
    """One kept last report: [party, uid, last, type, lat, lon, team, role, open]."""
    if not (isinstance(row, list) and len(row) == 9):
        raise ValueError(f"bad last report {str(row)[:80]}")
    party, uid, last, kind, lat, lon, team, role, open_ = row
    texts = (party, uid, kind, team, role)
    numbers = (last, lat, lon)
    if not (
        all(isinstance(v, str) and len(v) <= _LIMIT for v in texts)
        and party
        and uid
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers)
        and isinstance(open_, bool)
    ):
        raise ValueError(f"bad last report {str(row)[:80]}")
    try:  # (an integer too large for a float: OverflowError)
        last, lat, lon = float(last), float(lat), float(lon)
    except OverflowError:
        raise ValueError(f"bad last report {str(row)[:80]}") from None
    if not 0.0 <= last < _LAST_MAX:  # (a position may be NaN, as the report wrote it)
        raise ValueError(f"bad last report {str(row)[:80]}")
    return (party, uid), Seen(last, kind, lat, lon, team, role, open_)


def _seen_out(key: tuple[str, str], seen: Seen) -> list[object]:
    """A last report as kept, its texts cut to what a load takes (`_LIMIT`: an attribute
    may be longer when `limit_attribute_bytes` is)."""
    cut = seen._replace(type=seen.type[:_LIMIT], team=seen.team[:_LIMIT], role=seen.role[:_LIMIT])
    return [key[0][:_LIMIT], key[1][:_LIMIT], *cut]
