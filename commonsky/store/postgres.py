"""PostgreSQL store: the same contract as the SQLite one, for a hub whose durable items must
live in a database server (backups, replicas, a disk that outlives the machine).

`store_url = "postgresql://user@host:5432/db"` selects it. One hub writes one database (its
tables are `commonsky_*`; give each hub its own database, or its own schema with
`?options=-csearch_path%3Dname`). The connection is synchronous, like SQLite's: the hub
commits an item and everything it sets off before relaying any of it, so a commit is a round
trip on the event loop (~0.1-0.3 ms on loopback).

uids are kept as bytes: PostgreSQL text cannot hold NUL, which a TAK protobuf uid may carry.
If the connection breaks, the write in progress fails (the hub relays nothing it could not
store) and the next one reconnects.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
import psycopg

from commonsky.errors import UsageError
from commonsky.model import Item

_SCHEMA = """
CREATE TABLE IF NOT EXISTS commonsky_items (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    party TEXT NOT NULL,
    uid BYTEA NOT NULL,
    category TEXT NOT NULL,
    stale DOUBLE PRECISION NOT NULL,
    body BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS commonsky_items_key ON commonsky_items (party, uid, seq);
CREATE INDEX IF NOT EXISTS commonsky_items_stale ON commonsky_items (stale);
CREATE TABLE IF NOT EXISTS commonsky_cursors (
    party TEXT NOT NULL,
    client TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (party, client)
);
"""

_INSERT = (
    "INSERT INTO commonsky_items (party, uid, category, stale, body) "
    "VALUES (%s, %s, %s, %s, %s) RETURNING seq"
)
_PAGE = 1000  # rows per query when reading everything since a sequence number

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Item)


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


class PostgresStore:
    def __init__(self, url: str, connect_timeout_s: float = 5.0) -> None:
        self.url = url
        self._timeout = connect_timeout_s
        self._depth = 0
        self._conn = self._connect()
        with self._conn.transaction():
            self._conn.execute(_SCHEMA)

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(1, round(self._timeout))
            )
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(
                f"store_url: cannot use PostgreSQL at {redacted(self.url)}: {reason}"
            ) from None

    def _live(self) -> psycopg.Connection[Any]:
        """The connection, opened again if it broke (never inside a block: what the block
        wrote is gone with the old connection, and the block's caller must hear of it)."""
        if self._conn.broken and not self._depth:
            self._conn = self._connect()
        return self._conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self._conn.info.transaction_status != _IDLE:
                self._conn.execute("COMMIT")

    def _begin(self, conn: psycopg.Connection[Any]) -> None:
        # Opened by the first write of a block, so a block that writes nothing costs nothing.
        if conn.info.transaction_status == _IDLE:
            conn.execute("BEGIN")

    def append(self, item: Item) -> int:
        return self.append_many([item])[0]

    def append_many(self, items: Sequence[Item]) -> list[int]:
        conn = self._live()
        rows = [
            (i.party, _key(i.uid), i.category.value, i.event.stale, _encoder.encode(i))
            for i in items
        ]
        if self._depth:
            self._begin(conn)  # the caller's block: one commit when it is left
        # Inside a block a savepoint, so a refused row takes nothing else with it (as in
        # SQLite, where a failed statement leaves the transaction usable); outside, several
        # rows are one commit and one row is a single autocommitted statement.
        atomic = conn.transaction() if self._depth or len(rows) > 1 else contextlib.nullcontext()
        with atomic, conn.cursor() as cur:
            cur.executemany(_INSERT, rows, returning=True)
            seqs = []
            while True:
                row = cur.fetchone()
                assert row is not None
                seqs.append(int(row[0]))
                if not cur.nextset():
                    break
        return seqs

    def active(self, now: float) -> list[Item]:
        rows = self._live().execute(
            "SELECT seq, body FROM (SELECT DISTINCT ON (party, uid) seq, stale, body "
            "FROM commonsky_items ORDER BY party, uid, seq DESC) latest "
            "WHERE stale > %s ORDER BY seq",
            (now,),
        )
        return [_load(seq, body) for seq, body in rows]

    def since(self, seq: int) -> Iterator[Item]:
        # Keyset pages: a long replay neither holds a transaction open nor loads everything.
        while True:
            rows = (
                self._live()
                .execute(
                    "SELECT seq, body FROM commonsky_items WHERE seq > %s ORDER BY seq LIMIT %s",
                    (seq, _PAGE),
                )
                .fetchall()
            )
            for row_seq, body in rows:
                yield _load(row_seq, body)
            if len(rows) < _PAGE:
                return
            seq = rows[-1][0]

    def set_cursor(self, party: str, client: str, seq: int) -> None:
        conn = self._live()
        if self._depth:
            self._begin(conn)
        conn.execute(
            "INSERT INTO commonsky_cursors (party, client, seq) VALUES (%s, %s, %s) "
            "ON CONFLICT (party, client) DO UPDATE "
            "SET seq = GREATEST(commonsky_cursors.seq, excluded.seq)",
            (party, client, seq),
        )

    def cursor(self, party: str, client: str) -> int:
        row = (
            self._live()
            .execute(
                "SELECT seq FROM commonsky_cursors WHERE party = %s AND client = %s",
                (party, client),
            )
            .fetchone()
        )
        return int(row[0]) if row else 0

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            if self._conn.info.transaction_status != _IDLE and not self._conn.broken:
                self._conn.execute("COMMIT")
        self._conn.close()


_IDLE = psycopg.pq.TransactionStatus.IDLE


def _key(uid: str) -> bytes:
    return uid.encode("utf-8", "surrogatepass")  # any str the hub accepted, NUL included


def _load(seq: int, body: bytes) -> Item:
    # The body is stored as accepted (seq 0); the row's key is the sequence number.
    return msgspec.structs.replace(_decoder.decode(body), seq=seq)
