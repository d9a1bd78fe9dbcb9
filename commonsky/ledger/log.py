# The signed, append-only ledger, persisted in SQLite next to the hub's own tables.
#
# Rule: a batch of entries, its leaf hashes and every Merkle node it completes are written in
# ONE transaction, and the in-memory frontier moves only after that transaction commits.  So a
# crash at any instant leaves either the whole batch or none of it, and reopening rebuilds the
# frontier from the stored nodes (O(log n) lookups) exactly where the committed log ends.
#
# Tables (all prefixed `ledger_`; the hub's connection owns every other table in the file):
#   ledger_entry(seq PK, leaf, leaf_hash, audience)   the canonical entry bytes (entry.py)
#   ledger_node(level, idx, hash)                      every perfect Merkle node of level >= 1
#   ledger_checkpoint(id, size, root, time_us, signature, hub_key)   every signed tree head
#   ledger_meta(key, value)                            format version
# One `Ledger` object appends (the hub's single writer); other processes (the CLI) may open
# the same file to read, prove and sign checkpoints.  The object is safe to share between
# threads: a lock serialises its calls.
from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from commonsky.errors import CommonSkyError
from commonsky.ledger import keys, merkle
from commonsky.ledger.entry import (
    Entry,
    EntryError,
    EntryFields,
    checkpoint_message,
    decode_entry,
    make_entry,
)
from commonsky.ledger.proofs import Receipt, SignedCheckpoint
from commonsky.store.checkpoint import WalCheckpointer, without_auto_checkpoint

# (SignedCheckpoint and Receipt live in proofs.py; still importable from here.)
__all__ = ["DB_NAME", "Ledger", "LedgerError", "Receipt", "SignedCheckpoint", "now_us"]

# Its own file, apart from the hub's item store: each keeps its own write transaction open
# while the hub handles one item and all it sets off, without waiting on the other's lock.
DB_NAME = "ledger.sqlite3"
SCHEMA_VERSION = "1"

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


class LedgerError(CommonSkyError):
    """The stored ledger is inconsistent, or a request it cannot honour; the message says why.
    (Ours to fix, not a peer's: HTTP 500 if one ever reaches a request.)"""

    reason = "ledger"


def now_us() -> int:
    return time.time_ns() // 1000


class _StoredNodes:
    """merkle.NodeSource over the ledger tables (level 0 lives in ledger_entry)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def node(self, level: int, index: int) -> bytes:
        args: tuple[int, ...]
        if level == 0:
            sql, args = "SELECT leaf_hash FROM ledger_entry WHERE seq = ?", (index,)
        else:
            sql, args = "SELECT hash FROM ledger_node WHERE level = ? AND idx = ?", (level, index)
        row = self._conn.execute(sql, args).fetchone()
        if row is None:
            raise LedgerError(f"ledger is missing Merkle node level {level} index {index}")
        return bytes(row[0])


def _audience_key(audience: Sequence[str]) -> str:
    # ",A,B," so that instr(audience, ',P,') finds exactly party P.
    return "," + ",".join(audience) + ","


class Ledger:
    """Append-only Merkle log in SQLite.  See the module comment for the transaction rule."""

    def __init__(
        self,
        path: Path | str,
        hub_key: Ed25519PrivateKey | None = None,
        *,
        verify_signatures: bool = True,
        synchronous: str = "NORMAL",
        clock: Callable[[], int] = now_us,
    ) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"synchronous={synchronous!r}")
        self.path = Path(path)
        self._hub_key = hub_key
        self._verify_signatures = verify_signatures
        self._clock = clock
        self._lock = threading.RLock()
        self._depth = 0  # nesting of `transaction()` blocks
        # (seq, leaf) appended inside the open block, not yet committed (see `uncommitted`).
        self._uncommitted: list[tuple[int, bytes]] = []
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout = 10000")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        self._nodes = _StoredNodes(self._conn)
        try:
            # Idempotent, so two processes opening a fresh file at once both succeed.
            self._conn.executescript(_SCHEMA)
            self._conn.execute(
                "INSERT OR IGNORE INTO ledger_meta (key, value) VALUES ('schema', ?)",
                (SCHEMA_VERSION,),
            )
            (version,) = self._conn.execute(
                "SELECT value FROM ledger_meta WHERE key = 'schema'"
            ).fetchone()
        except BaseException:
            self._conn.close()
            raise
        if version != SCHEMA_VERSION:
            self._conn.close()
            raise LedgerError(f"{self.path}: ledger schema {version}, expected {SCHEMA_VERSION}")
        self._frontier = merkle.Frontier()
        try:
            self._reload()
        except BaseException:
            self._conn.close()
            raise
        without_auto_checkpoint(self._conn)
        self._checkpointer = WalCheckpointer(self.path)

    @classmethod
    def open(cls, data_dir: Path | str, **kwargs: Any) -> Ledger:
        """The hub's ledger: DATA_DIR/ledger.sqlite3 signed with DATA_DIR/keys/hub-ed25519.pem."""
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(data_dir / DB_NAME, keys.load_or_create_hub_key(data_dir), **kwargs)

    def close(self) -> None:
        self._checkpointer.close()
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state ---------------------------------------------------------------------------

    def _stored_size(self) -> int:
        (top,) = self._conn.execute("SELECT MAX(seq) FROM ledger_entry").fetchone()
        return 0 if top is None else int(top) + 1

    def _reload(self) -> None:
        size = self._stored_size()
        (count,) = self._conn.execute("SELECT COUNT(*) FROM ledger_entry").fetchone()
        if count != size:
            raise LedgerError(f"{self.path}: ledger has {count} entries but seq reaches {size}")
        self._frontier = merkle.Frontier.load(size, self._nodes.node)
        last = self.latest_checkpoint()
        if last is not None:
            if last.size > size:
                raise LedgerError(
                    f"{self.path}: a checkpoint of size {last.size} was signed "
                    f"but only {size} entries are stored"
                )
            if merkle.root(self._nodes, last.size) != last.root:
                raise LedgerError(
                    f"{self.path}: stored entries disagree with signed checkpoint {last.size}"
                )

    @property
    def size(self) -> int:
        with self._lock:
            return self._frontier.size

    @property
    def hub_public_key(self) -> bytes:
        if self._hub_key is None:
            raise LedgerError("this ledger was opened without the hub key")
        return keys.raw_public(self._hub_key)

    def meta(self, key: str) -> str | None:
        """A value kept beside the log (e.g. the `hub_id` of `hub/datadir.py`)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM ledger_meta WHERE key = ?", (key,)
            ).fetchone()
            return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        if key == "schema":
            raise LedgerError("the schema version is not for callers to set")
        with self._lock:
            self._conn.execute(
                "INSERT INTO ledger_meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- appending -----------------------------------------------------------------------

    def append(self, fields: EntryFields) -> tuple[int, bytes]:
        """Append one entry; returns (seq, leaf_hash).  Durable when this returns."""
        return self.append_many([fields])[0]

    def append_many(self, batch: Sequence[EntryFields]) -> list[tuple[int, bytes]]:
        """Append a batch atomically: all of it or (on any error) none of it. Durable when
        this returns, or inside `transaction()` when the block is left."""
        if not batch:
            return []
        with self._lock:
            conn = self._conn
            inner = self._depth > 0
            if inner and not conn.in_transaction:
                self._begin()
            conn.execute("SAVEPOINT append_many" if inner else "BEGIN IMMEDIATE")
            try:
                if not inner and self._stored_size() != self._frontier.size:
                    self._reload()  # another process appended: never fork the log
                frontier = self._frontier.copy()
                rows: list[tuple[int, bytes, bytes, str]] = []
                nodes: list[tuple[int, int, bytes]] = []
                out: list[tuple[int, bytes]] = []
                for fields in batch:
                    seq = frontier.size
                    entry = make_entry(seq, fields)
                    if self._verify_signatures and not keys.verify_entry_signature(entry):
                        raise EntryError(
                            f"signature by {entry.signature.party if entry.signature else '?'} "
                            "does not match the payload"
                        )
                    leaf = entry.encode()
                    lh = merkle.leaf_hash(leaf)
                    rows.append((seq, leaf, lh, _audience_key(entry.audience)))
                    nodes.extend(frontier.append(lh))
                    out.append((seq, lh))
                conn.executemany(
                    "INSERT INTO ledger_entry (seq, leaf, leaf_hash, audience) VALUES (?,?,?,?)",
                    rows,
                )
                conn.executemany("INSERT INTO ledger_node (level, idx, hash) VALUES (?,?,?)", nodes)
                conn.execute("RELEASE append_many" if inner else "COMMIT")
                if inner:
                    self._uncommitted.extend((seq, leaf) for seq, leaf, _, _ in rows)
            except BaseException:
                if inner:
                    conn.execute("ROLLBACK TO append_many")
                    conn.execute("RELEASE append_many")
                elif conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._frontier = frontier
            return out

    def _begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        if self._stored_size() != self._frontier.size:
            self._reload()  # another process appended: never fork the log

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Appends inside share one commit, taken when the block is left — also when it is
        left by an exception, since each `append_many` is atomic on its own (a savepoint).
        The write lock is taken at the first append, so a block that appends nothing costs
        nothing. Blocks nest; other threads wait for the block to end."""
        with self._lock:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._uncommitted.clear()
                if self._depth == 0 and self._conn.in_transaction:
                    try:
                        self._conn.execute("COMMIT")
                    except BaseException:
                        self._conn.execute("ROLLBACK")
                        self._reload()  # what the frontier counted never reached the disk
                        raise

    def uncommitted(self) -> list[tuple[int, bytes]]:
        """(seq, leaf) of the entries appended inside the open `transaction()` block: what
        its commit will make durable. The hub copies them into its store's commit first (the
        store's journal), so a crash between the two commits loses no entry (`recover`)."""
        with self._lock:
            return list(self._uncommitted)

    def recover(self, leaves: Sequence[tuple[int, bytes]]) -> int | None:
        """Append journalled entries the log lacks: those of `leaves` (in order, as from
        `uncommitted`) past its end — exactly those bytes, so every hash is as it was when
        they were first appended. Returns how many were appended, or None (nothing done)
        when the journal does not continue this log: an entry it shares with the log holds
        other bytes, or it starts past the log's end (another hub's ledger, or one made
        afresh with --init: the data folder's binding judges those, hub/datadir.py)."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self._stored_size() != self._frontier.size:
                    self._reload()
                frontier = self._frontier.copy()
                rows: list[tuple[int, bytes, bytes, str]] = []
                nodes: list[tuple[int, int, bytes]] = []
                for seq, leaf in leaves:
                    if seq < frontier.size:
                        held = conn.execute(
                            "SELECT leaf FROM ledger_entry WHERE seq = ?", (seq,)
                        ).fetchone()
                        if held is None or bytes(held[0]) != leaf:
                            conn.execute("ROLLBACK")
                            return None
                        continue
                    if seq != frontier.size or decode_entry(leaf).seq != seq:
                        conn.execute("ROLLBACK")
                        return None
                    lh = merkle.leaf_hash(leaf)
                    entry = decode_entry(leaf)
                    rows.append((seq, leaf, lh, _audience_key(entry.audience)))
                    nodes.extend(frontier.append(lh))
                conn.executemany(
                    "INSERT INTO ledger_entry (seq, leaf, leaf_hash, audience) VALUES (?,?,?,?)",
                    rows,
                )
                conn.executemany("INSERT INTO ledger_node (level, idx, hash) VALUES (?,?,?)", nodes)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._frontier = frontier
            return len(rows)

    # -- reading -------------------------------------------------------------------------

    def _check_size(self, size: int | None) -> int:
        current = self._stored_size()
        if size is None:
            return current
        if not 0 <= size <= current:
            raise LedgerError(f"size {size} is outside the log (0..{current})")
        return size

    def leaf(self, seq: int) -> bytes:
        with self._lock:
            row = self._conn.execute(
                "SELECT leaf FROM ledger_entry WHERE seq = ?", (seq,)
            ).fetchone()
        if row is None:
            raise LedgerError(f"no entry {seq}")
        return bytes(row[0])

    def entry(self, seq: int) -> Entry:
        return decode_entry(self.leaf(seq))

    def entries(self, start: int = 0, end: int | None = None) -> list[Entry]:
        return [decode_entry(leaf) for _, leaf, _ in self.leaves(start, end)]

    def leaves(
        self, start: int = 0, end: int | None = None, *, chunk: int = 5000
    ) -> Iterator[tuple[int, bytes, bytes]]:
        """(seq, leaf, leaf_hash) for start <= seq < end, read in chunks."""
        with self._lock:
            stop = self._check_size(end)
        seq = max(start, 0)
        while seq < stop:
            upper = min(seq + chunk, stop)
            with self._lock:
                rows = self._conn.execute(
                    "SELECT seq, leaf, leaf_hash FROM ledger_entry "
                    "WHERE seq >= ? AND seq < ? ORDER BY seq",
                    (seq, upper),
                ).fetchall()
            for s, leaf, lh in rows:
                yield int(s), bytes(leaf), bytes(lh)
            seq = upper

    def export_rows(
        self, size: int, *, chunk: int = 5000
    ) -> Iterator[tuple[int, bytes, bytes, str]]:
        """(seq, leaf, leaf_hash, ",A,B," audience) for seq < size, read in chunks."""
        with self._lock:
            size = self._check_size(size)
        for lo in range(0, size, chunk):
            with self._lock:
                rows = self._conn.execute(
                    "SELECT seq, leaf, leaf_hash, audience FROM ledger_entry "
                    "WHERE seq >= ? AND seq < ? ORDER BY seq",
                    (lo, min(lo + chunk, size)),
                ).fetchall()
            for s, leaf, lh, audience in rows:
                yield int(s), bytes(leaf), bytes(lh), str(audience)

    def visible_seqs(self, party: str, start: int = 0, end: int | None = None) -> list[int]:
        """Seqs of the entries whose audience holds `party`."""
        with self._lock:
            stop = self._check_size(end)
            rows = self._conn.execute(
                "SELECT seq FROM ledger_entry WHERE seq >= ? AND seq < ? "
                "AND instr(audience, ?) > 0 ORDER BY seq",
                (start, stop, f",{party},"),
            ).fetchall()
        return [int(r[0]) for r in rows]

    # -- tree heads and proofs -----------------------------------------------------------

    def root(self, size: int | None = None) -> bytes:
        with self._lock:
            at_frontier = size is None or size == self._frontier.size
            if at_frontier and self._stored_size() == self._frontier.size:
                return self._frontier.root()
            return merkle.root(self._nodes, self._check_size(size))

    def checkpoint(self, size: int | None = None) -> SignedCheckpoint:
        """Sign and record a tree head for `size` (default: everything committed)."""
        if self._hub_key is None:
            raise LedgerError("cannot sign a checkpoint without the hub key")
        with self._lock:
            size = self._check_size(size)
            root = self.root(size)
            time_us = self._clock()
            signature = keys.sign(self._hub_key, checkpoint_message(size, root, time_us))
            cp = SignedCheckpoint(size, root.hex(), time_us, signature, self.hub_public_key)
            self._conn.execute(
                "INSERT INTO ledger_checkpoint (size, root, time_us, signature, hub_key) "
                "VALUES (?, ?, ?, ?, ?)",
                (cp.size, root, cp.time_us, cp.signature, cp.hub_key),
            )
            return cp

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT size, root, time_us, signature, hub_key FROM ledger_checkpoint "
                "ORDER BY id DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        size, root, time_us, signature, hub_key = row
        return SignedCheckpoint(int(size), bytes(root).hex(), int(time_us), signature, hub_key)

    def inclusion_proof(self, seq: int, size: int | None = None) -> list[bytes]:
        with self._lock:
            size = self._check_size(size)
            if not 0 <= seq < size:
                raise LedgerError(f"entry {seq} is not in a tree of size {size}")
            return merkle.inclusion_proof(self._nodes, seq, size)

    def consistency_proof(self, old: int, new: int | None = None) -> list[bytes]:
        with self._lock:
            new = self._check_size(new)
            if not 0 <= old <= new:
                raise LedgerError(f"no consistency proof from size {old} to size {new}")
            return merkle.consistency_proof(self._nodes, old, new)

    def receipt(self, seq: int) -> Receipt:
        """The entry plus its audit path to the latest signed checkpoint (signed afresh if the
        latest one does not cover it yet)."""
        cp = self.latest_checkpoint()
        if cp is None or cp.size <= seq:
            cp = self.checkpoint()
        return Receipt(seq, self.leaf(seq), self.inclusion_proof(seq, cp.size), cp)

    def audit(self) -> bytes:
        """Recompute every leaf hash and the root from the stored entry bytes (O(n)).

        Raises LedgerError at the first entry whose bytes, hash or seq disagree; returns root.
        """
        frontier = merkle.Frontier()
        for seq, leaf, lh in self.leaves():
            if merkle.leaf_hash(leaf) != lh:
                raise LedgerError(f"entry {seq}: stored leaf hash does not match its bytes")
            try:
                if decode_entry(leaf).seq != seq:
                    raise LedgerError(f"entry {seq}: its bytes say another seq")
            except EntryError as exc:
                raise LedgerError(f"entry {seq}: {exc}") from None
            frontier.append(lh)
        root = frontier.root()
        if root != self.root(frontier.size):
            raise LedgerError("stored Merkle nodes disagree with the entries")
        return root
