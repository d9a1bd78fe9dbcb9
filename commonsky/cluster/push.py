"""The core's push subscription to the inbound stream, and its repair when the server stops
pushing to it.

nats-server before 2.10.28 and 2.11.2 (Debian's 2.9.10 among them) marks a push consumer
inactive when a delivery finds only a closed connection on its deliver subject
(`didNotDeliver`), and makes it active again only when the subject's interest goes from none
to some. A subscription that is there already, or comes while the closed connection's is not
yet removed (the core's connection made again at once, nats-py's reconnect), changes
nothing: the consumer stays inactive with the core subscribed — nothing more is delivered,
nothing redelivered, its `push_bound` false (fixed by nats-server PR 6807). The core, alive
and connected, then applies nothing, and the stream's messages wait for good (CI: 338
messages awaiting an acknowledgement, none redelivered after the ack wait, the core alive).

So the core looks at its consumer every BOUND_CHECK_S (`Binding.check`): one not bound while
messages wait for it, at two looks in a row (a consumer just made is bound a moment after its
subscription reaches the server), is subscribed to again. Its deliver subject's interest goes
to none and back, which the server takes as a new subscriber: it delivers again, and
redelivers what it had given the core unacknowledged (the applied ids keep a redelivered
message from being applied twice, core.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .stall import waiting
from .wire import Names

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext
    from nats.js.api import ConsumerConfig

log = logging.getLogger("commonsky.cluster")

IN_FLIGHT = 4_000  # stream messages delivered to the core and not yet acknowledged
ACK_WAIT_S = 30.0  # the consumer's ack wait: a delivery lost on the way comes again then
BOUND_CHECK_S = 5.0  # the consumer looked at this often (one request)
MISSES = 2  # looks in a row finding it unbound while messages wait before subscribing again


class Binding:
    """The core's subscription to its durable push consumer (`start`: made anew), kept bound
    (`check`)."""

    def __init__(self, js: JetStreamContext, names: Names,
                 cb: Callable[[Msg], Awaitable[None]]) -> None:  # fmt: skip
        self.js, self.names, self.cb = js, names, cb
        self.sub: Any = None
        self.misses = 0
        self.rebound = 0  # times subscribed again (`check`)

    def _config(self) -> ConsumerConfig:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        return ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ACK_WAIT_S,
            max_ack_pending=IN_FLIGHT,
        )

    async def start(self) -> None:
        """Subscribe, making the durable consumer (the caller deleted the last core's)."""
        self.sub = await self.js.subscribe(
            self.names.inbound,
            durable=self.names.consumer,
            stream=self.names.stream,
            cb=self.cb,
            manual_ack=True,
            config=self._config(),
            pending_msgs_limit=2 * IN_FLIGHT,
        )

    async def check(self) -> bool:
        """One look at the consumer; True when it was found unbound (MISSES looks in a row,
        messages waiting) and subscribed to again. Raises NATS's errors (NATS away: the
        caller tries again at its next round)."""
        info = await self.js.consumer_info(self.names.stream, self.names.consumer)
        held = waiting(info)
        if info.push_bound or not held:
            self.misses = 0
            return False
        self.misses += 1
        if self.misses < MISSES:
            return False
        self.misses = 0
        log.warning("core: the server stopped pushing to this core's consumer %s (%d "
                    "messages waiting, none delivered: a push consumer left inactive though "
                    "subscribed, nats-server before 2.10.28); subscribing to it again",
                    self.names.consumer, held)  # fmt: skip
        if self.sub is not None:
            await self.sub.unsubscribe()
        self.sub = await self.js.subscribe_bind(
            stream=self.names.stream,
            config=info.config,
            consumer=self.names.consumer,
            cb=self.cb,
            manual_ack=True,
            pending_msgs_limit=2 * IN_FLIGHT,
        )
        self.rebound += 1
        return True
