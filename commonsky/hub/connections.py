"""Who is connected, by party, and when what was queued for them is written.

Writes are batched (uvicorn's `ServerState` habit, one object): enqueueing marks a connection
dirty, and one callback, run by the event loop after the current burst of input, asks every
dirty connection's `Peer` to flush. A queue that overflows follows `outbox.py`'s policies;
past `limit_queue_durable` the connection is closed as too slow (the store replays what is
durable when it returns). Without an event loop (`call_soon` None: tests, tools) nothing is
flushed by itself; the holder of an outbox reads it.

Rounds of flushing are at most FLUSH_INTERVAL_S apart (given the loop's `call_later`): one
write per connection per round is what a socket costs (a send on loopback costs about what
parsing an event does), so input that trickles in over several turns of the loop is written
together, at most a millisecond later. (A long burst is still written at its end, not part
way through: a reader's outbox merging a burst longer than `limit_queue_tracks` is
`outbox.py`'s rule, and a flush in the middle would split the burst.) In one round,
connections whose batches hold the same items (a party's connections, mostly) share one
joined byte string and one delivery summary (`shared`).

A round that is due still waits ROUND_TURNS turns of the loop (microseconds when nothing
else is ready): input that had arrived when it became due is taken into it first. Without
that, several senders' bytes arriving together could cost two rounds: the first reader's
task queued the round, which then ran before the other readers' tasks (uvloop runs them in
the turn after the one whose poll read their bytes; asyncio in the turn after their read
callbacks), and their connections were written twice (`bench relay` at 4,000 msg/s: 9 % of
the bursts on uvloop, 20 % on asyncio; docs/performance.md, #19).
"""

from __future__ import annotations

import functools
import logging
import operator
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator
from typing import TypeVar

from commonsky.metrics import Metrics, Tally
from commonsky.model import Category
from commonsky.ratelog import RateLimitedLog
from commonsky.settings import Settings

from .connection import Connection
from .held import LongMessages
from .outbox import Pending

log = logging.getLogger("commonsky.hub")

T = TypeVar("T")

# Seconds between two rounds of flushing at the least: what input arriving meanwhile may wait
# (see the module's docstring; 1 ms is under the p50 of a bare relay on loopback).
FLUSH_INTERVAL_S = 0.001
# Turns of the event loop a due round waits for input that had already arrived (module
# docstring): a sender's bytes are read in one turn's poll and its reader's task runs in the
# next (uvloop), or its read callback runs in the next and its task in the one after
# (asyncio's selector loop); the round goes on the turn after that.
ROUND_TURNS = 3


class Connections:
    """The hub's connections (`by_party`) and their write batching."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        logs: RateLimitedLog,
        clock: Callable[[], float] = time.time,
        held: LongMessages | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.logs = logs
        # Items too long for a TAK client's reader, held for it to fetch (held.py).
        self.held = held if held is not None else LongMessages(clock)
        self.by_party: dict[str, set[Connection]] = defaultdict(set)
        # The event loop's `call_soon`, set by the server once the loop runs.
        self.call_soon: Callable[[Callable[[], None]], object] | None = None
        # The loop's `call_later`, set by the server too: rounds at most FLUSH_INTERVAL_S apart.
        self.call_later: Callable[[float, Callable[[], None]], object] | None = None
        self._dirty: set[Connection] = set()
        self._flush_pending = False
        self._last_flush = 0.0  # time.monotonic() of the last round
        self._rounds = 0  # rounds flushed so far: a wait for a round flushed meanwhile ends
        # While a round runs: (mode, ids of a batch's items) -> (the batch, kept alive so
        # no id is reused in the round; what `make` returned for it).
        self._round: dict[tuple[object, ...], tuple[list[Pending], object]] | None = None
        # While a round runs: what its writes count, done once every socket was written
        # (`after_writes`).
        self._after: list[tuple[Connection, Callable[[], None]]] | None = None

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
        if overflow is not None:
            self._overflowed(conn, overflow)

    def enqueue_each(
        self, conns: Collection[Connection], pending: Pending, durable: bool, skip: str = ""
    ) -> None:
        """`enqueue(conn, pending, durable)` for each of `conns` but the one whose id is
        `skip` (the sender: nothing is echoed back). The fan-out's loop, per delivery."""
        skip_id = skip or None  # (a connection without an id is never the sender)
        for conn in conns:
            outbox = conn.outbox
            if durable or outbox.pushed_back or len(outbox.flowing) >= outbox.limit_live:
                if conn.id == skip_id:
                    continue
                overflow = outbox.put(pending, durable)
                if overflow is not None:
                    self._overflowed(conn, overflow)
            elif conn.id != skip_id:
                outbox.flowing.append(pending)  # (`Outbox.put`'s common case, inlined)
        self._dirty.update(conns)  # (the sender too: flushing it with nothing queued is a no-op)
        if not self._flush_pending:
            self._schedule()

    def _overflowed(self, conn: Connection, overflow: str) -> None:
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

    def opened(self, conn: Connection) -> None:
        """`conn` was just attached, owed its replay: written at once when an event loop runs
        (else marked, for its holder to read). A round waits turns of the loop
        (ROUND_TURNS), in which input from others could be queued to it; the first page of
        its replay goes before anything that arrives after it opened, as it did when its
        round ran on the next turn."""
        if self.call_soon is None:
            self.mark(conn)
        else:
            conn.flush()

    def mark(self, conn: Connection) -> None:
        """Have `conn` flushed once the event loop has taken the current burst of input."""
        self._dirty.add(conn)
        if not self._flush_pending:
            self._schedule()

    def _schedule(self) -> None:
        if self.call_soon is None:
            return
        self._flush_pending = True
        turn = functools.partial(self._turn, self._rounds, ROUND_TURNS)
        wait = self._last_flush + FLUSH_INTERVAL_S - time.monotonic()
        if wait > 0 and self.call_later is not None:
            self.call_later(wait, turn)
        else:
            self.call_soon(turn)

    def _turn(self, round_: int, left: int) -> None:
        """One of the turns of the loop a due round waits (ROUND_TURNS); the round itself on
        the last — unless it was flushed meanwhile (`flush` called directly)."""
        if round_ != self._rounds:
            return
        if left > 1 and self.call_soon is not None:
            self.call_soon(functools.partial(self._turn, round_, left - 1))
        else:
            self.flush()

    def flush(self) -> None:
        """Flush every connection marked since the last flush."""
        self._flush_pending = False
        self._rounds += 1
        self._last_flush = time.monotonic()
        dirty, self._dirty = self._dirty, set()
        self._round = {}
        after = self._after = []
        try:
            # (`_guarded`'s try written out in both loops: a call less per connection)
            for conn in dirty:
                try:
                    conn.peer.flush()  # (`Connection.flush`, without its call)
                except Exception:
                    self.failed(conn)
            self._after = None
            for conn, count in after:
                try:
                    count()
                except Exception:
                    self.failed(conn)
        finally:
            self._round = self._after = None

    def _guarded(self, conn: Connection, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception:
            self.failed(conn)

    def failed(self, conn: Connection) -> None:
        """Our bug (flushing or counting `conn` raised): it is closed, the others still
        flushed; logged with the traceback being handled."""
        self.metrics.internal_error("flush")
        log.exception("flushing %s/%s failed; closing it", conn.party, conn.user)
        conn.close("internal_error")

    def after_writes(self, conn: Connection, count: Callable[[], None]) -> None:
        """Run `count` (what a write to `conn` counts: metrics, the session's idle clock) once
        the round has written every connection, or now outside a round. Why: the last socket
        of a round is written after every earlier one's bookkeeping otherwise — at 4,000
        msg/s with 50 readers, a round's counting (each batch's latencies bucketed, each
        connection's counters) was ~0.4 ms of the ~2 ms between its first write and its last
        (docs/performance.md, #19)."""
        if self._after is None:
            self._guarded(conn, count)
        else:
            self._after.append((conn, count))

    def shared(self, batch: list[Pending], mode: str, make: Callable[[list[Pending], str], T]) -> T:
        """`make(batch, mode)`, made once per round for every batch of the same items in the
        same order (the connections of one party get the same batch, mostly), and made
        afresh outside a round (a writer task's flush after its socket drained)."""
        round_ = self._round
        if round_ is None:
            return make(batch, mode)
        key = (make, mode, *map(id, batch))  # (`make`: a TLS listener's announces, held.py)
        found = round_.get(key)
        if found is None:
            found = round_[key] = (batch, make(batch, mode))
        return found[1]  # type: ignore[return-value]


# What writing a batch counts (`Hub.delivery`): items by category, latencies bucketed.
Delivered = tuple[tuple[tuple[str, int], ...], Tally]


def delivery(batch: list[Pending], clock: Callable[[], float], metrics: Metrics) -> Delivered:
    """What writing `batch` now counts (for `record_delivery`): (category, items) pairs and
    the items' latencies from acceptance, bucketed. Shared by the hub and a cluster's edge."""
    now = clock()
    # A scenario clock may run faster than real time; latency is reported in real seconds.
    rate = float(getattr(clock, "rate", 1.0))
    items = list(map(_ITEM, batch))
    latencies = [(now - item.received) / rate for item in items]
    categories = set(map(_CATEGORY, items))
    counted: tuple[tuple[str, int], ...]
    if len(categories) == 1:  # (a batch is mostly one category: tracks)
        counted = ((categories.pop()._value_, len(items)),)
    else:
        counts: dict[Category, int] = defaultdict(int)
        for category in map(_CATEGORY, items):
            counts[category] += 1
        counted = tuple((category._value_, n) for category, n in counts.items())
    # (`_value_`, not `.value`: the enum's property costs a Python call each)
    return counted, metrics.latency.tally(latencies)


_ITEM = operator.attrgetter("rendered.item")
_CATEGORY = operator.attrgetter("category")


def record_delivery(metrics: Metrics, conn: Connection, delivered: Delivered) -> None:
    """Count `delivered` (see `delivery`) as written to `conn`: items out by category and
    their latencies."""
    categories, latency = delivered
    metrics.latency.add(latency)
    for category, n in categories:
        metrics.count_out(conn.party, category, n)
