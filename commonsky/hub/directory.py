"""The callsign directory: which device of which party uses which callsign.

TAK clients address a message by callsign (`<marti><dest callsign=…/>`: ATAK, WinTAK) or by
uid (`<dest uid=…/>`: iTAK). The directory learns a device from the device's report of
itself — an `a-…` event with a `<contact callsign>` and either a contact `endpoint` or a
`<takv>` (every ATAK, WinTAK and iTAK position report has them; a marker placed on the map
has neither) — and keeps, per (party, device uid), the callsign reported last: a callsign is
forgotten when its user takes another. A callsign routes to a party only through that
party's own devices, so nobody can divert or block another party's messages by claiming a
callsign.

It survives a restart in `DATA_DIR/directory.json` (written atomically, at most once per
housekeeping tick; a cluster keeps it in its database instead, hub/shared.py): a chat to
the callsign of a device that is offline after a restart still reaches its party and
waits there for the device. A file that cannot be read is set aside (`directory.json.bad`)
with a log line and the hub starts with an empty directory.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from commonsky.model import CotEvent

log = logging.getLogger("commonsky.directory")

_LIMIT = 4096  # longest uid or callsign kept from the file (attributes are bounded alike)


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

    def open(self, path: Path) -> None:
        """Load the directory kept at `path` (if any) and keep it there from now on."""
        self.path = path
        if path.exists():
            try:
                self._load(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                bad = path.with_name(path.name + ".bad")
                log.warning(
                    "%s: cannot read the callsign directory (%s); set aside as %s", path, exc, bad
                )
                os.replace(path, bad)
        self._dirty = False

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
            data = json.loads(text)
            rows = data["devices"] if isinstance(data, dict) else None
            if not isinstance(rows, list):
                raise ValueError("no list of devices")
            for row in rows:
                if not (
                    isinstance(row, list)
                    and len(row) == 3
                    and all(isinstance(v, str) and 0 < len(v) <= _LIMIT for v in row)
                ):
                    raise ValueError(f"bad entry {str(row)[:80]}")
                self.report(row[0], row[1], row[2])
        except BaseException:
            self._devices.clear()
            self._by_callsign.clear()
            raise

    def save(self) -> None:
        """Write the directory if it changed since the last save (atomically)."""
        if not self._dirty or (self.path is None and self._keep is None):
            return
        rows = [[p, u, c] for (p, u), c in sorted(self._devices.items())]
        text = json.dumps({"version": 1, "devices": rows})
        if self._keep is not None:
            self._keep(text.encode("utf-8"))
        else:
            assert self.path is not None
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)
        self._dirty = False
