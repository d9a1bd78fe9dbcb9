"""A cluster core's data folder from before enrolment tokens and Marti files moved into
PostgreSQL (issue 19): `enroll.sqlite3`, `files.sqlite3` and `files/objects/`, as one process
keeps them (tokens.py, files.py). Started on such a folder, a core finds what of it the
database lacks; without `--init` it stops with one line, with `--init` it moves it in, as
hub/adopt.py does with the ledger and keys:

- tokens as they were (spent or not, expiry, serial), all but those past keeping (expired
  longer than tokens.KEEP_EXPIRED_S: the database's own housekeeping would drop them); one
  the database holds already is left as it is there (it may have been spent since);
- each file row whose bytes are in the folder and hash to their name: the bytes first, then
  the row (pgfiles.py). A row whose bytes are missing or damaged cannot be served by any
  core: it is named in the log and left in the folder; so is a database the tool cannot read.

The files are left where they are (the operator removes them once the cluster serves); a
later start finds everything in the database and has nothing to do. Nothing found here
stops a start with `--init`.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from commonsky.errors import UsageError
from commonsky.marti.files import DB_NAME as FILES_DB
from commonsky.marti.files import StoredFile, is_sha256
from commonsky.marti.files import _row as file_row
from commonsky.marti.pgfiles import BadContent, PgFileStore
from commonsky.marti.pgtokens import PgTokenStore, Row
from commonsky.marti.tokens import DB_NAME as TOKENS_DB
from commonsky.marti.tokens import KEEP_EXPIRED_S
from commonsky.settings import Settings

if TYPE_CHECKING:
    from commonsky.store.postgres import PostgresStore

log = logging.getLogger("commonsky.datadir")


@dataclass
class Earlier:
    """What the folder holds that the database does not."""

    tokens: list[Row] = field(default_factory=list)
    files: list[StoredFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # what cannot move, and why

    def __bool__(self) -> bool:
        return bool(self.tokens or self.files)


def has_earlier(data_dir: Path) -> bool:
    return (data_dir / TOKENS_DB).is_file() or (data_dir / FILES_DB).is_file()


def _read(path: Path, query: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Rows of a SQLite file of the folder, opened read-only. Raises sqlite3.Error."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(query, args).fetchall()
    finally:
        db.close()


def object_path(data_dir: Path, sha256: str) -> Path:
    return data_dir / "files" / "objects" / sha256[:2] / sha256


def find(data_dir: Path, tokens: PgTokenStore, files: PgFileStore, now: float) -> Earlier:
    """What of the folder's tokens and files the database lacks."""
    found = Earlier()
    path = data_dir / TOKENS_DB
    if path.is_file():
        try:
            rows = _read(path, "SELECT digest, party, user, created, expires, used, serial "
                         "FROM token WHERE expires >= ?", (now - KEEP_EXPIRED_S,))  # fmt: skip
        except sqlite3.Error as exc:
            found.skipped.append(f"{path} ({exc})")
            rows = []
        known = tokens.known([str(r[0]) for r in rows])
        for raw in rows:
            if str(raw[0]) in known:
                continue
            try:
                found.tokens.append(_token(raw))
            except (TypeError, ValueError) as exc:
                found.skipped.append(f"{path}: a token ({exc})")
    path = data_dir / FILES_DB
    if path.is_file():
        try:
            rows = _read(path, "SELECT * FROM file")
        except sqlite3.Error as exc:
            found.skipped.append(f"{path} ({exc})")
            rows = []
        stored = []
        for raw in rows:
            try:
                stored.append(file_row(raw))
            except (TypeError, ValueError) as exc:
                found.skipped.append(f"{path}: a row ({exc})")
        held = files.held([(r.sha256, r.party) for r in stored])
        checked: dict[str, bool] = {}
        for row in stored:
            if (row.sha256, row.party) in held:
                continue
            whole = checked.get(row.sha256)
            if whole is None:
                whole = checked[row.sha256] = _whole(data_dir, row.sha256)
            if not whole:
                found.skipped.append(f"{row.sha256[:64]} of {row.party} (its bytes are not "
                                     "in the folder, or not whole)")  # fmt: skip
                continue
            found.files.append(row)
    return found


def _token(raw: tuple[object, ...]) -> Row:
    d, p, u, c, e, used, s = raw
    return (str(d), str(p), str(u), float(c), float(e),  # type: ignore[arg-type]
            None if used is None else float(used),  # type: ignore[arg-type]
            None if s is None else str(s))  # fmt: skip


def _whole(data_dir: Path, sha256: str) -> bool:
    """The folder holds bytes that hash to `sha256`."""
    if not is_sha256(sha256):
        return False
    digest = hashlib.sha256()
    try:
        with open(object_path(data_dir, sha256), "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return False
    return digest.hexdigest() == sha256


def adopt_marti(
    store: PostgresStore, data_dir: Path, settings: Settings, init: bool, now: float
) -> list[str]:
    """Move the folder's tokens and files into the database (the module's header); what
    was moved. Raises UsageError without `init` when there is something to move."""
    if not has_earlier(data_dir):
        return []
    tokens = PgTokenStore(store.url)
    try:
        files = PgFileStore.open(store, data_dir, settings)
        try:
            found = find(data_dir, tokens, files, now)
            for why in found.skipped:
                log.warning("%s: left in the folder, not moved into %s: %s",
                            data_dir, store.where, why)  # fmt: skip
            if not found:
                return []
            if not init:
                raise UsageError(
                    f"data_dir {data_dir}: holds {len(found.tokens)} enrollment tokens and "
                    f"{len(found.files)} Marti files from before they moved into the database "
                    f"({store.where}); start this core once with --init to move them in"
                )
            return _move(found, data_dir, tokens, files, store.where)
        finally:
            files.close()
    finally:
        tokens.close()


def _move(
    found: Earlier, data_dir: Path, tokens: PgTokenStore, files: PgFileStore, where: str
) -> list[str]:
    moved = []
    if found.tokens:
        tokens.insert_rows(found.tokens)
        moved.append(f"{len(found.tokens)} enrollment tokens")
    present = files.has_bytes(sorted({r.sha256 for r in found.files}))
    damaged: set[str] = set()
    count = 0
    for row in found.files:
        if row.sha256 in damaged:
            continue
        if row.sha256 not in present:
            try:
                files.put(object_path(data_dir, row.sha256), row.sha256)
            except (BadContent, OSError) as exc:
                log.warning("%s: left in the folder, not moved into %s: %s", data_dir, where,
                            exc)  # fmt: skip
                damaged.add(row.sha256)
                continue
            present.add(row.sha256)
        count += files.add(row)
    if count:
        moved.append(f"{count} Marti files")
    if moved:
        log.warning("--init: moved %s from %s into %s (the cluster's shared state); the files "
                    "are left in place", ", ".join(moved), data_dir, where)  # fmt: skip
    return moved
