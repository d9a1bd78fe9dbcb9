"""A cluster core's shared state, opened (issue 19): the database's writer claimed, the
hub's key and secret loaded from PostgreSQL (hub/shared.py) — or moved in from a data folder
of before (hub/adopt.py). `HubServer` calls `open_shared` for a `[cluster]` core."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from commonsky.errors import UsageError
from commonsky.hub.adopt import adopt, earlier_files
from commonsky.hub.shared import DIRECTORY, HUB_KEY, HUB_SECRET, SharedState, open_identity

if TYPE_CHECKING:
    from pathlib import Path

    from commonsky.store.postgres import PostgresStore

log = logging.getLogger("commonsky.datadir")


class Shared:
    """A cluster core's shared state, opened: the store's rows, the key, the secret."""

    def __init__(self, state: SharedState, key: Ed25519PrivateKey, secret: bytes) -> None:
        self.state, self.key, self.secret = state, key, secret

    @property
    def store(self) -> PostgresStore:
        return self.state.store

    def keep_directory(self, data: bytes) -> None:
        self.state.put(DIRECTORY, data)

    def directory(self) -> bytes | None:
        return self.state.get(DIRECTORY)


#: How long PostgreSQL lets a core sit inside a transaction doing nothing before it ends its
#: session: a core hung there (stopped, not killed) holds the writer row, and its successor's
#: `claim` waits for it at most this long. Far above any transaction a live core holds.
IDLE_IN_TRANSACTION_S = 30.0


#: The meta row naming the cluster (`[cluster] name`) whose cores write this database.
CLUSTER_NAME = "cluster_name"


def open_shared(
    store: PostgresStore,
    init: bool,
    writer: str | None,
    data_dir: Path | None = None,
    cluster: str | None = None,
    hub_id: str | None = None,
) -> Shared:
    """Claim the database's writer (`writer`: a core holding the lease; None: nobody, e.g.
    a test or a tool) and open the hub's shared keys — moved in from `data_dir` when it
    holds them from before and `init` says so (hub/adopt.py). `cluster`: the core's
    `[cluster] name`, and `hub_id`: the one `data_dir`'s manifest names, checked against the
    database's before anything is claimed. Raises
    UsageError, StoreUnavailable."""
    if cluster is not None:
        check_cluster_name(store, cluster, init)
    if hub_id is not None and not init:
        # Before the claim: a core given another hub's folder must not fence the database's
        # serving core on its way to being refused (hub/datadir.py `bind` says it in full).
        theirs = store.meta("hub_id")
        if theirs is not None and theirs != hub_id:
            raise UsageError(
                f"data_dir {data_dir}: {store.where} belongs to hub {theirs}, this folder to "
                f"{hub_id}; give this core an empty data_dir of its own, or start with --init "
                "to bind them as they are"
            )
    if writer is not None:
        before = store.claim(writer, IDLE_IN_TRANSACTION_S)
        log.info("%s: the database's writer is now %s (was %s)", store.where, writer,
                 before or "nobody")  # fmt: skip
        if cluster is not None and store.meta(CLUSTER_NAME) != cluster:
            store.set_meta(CLUSTER_NAME, cluster)
    state = SharedState(store)
    if data_dir is not None and earlier_files(data_dir) and state.get(HUB_KEY) is None:
        if not init:
            raise UsageError(
                f"data_dir {data_dir}: holds this hub's ledger and keys from before they "
                f"moved into the database ({store.where}); start this core once with --init "
                "to move them in"
            )
        adopt(state, data_dir)
    key, secret = open_identity(state, init)
    return Shared(state, key, secret)


def check_cluster_name(store: PostgresStore, cluster: str, init: bool) -> None:
    """Refuse a database written by the cores of another cluster (another `[cluster] name`).

    Each cluster has its own lease (NATS KV under its name), so a core of cluster B given
    cluster A's `store_url` takes its own lease, claims A's writer — A's core stops at its
    next write (WriterFenced), A's standby claims it back, and so on — and B's clients' items
    land in A's ledger. Raises UsageError (one line); `init` hands the database over (a
    cluster renamed on purpose)."""
    held = store.meta(CLUSTER_NAME)
    if held is None or held == cluster or init:
        return
    raise _other_cluster(store.where, held, cluster)


def _other_cluster(where: str, held: str, cluster: str) -> UsageError:
    return UsageError(
        f"store_url {where}: this database is cluster {held!r}'s, not {cluster!r}'s "
        f"([cluster] name): give each cluster its own database, or name this one {held!r} "
        f"(start once with --init to hand the database to {cluster!r})"
    )


def look_at_database(
    where: str, cluster: str, data_dir: Path, hub_id: str | None, init: bool
) -> Callable[[psycopg.Connection[Any]], None]:
    """What a core standing by reads of its database (`store.postgres.probe`'s `look`;
    nothing written, nothing claimed), so that a wrong database is said at its start, not at
    the takeover it waited for: one that holds no hub (no signing key: empty, or not the
    cluster's; unless `init`), another cluster's (`check_cluster_name`'s rule), or another
    hub's than the folder's manifest names (`hub_id`). Raises UsageError (one line)."""

    def look(db: psycopg.Connection[Any]) -> None:
        meta = dict(_rows(db, "commonsky_meta", "SELECT key, value FROM commonsky_meta "
                          "WHERE key IN ('hub_id', %s)", (CLUSTER_NAME,)))  # fmt: skip
        held = meta.get(CLUSTER_NAME)
        if held is not None and held != cluster and not init:
            raise _other_cluster(where, held, cluster)
        theirs = meta.get("hub_id")
        if hub_id is not None and theirs is not None and theirs != hub_id and not init:
            raise UsageError(
                f"data_dir {data_dir}: store_url {where} belongs to hub {theirs}, this folder "
                f"to {hub_id}; give this core an empty data_dir of its own, or the store_url "
                "of its hub"
            )
        rows = _rows(db, "commonsky_hub_state", "SELECT name FROM commonsky_hub_state "
                     "WHERE name IN (%s, %s)", (HUB_KEY, HUB_SECRET))  # fmt: skip
        has = {str(row[0]) for row in rows}
        missing = [name for name in (HUB_KEY, HUB_SECRET) if name not in has]
        if init or not missing:
            return
        if not has and theirs is None:
            raise UsageError(
                f"store_url {where}: holds no hub yet (no signing key in commonsky_hub_state): "
                "give this core its cluster's store_url; a new cluster's first core starts "
                "once with --init, and its standbys once it serves"
            )
        held = ", ".join(sorted(has)) or f"hub {theirs}"  # (the takeover's words: shared.py)
        raise UsageError(
            f"store_url {where}: the database holds {held} but not {', '.join(missing)}; "
            "restore it from a backup, or start with --init to make "
            f"{'it' if len(missing) == 1 else 'them'} afresh"
        )

    return look


def _rows(db: psycopg.Connection[Any], table: str, query: str,
          params: tuple[str, ...]) -> list[tuple[Any, ...]]:  # fmt: skip
    """`query`'s rows, none when `table` is not there (a database no hub has used)."""
    found = db.execute("SELECT to_regclass(%s)", (table,)).fetchone()
    if found is None or found[0] is None:
        return []
    return list(db.execute(query, params).fetchall())
