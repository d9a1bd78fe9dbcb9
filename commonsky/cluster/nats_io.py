"""Connecting to NATS and making the cluster's stream and buckets (idempotent: every process
of a cluster calls these at start; the first one creates, the others find — and check what
they find, js_shape.py: one made otherwise than the cluster relies on stops the start)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import weakref
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from commonsky.errors import UsageError

from .config import ClusterSettings, credential_options
from .js_shape import (
    JetStreamMismatch,
    Wrong,
    bucket_refusal,
    bucket_wrongs,
    lease_refusal,
    lease_wrongs,
    stream_refusal,
    stream_wrongs,
)
from .wire import Names

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext
    from nats.js.api import KeyValueConfig, StreamConfig
    from nats.js.kv import KeyValue

log = logging.getLogger("commonsky.cluster")


class _QuietSslEof(logging.Filter):
    """asyncio's "returning true from eof_received() has no effect when using ssl", said at
    each TLS connection nats-py's transport closes: nothing an operator can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_QuietSslEof())

#: How long JetStream remembers a message id to drop a second publish of it (seconds): an
#: edge retries a publish whose acknowledgement it did not get within this.
DUPLICATE_WINDOW_S = 120.0
#: The JetStream error code of a create whose name is taken by another configuration.
_IN_USE = 10058
#: Seconds one try of a NATS connection may take (TCP, TLS, the server's INFO).
CONNECT_TIMEOUT_S = 3.0


async def connect(cluster: ClusterSettings, name: str, inbox: str) -> Client:
    """A NATS connection that keeps reconnecting once made, its replies under the inbox
    prefix `inbox` (`Names.edge_inbox`, `Names.core_inbox`: what the process's NATS user may
    read); UsageError (one line, `nats_url` without its password) when the server does not
    answer at start within `give_up_s(cluster)`, refuses the credentials, or its TLS
    certificate is not one `nats_ca` trusts.

    nats-py retries a first connection forever when reconnects are unbounded (and logs a
    traceback at each try): a process given a wrong `nats_url`, or started while NATS is down,
    would hang, logging, and never reach its stop signal. So the first connection is bounded
    here, and connection errors are logged in one line. With TLS configured (a `tls://` URL,
    `nats_ca` or `nats_cert`), a server that does not ask for TLS is refused before any
    credential is sent: nats-py would otherwise speak in clear to whoever answers so."""
    from nats.aio.client import Client as Nats

    nc = Nats()
    refused: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    denials = _DENIED[nc] = _Denials()

    async def disconnected() -> None:
        # nats-py calls this on our own close() too (its status CLOSED by then): a process
        # stopping on SIGTERM is not losing NATS (nor one stopping at start: its line says why).
        if nc.is_closed:
            log.log(logging.DEBUG if denials.quiet else logging.INFO,
                    "%s: NATS connection closed", name)  # fmt: skip
            return
        log.warning("%s: NATS connection lost; reconnecting", name)

    async def reconnected() -> None:
        log.warning("%s: NATS connection back", name)

    tries: list[Exception] = []  # (the last one names the reason in the line at start)

    async def error(exc: Exception) -> None:
        violation = "permissions violation" in str(exc).lower()
        if violation:
            denials.seen.append(str(exc))
        tries[:] = [exc]
        why = _refusal(exc, cluster)
        at_start = not nc.is_connected and not refused.done()
        if why and at_start:
            refused.set_result(why)  # (no use trying again: the one line at start says why)
        # A failed (re)connection try is expected while NATS is away: `disconnected` said so.
        quiet = (
            isinstance(exc, (OSError, TimeoutError))
            or (why and at_start)
            or (violation and denials.quiet)
        )  # (at start: said in the one line)
        level = logging.DEBUG if quiet else logging.WARNING
        log.log(level, "%s: NATS: %s: %s", name, type(exc).__name__, exc)

    servers, auth = _credentials(cluster, nc)
    options: dict[str, Any] = dict(
        servers=servers, name=name, connect_timeout=CONNECT_TIMEOUT_S, max_reconnect_attempts=-1,
        reconnect_time_wait=0.5, disconnected_cb=disconnected, reconnected_cb=reconnected,
        error_cb=error, tls=cluster.tls(), inbox_prefix=inbox, **auth,
    )  # fmt: skip
    connecting = asyncio.ensure_future(nc.connect(**options))
    waits: set[asyncio.Future[Any]] = {connecting, refused}
    await asyncio.wait(waits, timeout=give_up_s(cluster), return_when=asyncio.FIRST_COMPLETED)
    why = await _failed(cluster, nc, connecting, refused, tries)
    if why:
        raise UsageError(f"[cluster] nats_url = {cluster.shown_url!r}: {why}")
    if not await _may_read(nc, inbox, denials.seen):
        await nc.close()
        raise UsageError(_inbox_denied(cluster, inbox))
    denials.quiet = False
    return nc


class _Denials:
    """The permissions violations the server reported on one connection (nats-py lowercases
    their text), and whether they are logged: not while a step at start that says them in
    its one line runs (`connect`, `starting`)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.quiet = True


#: Each connection's `_Denials` (`connect`).
_DENIED: weakref.WeakKeyDictionary[Client, _Denials] = weakref.WeakKeyDictionary()


async def _may_read(nc: Client, inbox: str, denied: list[str]) -> bool:
    """Whether the server lets this connection's user subscribe to its replies (a subject
    of the shape nats-py's requests subscribe to): the server answers a refused
    subscription before the PONG of a PING sent after it."""
    sub = await nc.subscribe(f"{inbox}.{secrets.token_hex(8)}.*")
    # (nats-py writes a flush's PING at once, and the SUB at its flusher's next turn: the
    # second PING is on the wire after the SUB.)
    for _ in range(2):
        await nc.flush(int(CONNECT_TIMEOUT_S))
    await sub.unsubscribe()
    return not denied


def _user(cluster: ClusterSettings) -> str:
    """The NATS user of `nats_url` (`ClusterSettings.link`), as a message may name it."""
    credentials = cluster.link()[1]
    if credentials is None:
        return "the server's default user"
    return "this token's user" if credentials.user is None else f"user {credentials.user!r}"


def _inbox_denied(cluster: ClusterSettings, inbox: str) -> str:
    """One line: this process's user may not read the replies of the process it was given
    to (a typo'd `edge`, another edge's user, an edge's user for a core, another `name`)."""
    user, see = _user(cluster), "(docs/nats-permissions.conf)"
    if cluster.role == "all":
        return (f"[cluster] nats_url = {cluster.shown_url!r}: NATS {user} may not read the "
                f"replies of role 'all' ({inbox}.>: permissions violation); an edge and a core "
                f"in one process need a user with the core's permissions and those of an edge "
                f"named {cluster.edge_name!r} {see} ($.cluster.role)")  # fmt: skip
    if inbox == Names(cluster.name).core_inbox:
        return (f"[cluster] nats_url = {cluster.shown_url!r}: NATS {user} may not read a "
                f"core's replies ({inbox}.>: permissions violation); a core needs the core's "
                f"user of cluster {cluster.name!r} {see} ($.cluster.nats_url)")  # fmt: skip
    return (f"[cluster] edge = {cluster.edge_name!r}, name = {cluster.name!r}: NATS {user} may "
            f"not read this edge's replies ({inbox}.>: permissions violation); set edge and "
            f"name to those its permissions name, or give this edge its own user in nats_url "
            f"{see} ($.cluster.edge)")  # fmt: skip


@contextlib.asynccontextmanager
async def starting(cluster: ClusterSettings, nc: Client, role: str) -> AsyncIterator[None]:
    """Around a process's first JetStream calls (the stream, the buckets): a server without
    JetStream, or a user whose permissions lack a JetStream subject the `role` ("an edge",
    "a core") needs (the call times out, and the server said why), is one line (UsageError)
    instead of a traceback."""
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.errors import ServiceUnavailableError

    denials = _DENIED.get(nc) or _Denials()
    denials.quiet = True
    try:
        yield
    except (ServiceUnavailableError, NoRespondersError):
        raise UsageError(
            f"[cluster] nats_url = {cluster.shown_url!r}: the NATS server has no JetStream: "
            "start it with -js (or jetstream {} in its configuration)"
        ) from None
    except (TimeoutError, NatsTimeout):
        denied = denials.seen
        if not denied:
            raise
        raise UsageError(
            f"[cluster] nats_url = {cluster.shown_url!r}: NATS {_user(cluster)} lacks a "
            f"permission {role} of cluster {cluster.name!r} needs "
            f"({denied[-1].removeprefix('nats: ')}, lowercased: the server's log names the "
            "subject); give it those docs/nats-permissions.conf lists ($.cluster.nats_url)"
        ) from None
    denials.quiet = False


async def _failed(cluster: ClusterSettings, nc: Client, connecting: asyncio.Future[None],
                  refused: asyncio.Future[str], tries: list[Exception]) -> str:  # fmt: skip
    """Why the first connection failed ("" when it did not); the connection closed then."""
    why = ""
    if not connecting.done():
        last = tries[-1] if tries else None
        why = refused.result() if refused.done() else (
            "no answer" if last is None or isinstance(last, TimeoutError)
            else f"{type(last).__name__}: {last}")  # fmt: skip
        if not refused.done():
            why = (f"cannot connect within {give_up_s(cluster):g} s ({why}); is nats-server "
                   "-js running there?")  # fmt: skip
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
    elif (exc := connecting.exception()) is not None:
        why = f"cannot connect ({type(exc).__name__}: {exc})"
    elif _wants_tls(cluster) and not _on_tls(nc):
        why = "the server does not ask for TLS: the link would not be encrypted"
    if why:
        await nc.close()
    return why


#: TLS alerts a server sends when it does not take the client's certificate (or its lack).
_CLIENT_CERT_ALERTS = ("BAD_CERTIFICATE", "CERTIFICATE_REQUIRED", "UNKNOWN_CA",
                       "CERTIFICATE_UNKNOWN", "UNSUPPORTED_CERTIFICATE", "CERTIFICATE_EXPIRED",
                       "CERTIFICATE_REVOKED", "ACCESS_DENIED")  # fmt: skip


def _refusal(exc: BaseException, cluster: ClusterSettings) -> str:
    """Why a try at connecting cannot succeed by trying again ("" when it may: the server
    away, say), in an operator's words."""
    import ssl

    from nats.errors import AuthorizationError

    if isinstance(exc, AuthorizationError) or "authorization violation" in str(exc).lower():
        return "the server refused this user and password (authorization violation)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the server's TLS certificate is not trusted ({exc.verify_message}); "
                "check nats_ca ($.cluster.nats_ca)")  # fmt: skip
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or exc)
        if "ALERT_" in reason and reason.endswith(_CLIENT_CERT_ALERTS):
            alert = reason.rpartition("ALERT_")[2].replace("_", " ").lower()
            if not cluster.nats_cert:
                return (
                    f"the server wants a client certificate ({alert}: its tls has "
                    "verify: true); set nats_cert and nats_key ($.cluster.nats_cert)"
                )
            return (
                f"the server refused the client certificate nats_cert = "
                f"{cluster.nats_cert!r} ({alert}): it must be signed by the CA of the "
                "server's tls ca_file, and valid now ($.cluster.nats_cert)"
            )
        return f"TLS failed ({reason}); check nats_ca, nats_cert, nats_key"
    if isinstance(exc, _ClearText):
        return str(exc)
    return ""


def _wants_tls(cluster: ClusterSettings) -> bool:
    return bool(cluster.nats_ca or cluster.nats_cert) or any(
        url.startswith("tls://") for url in cluster.servers
    )


def _on_tls(nc: Client) -> bool:
    """Whether nats-py went over to TLS on the link it made (it does when the server's INFO
    asks for it)."""
    return bool(nc._server_info.get("tls_required"))


def _credentials(cluster: ClusterSettings, nc: Client) -> tuple[list[str], dict[str, Any]]:
    """The servers to give nats-py, without credentials, and its `user`/`password` or
    `token` options (`ClusterSettings.link`: percent-decoded, which nats-py does not do
    with a URL's). With TLS configured, the secret is a callable that refuses to hand it
    over a link that is not TLS (`_ClearText`)."""
    servers, credentials = cluster.link()
    if credentials is None:
        return servers, {}
    secret = credentials.secret

    def guarded() -> str:
        if not _on_tls(nc):
            raise _ClearText("the server does not ask for TLS: credentials not sent")
        return secret

    return servers, credential_options(credentials, guarded if _wants_tls(cluster) else None)


class _ClearText(OSError):
    """TLS is configured, and the server did not ask for it (an OSError: nats-py's connect
    and reconnect loops take it as a failed try)."""


def give_up_s(cluster: ClusterSettings) -> float:
    """Seconds a process waits at start for its first NATS connection: one connect timeout
    per server of `nats_url`, and a second more."""
    return CONNECT_TIMEOUT_S * len(cluster.servers) + 1.0


async def ensure_stream(js: JetStreamContext, names: Names) -> None:
    """The inbound stream: a work queue (a message is gone once the core acknowledged it),
    on disk, deduplicated by `Nats-Msg-Id` within DUPLICATE_WINDOW_S. Made when missing;
    one found is checked and used as it is, or refused: JetStreamMismatch (one line; the
    rules and their sources: js_shape.py). Nothing found is changed."""
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(names.stream)
    except NotFoundError:
        pass
    else:
        wrongs = stream_wrongs(info.config, names.inbound, DUPLICATE_WINDOW_S)
        if wrongs:
            raise stream_refusal(names.name, names.stream, wrongs)
        return
    await js.add_stream(
        StreamConfig(
            name=names.stream,
            subjects=[names.inbound],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_S,
        )
    )


async def picture_bucket(js: JetStreamContext, names: Names) -> KeyValue:
    """The picture bucket (one value per key: the latest). Made when missing, else checked
    (`_bucket`, js_shape.py `bucket_wrongs`)."""
    return await _bucket(js, _kv_config(names.picture), bucket_wrongs,
                         functools.partial(bucket_refusal, names.name, names.picture))  # fmt: skip


async def live_bucket(js: JetStreamContext, names: Names) -> KeyValue:
    """The live bucket (live_kv.py; one value per key, the latest): made and read by cores
    only — an edge's NATS user may not (docs/nats-permissions.conf). Made when missing, else
    checked (`_bucket`, js_shape.py `bucket_wrongs`)."""
    return await _bucket(js, _kv_config(names.live), bucket_wrongs,
                         functools.partial(bucket_refusal, names.name, names.live))  # fmt: skip


async def identity_bucket(js: JetStreamContext, names: Names) -> KeyValue:
    """The bucket binding the cluster's name to a hub (identity.py), cores only. Made when
    missing, else checked (`_bucket`, js_shape.py `bucket_wrongs` but its history)."""
    return await _bucket(js, _kv_config(names.identity),
                         functools.partial(bucket_wrongs, history=False),
                         functools.partial(bucket_refusal, names.name, names.identity))  # fmt: skip


async def lease_bucket(js: JetStreamContext, cluster: str, bucket: str, ttl_s: float) -> KeyValue:
    """The lease bucket `bucket` of cluster `cluster` (lease.py), whose entries live `ttl_s`
    seconds (`[cluster] lease_ttl_s`) unless renewed. Made when missing, else checked
    (`_bucket`, js_shape.py `lease_wrongs`: a bucket of another TTL, made by a run with
    another lease_ttl_s, is refused)."""
    return await _bucket(js, _kv_config(bucket, ttl_s),
                         functools.partial(lease_wrongs, ttl_s=ttl_s),
                         functools.partial(lease_refusal, cluster, bucket))  # fmt: skip


def _kv_config(bucket: str, ttl_s: float | None = None) -> KeyValueConfig:
    """A bucket as the cluster makes it: on disk, one message per key, `ttl_s` (None: no
    TTL)."""
    from nats.js.api import KeyValueConfig, StorageType

    return KeyValueConfig(bucket=bucket, history=1, ttl=ttl_s, storage=StorageType.FILE)


async def _bucket(js: JetStreamContext, config: KeyValueConfig,
                  wrongs: Callable[[StreamConfig], list[Wrong]],
                  refusal: Callable[[list[Wrong]], JetStreamMismatch]) -> KeyValue:  # fmt: skip
    """The KV bucket `config.bucket`: made as `config` when missing; one found is checked
    (`wrongs` of its stream's config) and used as it is, whatever else it sets (replicas,
    direct get, …), or refused: `refusal(wrongs)` raised (JetStreamMismatch, one line),
    nothing changed. (nats-py's `create_key_value` of an existing bucket is the server's
    create: it fails on any difference at all, "stream name already in use with a different
    configuration", err_code 10058 — also when another process made it otherwise between
    the look-up and the create: it is looked up again then.)"""
    from nats.js.errors import BadRequestError, NotFoundError

    bucket = str(config.bucket)
    for last in (False, True):
        try:
            info = await js.stream_info(f"KV_{bucket}")
        except NotFoundError:
            try:
                return await js.create_key_value(config=config)
            except BadRequestError as exc:
                if last or exc.err_code != _IN_USE:
                    raise
                continue  # (made meanwhile: checked as found)
        found = wrongs(info.config)
        if found:
            raise refusal(found)
        break
    return await js.key_value(bucket)


async def end_watch(kv: KeyValue, watcher: Any) -> None:
    """Stop a KV watch (`kv.watch`, `watchall`) and delete its consumer on the server at
    once. nats-py only unsubscribes: the watch's ephemeral ordered consumer stays on the
    server until idle for 5 minutes (its `inactive_threshold`), and every write to the
    bucket updates each consumer of its stream — with a few there, removals went 70 times
    slower (docs/performance.md, markers), and every late joiner's read or core takeover
    left one. A consumer gone already is fine; another failure (NATS away) is one line in
    the log: the server still removes it itself later."""
    from nats.js.errors import NotFoundError

    await watcher.stop()
    name = getattr(watcher._sub, "_consumer", None)  # (nats-py's: no public name)
    stream = getattr(kv, "_stream", None)
    if not name or not stream:
        return
    try:
        await kv._js.delete_consumer(stream, name)
    except NotFoundError:
        pass
    except Exception as exc:
        log.info("KV watch on %s: its consumer not deleted (%s: %s); the server removes it "
                 "when idle", stream, type(exc).__name__, str(exc)[:200])  # fmt: skip


Latest = dict[str, tuple[int, bytes | None]]  # (`read_bucket`: key -> revision, value)


async def read_bucket(kv: KeyValue, keys: str = ">", timeout: float = 5.0) -> tuple[Latest, int]:
    """The latest message of each key of `kv` matching `keys` (a KV key filter) — key ->
    (revision, value; None for a delete or purge marker, b"" for an empty value) — and the
    highest revision read (0: none). Every message with a revision at or below it is
    accounted for: the watch delivers in stream order up to the end the server announced.
    Raises nats' TimeoutError when nothing comes for `timeout` seconds before that end;
    NATS's errors. The watch's consumer is deleted when done (`end_watch`).

    The end is the first entry the server sent with nothing more pending (its `delta`, the
    consumer's num_pending, is 0), not nats-py's end marker (None): when the server has
    pushed every message before nats-py asks its consumer how many are pending, nats-py
    queues its marker before those messages (its callback waits for that answer), and a
    read that stopped at the marker found an empty bucket (seen under load: a core taking
    over restored 0 of its live records). The marker ends the read only when the consumer
    was given nothing at all: an empty bucket, or no key matching `keys`."""
    latest: Latest = {}
    top = 0
    watcher = await kv.watch(keys)
    try:
        while True:
            entry = await watcher.updates(timeout=timeout)  # type: ignore[no-untyped-call]
            if entry is None:
                if not latest and await _given_nothing(watcher):
                    break
                continue  # (the marker came early: the messages follow it)
            revision = entry.revision or 0
            top = max(top, revision)
            value = (entry.value or b"") if entry.operation is None else None
            latest[entry.key] = (revision, value)
            if not entry.delta:
                break
    finally:
        await end_watch(kv, watcher)
    return latest, top


async def _given_nothing(watcher: Any) -> bool:
    """Whether the server has delivered nothing to the watch's consumer and holds nothing
    for it (nats-py's consumer info, the call its `watch` makes itself)."""
    info = await watcher._sub.consumer_info()  # (nats-py's: the watch's subscription)
    delivered = info.delivered.consumer_seq if info.delivered is not None else 0
    return not info.num_pending and not delivered
