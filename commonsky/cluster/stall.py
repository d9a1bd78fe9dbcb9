"""A serving core that stops applying the stream hands its lease over (fail-stop).

The lease is renewed on a thread of its own (keeper.py), so that a core busy with a backlog
keeps it. That also let a core that was *stuck* keep it for good: its event loop blocked (on
a database lock, say), or its deliveries gone (a push consumer whose subscription the server
no longer sees redelivers nothing), while the standby waited for a lease that never came
free. The stream then held its messages, acknowledged to no one, until an operator killed the
core — a hub stopped, though every process was alive.

So once the core consumes, the lease thread also looks at the core's durable consumer every
STALL_CHECK_S: while messages wait for the core (delivered and unacknowledged, or not yet
delivered) its acknowledgement floor must move. A core that applies moves it with every batch
(acknowledged in order: core.py `_apply`); one whose floor has not moved for `[cluster]
stall_s` seconds while messages waited is stuck, however alive it looks. The lease thread
then gives the lease back and stops the process (exit status 75, as for a lost lease: the
standby applies the stream from the consumer's floor; nothing acknowledged is lost, nothing
applied is applied again — the applied ids are in PostgreSQL). It needs nothing from the
core's own loop, which may be the thing that is stuck.

`stall_s` must be longer than a message can legitimately wait unacknowledged at the head of
the core's queue: a delivery lost on the way (nats-py drops what overflows a subscription's
queue) comes again only after the consumer's ack wait (push.py ACK_WAIT_S). A shorter
`stall_s` turns such a wait into a needless (though safe) failover.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.api import ConsumerInfo

STALL_CHECK_S = 2.0  # the consumer looked at this often (one request on the lease's connection)
_ASK_S = 2.0  # a look that takes longer is skipped (NATS slow or away: the lease says so)

#: What moves when a core applies: the consumer's creation time (a new core makes its own)
#: and its acknowledgement floor (a stream sequence).
Mark = tuple[object, int]


class Progress:
    """Whether the core is stuck, from what its consumer shows over time (pure)."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self.mark: Mark | None = None
        self.since = 0.0

    def seen(self, mark: Mark, waiting: int, now: float) -> float | None:
        """One look: `mark` (see Mark), `waiting` messages for the core (delivered and not
        acknowledged, or not yet delivered), at `now` (monotonic seconds). Returns how long
        the core has been stuck — messages waited at every look for that long and the mark
        did not move — once that is at least `stall_s`; else None."""
        if waiting <= 0 or mark != self.mark:
            self.mark, self.since = mark, now
            return None
        stuck = now - self.since
        return stuck if stuck >= self.stall_s else None

    def unseen(self) -> None:
        """A look that got no answer: counting starts again at the next one. (Not stuck
        for it: NATS away is the lease's business — its renewals fail too — and a floor
        that could not move while NATS was away is no sign of a stuck core.)"""
        self.mark = None


async def look(js: JetStreamContext, stream: str, consumer: str) -> tuple[Mark, int] | None:
    """The consumer's Mark and its waiting messages; None when NATS does not answer within
    _ASK_S or the consumer is not there (being made again by a core taking over)."""
    try:
        info = await asyncio.wait_for(js.consumer_info(stream, consumer), _ASK_S)
    except Exception:  # (timeouts, NotFoundError, a connection being made again)
        return None
    floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
    return (info.created, floor or 0), waiting(info)


def waiting(info: ConsumerInfo) -> int:
    """The messages a consumer holds for the core: delivered and not acknowledged, or not
    yet delivered (push.py `Binding.check` asks the same)."""
    return (info.num_ack_pending or 0) + (info.num_pending or 0)
