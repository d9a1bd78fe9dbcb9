"""The core's lease (commonsky/cluster/lease.py) on a real NATS KV bucket: one holder at a
time; a released or dead holder's lease goes to a waiting process; a holder that cannot renew
gives it up."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
from nats.aio.client import Client

from commonsky.cluster.lease import Lease

from .conftest import NATS_URL, connect

TTL = 1.0
DEADLINE = 20.0  # seconds a condition may take to come true on a loaded 2-core machine


def lease(nc: Client, name: str, holder: str) -> Lease:
    return Lease(nc.jetstream(), bucket=f"{name}_lease", holder=holder, ttl_s=TTL)


async def test_one_holder_at_a_time_and_release_hands_over(nc: Client, cluster_name: str) -> None:
    a, b = lease(nc, cluster_name, "a"), lease(nc, cluster_name, "b")
    assert await a.try_acquire()
    assert a.held and a.epoch > 0
    assert not await b.try_acquire()
    assert await a.renew()  # the holder renews; the other still cannot take it
    assert not await b.try_acquire()
    await a.release()
    assert not a.held
    assert await b.try_acquire()
    assert b.epoch > a.epoch or a.epoch == 0  # a new holding, a new fencing token


async def test_a_holder_that_stops_renewing_is_replaced_after_the_ttl(
    nc: Client, cluster_name: str
) -> None:
    a, b = lease(nc, cluster_name, "a"), lease(nc, cluster_name, "b")
    assert await a.try_acquire()
    first = a.epoch
    # `a` never renews (as if its process froze): the server drops its entry after the TTL.
    await asyncio.wait_for(b.acquire(poll_s=0.1), timeout=DEADLINE)
    assert b.held and b.epoch > first
    # `a` wakes up and tries to renew: the revision moved on, so it learns it lost the lease.
    assert not await a.renew()
    assert a.lost.is_set() and not a.held


async def test_holding_renews_past_the_ttl(nc: Client, cluster_name: str) -> None:
    a, b = lease(nc, cluster_name, "a"), lease(nc, cluster_name, "b")
    assert await a.try_acquire()
    holding = asyncio.create_task(a.hold())
    try:
        # Three TTLs later `a` still holds it: renewal, not luck, kept the entry (without
        # renewal the server drops it after one TTL: the test above).
        for _ in range(3):
            await asyncio.sleep(TTL)
            assert not await b.try_acquire()
        assert a.held and not holding.done()
    finally:
        holding.cancel()
        await a.release()


async def test_a_holder_cut_off_from_nats_gives_the_lease_up(cluster_name: str) -> None:
    own = await connect()
    a = lease(own, cluster_name, "a")
    assert await a.try_acquire()
    holding = asyncio.create_task(a.hold())
    await own.close()  # renewals now fail: the holder must stop believing it holds the lease
    await asyncio.wait_for(a.lost.wait(), timeout=DEADLINE)
    await asyncio.wait_for(holding, timeout=DEADLINE)
    assert not a.held
    other = await connect()
    try:
        b = lease(other, cluster_name, "b")
        await asyncio.wait_for(b.acquire(poll_s=0.1), timeout=DEADLINE)
        assert b.held
        await other.jetstream().delete_key_value(f"{cluster_name}_lease")  # (no `nc` fixture)
    finally:
        await other.close()


HOLDER = """
import asyncio, sys, nats
from commonsky.cluster.lease import Lease
async def main():
    nc = await nats.connect(sys.argv[1])
    lease = Lease(nc.jetstream(), bucket=sys.argv[2], holder="child", ttl_s=float(sys.argv[3]))
    await lease.acquire(poll_s=0.1)
    print("held", lease.epoch, flush=True)
    await lease.hold()
asyncio.run(main())
"""


async def test_kill_9_of_the_holder_hands_the_lease_to_a_standby(
    nc: Client, cluster_name: str
) -> None:
    bucket = f"{cluster_name}_lease"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, NATS_URL, bucket, str(TTL),
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert child.stdout is not None
        line = (await asyncio.wait_for(child.stdout.readline(), DEADLINE)).decode()
        assert line.startswith("held"), line
        child_epoch = int(line.split()[1])
        standby = Lease(nc.jetstream(), bucket=bucket, holder="standby", ttl_s=TTL)
        assert not await standby.try_acquire()  # the child holds and renews it
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(standby.acquire(poll_s=0.1), timeout=DEADLINE)
        assert standby.held and standby.epoch > child_epoch
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()


def test_a_lease_shorter_than_a_second_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 second"):
        Lease(None, bucket="x", holder="a", ttl_s=0.5)  # type: ignore[arg-type]
