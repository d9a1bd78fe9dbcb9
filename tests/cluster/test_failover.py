"""kill -9 of the core under load (hotline messages and launch reports in flight, tracks
beside them), three times, each time with a standby waiting: the standby takes the lease and
resumes the stream; the clients stay connected to their edges; afterwards every durable item
a client sent is in PostgreSQL exactly once — none lost, none applied twice — and every one
the hub acknowledged (its receipt) is among them. Then kill -9 of an edge: its clients
reconnect to the other edge and get their picture there."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import pytest
from nats.aio.client import Client as Nats

from commonsky.alerts.simulate import Ballistic, radar_report
from commonsky.desks.launch import report_event
from commonsky.protocol.cot import encode_event

from .harness import Client, Cluster, Process, chat, track, until, until_async

KILLS = 3
_RECEIPT = re.compile(rb'type="b-t-f-d".*?<link uid="([^"]+)" relation="p-p"/>', re.S)
# Hotline routes of the fuzz agreements (sender, recipient); launch reports go JPN -> KOR.
ROUTES = (("USA", "JPN"), ("JPN", "USA"), ("RUS", "KOR"), ("KOR", "RUS"))


@pytest.fixture
async def cluster(tmp_path: Path, cluster_name: str, postgres_url: str,
                  nc: Nats) -> AsyncIterator[Cluster]:  # fmt: skip
    running = Cluster(tmp_path, cluster_name, postgres_url)
    try:
        yield running
    finally:
        running.stop()


class Load:
    def __init__(self) -> None:
        self.sent: set[str] = set()  # uids of durable items sent
        self.acknowledged: set[str] = set()
        self.stop = False


async def chats(load: Load, client: Client, to: str) -> None:
    n = 0
    while not load.stop:
        n += 1
        uid = f"k9-{client.party}-{n}"
        await client.send(chat(uid, to, time.time()))
        load.sent.add(uid)
        for event in client.events[-50:]:
            if m := _RECEIPT.search(event):
                load.acknowledged.add(m.group(1).decode())
        await asyncio.sleep(0.02)


async def launches(load: Load, client: Client) -> None:
    rng = np.random.default_rng(7)
    now = time.time()
    truth = Ballistic(39.9, 127.5, datetime.fromtimestamp(now - 600, UTC), 84.0, 1.1e6, 4.2e5)
    n = 0
    while not load.stop:
        n += 1
        report = radar_report(truth, client.party, f"k9-lr-{n}", 20, 60, 10, 400, 300, rng)
        await client.send(encode_event(report_event(report, time.time())))
        load.sent.add(f"launch-report-k9-lr-{n}")
        await asyncio.sleep(0.05)


async def tracks(load: Load, client: Client) -> None:
    k = 0
    while not load.stop:
        now = time.time()
        batch = [track(f"k9-trk-{k % 50 + i}", now, 30 + k % 7) for i in range(10)]
        await client.send(b"".join(batch))
        k += 10
        await asyncio.sleep(0.02)


async def receipts_flow(load: Load, what: str) -> None:
    before = len(load.acknowledged)
    await until(lambda: len(load.acknowledged) >= before + 20, what)


def serving(cores: list[Process]) -> Process:
    alive = [c for c in cores if c.proc is not None and c.proc.poll() is None]
    holders = [c for c in alive if "serving" in c.text()]
    assert len(holders) == 1, [c.log.name for c in holders]
    return holders[0]


async def drained(nc: Nats, cluster_name: str) -> bool:
    """The stream is empty: every message the edges published was applied and acknowledged."""
    info = await nc.jetstream().stream_info(f"{cluster_name}_IN")
    return info.state.messages == 0


def stored(url: str) -> dict[str, int]:
    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT convert_from(uid, 'UTF8'), count(*) FROM commonsky_items "
            "WHERE convert_from(uid, 'UTF8') LIKE '%k9-%' GROUP BY 1"
        ).fetchall()
    return {str(uid): int(n) for uid, n in rows}


async def test_core_killed_under_load_loses_nothing_applies_nothing_twice(
    cluster: Cluster, nc: Nats, cluster_name: str, postgres_url: str
) -> None:
    cores = [await cluster.core()]
    cores.append(await cluster.core(wait=False))
    _, a = await cluster.edge()
    _, b = await cluster.edge()
    senders = {
        "USA": await Client("USA", a["USA"]).connect(),
        "RUS": await Client("RUS", a["RUS"]).connect(),
        "JPN": await Client("JPN", b["JPN"]).connect(),
        "KOR": await Client("KOR", b["KOR"]).connect(),
    }
    launcher = await Client("JPN", b["JPN"]).connect()
    tracker = await Client("USA", b["USA"]).connect()
    load = Load()
    tasks = [asyncio.create_task(chats(load, senders[p], to)) for p, to in ROUTES]
    tasks += [asyncio.create_task(launches(load, launcher))]
    tasks += [asyncio.create_task(tracks(load, tracker))]
    try:
        for kill in range(KILLS):
            await receipts_flow(load, f"receipts flow before kill {kill + 1}")
            victim = serving(cores)
            victim.kill()
            standby = next(c for c in cores if c is not victim and c.proc and c.proc.poll() is None)
            await standby.wait_log(r"cluster core \S+ serving")
            cores.append(await cluster.core(wait=False))  # the next kill's standby
        await receipts_flow(load, "receipts after the last kill")
    finally:
        load.stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
    for client in (*senders.values(), launcher, tracker):
        assert not client.closed.is_set(), f"{client.party}'s connection to its edge was lost"
    await until_async(lambda: drained(nc, cluster_name), "the stream applied to its end")
    for client in senders.values():  # the receipts still on their way
        for event in client.events:
            if m := _RECEIPT.search(event):
                load.acknowledged.add(m.group(1).decode())
    counts = stored(postgres_url)
    lost = sorted(uid for uid in load.sent if uid not in counts)
    twice = sorted(uid for uid, n in counts.items() if n > 1 and "trk" not in uid)
    assert len(load.sent) > 100
    assert not lost, f"{len(lost)} of {len(load.sent)} sent items lost: {lost[:10]}"
    assert not twice, f"applied twice: {twice[:10]}"
    assert load.acknowledged <= set(counts)
    assert len(load.acknowledged) > 60
    for client in (*senders.values(), launcher, tracker):
        await client.close()


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
    with contextlib.suppress(Exception):
        for client in (usa, rus, jpn, again):
            await client.close()
