"""A cluster that ran before its shared state moved into PostgreSQL (issue 19): its cores
shared one data folder holding the ledger (`ledger.sqlite3`), the signing key and the secret
(`keys/`), as one process with `store_url` does. A core given such a folder and a database
without the hub's keys refuses to start (one line) unless `--init`, which moves them in:

- the ledger's entries, byte for byte (`Ledger.recover`: every hash as it was; a database
  whose ledger already holds other entries is refused), its hub_id, and a checkpoint signed
  afresh at the same size with the same key (the old ones stay valid for what they signed);
- the key and the secret (rows of `commonsky_hub_state`; generalized handles stay the same);
- the callsign directory (the parties' key files are registered by every core at its start).

The files are left where they are (the operator removes them once the cluster serves).
"""

from __future__ import annotations

import logging
from pathlib import Path

from commonsky.errors import UsageError
from commonsky.hub.datadir import HUB_KEY as KEY_FILE
from commonsky.hub.datadir import HUB_SECRET as SECRET_FILE
from commonsky.hub.datadir import LEDGER_DB
from commonsky.hub.shared import DIRECTORY, HUB_KEY, HUB_SECRET, SharedState, private_pem
from commonsky.ledger.keys import KeyFileError, load_private_key

log = logging.getLogger("commonsky.datadir")


def earlier_files(data_dir: Path) -> bool:
    """The folder holds a hub's key and secret from before (what `adopt` moves)."""
    return (data_dir / KEY_FILE).is_file() and (data_dir / SECRET_FILE).is_file()


def adopt(state: SharedState, data_dir: Path) -> list[str]:
    """Move the folder's ledger, key, secret and directory into a database that lacks the
    hub's key; what was moved (empty: nothing to do). Raises UsageError (one line)."""
    if state.get(HUB_KEY) is not None or not earlier_files(data_dir):
        return []
    from commonsky.ledger.log import Ledger, LedgerError
    from commonsky.ledger.pgdb import PgLedgerDB

    try:
        key = load_private_key(data_dir / KEY_FILE)
    except KeyFileError as exc:
        raise UsageError(f"{exc}; restore it from a backup") from None
    moved = []
    if (data_dir / LEDGER_DB).is_file():
        try:
            with Ledger(data_dir / LEDGER_DB, key) as old:
                leaves = [(seq, leaf) for seq, leaf, _ in old.leaves()]
                hub_id = old.meta("hub_id")
            ledger = Ledger(PgLedgerDB(state.store), key)
            appended = ledger.recover(leaves)
        except LedgerError as exc:
            raise UsageError(f"{exc}; restore it from a backup") from None
        if appended is None:
            raise UsageError(
                f"{data_dir / LEDGER_DB} does not continue the ledger in {state.store.where} "
                "(it holds other entries); restore the database or the folder from a backup"
            )
        if hub_id is not None:
            ledger.set_meta("hub_id", hub_id)
        if leaves:
            ledger.checkpoint()
        moved.append(f"{LEDGER_DB} ({len(leaves)} entries)")
    directory = data_dir / "directory.json"
    if directory.is_file() and state.get(DIRECTORY) is None:
        state.put(DIRECTORY, directory.read_bytes())
        moved.append("directory.json")
    state.put(HUB_SECRET, (data_dir / SECRET_FILE).read_bytes(), replace=False)
    state.put(HUB_KEY, private_pem(key), replace=False)  # (last: the mark of a finished move)
    moved += [KEY_FILE, SECRET_FILE]
    log.warning("--init: moved %s from %s into %s (the cluster's shared state); the files "
                "are left in place", ", ".join(moved), data_dir, state.store.where)  # fmt: skip
    return moved
