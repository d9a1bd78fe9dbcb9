"""SQLite store: one connection, one writer (the hub's event loop), WAL, in `data_dir`.

Durable items are committed before `append` returns — or, inside `transaction()`, before the
block is left — and the hub relays nothing before that, so an item the hub has relayed is
already on disk. (The hub wraps each accepted item and everything it sets off — fused events,
notices, warnings — in one transaction: one commit instead of dozens.)
`synchronous=NORMAL` under WAL keeps every commit durable against a process crash (the OS may
lose the last commits on power loss — stated, accepted for the default).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec

from commonsky.model import Item
from commonsky.store.base import HotlineRow, NestedBlocks, load_deleted, load_rows
from commonsky.store.checkpoint import WalCheckpointer, without_auto_checkpoint

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    party TEXT NOT NULL,
    uid TEXT NOT NULL,
    category TEXT NOT NULL,
    stale REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS items_key ON items (party, uid);
CREATE INDEX IF NOT EXISTS items_stale ON items (stale);
CREATE TABLE IF NOT EXISTS cursors (
    party TEXT NOT NULL,
    client TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (party, client)
);
CREATE TABLE IF NOT EXISTS hotline (
    seq INTEGER PRIMARY KEY,
    sender TEXT NOT NULL,
    uid TEXT NOT NULL,
    open INTEGER NOT NULL,
    stale REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS hotline_key ON hotline (sender, uid);
CREATE INDEX IF NOT EXISTS hotline_open ON hotline (open, seq);
CREATE TABLE IF NOT EXISTS hotline_party (
    party TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (party, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_journal (seq INTEGER PRIMARY KEY, leaf BLOB NOT NULL);
"""

DB_NAME = "hub.sqlite3"

_encoder = msgspec.msgpack.Encoder()


class SQLiteStore(NestedBlocks):
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / DB_NAME
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._depth = 0
        self.unreadable: dict[int, str] = {}
        without_auto_checkpoint(self._db)
        self._checkpointer = WalCheckpointer(self.path)

    def _in_transaction(self) -> bool:
        return self._db.in_transaction

    def _commit(self) -> None:
        self._db.execute("COMMIT")

    def _write(self) -> None:
        if self._depth and not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")  # opened by the first write of the block

    def append(self, item: Item) -> int:
        self._write()
        cursor = self._db.execute(
            "INSERT INTO items (party, uid, category, stale, body) VALUES (?, ?, ?, ?, ?)",
            (item.party, item.uid, item.category.value, item.event.stale, _encoder.encode(item)),
        )
        seq = cursor.lastrowid
        assert seq is not None
        return seq

    def append_many(self, items: Sequence[Item]) -> list[int]:
        if len(items) == 1:
            return [self.append(items[0])]
        with self.transaction():
            if not self._db.in_transaction:
                self._db.execute("BEGIN IMMEDIATE")
            # One writer, inside its write transaction: the next numbers are known.
            (top,) = self._db.execute(
                "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'items'), 0),"
                " COALESCE((SELECT MAX(seq) FROM items), 0))"
            ).fetchone()
            seqs = list(range(top + 1, top + 1 + len(items)))
            self._db.executemany(
                "INSERT INTO items (seq, party, uid, category, stale, body) VALUES (?,?,?,?,?,?)",
                [
                    (seq, i.party, i.uid, i.category.value, i.event.stale, _encoder.encode(i))
                    for seq, i in zip(seqs, items, strict=True)
                ],
            )
        return seqs

    def reserve(self, seq: int) -> None:
        # AUTOINCREMENT numbers come from sqlite_sequence, which a rolled-back (or killed)
        # transaction leaves untouched: raised here past what the ledger has recorded.
        with self.transaction():
            if not self._db.in_transaction:
                self._db.execute("BEGIN IMMEDIATE")
            raised = self._db.execute(
                "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'items'", (seq,)
            ).rowcount
            if not raised:
                self._db.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('items', ?)", (seq,)
                )

    def active(self, now: float) -> list[Item]:
        rows = self._db.execute(
            "SELECT seq, body FROM items WHERE seq IN "
            "(SELECT MAX(seq) FROM items GROUP BY party, uid) AND stale > ? ORDER BY seq",
            (now,),
        )
        return list(load_rows(rows, self.unreadable))

    def since(self, seq: int) -> Iterator[Item]:
        query = "SELECT seq, body FROM items WHERE seq > ? ORDER BY seq"
        yield from load_rows(self._db.execute(query, (seq,)), self.unreadable)

    def deleted(self, now: float, limit: int) -> list[tuple[Item, Item]]:
        # (a row not stale yet, p; the next row of its key, t, stale — a tombstone's stale
        # time is its delete's — earlier than p, and the latest of its key; then decoded.
        # From the stale index: the history of stale rows, all but a few, is never read.)
        rows = self._db.execute(
            "SELECT t.seq, t.body, p.seq, p.body FROM items p JOIN items t ON t.seq = "
            "(SELECT MIN(q.seq) FROM items q WHERE q.party = p.party AND q.uid = p.uid "
            "AND q.seq > p.seq) WHERE p.stale > ? AND t.stale <= ? AND t.stale < p.stale "
            "AND NOT EXISTS (SELECT 1 FROM items r WHERE r.party = p.party AND r.uid = p.uid "
            "AND r.seq > t.seq) ORDER BY t.seq DESC LIMIT ?",
            (now, now, limit),
        )
        return load_deleted(rows, self.unreadable)

    def set_cursor(self, party: str, client: str, seq: int) -> None:
        self._db.execute(
            "INSERT INTO cursors (party, client, seq) VALUES (?, ?, ?) "
            "ON CONFLICT (party, client) DO UPDATE SET seq = MAX(seq, excluded.seq)",
            (party, client, seq),
        )

    def cursor(self, party: str, client: str) -> int:
        row = self._db.execute(
            "SELECT seq FROM cursors WHERE party = ? AND client = ?", (party, client)
        ).fetchone()
        return int(row[0]) if row else 0

    def put_hotline(self, row: HotlineRow) -> None:
        self._write()
        self._db.execute(
            "INSERT INTO hotline (seq, sender, uid, open, stale, body) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT (seq) DO UPDATE SET open = excluded.open, stale = excluded.stale, "
            "body = excluded.body",
            (row.seq, row.sender, row.uid, int(row.open), row.stale, row.body),
        )
        self._db.executemany(
            "INSERT OR IGNORE INTO hotline_party (party, seq) VALUES (?, ?)",
            [(p, row.seq) for p in sorted(set(row.parties))],
        )

    def hotline(self, sender: str, uid: str) -> bytes | None:
        row = self._db.execute(
            "SELECT body FROM hotline WHERE sender = ? AND uid = ?", (sender, uid)
        ).fetchone()
        return bytes(row[0]) if row else None

    def hotline_open(self, now: float) -> list[bytes]:
        rows = self._db.execute(
            "SELECT body FROM hotline WHERE open = 1 AND stale > ? ORDER BY seq", (now,)
        )
        return [bytes(body) for (body,) in rows]

    def hotline_page(
        self, party: str, other: str | None, before: int | None, limit: int
    ) -> list[tuple[int, bytes]]:
        top = (1 << 62) if before is None else before
        if other is None:
            query = (
                "SELECT h.seq, h.body FROM hotline_party p JOIN hotline h ON h.seq = p.seq "
                "WHERE p.party = ? AND p.seq < ? ORDER BY p.seq DESC LIMIT ?"
            )
            args: tuple[object, ...] = (party, top, limit)
        else:
            query = (
                "SELECT h.seq, h.body FROM hotline_party p JOIN hotline_party q "
                "ON q.seq = p.seq AND q.party = ? JOIN hotline h ON h.seq = p.seq "
                "WHERE p.party = ? AND p.seq < ? ORDER BY p.seq DESC LIMIT ?"
            )
            args = (other, party, top, limit)
        return [(int(seq), bytes(body)) for seq, body in self._db.execute(query, args)]

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            if not self._db.in_transaction:
                self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def put_journal(self, leaves: Sequence[tuple[int, bytes]]) -> None:
        if not leaves:
            return
        self._write()
        self._db.execute("DELETE FROM ledger_journal")
        self._db.executemany("INSERT INTO ledger_journal (seq, leaf) VALUES (?, ?)", leaves)

    def journal(self) -> list[tuple[int, bytes]]:
        rows = self._db.execute("SELECT seq, leaf FROM ledger_journal ORDER BY seq")
        return [(int(seq), bytes(leaf)) for seq, leaf in rows]

    def count(self) -> int:
        (n,) = self._db.execute("SELECT COUNT(*) FROM items").fetchone()
        return int(n)

    def close(self) -> None:
        self._checkpointer.close()
        self._db.close()
