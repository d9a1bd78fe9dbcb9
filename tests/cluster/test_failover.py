"""kill -9 of the core under load (hotline messages and launch reports in flight, tracks
beside them), three times, each time with a standby waiting (bench/kill9_cluster.py, the
same code as `commonsky bench kill9 --cluster`): the standby takes the lease and resumes the
stream; the clients stay connected to their edges; every durable item a client sent is in
PostgreSQL exactly once — none lost, none applied twice — and every one the hub acknowledged
(its receipt) among them. Then kill -9 of an edge: its clients reconnect to the other edge
and get their picture there."""

from __future__ import annotations

import asyncio
import random
import time

from commonsky.bench.cluster import Client, Cluster, chat, track, until
from commonsky.bench.kill9_cluster import kill_runs

KILLS = 3


async def test_core_killed_under_load_loses_nothing_applies_nothing_twice(
    cluster: Cluster,
) -> None:
    figures = await kill_runs(cluster, KILLS, random.Random(3))
    assert len(figures["per_run"]) == KILLS
    assert figures["sent_durable"] > 100 and figures["acknowledged"] > 60, figures
    assert figures["lost"] == 0, figures
    assert figures["applied_twice"] == 0, figures
    assert figures["acknowledged_not_stored"] == 0, figures
    assert figures["clients_disconnected"] == 0, figures


async def test_edge_killed_its_clients_reconnect_to_the_other_and_get_their_picture(
    cluster: Cluster,
) -> None:
    await cluster.core()
    edge_a, a = await cluster.edge()
    _, b = await cluster.edge()
    usa = await Client("USA", b["USA"]).connect()
    rus = await Client("RUS", a["RUS"]).connect()
    jpn = await Client("JPN", b["JPN"]).connect()
    await usa.send(track("edge-kill-track", time.time()))
    await jpn.send(chat("edge-kill-chat", "USA", time.time()))
    await until(lambda: rus.got("edge-kill-track") >= 1, "RUS (edge A) sees USA's track")
    await until(lambda: usa.got("edge-kill-chat") >= 1, "USA sees JPN's message")
    edge_a.kill()
    await asyncio.wait_for(rus.closed.wait(), 30)  # its socket is gone with its edge
    again = await Client("RUS", b["RUS"]).connect()
    await until(lambda: again.got("edge-kill-track") >= 1, "RUS, reconnected, gets its picture")
    await usa.send(track("edge-kill-track-2", time.time()))
    await until(lambda: again.got("edge-kill-track-2") >= 1, "and what comes next")
    assert again.got("edge-kill-chat") == 0  # (JPN's message to USA is not RUS's)
    for client in (usa, rus, jpn, again):
        await client.close()
