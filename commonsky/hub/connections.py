"""Who is connected, by party, and when what was queued for them is written.

Writes are batched (uvicorn's `ServerState` habit, one object): enqueueing marks a connection
dirty, and one callback, run by the event loop after the current burst of input, asks every
dirty connection's `Peer` to flush. A queue that overflows follows `outbox.py`'s policies;
past `limit_queue_durable` the connection is closed as too slow (the store replays what is
durable when it returns). Without an event loop (`call_soon` None: tests, tools) nothing is
flushed by itself; the holder of an outbox reads it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator

from commonsky.metrics import Metrics
from commonsky.ratelog import RateLimitedLog
from commonsky.settings import Settings

from .connection import Connection
from .outbox import Pending

log = logging.getLogger("commonsky.hub")


class Connections:
    """The hub's connections (`by_party`) and their write batching."""

    def __init__(self, settings: Settings, metrics: Metrics, logs: RateLimitedLog) -> None:
        self.settings = settings
        self.metrics = metrics
        self.logs = logs
        self.by_party: dict[str, set[Connection]] = defaultdict(set)
        # The event loop's `call_soon`, set by the server once the loop runs.
        self.call_soon: Callable[[Callable[[], None]], object] | None = None
        self._dirty: set[Connection] = set()
        self._flush_pending = False

    def admit(self, party: str) -> str | None:
        """Why a new connection of `party` may not open now (the setting it would exceed), or
        None. The hub-wide limit is shared by all parties; each party also has its own, so
        one party's idle sockets cannot lock the others out."""
        total = sum(len(group) for group in self.by_party.values())
        if total >= self.settings.limit_connections:
            return "limit_connections"
        if len(self.by_party.get(party, ())) >= self.settings.limit_connections_per_party:
            return "limit_connections_per_party"
        return None

    def add(self, conn: Connection) -> None:
        self.by_party[conn.party].add(conn)
        self.metrics.child(self.metrics.connections, conn.listener, conn.party).inc()  # type: ignore[attr-defined]

    def remove(self, conn: Connection) -> None:
        self._dirty.discard(conn)
        if conn in self.by_party.get(conn.party, ()):
            self.by_party[conn.party].discard(conn)
            self.metrics.child(self.metrics.connections, conn.listener, conn.party).dec()  # type: ignore[attr-defined]

    def of(self, party: str) -> set[Connection] | None:
        """The connections of `party` (None or empty when it has none)."""
        return self.by_party.get(party)

    def __iter__(self) -> Iterator[Connection]:
        for group in self.by_party.values():
            yield from group

    def enqueue(self, conn: Connection, pending: Pending, durable: bool) -> None:
        """Queue `pending` for `conn` (durable: never dropped or merged) and have it written
        after this burst; an overflow is counted, a durable one closes the connection."""
        overflow = conn.outbox.put(pending, durable)
        self.mark(conn)
        if overflow is None:
            return
        if overflow == "too_slow":
            self.metrics.drop("durable_too_slow")
            self.logs.log(
                log,
                logging.WARNING,
                "too_slow",
                conn.id,
                "closing %s/%s: more than limit_queue_durable=%d durable items pending",
                conn.party,
                conn.user,
                conn.outbox.limit_durable,
            )
            conn.close("too_slow")
        else:
            self.metrics.drop(overflow)

    def mark(self, conn: Connection) -> None:
        """Have `conn` flushed once the event loop has taken the current burst of input."""
        self._dirty.add(conn)
        if not self._flush_pending and self.call_soon is not None:
            self._flush_pending = True
            self.call_soon(self.flush)

    def flush(self) -> None:
        """Flush every connection marked since the last flush."""
        self._flush_pending = False
        dirty, self._dirty = self._dirty, set()
        for conn in dirty:
            try:
                conn.flush()
            except Exception:  # our bug: this connection is closed, the others still flushed
                self.metrics.internal_error("flush")
                log.exception("flushing %s/%s failed; closing it", conn.party, conn.user)
                conn.close("internal_error")
