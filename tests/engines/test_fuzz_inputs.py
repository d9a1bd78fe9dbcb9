"""The fuzz's mutations in memory: a run replays from its seed, and a few thousand mutated
messages through the sans-IO stream and every desk raise nothing but refusals and leave
store and ledger agreeing (`commonsky bench fuzz` does the same at scale over sockets)."""

from __future__ import annotations

import random
from pathlib import Path

from commonsky.bench.fuzz_inputs import ApiSeeds, Mutator, own_seeds
from commonsky.errors import RemoteProtocolError
from commonsky.ledger.agreement import disagreements
from commonsky.protocol.stream import EventReceived, TakStream
from tests.engines.harness import T0, make_world

EVERYTHING = [
    {
        "name": f"{a}-{b}",
        "from": a,
        "to": [b],
        "categories": ["hotline", "airspace", "site", "track", "launch", "alert"],
        "disclosure": "full",
    }
    for a, b in (("USA", "RUS"), ("RUS", "USA"))
]


def test_a_run_replays_from_its_seed() -> None:
    seeds = own_seeds(T0)
    one, two = Mutator(random.Random(7), seeds, T0), Mutator(random.Random(7), seeds, T0)
    api = ApiSeeds.make(T0)
    assert [one.xml() for _ in range(50)] == [two.xml() for _ in range(50)]
    assert [one.proto() for _ in range(50)] == [two.proto() for _ in range(50)]
    assert [one.api_request(api) for _ in range(50)] == [two.api_request(api) for _ in range(50)]


def test_mutated_messages_raise_nothing_but_refusals(tmp_path: Path) -> None:
    world = make_world(tmp_path, EVERYTHING)
    mutator = Mutator(random.Random(1), own_seeds(T0), T0)
    accepted = 0
    for proto in (False, True):
        stream = TakStream()
        if proto:
            stream.receive_data(stream.request_protobuf(T0), T0)  # (as a server: switches)
        for _ in range(1000):
            data = mutator.proto() if proto else mutator.xml()
            try:
                events = stream.receive_data(data, world.clock.now)
            except Exception:  # a fatal framing error closes the stream: start a new one
                assert proto
                stream = TakStream()
                stream.receive_data(stream.request_protobuf(T0), T0)
                continue
            for event in events:
                if isinstance(event, EventReceived):
                    try:
                        world.send("USA", event.event)
                        accepted += 1
                    except RemoteProtocolError:
                        pass
            world.clock.now += 0.01
    assert accepted > 100  # the mutations leave much of what they start from acceptable
    assert b"commonsky_internal_errors_total{" not in world.hub.metrics.render()  # no desk failed
    recorder = world.services.recorder
    assert recorder is not None
    assert disagreements(world.hub.store.since(0), recorder.ledger.entries()) == []
