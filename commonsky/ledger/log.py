# The signed, append-only ledger: entries, their Merkle tree and signed tree heads.
#
# Rule: a batch of entries, its leaf hashes and every Merkle node it completes are written in
# ONE transaction, and the in-memory frontier moves only after that transaction commits.  So a
# crash at any instant leaves either the whole batch or none of it, and reopening rebuilds the
# frontier from the stored nodes (O(log n) lookups) exactly where the committed log ends.
#
# Where the rows live is a `db.LedgerDB`: SQLite next to the hub's own tables (the embedded
# default, `Ledger(path)`), or a cluster's PostgreSQL database, on the store's connection
# (`pgdb.PgLedgerDB`: one commit with the store). Tables (db.py, pgdb.py):
#   entry(seq PK, leaf, leaf_hash, audience)   the canonical entry bytes (entry.py)
#   node(level, idx, hash)                      every perfect Merkle node of level >= 1
#   checkpoint(id, size, root, time_us, signature, hub_key)   every signed tree head
#   meta(key, value)                            format version, hub_id
# One `Ledger` object appends (the hub's single writer); other processes (the CLI) may open
# the same database to read, prove and sign checkpoints.  The object is safe to share between
# threads: a lock serialises its calls.
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from commonsky.errors import CommonSkyError
from commonsky.ledger import keys, merkle
from commonsky.ledger.db import SCHEMA_VERSION, EntryRow, LedgerDB, NodeRow, SqliteLedgerDB
from commonsky.ledger.entry import (
    Entry,
    EntryError,
    EntryFields,
    checkpoint_message,
    decode_entry,
    make_entry,
)
from commonsky.ledger.proofs import Receipt, SignedCheckpoint

# (SignedCheckpoint and Receipt live in proofs.py; still importable from here.)
__all__ = ["DB_NAME", "Ledger", "LedgerError", "Receipt", "SignedCheckpoint", "now_us"]

# Its own file, apart from the hub's item store: each keeps its own write transaction open
# while the hub handles one item and all it sets off, without waiting on the other's lock.
DB_NAME = "ledger.sqlite3"


class LedgerError(CommonSkyError):
    """The stored ledger is inconsistent, or a request it cannot honour; the message says why.
    (Ours to fix, not a peer's: HTTP 500 if one ever reaches a request.)"""

    reason = "ledger"


def now_us() -> int:
    return time.time_ns() // 1000


class _StoredNodes:
    """merkle.NodeSource over the ledger's rows (level 0 is the entries' leaf hashes)."""

    def __init__(self, db: LedgerDB) -> None:
        self._db = db

    def node(self, level: int, index: int) -> bytes:
        found = self._db.node(level, index)
        if found is None:
            raise LedgerError(f"ledger is missing Merkle node level {level} index {index}")
        return found


def _audience_key(audience: Sequence[str]) -> str:
    # ",A,B," so that a substring search for ',P,' finds exactly party P.
    return "," + ",".join(audience) + ","


class Ledger:
    """Append-only Merkle log.  See the module comment for the transaction rule."""

    def __init__(
        self,
        path: Path | str | LedgerDB,
        hub_key: Ed25519PrivateKey | None = None,
        *,
        verify_signatures: bool = True,
        synchronous: str = "NORMAL",
        clock: Callable[[], int] = now_us,
    ) -> None:
        """`path`: the SQLite file, or a `LedgerDB` (a cluster's: ledger/pgdb.py), which the
        ledger closes with itself. Raises LedgerError when the stored rows disagree."""
        self._hub_key = hub_key
        self._verify_signatures = verify_signatures
        self._clock = clock
        self._lock = threading.RLock()
        self._depth = 0  # nesting of `transaction()` blocks
        self._checked = -1  # `db.mark()` of the transaction whose stored size was checked
        # (seq, leaf) appended inside the open block, not yet committed (see `uncommitted`).
        self._uncommitted: list[tuple[int, bytes]] = []
        if isinstance(path, str | Path):
            sqlite_db = SqliteLedgerDB(Path(path), synchronous)
            self._db: LedgerDB = sqlite_db
        else:
            sqlite_db, self._db = None, path
        self.where = self._db.where
        self.path = Path(path) if isinstance(path, str | Path) else None
        self._nodes = _StoredNodes(self._db)
        self._frontier = merkle.Frontier()
        try:
            version = self._db.schema_version()
            if version != SCHEMA_VERSION:
                raise LedgerError(
                    f"{self.where}: ledger schema {version}, expected {SCHEMA_VERSION}"
                )
            self._reload()
        except BaseException:
            self._db.close()
            raise
        if sqlite_db is not None:
            sqlite_db.start_checkpoints()

    @classmethod
    def open(cls, data_dir: Path | str, **kwargs: Any) -> Ledger:
        """The hub's ledger: DATA_DIR/ledger.sqlite3 signed with DATA_DIR/keys/hub-ed25519.pem."""
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(data_dir / DB_NAME, keys.load_or_create_hub_key(data_dir), **kwargs)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state ---------------------------------------------------------------------------

    def _stored_size(self) -> int:
        return self._db.stored_size()

    def _reload(self) -> None:
        size = self._stored_size()
        count = self._db.count()
        if count != size:
            raise LedgerError(f"{self.where}: ledger has {count} entries but seq reaches {size}")
        self._frontier = merkle.Frontier.load(size, self._nodes.node)
        last = self.latest_checkpoint()
        if last is not None:
            if last.size > size:
                raise LedgerError(
                    f"{self.where}: a checkpoint of size {last.size} was signed "
                    f"but only {size} entries are stored"
                )
            if merkle.root(self._nodes, last.size) != last.root:
                raise LedgerError(
                    f"{self.where}: stored entries disagree with signed checkpoint {last.size}"
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
            return self._db.meta(key)

    def set_meta(self, key: str, value: str) -> None:
        if key == "schema":
            raise LedgerError("the schema version is not for callers to set")
        with self._lock:
            self._db.set_meta(key, value)

    # -- appending -----------------------------------------------------------------------

    def append(self, fields: EntryFields) -> tuple[int, bytes]:
        """Append one entry; returns (seq, leaf_hash).  Durable when this returns."""
        return self.append_many([fields])[0]

    def _open_write(self) -> bool:
        """Take the write lock for one append: True when this call opened the transaction
        and commits it itself; False when it joins an open one (a `transaction()` block, or
        — sharing the store's connection — the store's block) and uses a savepoint."""
        db = self._db
        joined = db.in_transaction()
        if not joined:
            db.begin()
        # Another process appended, or (sharing the store's commit) a commit this frontier
        # counted failed: never fork the log, continue what is stored. (Shared: once per
        # transaction — within one, only this ledger appends.)
        fresh = not joined or (db.shared and db.mark() != self._checked)
        if fresh and self._stored_size() != self._frontier.size:
            self._reload()
        self._checked = db.mark()
        if joined or self._depth > 0:
            db.savepoint()
            return False
        return True

    def append_many(self, batch: Sequence[EntryFields]) -> list[tuple[int, bytes]]:
        """Append a batch atomically: all of it or (on any error) none of it. Durable when
        this returns, or inside `transaction()` when the block is left."""
        if not batch:
            return []
        with self._lock:
            db = self._db
            own = self._open_write()
            try:
                frontier = self._frontier.copy()
                rows: list[EntryRow] = []
                nodes: list[NodeRow] = []
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
                db.insert(rows, nodes)
                if own:
                    db.commit()
                else:
                    db.release()
                    if not db.shared:
                        self._uncommitted.extend((seq, leaf) for seq, leaf, _, _ in rows)
            except BaseException:
                if not own:
                    with contextlib.suppress(Exception):  # (a broken connection: gone anyway)
                        db.rollback_to()
                elif db.in_transaction():
                    db.rollback()
                raise
            self._frontier = frontier
            return out

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Appends inside share one commit, taken when the block is left — also when it is
        left by an exception, since each `append_many` is atomic on its own (a savepoint).
        The write lock is taken at the first append, so a block that appends nothing costs
        nothing. Blocks nest; other threads wait for the block to end. (Sharing the store's
        connection, the store's block commits: it is left before this one.)"""
        with self._lock:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._uncommitted.clear()
                if self._depth == 0 and self._db.in_transaction():
                    try:
                        self._db.commit()
                    except BaseException:
                        with contextlib.suppress(Exception):
                            self._db.rollback()
                        self._reload()  # what the frontier counted never reached the disk
                        raise

    def uncommitted(self) -> list[tuple[int, bytes]]:
        """(seq, leaf) of the entries appended inside the open `transaction()` block: what
        its commit will make durable. The hub copies them into its store's commit first (the
        store's journal), so a crash between the two commits loses no entry (`recover`).
        Empty when the ledger shares the store's commit: there is no second commit."""
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
            db = self._db
            db.begin()
            try:
                if self._stored_size() != self._frontier.size:
                    self._reload()
                frontier = self._frontier.copy()
                rows: list[EntryRow] = []
                nodes: list[NodeRow] = []
                for seq, leaf in leaves:
                    if seq < frontier.size:
                        if db.leaf(seq) != leaf:
                            db.rollback()
                            return None
                        continue
                    if seq != frontier.size or decode_entry(leaf).seq != seq:
                        db.rollback()
                        return None
                    lh = merkle.leaf_hash(leaf)
                    entry = decode_entry(leaf)
                    rows.append((seq, leaf, lh, _audience_key(entry.audience)))
                    nodes.extend(frontier.append(lh))
                db.insert(rows, nodes)
                db.commit()
            except BaseException:
                if db.in_transaction():
                    db.rollback()
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
            found = self._db.leaf(seq)
        if found is None:
            raise LedgerError(f"no entry {seq}")
        return found

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
        for s, leaf, lh, _ in self._chunks(max(start, 0), stop, chunk):
            yield s, leaf, lh

    def _chunks(self, seq: int, stop: int, chunk: int) -> Iterator[EntryRow]:
        while seq < stop:
            upper = min(seq + chunk, stop)
            with self._lock:
                rows = self._db.rows(seq, upper)
            yield from rows
            seq = upper

    def export_rows(self, size: int, *, chunk: int = 5000) -> Iterator[EntryRow]:
        """(seq, leaf, leaf_hash, ",A,B," audience) for seq < size, read in chunks."""
        with self._lock:
            size = self._check_size(size)
        yield from self._chunks(0, size, chunk)

    def visible_seqs(self, party: str, start: int = 0, end: int | None = None) -> list[int]:
        """Seqs of the entries whose audience holds `party`."""
        with self._lock:
            stop = self._check_size(end)
            return self._db.visible(party, start, stop)

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
            self._db.add_checkpoint((cp.size, root, cp.time_us, cp.signature, cp.hub_key))
            return cp

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        with self._lock:
            row = self._db.latest_checkpoint()
        if row is None:
            return None
        size, root, time_us, signature, hub_key = row
        return SignedCheckpoint(size, root.hex(), time_us, signature, hub_key)

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
