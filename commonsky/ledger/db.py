# Where a `Ledger` keeps its rows: the SQL of one database, behind the few calls log.py makes.
#
# Two kinds: `SqliteLedgerDB` (the embedded default: DATA_DIR/ledger.sqlite3, a file of its
# own, committed after the store — store/checkpoint.py, desks/recorder.py) and
# `commonsky.ledger.pgdb.PgLedgerDB` (a cluster: tables in the PostgreSQL database of
# `store_url`, written on the store's own connection, so the store and the ledger are one
# commit). log.py holds every rule (the frontier, the transaction rule, checkpoints); a
# backend only runs statements. Rows: entries (seq, leaf, leaf_hash, ",A,B," audience), nodes
# (level >= 1, idx, hash), checkpoints (size, root, time_us, signature, hub_key), meta.
from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from commonsky.store.checkpoint import WalCheckpointer, without_auto_checkpoint

SCHEMA_VERSION = "1"

EntryRow = tuple[int, bytes, bytes, str]  # seq, leaf, leaf_hash, audience
NodeRow = tuple[int, int, bytes]  # level, idx, hash
CheckpointRow = tuple[int, bytes, int, bytes, bytes]  # size, root, time_us, signature, hub_key


class LedgerDB(Protocol):
    """The statements a `Ledger` runs. Calls come from one thread at a time (the ledger's
    lock). `where` names the database in messages (a path, or a URL without password)."""

    where: str
    #: True when the ledger's writes join another writer's commit (the store's): `commit`
    #: then leaves committing to the block that opened the transaction.
    shared: bool

    def schema_version(self) -> str: ...
    def in_transaction(self) -> bool: ...
    def begin(self) -> None:
        """Open the write transaction, taking the write lock (and, for a cluster, checking
        that this process is still the ledger's writer)."""
        ...

    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def savepoint(self) -> None: ...
    def release(self) -> None: ...
    def rollback_to(self) -> None: ...
    def mark(self) -> int:
        """A number that changes with every write transaction opened (shared: the ledger
        checks the stored size once per transaction, not once per append)."""
        ...

    def stored_size(self) -> int: ...
    def count(self) -> int: ...
    def node(self, level: int, index: int) -> bytes | None: ...
    def leaf(self, seq: int) -> bytes | None: ...
    def insert(self, rows: Sequence[EntryRow], nodes: Sequence[NodeRow]) -> None: ...
    def rows(self, lo: int, hi: int) -> list[EntryRow]: ...
    def visible(self, party: str, lo: int, hi: int) -> list[int]: ...
    def meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def add_checkpoint(self, row: CheckpointRow) -> None: ...
    def latest_checkpoint(self) -> CheckpointRow | None: ...
    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_entry (
    seq INTEGER PRIMARY KEY,
    leaf BLOB NOT NULL,
    leaf_hash BLOB NOT NULL,
    audience TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_node (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_checkpoint (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    time_us INTEGER NOT NULL,
    signature BLOB NOT NULL,
    hub_key BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_checkpoint_size ON ledger_checkpoint (size);
"""


class SqliteLedgerDB:
    """The ledger's own SQLite file (WAL, checkpointed off the writer's path). Several
    processes may open it (the CLI reads while the hub appends): `BEGIN IMMEDIATE` is the
    write lock, and log.py reloads when the file grew under it."""

    shared = False

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"synchronous={synchronous!r}")
        self.path = Path(path)
        self.where = str(self.path)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._conn.execute("PRAGMA busy_timeout = 10000")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            # Idempotent, so two processes opening a fresh file at once both succeed.
            self._conn.executescript(_SCHEMA)
            self._conn.execute(
                "INSERT OR IGNORE INTO ledger_meta (key, value) VALUES ('schema', ?)",
                (SCHEMA_VERSION,),
            )
        except BaseException:
            self._conn.close()
            raise
        without_auto_checkpoint(self._conn)
        self._checkpointer: WalCheckpointer | None = None

    def start_checkpoints(self) -> None:
        self._checkpointer = WalCheckpointer(self.path)

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        return self._conn.execute(sql, args).fetchone()

    def schema_version(self) -> str:
        return str(self._one("SELECT value FROM ledger_meta WHERE key = 'schema'")[0])

    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        self._conn.execute("ROLLBACK")

    def savepoint(self) -> None:
        self._conn.execute("SAVEPOINT append_many")

    def release(self) -> None:
        self._conn.execute("RELEASE append_many")

    def rollback_to(self) -> None:
        self._conn.execute("ROLLBACK TO append_many")
        self._conn.execute("RELEASE append_many")

    def mark(self) -> int:
        return 0  # (not shared: log.py checks at each `begin`)

    def stored_size(self) -> int:
        (top,) = self._one("SELECT MAX(seq) FROM ledger_entry")
        return 0 if top is None else int(top) + 1

    def count(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM ledger_entry")[0])

    def node(self, level: int, index: int) -> bytes | None:
        if level == 0:
            row = self._one("SELECT leaf_hash FROM ledger_entry WHERE seq = ?", (index,))
        else:
            row = self._one(
                "SELECT hash FROM ledger_node WHERE level = ? AND idx = ?", (level, index)
            )
        return None if row is None else bytes(row[0])

    def leaf(self, seq: int) -> bytes | None:
        row = self._one("SELECT leaf FROM ledger_entry WHERE seq = ?", (seq,))
        return None if row is None else bytes(row[0])

    def insert(self, rows: Sequence[EntryRow], nodes: Sequence[NodeRow]) -> None:
        self._conn.executemany(
            "INSERT INTO ledger_entry (seq, leaf, leaf_hash, audience) VALUES (?,?,?,?)", rows
        )
        self._conn.executemany("INSERT INTO ledger_node (level, idx, hash) VALUES (?,?,?)", nodes)

    def rows(self, lo: int, hi: int) -> list[EntryRow]:
        found = self._conn.execute(
            "SELECT seq, leaf, leaf_hash, audience FROM ledger_entry "
            "WHERE seq >= ? AND seq < ? ORDER BY seq",
            (lo, hi),
        ).fetchall()
        return [(int(s), bytes(leaf), bytes(lh), str(a)) for s, leaf, lh, a in found]

    def visible(self, party: str, lo: int, hi: int) -> list[int]:
        found = self._conn.execute(
            "SELECT seq FROM ledger_entry WHERE seq >= ? AND seq < ? "
            "AND instr(audience, ?) > 0 ORDER BY seq",
            (lo, hi, f",{party},"),
        ).fetchall()
        return [int(r[0]) for r in found]

    def meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM ledger_meta WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO ledger_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def add_checkpoint(self, row: CheckpointRow) -> None:
        self._conn.execute(
            "INSERT INTO ledger_checkpoint (size, root, time_us, signature, hub_key) "
            "VALUES (?, ?, ?, ?, ?)",
            row,
        )

    def latest_checkpoint(self) -> CheckpointRow | None:
        row = self._one(
            "SELECT size, root, time_us, signature, hub_key FROM ledger_checkpoint "
            "ORDER BY id DESC LIMIT 1"
        )
        if row is None:
            return None
        size, root, time_us, signature, hub_key = row
        return int(size), bytes(root), int(time_us), bytes(signature), bytes(hub_key)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._conn.close()
