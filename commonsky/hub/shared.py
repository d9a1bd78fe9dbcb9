"""What the cores of one cluster share in PostgreSQL beyond items and ledger (issue 19).

`[cluster]` cores may each have their own `data_dir` (../CONTRACT.md, "Cluster"): whatever
the next core needs to continue the same hub lives in the database of `store_url`, in
`commonsky_hub_state(name, value)`:

- `hub-ed25519.pem` — the ledger's signing key (PKCS#8 PEM, not encrypted), the embedded
  hub's `DATA_DIR/keys/hub-ed25519.pem`;
- `hub-secret` — the 32 bytes behind generalized handles (`DATA_DIR/keys/hub-secret`);
- `party/<PARTY>.pub.pem` — the parties' registered public keys (`DATA_DIR/keys/parties`);
- `directory.json` — the callsign directory (hub/directory.py).

The hub_id is the store's and the ledger's meta row, as for one process (hub/datadir.py).

Protection: access to the database is access to the keys, as read access to the data folder
is for one process; nothing here is encrypted (a key to decrypt them would have to sit
beside every core, in its config or its data folder, and protect nothing more). Give the
cluster's role its own database and keep `store_url`'s password as private as the keys.

Rules, as the data folder's "whole" rules (hub/datadir.py): the first core starts with
`--init` and makes the key and the secret; a later core (any data folder, empty or not)
loads them. A database that holds neither, without `--init`, stops the core with one line
(exit 2); so does one holding half of them, items or ledger entries without them, or a row
that is not what it should be. `--init` makes what is missing and says so.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from commonsky.errors import StoreUnavailable, UsageError
from commonsky.ledger.keys import KeyFileError, PartyKeys, load_public_key, public_pem, raw_public

if TYPE_CHECKING:
    from pathlib import Path

    from commonsky.ledger.log import Ledger
    from commonsky.store.postgres import PostgresStore

log = logging.getLogger("commonsky.datadir")

HUB_KEY = "hub-ed25519.pem"
HUB_SECRET = "hub-secret"
DIRECTORY = "directory.json"
PARTY = "party/"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS commonsky_hub_state (name TEXT PRIMARY KEY, value BYTEA NOT NULL);
"""


class SharedState:
    """The rows of `commonsky_hub_state` on the store's connection (writes through the
    store: a cluster core's are checked against the database's one writer)."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        conn = store.connection()
        with conn.transaction():
            conn.execute(_SCHEMA)

    def get(self, name: str) -> bytes | None:
        rows = (
            self.store.connection()
            .execute("SELECT value FROM commonsky_hub_state WHERE name = %s", (name,))
            .fetchall()
        )
        return bytes(rows[0][0]) if rows else None

    def put(self, name: str, value: bytes, *, replace: bool = True) -> None:
        conflict = "DO UPDATE SET value = excluded.value" if replace else "DO NOTHING"
        with self.store.transaction():
            self.store.write_conn().execute(
                "INSERT INTO commonsky_hub_state (name, value) VALUES (%s, %s) "
                f"ON CONFLICT (name) {conflict}",
                (name, value),
            )

    def names(self, prefix: str) -> list[str]:
        rows = (
            self.store.connection()
            .execute(
                "SELECT name FROM commonsky_hub_state WHERE starts_with(name, %s) ORDER BY name",
                (prefix,),
            )
            .fetchall()
        )
        return [str(r[0]) for r in rows]


def open_identity(state: SharedState, init: bool) -> tuple[Ed25519PrivateKey, bytes]:
    """The hub's signing key and secret from the database; made when `init` allows.

    Raises UsageError (one line naming the database and what to do) by the rules above."""
    store = state.store
    where = f"store_url {store.where}"
    try:
        pem, secret = state.get(HUB_KEY), state.get(HUB_SECRET)
        missing = [name for name, value in ((HUB_KEY, pem), (HUB_SECRET, secret)) if not value]
        if missing and not init:
            raise UsageError(f"{where}: {_why_refused(state, missing)}")
        if pem is None:
            key = Ed25519PrivateKey.generate()
            state.put(HUB_KEY, private_pem(key), replace=False)
            pem = state.get(HUB_KEY) or b""
        if secret is None:
            state.put(HUB_SECRET, secrets.token_bytes(32), replace=False)
            secret = state.get(HUB_SECRET) or b""
    except psycopg.Error as exc:
        if isinstance(exc, psycopg.OperationalError):
            raise StoreUnavailable(f"{where}: {_first_line(exc)}") from None
        raise UsageError(f"{where}: commonsky_hub_state: {_first_line(exc)}") from None
    if missing:
        log.warning("--init: %s: made %s (the hub's shared keys)", where, ", ".join(missing))
    if len(secret) != 32:
        raise UsageError(
            f"{where}: the hub secret ({HUB_SECRET}) is {len(secret)} bytes, not 32; restore "
            "the database from a backup"
        )
    return _load_key(pem, where), secret


def _why_refused(state: SharedState, missing: list[str]) -> str:
    store = state.store
    has = [n for n in (HUB_KEY, HUB_SECRET) if n not in missing]
    hub_id = store.meta("hub_id")
    conn = store.connection()
    ledger = conn.execute("SELECT to_regclass('commonsky_ledger_entry')").fetchone()
    entries = (
        ledger is not None
        and ledger[0] is not None
        and conn.execute("SELECT EXISTS (SELECT 1 FROM commonsky_ledger_entry)").fetchone()
        == (True,)
    )
    if not has and hub_id is None and not store.count() and not entries:
        return (
            "the database holds no hub yet; start the cluster's first core with --init to make one"
        )
    held = ", ".join(has) or (f"hub {hub_id}" if hub_id else "items and ledger entries")
    return (
        f"the database holds {held} but not {', '.join(missing)}; restore it from a backup, "
        "or start with --init to make "
        f"{'it' if len(missing) == 1 else 'them'} afresh"
    )


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(pem: bytes, where: str) -> Ed25519PrivateKey:
    try:
        key: Any = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(
            f"{where}: the hub key ({HUB_KEY}) is not a PEM private key ({_first_line(exc)}); "
            "restore the database from a backup"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{where}: the hub key ({HUB_KEY}) is not an Ed25519 private key")
    return key


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class SharedPartyKeys(PartyKeys):
    """The parties' public keys in the database (rows `party/<PARTY>.pub.pem`). A key file
    an operator puts in a core's `DATA_DIR/keys/parties` is registered in the database when
    that core starts (`import_files`): what every core reads is the database."""

    def __init__(self, state: SharedState, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.state = state

    def import_files(self) -> list[str]:
        """Register the key files of the data folder; the parties registered. Raises
        KeyFileError naming a file that is not an Ed25519 public key."""
        done = []
        for party in super().parties():
            self.add(party, load_public_key(self.path(party)))
            done.append(party)
        return done

    def add(self, party: str, key: Any) -> Path:
        path = self.path(party)  # (checks the party id)
        if isinstance(key, bytes):
            key = load_public_key_bytes(key, party)
        self.state.put(f"{PARTY}{party}.pub.pem", public_pem(key))
        self._cache.pop(party, None)
        return path

    def raw(self, party: str) -> bytes | None:
        if party in self._cache:
            return self._cache[party]
        self.path(party)
        pem = self.state.get(f"{PARTY}{party}.pub.pem")
        if pem is None:
            return None
        raw = raw_public(load_public_key_bytes(pem, party))
        self._cache[party] = raw
        return raw

    def parties(self) -> list[str]:
        return [n[len(PARTY) : -len(".pub.pem")] for n in self.state.names(PARTY)]


def load_public_key_bytes(pem: bytes, party: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise KeyFileError(f"the key of {party} is not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"the key of {party} is not an Ed25519 public key")
    return key


def open_ledger(url: str, expected_hub: str | None) -> Ledger:
    """A cluster's ledger, for the CLI (`commonsky ledger export --data-dir CORE_DIR` or
    `--config FILE`): read, proved and checkpointed beside the serving core (the CLI is not
    the database's writer: it only adds signed checkpoints, as for one process).

    Raises UsageError: the database holds no hub (nothing is created in it), another hub
    than `expected_hub` (the core's manifest), or rows that are not what they should be."""
    from commonsky.ledger.log import Ledger, LedgerError
    from commonsky.ledger.pgdb import PgLedgerDB
    from commonsky.store import redacted
    from commonsky.store.postgres import PostgresStore

    where = f"store_url {redacted(url)}"
    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as probe:
            row = probe.execute(
                "SELECT to_regclass('commonsky_ledger_entry') IS NOT NULL "
                "AND to_regclass('commonsky_hub_state') IS NOT NULL"
            ).fetchone()
    except psycopg.Error as exc:
        raise UsageError(f"{where}: cannot read the ledger: {_first_line(exc)}") from None
    if not (row and row[0]):
        raise UsageError(f"{where}: no ledger here (no cluster core has run on this database)")
    store = PostgresStore(url)
    try:
        hub_id = store.meta("hub_id")
        if expected_hub is not None and hub_id != expected_hub:
            raise UsageError(
                f"{where}: the database holds hub {hub_id}, the data folder names {expected_hub}"
            )
        key, _ = open_identity(SharedState(store), init=False)
        return Ledger(PgLedgerDB(store, owns_store=True), key)
    except (LedgerError, KeyFileError) as exc:
        store.close()
        raise UsageError(str(exc)) from None
    except BaseException:
        store.close()
        raise
