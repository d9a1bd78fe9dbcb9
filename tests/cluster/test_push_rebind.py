"""cluster/push.py `Binding`: a push consumer the server left inactive though the core is
subscribed (nats-server before 2.10.28: a delivery that found only a closing connection on the
deliver subject, and a subscription that came before that connection's was removed) is found
by `check` and subscribed to again, and the core gets the stream's messages.

The server's state is made as it happens: a connection subscribed to the deliver subject
stops reading, the server marks it a slow consumer and the deliveries to it fail (the
consumer goes inactive); the core's subscription comes while the server still holds that
connection's. Without the repair nothing more is delivered, nor redelivered (CI: a core alive
with 338 messages awaiting its acknowledgement, none redelivered)."""

from __future__ import annotations

import asyncio
import socket

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from commonsky.cluster.push import MISSES, Binding
from commonsky.cluster.wire import Names

from .conftest import NATS_URL

_COUNT = 150
# 150 of them are redelivered to the connection that does not read at each ack wait (1 s):
# past the 64 MB a server holds for one connection within seconds, while what the core's
# subscription then gets at once (15 MB) stays well below it, however slowly it reads.
_SIZE = 100_000


def _not_reading(deliver: str) -> socket.socket:
    """A connection subscribed to `deliver` that reads nothing after the server's PONG."""
    host, port = NATS_URL.removeprefix("nats://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.recv(4096)  # (INFO)
    sock.sendall(f'CONNECT {{"verbose":false}}\r\nSUB {deliver} 1\r\nPING\r\n'.encode())
    while b"PONG" not in sock.recv(4096):
        pass
    return sock


async def test_a_consumer_left_inactive_while_subscribed_is_subscribed_to_again(
    nc: Client, cluster_name: str
) -> None:
    names = Names(cluster_name)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=names.stream, subjects=[names.inbound],
                                     retention=RetentionPolicy.WORK_QUEUE,
                                     storage=StorageType.MEMORY))  # fmt: skip
    for n in range(_COUNT):
        await js.publish(f"{cluster_name}.in.e.1", n.to_bytes(4, "big") * (_SIZE // 4))
    deliver = nc.new_inbox()
    stalled = _not_reading(deliver)
    try:
        await js.add_consumer(names.stream, ConsumerConfig(
            durable_name=names.consumer, deliver_subject=deliver, filter_subject=names.inbound,
            ack_policy=AckPolicy.EXPLICIT, ack_wait=1.0, max_ack_pending=_COUNT))  # fmt: skip
        for _ in range(1200):  # (delivered to the connection that does not read: it fails)
            info = await js.consumer_info(names.stream, names.consumer)
            if info.delivered.stream_seq and not info.push_bound:
                break
            await asyncio.sleep(0.05)
        got: set[bytes] = set()
        done = asyncio.Event()

        async def on_msg(msg: Msg) -> None:
            got.add(msg.data[:4])
            await msg.ack()
            if len(got) == _COUNT:
                done.set()

        binding = Binding(js, names, on_msg)
        await binding.start()  # (the consumer is there: the core's subscription binds to it)
        await nc.flush()  # (its subscription at the server before the other one goes)
        stalled.close()  # (the closed connection goes: the core's alone is subscribed now)
        for _ in range(MISSES * 150):  # (the core's upkeep looks every BOUND_CHECK_S)
            if done.is_set():
                break
            await binding.check()
            await asyncio.sleep(0.1)
        info = await js.consumer_info(names.stream, names.consumer)
        assert len(got) == _COUNT, (len(got), binding.rebound, info)
        assert binding.rebound >= 1, info  # (else the server's state was not made: see above)
    finally:
        stalled.close()
