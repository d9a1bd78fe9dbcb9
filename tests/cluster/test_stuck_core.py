"""A serving core that applies nothing while stream messages wait — stuck, not dead: here its
event loop blocked on a PostgreSQL lock another session holds — gives its lease back and
stops after `[cluster] stall_s` (cluster/stall.py); the standby applies what waited, once.
Before, the lease's own thread kept renewing the lease for the stuck core, and the hub
stopped for good while every one of its processes was alive."""

from __future__ import annotations

import time

import psycopg

from commonsky.bench.cluster import Client, Cluster, chat, track, until
from commonsky.cluster.run import FAIL_STOP


def stored(url: str, uid: str) -> int:
    with psycopg.connect(url) as db:
        row = db.execute(
            "SELECT count(*) FROM commonsky_items WHERE convert_from(uid, 'UTF8') LIKE %s",
            (f"%{uid}",),
        ).fetchone()
    return int(row[0]) if row else 0


async def test_a_core_stuck_on_a_database_lock_hands_its_lease_over(
    cluster: Cluster, postgres_url: str
) -> None:
    cluster.more = "stall_s = 3.0\n"
    stuck = await cluster.core()
    standby = await cluster.core(wait=False)
    _, ports = await cluster.edge()
    usa = await Client("USA", ports["USA"]).connect()
    jpn = await Client("JPN", ports["JPN"]).connect()
    for client in (usa, jpn):  # (each says who it is: messages to its party reach it then)
        await client.send(track(f"stuck-{client.party}", time.time()))
    await jpn.send(chat("stuck-before", "USA", time.time()))
    await until(lambda: usa.got("stuck-before") >= 1, "USA gets JPN's message")
    with psycopg.connect(postgres_url) as db:
        db.execute("LOCK TABLE commonsky_items IN ACCESS EXCLUSIVE MODE")  # (held: no commit)
        await jpn.send(chat("stuck-during", "USA", time.time()))
        await until(lambda: stuck.proc is not None and stuck.proc.poll() is not None,
                    "the stuck core stops by itself")  # fmt: skip
        assert stuck.proc is not None and stuck.proc.returncode == FAIL_STOP
        assert "it is stuck: giving the lease back and stopping" in stuck.text()
        assert "standing by" in standby.text() and standby.proc is not None
        assert standby.proc.poll() is None
    # (the lock is gone with its transaction: the standby loads the store and serves)
    await standby.wait_log(r"cluster core \S+ serving")
    await until(lambda: usa.got("stuck-during") >= 1, "the standby delivers what waited")
    await jpn.send(chat("stuck-after", "USA", time.time()))
    await until(lambda: usa.got("stuck-after") >= 1, "and what comes next")
    assert usa.got("stuck-during") == 1
    uids = ("stuck-before", "stuck-during", "stuck-after")
    assert [stored(postgres_url, uid) for uid in uids] == [1, 1, 1]
    for client in (usa, jpn):
        await client.close()
