"""An edge's publishes to the inbound stream, and the core's KV writes (picture and live
buckets), with their JetStream acknowledgements, at a fraction of nats-py's
`JetStreamContext.publish_async` per message.

`publish_async` takes a semaphore slot with `asyncio.wait_for`, draws a NUID and two random
bytes from the OS for a reply token, hangs a done callback on each future, and reads each
acknowledgement with `json.loads` into a `PubAck` dataclass: at 500 messages a second an
edge spent ~3 % of a core there (docs/performance.md, "Cluster CPU per message"). Here a
publish's reply subject is this connection's inbox and a counter; an acknowledgement is
read by msgspec into the two fields that matter (an error, or the stream sequence). What
the edge does with the futures (its acker: wait, give up, publish again under the same
message id) is unchanged (cluster/edge.py `EdgeLink._acker`).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from commonsky.errors import CommonSkyError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg


class StreamPublisher(Protocol):
    """What an edge publishes its inbound messages with (cluster/edge.py `EdgeLink`), and
    the core its KV writes (picture_kv.py `PictureWriter`: a KV write is a publish to the
    bucket's stream): `StreamAcks` in the product, a test's fake otherwise.
    `publish_async` returns once the message is handed to NATS, with a future that gets
    JetStream's acknowledgement (or an exception: StreamRefused, or the caller's cancel
    when it waits no longer); its result is the message's stream sequence (a KV entry's
    revision)."""

    async def publish_async(self, subject: str, data: bytes,
                            headers: dict[str, str] | None) -> asyncio.Future[Any]: ...  # fmt: skip


class StreamRefused(CommonSkyError):
    """JetStream answered a publish with an error (or nobody answered: no stream)."""

    http_status = 503
    reason = "stream_refused"


class _Answer(msgspec.Struct):
    """A JetStream publish acknowledgement, as far as it is read here."""

    stream: str = ""
    seq: int = 0
    error: dict[str, Any] | None = None


_answer = msgspec.json.Decoder(_Answer)
_PRUNE_AT = 4096  # futures remembered before the given-up ones are forgotten


class StreamAcks:
    """`publish_async(subject, data, headers)` as nats-py's, on connection `nc` (a
    `StreamPublisher`, once `start`ed): returns a future that gets the acknowledgement's
    stream sequence, or StreamRefused. A future the caller cancels (its acknowledgement
    never came) is forgotten."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.prefix = ""
        self.futures: dict[str, asyncio.Future[int]] = {}
        self._count = itertools.count(1)

    async def start(self) -> None:
        self.prefix = f"{self.nc.new_inbox()}."
        await self.nc.subscribe(f"{self.prefix}*", cb=self.answered)

    async def publish_async(self, subject: str, data: bytes,
                            headers: dict[str, str] | None) -> asyncio.Future[int]:  # fmt: skip
        token = str(next(self._count))
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if len(self.futures) >= _PRUNE_AT:
            self.futures = {t: f for t, f in self.futures.items() if not f.done()}
        self.futures[token] = future
        await self.nc.publish(subject, data, reply=self.prefix + token, headers=headers)
        return future

    async def answered(self, msg: Msg) -> None:
        """One acknowledgement (or a no-responders status: empty, with headers)."""
        future = self.futures.pop(msg.subject[len(self.prefix) :], None)
        if future is None or future.done():
            return
        try:
            answer = _answer.decode(msg.data)
        except msgspec.DecodeError:
            future.set_exception(StreamRefused(f"no acknowledgement: {msg.data[:200]!r}"))
            return
        if answer.error is not None or not answer.stream:
            future.set_exception(StreamRefused(f"refused: {answer.error}"))
        else:
            future.set_result(answer.seq)
