"""A round's writes to TAK sockets (hub/listeners.py `TakPeer.flush`, `Joined`) and what
they count (hub/connections.py `delivery`, metrics.py `FastHistogram.tally`).

The bytes a connection is written are its batch's wire forms joined in order, whatever
batches the round's other connections got; a write looks its batch up once per round (the
joined bytes and the delivery summary share one entry) and counts exactly what counting
each connection's batch alone would. The summaries are checked against a plain restatement
of the rule: each item once, its latency from acceptance bucketed as `observe` would.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from commonsky.hub.connection import Connection
from commonsky.hub.connections import Connections, delivery, record_delivery
from commonsky.hub.listeners import TakPeer
from commonsky.hub.outbox import Outbox, Pending, Rendered
from commonsky.metrics import FastHistogram, Metrics
from commonsky.model import Category, CotEvent, Item, Point
from commonsky.protocol.session import SessionLimits, TakSession
from commonsky.ratelog import RateLimitedLog
from commonsky.settings import Settings

NOW = 1000.0


class Clock:
    def __call__(self) -> float:
        return NOW


class Transport:
    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


class Writer:
    def __init__(self) -> None:
        self.transport = Transport()
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True


class FakeHub:
    """What a `TakPeer` asks of its hub: the round (`wires`), metrics, and the counting."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.wires = Connections(Settings(), self.metrics, RateLimitedLog())
        self.clock = Clock()

    def delivery(self, batch: list[Pending]) -> Any:
        return delivery(batch, self.clock, self.metrics)

    def record_delivery(self, conn: Connection, batch: list[Pending], delivered: Any) -> None:
        record_delivery(self.metrics, conn, delivered)


def make_item(uid: str, category: Category, age: float) -> Rendered:
    event = CotEvent(uid=uid, type="a-f-A", time=0, start=0, stale=60, how="m-g",
                     point=Point(0.0, 0.0))  # fmt: skip
    item = Item(party="USA", user="u", category=category, event=event, received=NOW - age)

    def make(rendered: Rendered, variant: str, mode: str) -> bytes:
        return f"<{rendered.item.uid}|{variant}|{mode}>".encode()

    return Rendered(item, make)


def peer(hub: FakeHub, party: str, name: str) -> TakPeer:
    session = TakSession(SessionLimits(60.0, 10.0, 10), 0.0)
    tak = TakPeer(hub, Writer(), session, 1 << 20)  # type: ignore[arg-type]
    tak.conn = Connection(party, name, "tak-tcp", Outbox(1000, 1000), tak, id=name)
    return tak


CATEGORIES = st.sampled_from([Category.TRACK, Category.POSITION, Category.LAUNCH])
VARIANT = st.sampled_from(["own", "full", "gen", "full:RUS"])
ITEMS = st.lists(st.tuples(CATEGORIES, st.floats(-0.01, 3.0)), min_size=1, max_size=8)
# Per connection: its party and which of the items it is queued, with which variant.
QUEUES = st.lists(
    st.tuples(st.sampled_from(["USA", "RUS"]), st.lists(st.tuples(st.integers(0, 7), VARIANT))),
    min_size=1,
    max_size=6,
)


def counted(metrics: Metrics) -> list[str]:
    lines = metrics.render().decode().splitlines()
    return sorted(line for line in lines if "_created" not in line and not line.startswith("#"))


@given(ITEMS, QUEUES, st.booleans())
def test_each_connection_is_written_its_batch_and_counted_alone(
    items: list[tuple[Category, float]],
    queues: list[tuple[str, list[tuple[int, str]]]],
    same_pendings: bool,
) -> None:
    rendered = [make_item(f"u{i}", c, age) for i, (c, age) in enumerate(items)]
    shared = {(i, v): Pending(r, v) for i, r in enumerate(rendered) for v in ("own", "full")}
    hub, alone = FakeHub(), Metrics()
    peers, batches = [], []
    for n, (party, queue) in enumerate(queues):
        tak = peer(hub, party, f"c{n}")
        batch = []
        for index, variant in queue:
            r = rendered[index % len(rendered)]
            # (the fan-out gives a party's connections the same Pending objects, mostly)
            key = (index % len(rendered), variant)
            batch.append(shared[key] if same_pendings and key in shared else Pending(r, variant))
        for pending in batch:
            assert tak.conn is not None
            tak.conn.outbox.put(pending, durable=False)
            hub.wires.mark(tak.conn)
        peers.append(tak)
        batches.append(batch)
        if batch:
            assert tak.conn is not None
            record_delivery(alone, tak.conn, delivery(batch, Clock(), alone))
    hub.wires.flush()
    for tak, batch in zip(peers, batches, strict=True):
        want = b"".join(p.rendered.wire(p.variant, "xml") for p in batch)
        assert tak.writer.written == ([want] if batch else [])  # type: ignore[attr-defined]
    assert counted(hub.metrics) == counted(alone)


def test_a_write_looks_its_batch_up_once() -> None:
    """One `shared` lookup per written connection, not one for the bytes and another for
    the delivery summary (each keyed by the ids of the batch's items)."""
    hub = FakeHub()
    calls = []
    make_shared = hub.wires.shared

    def shared(batch: list[Pending], mode: str, make: Any) -> Any:
        calls.append(mode)
        return make_shared(batch, mode, make)

    hub.wires.shared = shared  # type: ignore[method-assign]
    batch = [Pending(make_item(f"u{i}", Category.TRACK, 0.001), "full") for i in range(3)]
    peers = [peer(hub, "USA", f"c{n}") for n in range(4)]
    for tak in peers:
        assert tak.conn is not None
        for pending in batch:
            tak.conn.outbox.put(pending, durable=False)
        hub.wires.mark(tak.conn)
    hub.wires.flush()
    assert len(calls) == 4
    assert all(tak.writer.written for tak in peers)  # type: ignore[attr-defined]


def observed(bounds: tuple[float, ...], values: list[float]) -> tuple[list[int], float]:
    """`observe`'s rule, value by value: a negative value is 0."""
    counts = [0] * (len(bounds) + 1)
    total = 0.0
    for value in values:
        value = 0.0 if value < 0.0 else value
        counts[bisect_left(bounds, value)] += 1
        total += value
    return counts, total


LATENCY = st.one_of(
    st.floats(-1.0, 10.0),
    st.sampled_from(
        [0.0, -0.0, 0.0005, 0.001, 2.5, 1e-9, -1e-9, 1e300, math.inf, -math.inf, math.nan]
    ),
)


@given(st.lists(LATENCY, max_size=60), st.booleans(), st.booleans())
def test_a_tally_is_each_value_observed(values: list[float], as_list: bool, zero: bool) -> None:
    bounds = (0.0, 0.001, 0.01, 1.0) if zero else (0.0005, 0.001, 0.002, 0.1, 2.5)
    histogram = FastHistogram("h", "h", bounds)
    tally = histogram.tally(values if as_list else iter(values))
    counts, total = observed(bounds, values)
    assert tally.buckets == tuple((i, n) for i, n in enumerate(counts) if n)
    assert tally.sum == total or (math.isnan(tally.sum) and math.isnan(total))


def test_a_batch_of_several_categories_counts_each() -> None:
    batch = [
        Pending(make_item("a", Category.TRACK, 0.001), "own"),
        Pending(make_item("b", Category.LAUNCH, 0.003), "own"),
        Pending(make_item("c", Category.TRACK, 0.2), "own"),
    ]
    categories, latency = delivery(batch, Clock(), Metrics())
    assert categories == (("track", 2), ("launch", 1))
    assert sum(n for _, n in latency.buckets) == 3
    assert delivery([], Clock(), Metrics())[0] == ()


def test_a_count_that_fails_closes_its_own_connection_only() -> None:
    """The peers that got one batch are counted together after the round's writes; a count
    that raises (our bug) for one of them closes that one and counts the others."""

    class Failing(FakeHub):
        def record_delivery(self, conn: Connection, batch: list[Pending], delivered: Any) -> None:
            if conn.id == "c1":
                raise RuntimeError("a bug in counting")
            super().record_delivery(conn, batch, delivered)

    hub = Failing()
    batch = [Pending(make_item("u", Category.TRACK, 0.001), "own")]
    peers = [peer(hub, "USA", f"c{n}") for n in range(3)]
    for tak in peers:
        assert tak.conn is not None
        tak.conn.outbox.put(batch[0], durable=False)
        hub.wires.mark(tak.conn)
    hub.wires.flush()
    assert [tak.closing for tak in peers] == [[], ["internal_error"], []]
    assert [tak.session.liveness.last_sent > 0 for tak in peers] == [True, False, True]
    assert hub.metrics.items_out.values == {("USA", "track"): 2.0}
