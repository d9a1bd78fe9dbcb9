"""Connecting to NATS and making the cluster's stream and picture bucket (idempotent: every
process of a cluster calls these at start; the first one creates, the others find)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from commonsky.errors import UsageError

from .config import ClusterSettings
from .wire import Names

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

log = logging.getLogger("commonsky.cluster")

#: How long JetStream remembers a message id to drop a second publish of it (seconds): an
#: edge retries a publish whose acknowledgement it did not get within this.
DUPLICATE_WINDOW_S = 120.0
#: Seconds one try of a NATS connection may take (TCP, TLS, the server's INFO).
CONNECT_TIMEOUT_S = 3.0


async def connect(cluster: ClusterSettings, name: str) -> Client:
    """A NATS connection that keeps reconnecting once made; UsageError (one line) when the
    server does not answer at start, within `give_up_s(cluster)`.

    nats-py retries a first connection forever when reconnects are unbounded (and logs a
    traceback at each try): a process given a wrong `nats_url`, or started while NATS is down,
    would hang, logging, and never reach its stop signal. So the first connection is bounded
    here, and connection errors are logged in one line."""
    import nats

    made: list[Client] = []

    async def disconnected() -> None:
        # nats-py calls this on our own close() too (its status CLOSED by then): a process
        # stopping on SIGTERM is not losing NATS.
        if made and made[0].is_closed:
            log.info("%s: NATS connection closed", name)
            return
        log.warning("%s: NATS connection lost; reconnecting", name)

    async def reconnected() -> None:
        log.warning("%s: NATS connection back", name)

    tries: list[Exception] = []  # (the last one names the reason in the line at start)

    async def error(exc: Exception) -> None:
        tries[:] = [exc]
        # A failed (re)connection try is expected while NATS is away: `disconnected` said so.
        level = logging.DEBUG if isinstance(exc, (OSError, TimeoutError)) else logging.WARNING
        log.log(level, "%s: NATS: %s: %s", name, type(exc).__name__, exc)

    try:
        nc = await asyncio.wait_for(
            nats.connect(
                servers=cluster.servers,
                name=name,
                connect_timeout=CONNECT_TIMEOUT_S,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                error_cb=error,
            ),
            give_up_s(cluster),
        )
    except Exception as exc:
        last = tries[-1] if tries and isinstance(exc, TimeoutError) else exc
        why = "no answer" if isinstance(last, TimeoutError) else f"{type(last).__name__}: {last}"
        raise UsageError(
            f"[cluster] nats_url = {cluster.nats_url!r}: cannot connect within "
            f"{give_up_s(cluster):g} s ({why}); is nats-server -js running there?"
        ) from None
    made.append(nc)
    return nc


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
