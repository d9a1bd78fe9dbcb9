"""Connecting to NATS and making the cluster's stream and picture bucket (idempotent: every
process of a cluster calls these at start; the first one creates, the others find)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from commonsky.errors import UsageError

from .config import ClusterSettings
from .wire import Names

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext
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

    async def disconnected() -> None:
        # nats-py calls this on our own close() too (its status CLOSED by then): a process
        # stopping on SIGTERM is not losing NATS.
        if nc.is_closed:
            log.info("%s: NATS connection closed", name)
            return
        log.warning("%s: NATS connection lost; reconnecting", name)

    async def reconnected() -> None:
        log.warning("%s: NATS connection back", name)

    tries: list[Exception] = []  # (the last one names the reason in the line at start)

    async def error(exc: Exception) -> None:
        tries[:] = [exc]
        why = _refusal(exc)
        at_start = not nc.is_connected and not refused.done()
        if why and at_start:
            refused.set_result(why)  # (no use trying again: the one line at start says why)
        # A failed (re)connection try is expected while NATS is away: `disconnected` said so.
        quiet = isinstance(exc, (OSError, TimeoutError)) or (why and at_start)
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
    return nc


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


def _refusal(exc: BaseException) -> str:
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
        return f"TLS failed ({exc.reason or exc}); check nats_ca, nats_cert, nats_key"
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
    """The servers to give nats-py, and its `user`/`password` or `token` options. With TLS
    configured, the URLs' credentials are taken out and given as callables that refuse to
    hand them over a link that is not TLS (`_ClearText`)."""
    if not _wants_tls(cluster):
        return cluster.servers, {}
    servers, user, secret = [], None, None
    for url in cluster.servers:
        parts = urlsplit(url)
        if parts.username is not None and secret is None:
            user, secret = (parts.username, parts.password) if parts.password is not None else (
                None, parts.username)  # fmt: skip
        servers.append(url.replace(f"{parts.netloc}", parts.netloc.rpartition("@")[2], 1))
    if secret is None:
        return servers, {}

    def guarded() -> str:
        if not _on_tls(nc):
            raise _ClearText("the server does not ask for TLS: credentials not sent")
        assert secret is not None
        return unquote(secret)

    if user is None:
        return servers, {"token": guarded}
    return servers, {"user": unquote(user), "password": guarded}


class _ClearText(OSError):
    """TLS is configured, and the server did not ask for it (an OSError: nats-py's connect
    and reconnect loops take it as a failed try)."""


def give_up_s(cluster: ClusterSettings) -> float:
    """Seconds a process waits at start for its first NATS connection: one connect timeout
    per server of `nats_url`, and a second more."""
    return CONNECT_TIMEOUT_S * len(cluster.servers) + 1.0


async def ensure_stream(js: JetStreamContext, names: Names) -> None:
    """The inbound stream: a work queue (a message is gone once the core acknowledged it),
    on disk, deduplicated by `Nats-Msg-Id` within DUPLICATE_WINDOW_S."""
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    try:
        await js.stream_info(names.stream)
        return
    except NotFoundError:
        pass
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
    """The picture bucket (one value per key: the latest)."""
    from nats.js.api import KeyValueConfig, StorageType

    return await js.create_key_value(
        config=KeyValueConfig(bucket=names.picture, history=1, storage=StorageType.FILE)
    )
