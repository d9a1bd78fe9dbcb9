"""Files on the hub: content-addressed bytes and who put them there.

Rules:

- Bytes live in `DATA_DIR/files/objects/ab/<sha256>`, written as a temporary file in
  `files/tmp/` first and renamed into place only once whole and checked — so a partial,
  aborted or refused upload leaves nothing (`tmp/` is emptied at every start, which also
  clears what a crash left mid-upload).
- Who holds which bytes is in `DATA_DIR/files.sqlite3`, one row per (sha256, party): the same
  bytes uploaded by two parties are kept once and belong to both. A row says what the file is
  (`kind`: `package`, `file`, `image`, or the hub's own `evidence` / `quickpic` copies), its
  categories (`file`, `imagery`), the position the policy asks about (NaN when none: then
  only agreements without an area grant it) and the keywords its upload gave.
- A search (search.py) reads on a connection of its own from a worker thread (`matching`,
  `rows_of`: every filter of query.py in the SQL), never on the event loop's.
- Whether a party may fetch bytes is asked of the policy at the moment it asks (`Access`),
  never stored: an agreement that ends stops the next download.
- Limits (settings): `limit_file_bytes` per file, `limit_files_per_party` rows per party,
  `limit_file_store_bytes` for everything. Past a limit an upload is refused (413 / 507)
  before anything is kept; the hub never deletes a file to make room (files are evidence).
- A cluster keeps rows and bytes in PostgreSQL instead (pgfiles.py), so the next core serves
  what the last one took: `stores.open_files` chooses; the Marti code sees only the `Files`
  calls.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from commonsky.errors import UsageError
from commonsky.marti.query import PageKey, Query, where
from commonsky.settings import Settings

DB_NAME = "files.sqlite3"
HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class StoredFile:
    sha256: str
    party: str  # who holds it (uploaded it, or the party the hub made it for)
    user: str
    creator_uid: str
    name: str
    mime: str
    size: int
    kind: str  # package | file | image | evidence | quickpic
    categories: tuple[str, ...]
    lat: float
    lon: float
    received: float
    tool: str = "public"
    source: str = ""  # for the hub's copies: the sha256 they were made from
    keywords: tuple[str, ...] = ()  # given at upload (search.py adds `missionpackage`)


def is_sha256(text: str) -> bool:
    return len(text) == 64 and set(text) <= HEX


@dataclass(frozen=True, slots=True)
class Content:
    """Stored bytes to send: a file of this process (`path`) or, from a database, `stream`
    (a fresh iterator of the bytes in order each time it is called)."""

    size: int
    path: Path | None = None
    stream: Callable[[], AsyncIterator[bytes]] | None = None


class Files(Protocol):
    """What the Marti code asks of the file store (here: a folder and SQLite; pgfiles.py
    for a cluster). `put`, `put_bytes` and `read_bytes` block: call them off the event loop."""

    def room(self, party: str) -> tuple[int, str | None]: ...

    def temporary(self) -> AbstractContextManager[Path]: ...

    def put(self, temp: Path, sha256: str) -> None: ...

    def put_bytes(self, data: bytes) -> str: ...

    def add(self, row: StoredFile) -> bool: ...

    def rows(self, sha256: str) -> list[StoredFile]: ...

    def derived(self, source: str, kind: str) -> list[StoredFile]: ...

    def matching(
        self, query: Query, limit: int, after: PageKey | None = None
    ) -> list[StoredFile]: ...

    def rows_of(self, sha256s: list[str]) -> list[StoredFile]: ...

    def set_tool(self, sha256: str, party: str, tool: str) -> bool: ...

    def content(self, sha256: str) -> Content | None: ...

    def read_bytes(self, sha256: str) -> bytes | None: ...

    def close(self) -> None: ...


def fresh_tmp(folder: Path) -> None:
    """An empty `folder` for uploads in progress: what an interrupted one left is never
    part of the store."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def temporary_in(folder: Path) -> AbstractContextManager[Path]:
    """A fresh temporary file in `folder`, removed on the way out unless it was moved."""

    @contextlib.contextmanager
    def made() -> Iterator[Path]:
        fd, name = _mkstemp(folder)
        os.close(fd)
        path = Path(name)
        try:
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    return made()


class FileStore:
    def __init__(self, root: Path, db: sqlite3.Connection, settings: Settings) -> None:
        self.root = root
        self.db = db
        self.settings = settings
        # Searches read on a connection of their own, from a worker thread (search.py),
        # one at a time; the event loop's `db` is never used off it.
        self._reader: sqlite3.Connection | None = None
        self._reading = threading.Lock()

    @classmethod
    def open(cls, data_dir: Path, settings: Settings) -> FileStore:
        root = Path(data_dir) / "files"
        path = Path(data_dir) / DB_NAME
        try:
            (root / "objects").mkdir(parents=True, exist_ok=True)
            fresh_tmp(root / "tmp")
            existed = path.exists()
            db = sqlite3.connect(path, isolation_level=None)
            if not existed:
                path.chmod(0o600)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS file (sha256 TEXT NOT NULL, party TEXT NOT NULL,"
                " user TEXT NOT NULL, creator_uid TEXT NOT NULL, name TEXT NOT NULL,"
                " mime TEXT NOT NULL, size INTEGER NOT NULL, kind TEXT NOT NULL,"
                " categories TEXT NOT NULL, lat REAL, lon REAL, received REAL NOT NULL,"
                " tool TEXT NOT NULL, source TEXT NOT NULL, keywords TEXT NOT NULL DEFAULT '',"
                " PRIMARY KEY (sha256, party))"
            )
            columns = {str(r[1]) for r in db.execute("PRAGMA table_info(file)")}
            if "keywords" not in columns:  # (a store of before keywords were kept)
                db.execute("ALTER TABLE file ADD COLUMN keywords TEXT NOT NULL DEFAULT ''")
            db.execute("CREATE INDEX IF NOT EXISTS file_received ON file (received)")
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"{path}: cannot open the file store ({exc})") from None
        return cls(root, db, settings)

    def close(self) -> None:
        self.db.close()
        with self._reading:
            if self._reader is not None:
                self._reader.close()

    # ---- bytes --------------------------------------------------------------------------

    def object_path(self, sha256: str) -> Path:
        assert is_sha256(sha256)
        return self.root / "objects" / sha256[:2] / sha256

    def temporary(self) -> AbstractContextManager[Path]:
        """A fresh temporary file in the store's own folder (same file system: the rename
        into place is atomic); removed on the way out unless `put` took it."""
        return temporary_in(self.root / "tmp")

    def put(self, temp: Path, sha256: str) -> None:
        """Move a checked temporary file into place (or drop it: the bytes are there)."""
        target = self.object_path(sha256)
        if target.exists():
            temp.unlink()
            return
        target.parent.mkdir(exist_ok=True)
        with open(temp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(temp, target)

    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not self.object_path(sha).exists():
            with self.temporary() as temp:
                temp.write_bytes(data)
                self.put(temp, sha)
        return sha

    def content(self, sha256: str) -> Content | None:
        path = self.object_path(sha256)
        try:
            return Content(path.stat().st_size, path=path)
        except FileNotFoundError:
            return None

    def read_bytes(self, sha256: str) -> bytes | None:
        try:
            return self.object_path(sha256).read_bytes()
        except FileNotFoundError:
            return None

    # ---- rows ---------------------------------------------------------------------------

    def add(self, row: StoredFile) -> bool:
        """Record that `row.party` holds the bytes; False if it already did (a re-upload)."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO file VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                row.sha256,
                row.party,
                row.user,
                row.creator_uid,
                row.name,
                row.mime,
                row.size,
                row.kind,
                ",".join(row.categories),
                row.lat,
                row.lon,
                row.received,
                row.tool,
                row.source,
                ",".join(row.keywords),
            ),
        )
        return cursor.rowcount == 1

    def rows(self, sha256: str) -> list[StoredFile]:
        found = self.db.execute("SELECT * FROM file WHERE sha256 = ?", (sha256,)).fetchall()
        return [_row(r) for r in found]

    def derived(self, source: str, kind: str) -> list[StoredFile]:
        found = self.db.execute(
            "SELECT * FROM file WHERE source = ? AND kind = ?", (source, kind)
        ).fetchall()
        return [_row(r) for r in found]

    def matching(self, query: Query, limit: int, after: PageKey | None = None) -> list[StoredFile]:
        """At most `limit` rows `query` selects (query.py `where`), the newest first, those
        listed after `after` (a page's last row) if given (blocking: a search's worker
        thread)."""
        condition, args = where(query, postgres=False, after=after)
        return self._search(
            f"SELECT * FROM file WHERE {condition} ORDER BY received DESC, sha256, party LIMIT ?",
            (*args, limit),
        )

    def rows_of(self, sha256s: list[str]) -> list[StoredFile]:
        """Every row of these bytes (blocking: a search's worker thread)."""
        found: list[StoredFile] = []
        for i in range(0, len(sha256s), 500):
            part = sha256s[i : i + 500]
            marks = ",".join("?" * len(part))
            found += self._search(f"SELECT * FROM file WHERE sha256 IN ({marks})", tuple(part))
        return found

    def _search(self, sql: str, args: tuple[object, ...]) -> list[StoredFile]:
        with self._reading:
            if self._reader is None:
                self._reader = sqlite3.connect(
                    self.root.parent / DB_NAME, isolation_level=None, check_same_thread=False
                )
            return [_row(r) for r in self._reader.execute(sql, args).fetchall()]

    def set_tool(self, sha256: str, party: str, tool: str) -> bool:
        cursor = self.db.execute(
            "UPDATE file SET tool = ? WHERE sha256 = ? AND party = ?", (tool, sha256, party)
        )
        return cursor.rowcount > 0

    def count(self, party: str) -> int:
        (n,) = self.db.execute(
            "SELECT COUNT(*) FROM file WHERE party = ? AND kind IN ('package','file','image')",
            (party,),
        ).fetchone()
        return int(n)

    def stored_bytes(self) -> int:
        (n,) = self.db.execute(
            "SELECT COALESCE(SUM(size), 0) FROM (SELECT DISTINCT sha256, size FROM file)"
        ).fetchone()
        return int(n)

    def room(self, party: str) -> tuple[int, str | None]:
        return room_left(self.settings, lambda: self.count(party), self.stored_bytes)


def room_left(
    settings: Settings, count: Callable[[], int], stored: Callable[[], int]
) -> tuple[int, str | None]:
    """Bytes the next upload of a party may take (`count`: the files it holds, `stored`: the
    bytes of all), or (0, the setting that is full)."""
    if count() >= settings.limit_files_per_party:
        return 0, "limit_files_per_party"
    left = settings.limit_file_store_bytes - stored()
    if left <= 0:
        return 0, "limit_file_store_bytes"
    return min(left, settings.limit_file_bytes), None


def _row(r: tuple[object, ...]) -> StoredFile:
    """A row of either store (or of a store of before keywords were kept: 14 columns)."""
    sha, party, user, creator, name, mime, size, kind, cats, lat, lon, received, tool, src = r[:14]
    words = str(r[14]) if len(r) > 14 else ""
    return StoredFile(
        str(sha),
        str(party),
        str(user),
        str(creator),
        str(name),
        str(mime),
        int(size),  # type: ignore[call-overload]
        str(kind),
        tuple(c for c in str(cats).split(",") if c),
        float("nan") if lat is None else float(lat),  # type: ignore[arg-type]
        float("nan") if lon is None else float(lon),  # type: ignore[arg-type]
        float(received),  # type: ignore[arg-type]
        str(tool),
        str(src),
        tuple(w for w in words.split(",") if w),
    )


def _mkstemp(folder: Path) -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(dir=folder, prefix="upload-")
