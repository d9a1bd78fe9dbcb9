"""`[cluster]`: the one table that turns a hub process into an edge, a core, or both.

Names fixed by ../CONTRACT.md ("Cluster"): `nats_url`, `role = "edge" | "core" | "all"`
(default "all"), and the shared store in `[server] store_url = "postgresql://…"`. The other keys
have defaults an operator rarely changes. The NATS link's own security (docs/architecture.md,
"The NATS link"): credentials in `nats_url` (`nats://USER:PASSWORD@HOST:PORT`, never shown:
`shown_url`), TLS from `nats_ca` (and a client certificate, `nats_cert` + `nats_key`), and the
edge's `edge` name, which its NATS user's permissions name.
"""

from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from commonsky.errors import UsageError

Role = Literal["edge", "core", "all"]
#: A prefix of stream, bucket and subject names: NATS allows these characters in all three.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_SCHEMES = ("nats", "tls")
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9_-]+")


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
    #: An edge's name (letters, digits, - or _): its subjects are `<name>.in.<edge>.<run>` and
    #: `<name>.out.<edge>.<run>`, so a NATS user's permissions can name them. Default: this
    #: host's name.
    edge: str = ""
    #: PEM file of the CA the NATS server's certificate must chain to (TLS); empty: the
    #: system's trusted CAs for `tls://` URLs. Relative paths: from the config file's folder.
    nats_ca: str = ""
    #: PEM files of this process's client certificate and its key, for a NATS server that
    #: asks for one (`verify: true`); both or neither.
    nats_cert: str = ""
    nats_key: str = ""

    @property
    def servers(self) -> list[str]:
        """`nats_url` as the list nats-py's `connect(servers=…)` takes."""
        return [part.strip() for part in self.nats_url.split(",") if part.strip()]

    @property
    def shown_url(self) -> str:
        """`nats_url` as logs and messages may show it: passwords and tokens as `***`."""
        return ",".join(shown(url) for url in self.servers)

    @property
    def edge_name(self) -> str:
        """`edge`, or this host's name made one subject token."""
        return self.edge or _NOT_TOKEN.sub("-", socket.gethostname())[:32].strip("-") or "edge"

    def tls(self) -> ssl.SSLContext | None:
        """The TLS context of the NATS connection: None (nats-py's default, the system's
        CAs, for `tls://` URLs) without `nats_ca` or `nats_cert`. Raises UsageError naming
        the key of a file that cannot be read or is not what it should be."""
        if not (self.nats_ca or self.nats_cert):
            return None
        try:
            context = ssl.create_default_context(cafile=self.nats_ca or None)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"[cluster] nats_ca = {self.nats_ca!r}: not a readable PEM CA certificate "
                f"({_why(exc)}) ($.cluster.nats_ca)"
            ) from None
        if self.nats_cert:
            try:
                context.load_cert_chain(self.nats_cert, self.nats_key)
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(
                    f"[cluster] nats_cert = {self.nats_cert!r}, nats_key = {self.nats_key!r}: "
                    f"not a PEM certificate and its key ({_why(exc)}) ($.cluster.nats_cert)"
                ) from None
        return context

    @property
    def runs_edge(self) -> bool:
        return self.role in ("edge", "all")

    @property
    def runs_core(self) -> bool:
        return self.role in ("core", "all")


def shown(url: str) -> str:
    """One NATS URL without its secret: `nats://USER:***@HOST`, a token as `***@HOST`
    (everything up to the last `@` is credentials: a password may hold `@` or `/`)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{sep}{user + ':***' if colon else '***'}@{host}"


_SECRET = re.compile(r"://([^\s'\":@/]*)(:[^\s'\"]*)?@")


def without_secrets(text: str) -> str:
    """`text` (a message) with the credentials of every URL in it as `***` (`shown`)."""
    return _SECRET.sub(lambda m: f"://{m[1] + ':***' if m[2] else '***'}@", text)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    return getattr(exc, "strerror", None) or type(exc).__name__


def check_cluster(
    cluster: ClusterSettings, store_url: str, where: str, base: Path | None = None
) -> ClusterSettings:
    """The checks across keys and tables, each failing with one line naming the key; the
    TLS files' paths made absolute from `base` (the config file's folder).

    Raises UsageError: a URL that is not nats:// or tls:// HOST[:PORT], a name NATS cannot use,
    a core without a PostgreSQL store (the cores share items, ledger and keys there; an
    edge never opens it), or TLS files that cannot be used."""
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
                f"{where}: nats_url = {shown(url)!r} is not nats://HOST:PORT ($.cluster.nats_url)"
            )
        del port
    for key in ("name", "edge"):
        value = getattr(cluster, key)
        if (value or key == "name") and not _NAME.match(value):
            raise UsageError(
                f"{where}: {key} = {value!r} must be 1-32 letters, digits, - or _ ($.cluster.{key})"
            )
    cluster = _tls_files(cluster, where, base or Path.cwd())
    # Only a core opens the database: an edge's file need not hold its password (access to
    # the database is access to the hub's keys: docs/architecture.md, "Keys in the database").
    if cluster.runs_core and not store_url.startswith(("postgresql://", "postgres://")):
        raise UsageError(
            f"{where}: a cluster's core keeps its items in PostgreSQL: set [server] store_url = "
            '"postgresql://…" ($.server.store_url)'
        )
    return cluster


def _tls_files(cluster: ClusterSettings, where: str, base: Path) -> ClusterSettings:
    """`cluster` with its TLS files' paths absolute, each checked (one line naming the key)."""
    if bool(cluster.nats_cert) != bool(cluster.nats_key):
        key = "nats_key" if cluster.nats_cert else "nats_cert"
        raise UsageError(f"{where}: nats_cert and nats_key go together: set {key} too "
                         f"($.cluster.{key})")  # fmt: skip
    paths = {}
    for key in ("nats_ca", "nats_cert", "nats_key"):
        value = getattr(cluster, key)
        if value:
            path = base / Path(value).expanduser()
            if not path.is_file():
                raise UsageError(f"{where}: {key} = {value!r}: no such file ($.cluster.{key})")
            paths[key] = str(path)
    cluster = msgspec.structs.replace(cluster, **paths)
    try:
        cluster.tls()
    except UsageError as exc:
        raise UsageError(f"{where}: {str(exc).removeprefix('[cluster] ')}") from None
    return cluster
