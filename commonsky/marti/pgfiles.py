"""A cluster's Marti files in PostgreSQL (issue 19): files.py's rules, its rows and bytes in
the database of `store_url`, so a data package uploaded to one core downloads from the next.

Tables (beside the store's commonsky_*):

- `commonsky_file(sha256, party, …)` — files.py's row per (bytes, holder), written on the
  store's connection, so a core that is no longer the database's writer writes none
  (store/postgres.py: WriterFenced);
- `commonsky_file_blob(sha256, size, chunks)` and `commonsky_file_chunk(sha256, idx, data)`
  — the bytes in chunks of CHUNK bytes (a file of `limit_file_bytes`, 100 MiB by default, is
  a hundred rows; no value near PostgreSQL's 1 GB a field, nothing held whole in memory).
  They are written by COPY (binary) in one transaction with their blob row on a connection
  of their own, off the event loop: the blob row is there only once every chunk is, and its
  bytes were hashed again on the way in (a file whose SHA-256 is not its name is refused);
  that transaction, too, first checks the core is still the writer.
  Bytes without a row (a core killed between the two) are never served and are taken again
  by the next upload of the same bytes. The chunks are stored as they are (STORAGE
  EXTERNAL: zips and images do not compress, so PostgreSQL does not try).

Uploads arrive in a temporary file of the core's own folder first (`DATA_DIR/tmp/`, emptied
at every start), exactly as for one process; only a whole, checked upload reaches the
database.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from commonsky.errors import StoreUnavailable, UsageError, WriterFenced
from commonsky.marti.files import Content, StoredFile, fresh_tmp, room_left, temporary_in
from commonsky.marti.files import _row as file_row
from commonsky.marti.pgtokens import first_line
from commonsky.marti.query import PageKey, Query, where
from commonsky.settings import Settings

if TYPE_CHECKING:
    from commonsky.store.postgres import PostgresStore

CHUNK = 1 << 20  # bytes a chunk row holds
CONTENT_CONNECTIONS = 4  # connections moving bytes at once (uploads and downloads)
TMP = "tmp"  # the folder of uploads in progress, in the core's data_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS commonsky_file (
    sha256 TEXT NOT NULL,
    party TEXT NOT NULL,
    username TEXT NOT NULL,
    creator_uid TEXT NOT NULL,
    name TEXT NOT NULL,
    mime TEXT NOT NULL,
    size BIGINT NOT NULL,
    kind TEXT NOT NULL,
    categories TEXT NOT NULL,
    lat DOUBLE PRECISION,
    lon DOUBLE PRECISION,
    received DOUBLE PRECISION NOT NULL,
    tool TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (sha256, party)
);
CREATE INDEX IF NOT EXISTS commonsky_file_source ON commonsky_file (source, kind);
CREATE INDEX IF NOT EXISTS commonsky_file_party ON commonsky_file (party);
CREATE INDEX IF NOT EXISTS commonsky_file_received ON commonsky_file (received);
CREATE TABLE IF NOT EXISTS commonsky_file_blob (
    sha256 TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    chunks INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS commonsky_file_chunk (
    sha256 TEXT NOT NULL,
    idx INTEGER NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (sha256, idx)
);
"""
# Each applied only to a store that lacks it: an ALTER TABLE takes the table's exclusive lock
# even when it changes nothing (a start would wait behind every reader, and stall every
# reader behind it), and two starts that each held a lesser lock on the table deadlocked.
_CHANGES = (
    (
        "SELECT attstorage <> 'e' FROM pg_attribute WHERE attname = 'data'"
        " AND attrelid = 'commonsky_file_chunk'::regclass",
        "ALTER TABLE commonsky_file_chunk ALTER COLUMN data SET STORAGE EXTERNAL",
    ),
    (
        "SELECT NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attname = 'keywords'"
        " AND attrelid = 'commonsky_file'::regclass AND NOT attisdropped)",
        "ALTER TABLE commonsky_file ADD COLUMN IF NOT EXISTS keywords TEXT NOT NULL DEFAULT ''",
    ),
)
# Taken for the schema's transaction: the stores' starts make their changes one at a time.
_SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext('commonsky_file schema'))"

_COLUMNS = (
    "sha256, party, username, creator_uid, name, mime, size, kind, categories, lat, lon, "
    "received, tool, source, keywords"
)


class BadContent(UsageError):
    """Bytes whose SHA-256 or size is not what they were stored as (nothing is kept)."""


class _Connections:
    """At most CONTENT_CONNECTIONS connections to the database for moving bytes, each used
    by one worker thread at a time and kept for the next (a broken one is dropped)."""

    def __init__(self, url: str, timeout_s: int) -> None:
        self.url, self.timeout_s = url, timeout_s
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(CONTENT_CONNECTIONS)

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self._slots:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = psycopg.connect(self.url, autocommit=True,
                                           connect_timeout=self.timeout_s)  # fmt: skip
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"PostgreSQL unreachable: {first_line(exc)}") from None
            kept = False
            try:
                yield conn
                kept = not conn.broken and conn.info.transaction_status == _IDLE
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"PostgreSQL: {first_line(exc)}") from None
            finally:
                if kept:
                    with self._lock:
                        self._idle.append(conn)
                else:
                    conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


_IDLE = psycopg.pq.TransactionStatus.IDLE


class PgFileStore:
    """files.Files on the database of a `PostgresStore` (the module's header)."""

    def __init__(self, store: PostgresStore, tmp: Path, settings: Settings) -> None:
        self.store = store
        self.tmp = tmp
        self.settings = settings
        self._content = _Connections(store.url, 5)

    @classmethod
    def open(cls, store: PostgresStore, data_dir: Path, settings: Settings) -> PgFileStore:
        tmp = Path(data_dir) / TMP
        try:
            fresh_tmp(tmp)
            conn = store.connection()
            with conn.transaction():
                conn.execute(_SCHEMA_LOCK)
                conn.execute(SCHEMA)
                for needed, change in _CHANGES:
                    if (conn.execute(needed).fetchone() or (False,))[0]:
                        conn.execute(change)
        except OSError as exc:
            raise UsageError(f"{tmp}: cannot make the uploads folder ({exc})") from None
        except psycopg.Error as exc:
            raise UsageError(f"store_url {store.where}: cannot open the file store: "
                             f"{first_line(exc)}") from None  # fmt: skip
        return cls(store, tmp, settings)

    def close(self) -> None:
        self._content.close()

    # ---- bytes --------------------------------------------------------------------------

    def temporary(self) -> AbstractContextManager[Path]:
        return temporary_in(self.tmp)

    def put(self, temp: Path, sha256: str) -> None:
        """Copy a checked temporary file into the database (blocking: a worker thread)."""
        size = temp.stat().st_size
        with open(temp, "rb") as fh:
            self._write(sha256, size, iter(lambda: fh.read(CHUNK), b""))

    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        view = memoryview(data)
        self._write(
            sha, len(data), (bytes(view[i : i + CHUNK]) for i in range(0, len(data), CHUNK))
        )
        return sha

    def _write(self, sha256: str, size: int, chunks: Iterable[bytes]) -> None:
        """The bytes and their blob row in one transaction; nothing when they are there
        already (or another upload of them commits first: its INSERT is waited for).
        Raises BadContent (rolled back) when the bytes are not `sha256` of `size`."""
        count = -(-size // CHUNK)
        with self._content.connection() as conn, conn.transaction():
            self._check_writer(conn)
            new = conn.execute(
                "INSERT INTO commonsky_file_blob (sha256, size, chunks) VALUES (%s, %s, %s) "
                "ON CONFLICT (sha256) DO NOTHING RETURNING sha256",
                (sha256, size, count),
            ).fetchone()
            if new is None:
                return
            digest, seen = hashlib.sha256(), 0
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY commonsky_file_chunk (sha256, idx, data) FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(["text", "int4", "bytea"])
                for idx, chunk in enumerate(chunks):
                    digest.update(chunk)
                    seen += len(chunk)
                    copy.write_row((sha256, idx, chunk))
            if digest.hexdigest() != sha256 or seen != size:
                raise BadContent(
                    f"bytes of {seen} with SHA-256 {digest.hexdigest()} are not the "
                    f"{size} of {sha256}: not stored"
                )

    def _check_writer(self, conn: psycopg.Connection[Any]) -> None:
        """A core's bytes, as its rows, only while it is the database's writer (the row
        held FOR SHARE to the commit: a successor's claim waits for it)."""
        writer = self.store.writer
        if writer is None:
            return
        row = conn.execute("SELECT writer FROM commonsky_writer WHERE id = 1 FOR SHARE").fetchone()
        if row is None or row[0] != writer:
            raise WriterFenced(
                f"{row[0] if row else 'nobody'} is the database's writer now, not {writer}: "
                "no file is stored from here"
            )

    def content(self, sha256: str) -> Content | None:
        rows = self._read(
            "SELECT size, chunks FROM commonsky_file_blob WHERE sha256 = %s", (sha256,)
        )
        if not rows:
            return None
        size, count = int(rows[0][0]), int(rows[0][1])

        async def stream() -> AsyncIterator[bytes]:
            import asyncio

            for idx in range(count):
                yield await asyncio.to_thread(self._chunk, sha256, idx)

        return Content(size, stream=stream)

    def _chunk(self, sha256: str, idx: int) -> bytes:
        with self._content.connection() as conn:
            row = conn.execute(
                "SELECT data FROM commonsky_file_chunk WHERE sha256 = %s AND idx = %s",
                (sha256, idx),
                binary=True,
            ).fetchone()
        if row is None:
            raise BadContent(f"chunk {idx} of {sha256} is missing from the database")
        return bytes(row[0])

    def read_bytes(self, sha256: str) -> bytes | None:
        rows = self._read("SELECT chunks FROM commonsky_file_blob WHERE sha256 = %s", (sha256,))
        if not rows:
            return None
        return b"".join(self._chunk(sha256, idx) for idx in range(int(rows[0][0])))

    def has_bytes(self, sha256s: list[str]) -> set[str]:
        rows = self._read(
            "SELECT sha256 FROM commonsky_file_blob WHERE sha256 = ANY(%s)", (sha256s,)
        )
        return {str(r[0]) for r in rows}

    # ---- rows ---------------------------------------------------------------------------

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        conn = self.store.connection()
        try:
            return conn.execute(sql, args).fetchall()
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL: {first_line(exc)}") from None

    def _write_row(self, sql: str, args: tuple[Any, ...]) -> int:
        """One statement in a write transaction of the store (the writer checked)."""
        try:
            with self.store.transaction():
                return int(self.store.write_conn().execute(sql, args).rowcount)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL: {first_line(exc)}") from None

    def add(self, row: StoredFile) -> bool:
        """Record that `row.party` holds the bytes; False if it already did."""
        return (
            self._write_row(
                f"INSERT INTO commonsky_file ({_COLUMNS}) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                _values(row),
            )
            == 1
        )

    def rows(self, sha256: str) -> list[StoredFile]:
        found = self._read(f"SELECT {_COLUMNS} FROM commonsky_file WHERE sha256 = %s", (sha256,))
        return [file_row(r) for r in found]

    def derived(self, source: str, kind: str) -> list[StoredFile]:
        found = self._read(
            f"SELECT {_COLUMNS} FROM commonsky_file WHERE source = %s AND kind = %s",
            (source, kind),
        )
        return [file_row(r) for r in found]

    def matching(self, query: Query, limit: int, after: PageKey | None = None) -> list[StoredFile]:
        """files.py's `matching`, on a connection of the worker thread's own (never the
        store's, which the event loop writes on)."""
        condition, args = where(query, postgres=True, after=after)
        return self._search(
            f"SELECT {_COLUMNS} FROM commonsky_file WHERE {condition} "
            "ORDER BY received DESC, sha256, party LIMIT %s",
            (*args, limit),
        )

    def rows_of(self, sha256s: list[str]) -> list[StoredFile]:
        return self._search(
            f"SELECT {_COLUMNS} FROM commonsky_file WHERE sha256 = ANY(%s)", (sha256s,)
        )

    def _search(self, sql: str, args: tuple[Any, ...]) -> list[StoredFile]:
        with self._content.connection() as conn:
            return [file_row(r) for r in conn.execute(sql, args).fetchall()]

    def set_tool(self, sha256: str, party: str, tool: str) -> bool:
        return (
            self._write_row(
                "UPDATE commonsky_file SET tool = %s WHERE sha256 = %s AND party = %s",
                (tool, sha256, party),
            )
            > 0
        )

    def held(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (sha256, party) rows are here (the move of adopt.py)."""
        rows = self._read(
            "SELECT sha256, party FROM commonsky_file "
            "WHERE (sha256, party) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([k[0] for k in keys], [k[1] for k in keys]),
        )
        return {(str(s), str(p)) for s, p in rows}

    def count(self, party: str) -> int:
        rows = self._read(
            "SELECT COUNT(*) FROM commonsky_file "
            "WHERE party = %s AND kind IN ('package', 'file', 'image')",
            (party,),
        )
        return int(rows[0][0])

    def stored_bytes(self) -> int:
        rows = self._read(
            "SELECT COALESCE(SUM(size), 0) "
            "FROM (SELECT DISTINCT sha256, size FROM commonsky_file) f",
            (),
        )
        return int(rows[0][0])

    def room(self, party: str) -> tuple[int, str | None]:
        return room_left(self.settings, lambda: self.count(party), self.stored_bytes)


def _text(value: str) -> str:
    return value.replace("\x00", "\ufffd")  # (PostgreSQL text holds no NUL; SQLite did)


def _values(row: StoredFile) -> tuple[Any, ...]:
    return (
        row.sha256,
        _text(row.party),
        _text(row.user),
        _text(row.creator_uid),
        _text(row.name),
        _text(row.mime),
        row.size,
        _text(row.kind),
        _text(",".join(row.categories)),
        None if math.isnan(row.lat) else row.lat,
        None if math.isnan(row.lon) else row.lon,
        row.received,
        _text(row.tool),
        row.source,
        _text(",".join(row.keywords)),
    )
