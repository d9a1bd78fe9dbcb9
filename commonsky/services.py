"""The composition root: one hub and the desks that stand on it, built from one config.

`HubServer` (network) and the tests (in memory) both build a `Services`; the HTTP API takes
it whole. Keeping the wiring here means each desk only knows the hub, never each other,
except the deconfliction desk opening hotline threads.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from commonsky.desks.deconfliction import AirspaceDesk
from commonsky.desks.hotline import HotlineDesk
from commonsky.desks.launch import LaunchDesk
from commonsky.desks.recorder import LedgerRecorder, Statement
from commonsky.errors import RemoteProtocolError
from commonsky.hub.core import Hub
from commonsky.hub.desk_view import DeskView
from commonsky.hub.directory import Directory
from commonsky.ledger.entry import Signature, canonical_json
from commonsky.ledger.keys import PartyKeys, verify
from commonsky.ledger.proofs import SignedCheckpoint
from commonsky.model import CotEvent

if TYPE_CHECKING:
    from commonsky.hub.core_state import Shared

log = logging.getLogger("commonsky.services")


@dataclass
class Services:
    hub: Hub
    recorder: LedgerRecorder | None
    hotline: HotlineDesk
    airspace: AirspaceDesk
    launch: LaunchDesk
    party_keys: PartyKeys | None = None

    @classmethod
    def build(cls, hub: Hub, data_dir: Path | None, shared: Shared | None = None,
              live_follows: bool | None = None) -> Services:  # fmt: skip
        """The desks on `hub`, with the ledger and the parties' keys of `data_dir` — or, for
        a cluster core (`shared`), of its PostgreSQL database (hub/shared.py).
        `live_follows` (default: a cluster core's): the live items the last core held are
        restored next (`Hub.restored`), and the deconfliction desk's rebuild ends only then
        (desks/deconfliction.py)."""
        if live_follows is None:
            live_follows = shared is not None
        recorder: LedgerRecorder | None = None
        keys: PartyKeys | None = None
        if shared is not None:
            from commonsky.hub.shared import SharedPartyKeys
            from commonsky.ledger.log import Ledger
            from commonsky.ledger.pgdb import PgLedgerDB

            recorder = LedgerRecorder(Ledger(PgLedgerDB(shared.store), shared.key))
            if data_dir is not None:
                keys = SharedPartyKeys(shared.state, data_dir)
                keys.import_files()
        elif data_dir is not None:
            recorder = LedgerRecorder.open(data_dir)
            keys = PartyKeys(data_dir)
        if not hub.directory.opened and (shared is not None or data_dir is not None):
            # (A hub made without it, e.g. a test's: still before the hotline rebuilds.)
            open_directory(hub.directory, data_dir, shared)
        if recorder is not None:
            # The store commits first, its journal holding what the ledger commits next:
            # after a crash between the two, the ledger is completed from the journal.
            recorder.recover(hub.store)
            hub.add_recorder(recorder)
            # (A data folder written when the ledger committed first may hold numbers the
            # ledger recorded and the store lost: they must not go to other items.)
            hub.store.reserve(recorder.last_store_seq())
        view = DeskView(hub)
        hotline = HotlineDesk(view, recorder)
        hub.add_desk(hotline)
        _rebuild(hub, "hotline", hotline.rebuild)
        airspace = AirspaceDesk(view, hotline)
        hub.add_desk(airspace)
        _rebuild(hub, "airspace", lambda: airspace.rebuild(live_follows=live_follows))
        launch = LaunchDesk(view)
        hub.add_desk(launch)
        _rebuild(hub, "launch", launch.rebuild)
        return cls(hub, recorder, hotline, airspace, launch, keys)

    def tick(self) -> None:
        """Time-driven work: deadlines, expiring volumes, warnings that end."""
        self.hotline.tick()
        self.hub.directory.save()
        self.airspace.tick()
        self.launch.prune()
        self.launch.tick()

    def screen(self) -> int:
        """A slice of live-track screening (called often, each bounded in time)."""
        return self.airspace.screen()

    def party_checkpoint(self) -> SignedCheckpoint:
        """The tree head parties are given: the latest signed one, signed afresh only when
        it is older than `timeout_checkpoint_s` (so the global entry count a party can learn
        moves at most that often, whoever asks)."""
        assert self.recorder is not None
        ledger = self.recorder.ledger
        latest = ledger.latest_checkpoint()
        if latest is None or self.checkpoint_due_in(latest) == 0:
            latest = ledger.checkpoint()
        return latest

    def checkpoint_due_in(self, latest: SignedCheckpoint | None = None) -> int:
        """Whole seconds until parties may be given a fresh checkpoint (0: now)."""
        assert self.recorder is not None
        latest = latest or self.recorder.ledger.latest_checkpoint()
        if latest is None:
            return 0
        every = self.hub.settings.timeout_checkpoint_s
        age = time.time() - latest.time_us / 1e6
        return max(0, math.ceil(every - age)) if 0 <= age < every else 0

    def airspace_validate(self, party: str, event: CotEvent) -> None:
        self.airspace.check(party, event)

    def check_signature(self, party: str, payload: dict[str, Any], raw: Any) -> Statement | None:
        """A party with a registered Ed25519 key must sign what it sends through the API:
        `payload` is what it signs; the checked statement is recorded in the ledger."""
        key = self.party_keys.raw(party) if self.party_keys is not None else None
        if key is None:
            return None  # attested by the hub: the token authenticated the party
        if not isinstance(raw, dict) or not isinstance(raw.get("value"), str):
            self.hub.metrics.refuse("bad_signature")
            raise RemoteProtocolError("bad_signature", "signature: required for this party")
        try:
            value = base64.b64decode(raw["value"], validate=True)
        except (binascii.Error, ValueError):
            value = b""
        if not verify(key, canonical_json(payload), value):
            self.hub.log_limited(
                log,
                "bad_signature",
                party,
                "refused: %s's signature does not verify over %s",
                party,
                payload,
            )
            self.hub.metrics.refuse("bad_signature")
            raise RemoteProtocolError("bad_signature", "signature: does not verify")
        return Statement(payload, Signature(party=party, key=key, value=value))

    def close(self) -> None:
        self.hub.directory.save(force=True)
        if self.recorder is not None:
            self.recorder.close()


def open_directory(directory: Directory, data_dir: Path | None,
                   shared: Shared | None = None) -> Directory:  # fmt: skip
    """Open the callsign directory kept in `data_dir` — or, for a cluster core (`shared`),
    in its PostgreSQL database (hub/shared.py) — before the `Hub` is made on it: the start's
    catch-up routes what is addressed to callsigns by it (hub/withdraw.py `owe_deleted`)."""
    if shared is not None:
        directory.open_shared(shared.directory, shared.keep_directory, shared.store.where)
    elif data_dir is not None:
        directory.open(data_dir / "directory.json")
    return directory


def _rebuild(hub: Hub, name: str, rebuild: Callable[[], None]) -> None:
    """A desk's rebuild at start. A stored item it cannot rebuild is quarantined by the desk
    (hub/quarantine.py); if the desk itself fails, that is our bug, logged with its
    traceback — and still never a reason not to start. (A database that cannot be read is
    not a desk's: the start stops with one line naming the file, server.py.)"""
    try:
        rebuild()
    except sqlite3.Error:
        raise
    except Exception:
        hub.metrics.internal_error(f"rebuild_{name}")
        log.exception("rebuilding the %s desk failed; the hub starts without all of it", name)
