"""The hub's data folder: one hub at a time, private, and whole.

Rules (issue 13, classes 8 and 13; issue 15):

- **One hub per folder.** `DATA_DIR/hub.lock` is held with an exclusive `flock` for the
  hub's life; a second hub on the same folder stops with one line naming the holder's pid.
- **Private.** The folder and `keys/` are 0700; the databases, keys and the manifest 0600 from
  the first byte (SQLite gives its `-wal`/`-shm` files the database's mode). A folder found
  looser is tightened, and the log says so.
- **Whole.** The four files a hub cannot lose without losing its history — the ledger
  (`ledger.sqlite3`), the item store (`hub.sqlite3`, or the PostgreSQL database of
  `store_url`), the ledger's signing key (`keys/hub-ed25519.pem`) and the secret behind
  generalized handles (`keys/hub-secret`) — belong together. At the first start the hub draws
  a random `hub_id`, writes it into the ledger and the store, and writes the manifest
  `DATA_DIR/hub.json` naming it and the signing key's fingerprint. A hub **has run before**
  when the manifest exists, or (a folder from before manifests) when any of the four does.
  Such a hub refuses to start — one line, exit 2 — when any of them is missing (a database
  of 0 bytes counts as missing, refused before SQLite writes a schema into it), or carries
  another `hub_id`, or the key is not the one the manifest (or the ledger's last signed
  checkpoint) names. `--init` is the operator saying "make what is missing and bind what is
  there": it is logged as a warning naming each file made or re-bound.
- **A cluster's cores** (`shared`) keep ledger, signing key and secret in the database of
  `store_url` (hub/shared.py has that database's own rules). The folder holds the manifest:
  an empty folder is bound to the hub the database holds; one whose manifest names another
  hub_id than the database's refuses to start (one line, exit 2), as for the files above.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from commonsky.errors import UsageError

if TYPE_CHECKING:
    from commonsky.ledger.log import Ledger
    from commonsky.store import Store

log = logging.getLogger("commonsky.datadir")

MANIFEST = "hub.json"
LOCK = "hub.lock"
LEDGER_DB = "ledger.sqlite3"  # commonsky.ledger.log.DB_NAME
STORE_DB = "hub.sqlite3"  # commonsky.store.sqlite.DB_NAME
HUB_KEY = "keys/hub-ed25519.pem"  # commonsky.ledger.keys.HUB_KEY_NAME under keys/
HUB_SECRET = "keys/hub-secret"
#: A cluster core's copy of the hub's public key (its private half is in the database):
#: what `commonsky ledger verify --hub-key` pins.
HUB_PUBLIC = "hub-ed25519.pub.pem"
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def key_fingerprint(raw_public_key: bytes) -> str:
    """SHA-256 of the raw 32-byte Ed25519 public key, hex (what `hub.json` pins)."""
    return hashlib.sha256(raw_public_key).hexdigest()


def private_dir(path: Path) -> None:
    """Make `path` (and missing parents) a 0700 folder; tighten it if it is looser.

    Raises UsageError naming the folder when it cannot be made or is not a folder."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    except FileExistsError:
        raise UsageError(f"{path}: exists and is not a folder") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot create the folder ({exc.strerror})") from None
    _tighten(path, PRIVATE_DIR)


def private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists; tighten it if it does."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        _tighten(path, PRIVATE_FILE)
        return
    except OSError as exc:
        raise UsageError(f"{path}: cannot create ({exc.strerror})") from None
    os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def exclusive_lock(path: Path, in_use: str, fix: str) -> int:
    """An exclusive `flock` on `path` (made 0600, our pid written in it); the open file
    descriptor holds it until closed. Raises UsageError "{in_use} (pid N, file); {fix}"."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    except OSError as exc:
        raise UsageError(f"{path}: cannot open the lock file ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise UsageError(f"{in_use} (pid {holder}, {path.name}); {fix}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release_lock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _holds(path: Path) -> bool:
    """Whether `path` exists and holds something: a SQLite file counts only when it or its
    write-ahead log has bytes (SQLite makes the file empty, before anything is written)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if not path.name.endswith(".sqlite3") or size:
        return True
    try:
        return path.with_name(f"{path.name}-wal").stat().st_size > 0
    except FileNotFoundError:
        return False


def _tighten(path: Path, mode: int) -> None:
    try:
        current = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if current & 0o077:
        try:
            path.chmod(mode)
        except OSError as exc:
            raise UsageError(
                f"{path}: mode {current:o} lets others read it, and it cannot be changed "
                f"({exc.strerror}); run `chmod {mode:o} {path}`"
            ) from None
        log.warning("%s was mode %o; made %o (private to the hub's user)", path, current, mode)


@dataclass
class DataDir:
    """The hub's folder. `open()` before opening anything in it, `bind()` once the store and
    ledger are open, `close()` last (it releases the lock)."""

    path: Path
    store_url: str = ""
    init: bool = False
    #: A cluster core: ledger, keys and secret live in the database of `store_url`
    #: (hub/shared.py); the folder holds the manifest naming the hub and per-process files.
    shared: bool = False
    _lock_fd: int | None = field(default=None, repr=False)
    manifest: dict[str, Any] | None = field(default=None, repr=False)
    created: list[str] = field(default_factory=list)  # files this start made

    def __post_init__(self) -> None:
        self.path = Path(self.path).absolute()

    # ---- before anything is opened ------------------------------------------------------

    def open(self) -> None:
        """Make the folder private, take its lock, and check that nothing is missing."""
        private_dir(self.path)
        self._lock()
        try:
            private_dir(self.path / "keys")
            self.manifest = self._read_manifest()
            present = {name: (self.path / name).exists() for name in self._files()}
            # (What a start that failed or was killed before its first write leaves — an
            # empty database file — is no sign of a hub: the next start is a first one.)
            held = [name for name in present if _holds(self.path / name)]
            has_run = self.manifest is not None or bool(held)
            missing = [name for name, here in present.items() if not here]
            # Beside a hub that has run, an empty database is as lost as a missing one, and
            # is refused before SQLite writes an empty schema into it.
            empty = [n for n, here in present.items() if here and n.endswith(".sqlite3")]
            empty = [name for name in empty if not _holds(self.path / name)]
            if has_run and (missing or empty):
                self._refuse_or_warn(held, missing, empty)
            self.created = missing + empty if has_run else missing
            # The databases get their mode before SQLite first writes them.
            for name in self._files():
                if name.endswith(".sqlite3"):
                    private_file(self.path / name)
                    for suffix in ("-wal", "-shm"):
                        _tighten(self.path / f"{name}{suffix}", PRIVATE_FILE)
                elif (self.path / name).exists():
                    _tighten(self.path / name, PRIVATE_FILE)
        except BaseException:
            self.close()
            raise
        log.info("data folder %s", self.path)

    def _refuse_or_warn(self, held: list[str], missing: list[str], empty: list[str]) -> None:
        """A hub that has run lacks `missing` files and has `empty` databases: refused in
        one line, or with --init logged as made afresh."""
        why = (
            f"its manifest {MANIFEST} is there"
            if self.manifest
            else f"{', '.join(held)} {'is' if len(held) == 1 else 'are'} there"
        )
        lost = []
        if missing:
            lost.append(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
        if empty:
            lost.append(f"{', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty (0 bytes)")
        made = [*missing, *empty]
        if not self.init:
            raise UsageError(
                f"data_dir {self.path}: this hub has run before ({why}) but "
                f"{' and '.join(lost)}; restore from a backup, or start with --init to make "
                f"{'it' if len(made) == 1 else 'them'} afresh"
            )
        log.warning("--init: %s: making %s afresh beside what is there", self.path, ", ".join(made))

    def _files(self) -> list[str]:
        if self.shared:
            return []  # (the database's own rules: hub/shared.py)
        files = [LEDGER_DB, HUB_KEY, HUB_SECRET]
        if not self.store_url:
            files.insert(1, STORE_DB)
        return files

    def _lock(self) -> None:
        self._lock_fd = exclusive_lock(
            self.path / LOCK,
            f"data_dir {self.path} is in use by another hub",
            "stop it first, or give this hub its own data_dir",
        )

    def _read_manifest(self) -> dict[str, Any] | None:
        """The manifest; one that cannot be read is refused, or with --init set aside (kept
        as hub.json.damaged-…) and written again from the store, ledger and key it names."""
        path = self.path / MANIFEST
        try:
            data = read_manifest(self.path)
            if data is not None and (
                not isinstance(data, dict) or not isinstance(data.get("hub_id"), str)
            ):
                raise UsageError(f"{path}: not a CommonSky manifest (no hub_id)")
        except UsageError as exc:
            if not self.init:
                raise UsageError(
                    f"{exc}; restore it from a backup, or start with --init to write it again "
                    "from the store and ledger"
                ) from None
            aside = path.with_name(f"{MANIFEST}.damaged-{secrets.token_hex(4)}")
            try:
                os.replace(path, aside)
            except OSError as moved:
                raise UsageError(f"{path}: cannot set it aside ({moved.strerror})") from None
            log.warning("--init: %s; kept as %s, written again at this start", exc, aside.name)
            return None
        if data is None:
            return None
        _tighten(path, PRIVATE_FILE)
        return data

    # ---- once the store and ledger are open ---------------------------------------------

    def bind(self, store: Store, ledger: Ledger) -> str:
        """Check that store, ledger and key belong together (or, first time or `--init`,
        make them); write the manifest. Returns the hub_id. Raises UsageError."""
        key = key_fingerprint(ledger.hub_public_key)
        store_name = self.store_url_redacted() or STORE_DB
        key_name = f"the hub key in {store_name}" if self.shared else HUB_KEY
        problems: list[str] = []
        ids = {"store": store.meta("hub_id"), "ledger": ledger.meta("hub_id")}
        ledger_name = f"the ledger in {store_name}" if self.shared else LEDGER_DB
        where = {"store": store_name, "ledger": ledger_name}
        expected = self.manifest["hub_id"] if self.manifest else None
        if expected is None:
            # First start, or a folder from before manifests: the files must agree together.
            found = {v for v in ids.values() if v}
            if len(found) > 1:
                problems.append(
                    f"{store_name} (hub {ids['store']}) and {ledger_name} (hub {ids['ledger']}) "
                    "belong to different hubs"
                )
            expected = found.pop() if len(found) == 1 else secrets.token_hex(16)
        for part, value in ids.items():
            if value is not None and value != expected:
                problems.append(f"{where[part]} belongs to hub {value}, this folder to {expected}")
            elif value is None and self.manifest is not None and where[part] not in self.created:
                problems.append(f"{where[part]} is not the one this hub made (it has no hub_id)")
        if self.manifest is not None and self.manifest.get("hub_key") not in (None, key):
            problems.append(f"{key_name} is not the key this hub signs with (see {MANIFEST})")
        last = ledger.latest_checkpoint()
        if last is not None and key_fingerprint(last.hub_key) != key:
            problems.append(f"{key_name} is not the key that signed the ledger's checkpoints")
        items, entries = store.count(), ledger.size
        if self.manifest is None and items and not entries:
            # Adopting a folder from before manifests (with a manifest, an empty ledger beside
            # stored items can only be one `--init` made, and the operator knows).
            problems.append(f"{store_name} holds {items} items but {ledger_name} is empty")
        if problems:
            if not self.init:
                what = "database" if self.shared else "files"
                raise UsageError(
                    f"data_dir {self.path}: {'; '.join(problems)}; restore the matching {what} "
                    "from a backup, or start with --init to bind them as they are"
                )
            log.warning("--init: %s: binding as they are: %s", self.path, "; ".join(problems))
        for part, value in ids.items():
            if value != expected:
                (store if part == "store" else ledger).set_meta("hub_id", expected)
        manifest = {
            "format": 1,
            "hub_id": expected,
            "hub_key": key,
            "store": store_name,
            "ledger": store_name if self.shared else LEDGER_DB,
        }
        if self.shared:
            from commonsky.ledger.keys import public_from_raw, public_pem

            pem = public_pem(public_from_raw(ledger.hub_public_key))
            with contextlib.suppress(FileNotFoundError):
                if (self.path / HUB_PUBLIC).read_bytes() == pem:
                    pem = b""
            if pem:
                write_private(self.path / HUB_PUBLIC, pem)
        if manifest != {k: (self.manifest or {}).get(k) for k in manifest}:
            write_private(self.path / MANIFEST, json.dumps(manifest, indent=2).encode() + b"\n")
            if self.manifest is None:
                log.info("new hub %s in %s (manifest %s)", expected, self.path, MANIFEST)
        self.manifest = manifest
        return expected

    def store_url_redacted(self) -> str:
        if not self.store_url:
            return ""
        from commonsky.store import redacted

        return redacted(self.store_url)

    def close(self) -> None:
        if self._lock_fd is not None:
            release_lock(self._lock_fd)
            self._lock_fd = None


def read_manifest(data_dir: Path) -> Any:
    """The JSON of `data_dir/hub.json` as written (None: there is none). Raises UsageError
    (one line) for one that cannot be read or is not JSON."""
    path = data_dir / MANIFEST
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read the hub's manifest ({exc})") from None


def damaged(folder: Path, exc: sqlite3.Error, names: Iterable[str] | None = None) -> UsageError:
    """The one line for a SQLite error met reading the folder's databases (`names`, default
    every *.sqlite3 there): it names each one `PRAGMA quick_check` finds damaged — checked
    here, on the error's path, so a start pays nothing for it — else the error itself."""
    paths = sorted(folder.glob("*.sqlite3")) if names is None else [folder / n for n in names]
    bad = [f"{path}: {problem}" for path in paths if (problem := _damage(path))]
    if not bad:
        return UsageError(f"{folder}: a database cannot be read ({exc})")
    fix = "restore it from a backup" if len(bad) == 1 else "restore them from a backup"
    return UsageError(f"{'; '.join(bad)}; {fix}")


def _damage(path: Path) -> str | None:
    """What is wrong with the SQLite file at `path` (opened read-only), or None."""
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            first = conn.execute("PRAGMA quick_check(1)").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"cannot be read ({exc})"
    if first is None or first[0] != "ok":
        found = " ".join(str(first[0]).replace("*** in database main ***", "").split())
        return f"damaged (quick_check: {found})" if first else "damaged (quick_check: no answer)"
    return None


@contextlib.contextmanager
def held(data_dir: Path, store_url: str = "", init: bool = False) -> Iterator[DataDir]:
    """`DataDir.open()` … `close()` as a block (for the CLI and the tests)."""
    folder = DataDir(data_dir, store_url, init)
    folder.open()
    try:
        yield folder
    finally:
        folder.close()
