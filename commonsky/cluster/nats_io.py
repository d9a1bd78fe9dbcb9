"""Connecting to NATS and making the cluster's stream and picture bucket (idempotent: every
process of a cluster calls these at start; the first one creates, the others find)."""

from __future__ import annotations

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


async def connect(cluster: ClusterSettings, name: str) -> Client:
    """A NATS connection that keeps reconnecting once made; UsageError (one line) when the
    server does not answer at start."""
    import nats

    async def disconnected() -> None:
        log.warning("%s: NATS connection lost; reconnecting", name)

    async def reconnected() -> None:
        log.warning("%s: NATS connection back", name)

    try:
        return await nats.connect(
            servers=cluster.servers,
            name=name,
            connect_timeout=3,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
        )
    except Exception as exc:
        raise UsageError(
            f"[cluster] nats_url = {cluster.nats_url!r}: cannot connect ({type(exc).__name__}: "
            f"{exc}); is nats-server -js running?"
        ) from None


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
