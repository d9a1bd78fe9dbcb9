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
    # Each core its own data folder; the ledger, key and secret in PostgreSQL: one chain
    # over every epoch, exported through the last core's folder, verified against the key the
    # first core's folder pins; the same generalized handles after each takeover. (A core
    # that stopped by itself — found stuck, cluster/stall.py — made one more epoch.)
    more = figures["cores_stopped_by_themselves"]
    assert figures["core_data_dirs"] == KILLS + 1 + more, figures
    assert figures["ledger_verified"], figures
    assert len(figures["ledger_entries_per_epoch"]) == KILLS + 1, figures
    assert min(figures["ledger_entries_per_epoch"]) > 0, figures
    assert figures["hub_keys_seen"] == figures["hub_ids_seen"] == 1, figures
    assert figures["handles_before"] > 0 and figures["handles_after_takeover"] > 0, figures
    assert figures["handles_new_after_takeover"] == 0, figures


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
