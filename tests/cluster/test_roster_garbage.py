"""A new core asks the edges for their clients (`<name>.roster`); each answers with a beat on
its own subject (`<name>.beat.<edge>.<run>`). An answer it cannot read, one naming another edge
than its subject's, or a client in it that no edge may hold (the hub's own party, an
undeclared one, an unknown wire form), is left out with one line and counted — the core starts
and serves on the other answers (before, one unreadable answer stopped the core at its
takeover)."""

from __future__ import annotations

import time

from nats.aio.client import Client as Nats

from commonsky.bench.cluster import Client, Cluster, track, until
from commonsky.cluster.wire import ConnInfo, Names, Roster, encode


async def test_garbage_answers_to_the_roster_are_left_out(
    cluster: Cluster, nc: Nats, cluster_name: str
) -> None:
    names = Names(cluster_name)
    _, ports = await cluster.edge()
    usa = await Client("USA", ports["USA"]).connect()
    rus = await Client("RUS", ports["RUS"]).connect()
    answered: list[int] = []

    async def hostile(msg: object) -> None:
        bad = [ConnInfo("c-hub", "HUB", "u", "tak-tcp", "", "xml"),
               ConnInfo("c-xxx", "XXX", "u", "tak-tcp", "", "xml"),
               ConnInfo("c-mode", "USA", "u", "tak-tcp", "", "smtp")]  # fmt: skip
        for data in (b"\xc1garbage", encode(Roster("evil.1", bad))):
            await nc.publish(names.beat("evil.1"), data)
        # Another edge's clients, on evil's subject: not taken (only that edge speaks for them).
        other = [ConnInfo("c-other", "USA", "u", "tak-tcp", "", "xml")]
        await nc.publish(names.beat("evil.1"), encode(Roster("other.1", other)))
        answered.append(1)

    await nc.subscribe(names.roster, cb=hostile)
    await nc.flush()
    core = await cluster.core()
    assert answered  # (the core asked, and met the garbage)
    await usa.send(track("after-roster", time.time()))
    await until(lambda: rus.got("after-roster") >= 1, "RUS sees USA's track: the core serves")
    text = core.text()
    for reason in ("undecodable", "hub_party", "unknown_party", "unknown_mode", "wrong_subject"):
        lines = [line for line in text.splitlines()
                 if "dropped a message" in line and f"({reason})" in line]  # fmt: skip
        assert len(lines) == 1, (reason, lines)
    assert "Traceback" not in text
    assert "2 clients on the edges" in text  # (the edge's own answer: USA's and RUS's)
    for client in (usa, rus):
        await client.close()
