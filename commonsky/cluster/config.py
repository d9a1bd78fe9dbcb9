"""`[cluster]`: the one table that turns a hub process into an edge, a core, or both.

Names fixed by ../CONTRACT.md ("Cluster"): `nats_url`, `role = "edge" | "core" | "all"`
(default "all"), and the shared store in `[server] store_url = "postgresql://…"`. The other keys
have defaults an operator rarely changes. The NATS link's own security (docs/architecture.md,
"The NATS link"): credentials in `nats_url` (`nats://USER:PASSWORD@HOST:PORT`, never shown:
`shown_url`; read by `read_url` alone), TLS from `nats_ca` (and a client certificate,
`nats_cert` + `nats_key`), and the edge's `edge` name, which its NATS user's permissions name.

How a URL's credentials are read (`read_url`; RFC 3986 §3.2.1, "User Information"): the
userinfo is what lies between `://` and the last `@` of the URL; the user is what comes
before its first `:`, the password the rest (without a `:`, the whole is a token); each is
percent-decoded as UTF-8 (`urllib.parse.unquote`), so any character can be written `%XX`
(`urllib.parse.quote(password, safe="")` gives the form), and `%` itself must be (`%25`).
Written raw, the characters that end a URL's authority for every other reader of it (`/`,
`?`, `#`, `[`, `]`, `@`), spaces and control characters, and a `%` that starts no `%XX`, are
refused with one line that names neither them nor the password: read the way nats-py and
urllib read them, such a URL means another host, port or password. A `,` is a separator of
`nats_url` only where another `scheme://` follows it.
"""

from __future__ import annotations

import functools
import re
import socket
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple
from urllib.parse import unquote, urlsplit

import msgspec
from msgspec import Meta

from commonsky.errors import UsageError

Role = Literal["edge", "core", "all"]
#: A prefix of stream, bucket and subject names: NATS allows these characters in all three.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_SCHEMES = ("nats", "tls")
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9_-]+")
#: Where `nats_url` is cut into servers: a comma that another `scheme://` (or the end) follows.
_SERVER_CUT = re.compile(r",(?=\s*(?:[A-Za-z][A-Za-z0-9+.-]*://|$))")
#: What a userinfo may not hold raw (module header): gen-delims, spaces, controls, a bad `%`.
_RAW = re.compile(r"[/?#\[\]@\s\x00-\x1f\x7f]|%(?![0-9A-Fa-f]{2})")
#: Where a URL begins in a message: a scheme at the start of the text or after a delimiter
#: (a scheme after `:` may be a password's own `x://`: `without_secrets`).
_URL_START = re.compile(r"(?:^|(?<=[\s'\"(\[<=,]))[A-Za-z][A-Za-z0-9+.-]*://")


class Credentials(NamedTuple):
    """A NATS URL's userinfo, percent-decoded (`read_url`): `user` and its password in
    `secret`, or a token in `secret` (`user` None)."""

    user: str | None
    secret: str


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
    #: Seconds a serving core may apply none of the stream's waiting messages before it gives
    #: its lease back and stops (exit status 75): a core stuck, however alive, is replaced
    #: (cluster/stall.py). Longer than the consumer's ack wait (30 s): a delivery lost on the
    #: way comes again only then.
    stall_s: Annotated[float, Meta(ge=1.0, le=3600.0)] = 60.0
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
        """`nats_url` as a list of URLs (with their credentials: `link` gives them apart)."""
        return [part.strip() for part in _SERVER_CUT.split(self.nats_url) if part.strip()]

    def link(self) -> tuple[list[str], Credentials | None]:
        """The servers without credentials (what nats-py's `connect(servers=…)` takes), and
        the credentials they carry (`read_url`), one user for all of them. Raises UsageError
        (without the secret) when a URL's credentials cannot be read or two URLs carry
        different ones: one process is one NATS user."""
        servers: list[str] = []
        found: set[Credentials] = set()
        for url in self.servers:
            bare, credentials = read_url(url)
            servers.append(bare)
            if credentials is not None:
                found.add(credentials)
        if len(found) > 1:
            raise UsageError(
                f"[cluster] nats_url = {self.shown_url!r}: its URLs carry different "
                "credentials; one process is one NATS user: give them all the same "
                "($.cluster.nats_url)"
            )
        return servers, next(iter(found), None)

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
        CAs, for `tls://` URLs) without `nats_ca` or `nats_cert`. Built once per process for
        the same files (the config check builds it, every connection of the process reuses
        it: `_tls_context`). Raises UsageError naming the key of a file that cannot be read
        or is not what it should be."""
        if not (self.nats_ca or self.nats_cert):
            return None
        return _tls_context(self.nats_ca, self.nats_cert, self.nats_key)

    @property
    def runs_edge(self) -> bool:
        return self.role in ("edge", "all")

    @property
    def runs_core(self) -> bool:
        return self.role in ("core", "all")


@functools.lru_cache(maxsize=8)
def _tls_context(ca: str, cert: str, key: str) -> ssl.SSLContext:
    """`ClusterSettings.tls`, built: one per set of files (a failure is not kept: raised
    again at the next call). nats-py reads the context and never changes it, so every
    connection of the process can share it."""
    try:
        context = ssl.create_default_context(cafile=ca or None)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(
            f"[cluster] nats_ca = {ca!r}: not a readable PEM CA certificate "
            f"({_why(exc)}) ($.cluster.nats_ca)"
        ) from None
    if cert:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"[cluster] nats_cert = {cert!r}, nats_key = {key!r}: "
                f"not a PEM certificate and its key ({_why(exc)}) ($.cluster.nats_cert)"
            ) from None
    return context


def _userinfo(url: str) -> tuple[str, str | None, str]:
    """`url` as (its scheme and `://`, or ""; its userinfo as written, None without an
    `@`; the rest: host, port and whatever follows). The userinfo ends at the last `@`
    (module header): what the URL carries before it is never read as a host."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    return (scheme + sep, userinfo, host) if at else (scheme + sep, None, rest)


def _masked(userinfo: str) -> str:
    """A userinfo as it may be shown: `USER:***` (the user as written), a token `***`."""
    user, colon, _ = userinfo.partition(":")
    return user + ":***" if colon else "***"


def read_url(url: str) -> tuple[str, Credentials | None]:
    """One NATS URL as (the URL without its credentials, the credentials percent-decoded;
    None without any), by the rule of the module header. Raises UsageError (one line with
    the URL as `shown`, naming whether the user, the password or the token is at fault, but
    not the character) for a userinfo holding a character it may not hold raw, or whose
    `%XX` escapes decode to no UTF-8 text."""
    scheme, userinfo, rest = _userinfo(url)
    if not userinfo:  # (no `@`, or nothing before it)
        return scheme + rest, None
    user, colon, password = userinfo.partition(":")
    parts = {"user": user, "password": password} if colon else {"token": user}
    for part, text in parts.items():
        if _RAW.search(text):
            raise UsageError(
                f"[cluster] nats_url = {shown(url)!r}: the {part} holds a character that "
                "must be percent-encoded: write / ? # [ ] @ % and spaces as %XX (%2F for /, "
                "%40 for @, %25 for %: RFC 3986 §3.2.1) ($.cluster.nats_url)"
            )
        try:
            parts[part] = unquote(text, errors="strict")
        except UnicodeDecodeError:
            raise UsageError(
                f"[cluster] nats_url = {shown(url)!r}: the {part}'s %XX escapes are no "
                "UTF-8 text ($.cluster.nats_url)"
            ) from None
    if not colon:
        return scheme + rest, Credentials(None, parts["token"])
    return scheme + rest, Credentials(parts["user"], parts["password"])


def credential_options(credentials: Credentials | None, secret: object = None) -> dict[str, Any]:
    """nats-py's `connect` options for `credentials`: `user` and `password`, or `token`
    (none for None); `secret`, when given, is handed over instead of the secret itself
    (nats_io.py: a callable that gives it over TLS only)."""
    if credentials is None:
        return {}
    given = credentials.secret if secret is None else secret
    if credentials.user is None:
        return {"token": given}
    return {"user": credentials.user, "password": given}


def nats_options(nats_url: str, where: str = "--nats") -> dict[str, Any]:
    """nats-py's `connect` options for the NATS URL(s) a tool is given (`bench … --nats`,
    `conformance --cluster`): `servers` without credentials, and the credentials
    percent-decoded (`credential_options`). The hub's own reading (`ClusterSettings.link`,
    `read_url`), so a URL a hub takes a tool takes too; handed the URL itself, nats-py would
    send each `%XX` as written. Raises UsageError, one line saying `where` (the option) and
    the URL as `shown`, for a URL whose credentials cannot be read."""
    try:
        servers, credentials = ClusterSettings(nats_url=nats_url).link()
    except UsageError as exc:
        said = str(exc).removeprefix("[cluster] nats_url = ").removesuffix(" ($.cluster.nats_url)")
        raise UsageError(f"{where} {said}") from None
    return {"servers": servers, **credential_options(credentials)}


def shown(url: str) -> str:
    """One NATS URL without its secret, in any form, read or refused by `read_url`:
    `nats://USER:***@HOST` (the user as written), a token as `***@HOST`."""
    scheme, userinfo, rest = _userinfo(url)
    return url if userinfo is None else f"{scheme}{_masked(userinfo)}@{rest}"


def without_secrets(text: str) -> str:
    """`text` (a message) with the credentials of every URL in it as `***` (`shown`): after
    each `://`, everything up to the last `@` before the next URL (`_URL_START`) is taken as
    its userinfo. A password `read_url` takes holds no `://`, quote or space to cut that
    short; one it refuses may, and is masked all the same: a URL starts only after a
    delimiter, and a `://` inside a userinfo already masked starts nothing. Any `@` before
    the next URL is taken as the URL's own: more may be masked, never less."""
    starts = [m.start() for m in _URL_START.finditer(text)]
    out, done = [], 0
    for m in re.finditer("://", text):
        begin = m.end()
        if begin <= done:
            continue  # (inside a userinfo masked already)
        end = next((s for s in starts if s >= begin), len(text))
        userinfo, at, _ = text[begin:end].rpartition("@")
        if at:
            out += [text[done:begin], _masked(userinfo)]
            done = begin + len(userinfo)
    return "".join([*out, text[done:]])


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
            parts = urlsplit(read_url(url)[0])
            port = parts.port  # (raises ValueError for a port out of range)
        except ValueError:
            parts, port = None, None
        except UsageError as exc:
            raise UsageError(f"{where}: {str(exc).removeprefix('[cluster] ')}") from None
        if parts is None or parts.scheme not in _SCHEMES or not parts.hostname:
            raise UsageError(
                f"{where}: nats_url = {shown(url)!r} is not nats://HOST:PORT ($.cluster.nats_url)"
            )
        del port
    try:
        cluster.link()
    except UsageError as exc:
        raise UsageError(f"{where}: {str(exc).removeprefix('[cluster] ')}") from None
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
