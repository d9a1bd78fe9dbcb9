"""`[cluster]`: the one table that turns a hub process into an edge, a core, or both.

Names fixed by ../CONTRACT.md ("Cluster"): `nats_url`, `role = "edge" | "core" | "all"`
(default "all"), and the shared store in `[server] store_url = "postgresql://…"`. The other keys
have defaults an operator rarely changes.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from commonsky.errors import UsageError

Role = Literal["edge", "core", "all"]
#: A prefix of stream, bucket and subject names: NATS allows these characters in all three.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_SCHEMES = ("nats", "tls")


class ClusterSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The `[cluster]` table, decoded (types and unknown keys checked by msgspec)."""

    #: NATS server(s) with JetStream: one URL, or several separated by commas (the same cluster).
    nats_url: str
    #: What this process runs: client connections (edge), the hub's rules and state (core), or both.
    role: Role = "all"
    #: Prefix of every stream, KV bucket and subject of this cluster: several clusters (or tests)
    #: may share one NATS server under different names.
    name: str = "commonsky"
    #: Seconds a core's lease lasts without renewal: a dead core is replaced after at most this.
    lease_ttl_s: Annotated[float, Meta(ge=1.0, le=300.0)] = 5.0

    @property
    def servers(self) -> list[str]:
        """`nats_url` as the list nats-py's `connect(servers=…)` takes."""
        return [part.strip() for part in self.nats_url.split(",") if part.strip()]

    @property
    def runs_edge(self) -> bool:
        return self.role in ("edge", "all")

    @property
    def runs_core(self) -> bool:
        return self.role in ("core", "all")


def check_cluster(cluster: ClusterSettings, store_url: str, where: str) -> ClusterSettings:
    """The checks across keys and tables, each failing with one line naming the key.

    Raises UsageError: a URL that is not nats:// or tls:// HOST[:PORT], a name NATS cannot use,
    or a core without a PostgreSQL store (the cores share items, ledger and keys there; an
    edge never opens it)."""
    if not cluster.servers:
        raise UsageError(f"{where}: nats_url is empty ($.cluster.nats_url)")
    for url in cluster.servers:
        try:
            parts = urlsplit(url)
            port = parts.port  # (raises ValueError for a port out of range)
        except ValueError:
            parts, port = None, None
        if parts is None or parts.scheme not in _SCHEMES or not parts.hostname:
            raise UsageError(
                f"{where}: nats_url = {url!r} is not nats://HOST:PORT ($.cluster.nats_url)"
            )
        del port
    if not _NAME.match(cluster.name):
        raise UsageError(
            f"{where}: name = {cluster.name!r} must be 1-32 letters, digits, - or _ "
            "($.cluster.name)"
        )
    # Only a core opens the database: an edge's file need not hold its password (access to
    # the database is access to the hub's keys: docs/architecture.md, "Keys in the database").
    if cluster.runs_core and not store_url.startswith(("postgresql://", "postgres://")):
        raise UsageError(
            f"{where}: a cluster's core keeps its items in PostgreSQL: set [server] store_url = "
            '"postgresql://…" ($.server.store_url)'
        )
    return cluster
