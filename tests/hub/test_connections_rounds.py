"""Write batching (hub/connections.py): rounds at most FLUSH_INTERVAL_S apart and waiting
for input that has arrived (ROUND_TURNS), the fan-out's
`enqueue_each` doing exactly what `enqueue` does per connection, one joined write shared by
the connections of a round that get the same batch, and delivery counted per batch."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commonsky.hub import connections as connections_module
from commonsky.hub.connection import Connection, MemoryPeer
from commonsky.hub.connections import FLUSH_INTERVAL_S, Connections
from commonsky.hub.outbox import Outbox, Pending, Rendered
from commonsky.metrics import FastHistogram, Metrics
from commonsky.model import Category, CotEvent, Item, Point
from commonsky.ratelog import RateLimitedLog
from commonsky.settings import Settings


def pending(uid: str, n: int) -> Pending:
    event = CotEvent(
        uid=uid, type="a-f-A", time=n, start=n, stale=n + 60, how="m-g", point=Point(0.0, 0.0)
    )
    item = Item(party="USA", user="u", category=Category.TRACK, event=event, received=n)
    return Pending(Rendered(item, lambda *_: b""), "own")


def wires() -> Connections:
    return Connections(Settings(), Metrics(), RateLimitedLog())


def conn(name: str, limit_live: int = 3, limit_durable: int = 2) -> Connection:
    return Connection("USA", "u", "test", Outbox(limit_live, limit_durable), MemoryPeer(), id=name)


def counted(w: Connections) -> list[str]:
    """Every sample of the metrics but the creation times."""
    lines = w.metrics.render().decode().splitlines()
    return [line for line in lines if "_created" not in line and not line.startswith("#")]


def state(c: Connection) -> tuple[object, ...]:
    box = c.outbox
    return (
        [id(p) for p in box.flowing],
        {k: id(p) for k, p in box.live.items()},
        [id(p) for p in box.durable],
        c.peer.closed,  # type: ignore[attr-defined]
    )


@given(
    st.lists(st.tuples(st.sampled_from("ABCD"), st.booleans(), st.booleans()), max_size=20),
    st.sampled_from(["", "c0", "c1"]),
)
def test_enqueue_each_is_enqueue_for_each_connection_but_the_sender(
    steps: list[tuple[str, bool, bool]], skip: str
) -> None:
    one, each = wires(), wires()
    names = ["", "c0", "c1"]  # ("": a connection without an id, never the sender)
    ones, eaches = [conn(n) for n in names], [conn(n) for n in names]
    for n, (uid, durable, push_back) in enumerate(steps):
        item = pending(uid, n)
        if push_back:  # (the socket pushed back meanwhile: live updates merge)
            for c in (*ones, *eaches):
                c.outbox.push_back()
        for c in ones:
            if not skip or c.id != skip:
                one.enqueue(c, item, durable)
        each.enqueue_each(eaches, item, durable, skip=skip)
    assert [state(c) for c in ones] == [state(c) for c in eaches]
    assert counted(one) == counted(each)  # drops, closes: counted alike


def run_turns(soon: list[Callable[[], None]]) -> int:
    """Run the loop's turns until nothing is left to run (each turn runs what was queued
    when it began, as asyncio and uvloop do); returns how many turns ran."""
    turns = 0
    while soon:
        queued, soon[:] = list(soon), []
        for callback in queued:
            callback()
        turns += 1
    return turns


class Recording(MemoryPeer):
    """A peer that notes each round it is flushed in (`rounds`, shared)."""

    def __init__(self, name: str, rounds: list[list[str]]) -> None:
        super().__init__()
        self.name, self.rounds = name, rounds

    def flush(self) -> None:
        self.rounds[-1].append(self.name)


def test_a_due_round_takes_input_already_arrived_first() -> None:
    """Readers whose bytes arrived together run over the next turns of the loop (a reader's
    task runs in the turn after its bytes were read, or after its read callback ran); a
    round that became due when the first of them queued an item waits ROUND_TURNS turns, so
    that one round writes what they all queued, each connection once."""
    soon: list[Callable[[], None]] = []
    w = wires()
    w.call_soon = soon.append
    rounds: list[list[str]] = []
    a, b = (Connection("USA", "u", "t", Outbox(9, 9), Recording(n, rounds), id=n) for n in "ab")
    real_flush = w.flush

    def flush() -> None:  # (a round begins: its flushes are noted in it)
        rounds.append([])
        real_flush()

    w.flush = flush  # type: ignore[method-assign]
    w.enqueue(a, pending("A", 0), durable=False)  # the first reader's task: a round is due
    soon.append(lambda: soon.append(lambda: w.enqueue(b, pending("B", 1), durable=False)))
    run_turns(soon)  # (the second reader's bytes: read meanwhile, its task two turns on)
    assert rounds == [["a", "b"]] or rounds == [["b", "a"]]
    assert connections_module.ROUND_TURNS == 3  # (what the readers' turns above assume)


def test_rounds_are_at_most_the_interval_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(connections_module.time, "monotonic", lambda: now[0])
    soon: list[Callable[[], None]] = []
    later: list[tuple[float, Callable[[], None]]] = []
    w = wires()
    w.call_soon = soon.append
    w.call_later = lambda delay, callback: later.append((delay, callback))
    c = conn("c0")
    w.enqueue(c, pending("A", 0), durable=False)
    assert len(soon) == 1 and not later  # the first round: at the end of this burst
    w.enqueue(c, pending("A", 1), durable=False)
    assert len(soon) == 1  # (one round is pending already)
    run_turns(soon)
    assert len(c.outbox) == 2  # a MemoryPeer does not take: it is the holder's to read
    now[0] += FLUSH_INTERVAL_S / 4
    w.enqueue(c, pending("A", 2), durable=False)
    assert not soon and later[0][0] == pytest.approx(FLUSH_INTERVAL_S * 3 / 4)
    later.pop()[1]()
    run_turns(soon)
    now[0] += FLUSH_INTERVAL_S * 2
    w.enqueue(c, pending("A", 3), durable=False)
    assert len(soon) == 1 and not later  # the last round is old enough: no wait


def test_a_round_makes_one_write_per_distinct_batch() -> None:
    w = wires()
    made: list[tuple[int, ...]] = []

    def make(batch: list[Pending], mode: str) -> bytes:
        made.append(tuple(id(p) for p in batch))
        return mode.encode()

    a, b = pending("A", 0), pending("B", 1)
    assert w.shared([a, b], "xml", make) == b"xml"  # outside a round: made each time
    assert w.shared([a, b], "xml", make) == b"xml"
    assert len(made) == 2
    results = []

    class Peer(MemoryPeer):
        def __init__(self, batch: list[Pending], mode: str) -> None:
            super().__init__(mode)
            self.batch = batch

        def flush(self) -> None:
            results.append(w.shared(list(self.batch), self.mode, make))

    made.clear()
    for name, batch, mode in [
        ("c0", [a, b], "xml"),
        ("c1", [a, b], "xml"),  # the same items: the same bytes, made once
        ("c2", [b, a], "xml"),  # another order: its own
        ("c3", [a, b], "proto"),  # another mode: its own
    ]:
        w.mark(Connection("USA", "u", "t", Outbox(3, 3), Peer(batch, mode), id=name))
    w.flush()
    assert sorted(results) == [b"proto", b"xml", b"xml", b"xml"]
    assert len(made) == 3


@given(st.lists(st.floats(min_value=-1.0, max_value=10.0), max_size=50), st.integers(1, 4))
def test_a_tally_added_n_times_is_n_observations_of_each(values: list[float], n: int) -> None:
    bounds = (0.001, 0.01, 0.1, 1.0)
    one, many = FastHistogram("a", "a", bounds), FastHistogram("b", "b", bounds)
    tally = many.tally(values)
    for _ in range(n):
        many.add(tally)
        for value in values:
            one.observe(value)
    assert one.counts == many.counts
    assert one.sum == pytest.approx(many.sum)


def test_a_round_writes_every_connection_before_counting_any() -> None:
    """`after_writes`: what a write counts runs once the round wrote every connection (the
    last socket does not wait for the others' bookkeeping); a count that fails closes its
    own connection only; outside a round a count runs at once."""
    w = wires()
    seen: list[str] = []

    class Peer(MemoryPeer):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name
            self.conn = Connection("USA", "u", "t", Outbox(3, 3), self, id=name)

        def flush(self) -> None:
            seen.append(f"write {self.name}")
            w.after_writes(self.conn, self.count)

        def count(self) -> None:
            seen.append(f"count {self.name}")
            if self.name == "c1":
                raise RuntimeError("a bug in counting")

    peers = [Peer(name) for name in ("c0", "c1", "c2")]
    for peer in peers:
        w.mark(peer.conn)
    w.flush()
    assert sorted(seen[:3]) == ["write c0", "write c1", "write c2"]
    assert sorted(seen[3:]) == ["count c0", "count c1", "count c2"]
    assert [peer.closed for peer in peers] == [[], ["internal_error"], []]
    seen.clear()
    w.after_writes(peers[0].conn, lambda: seen.append("now"))
    assert seen == ["now"]
