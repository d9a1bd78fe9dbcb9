"""Old delete markers leave the core's KV buckets (cluster/markers.py; before, every deleted
key's marker stayed for good, and every read of a bucket went through all of them).

- An upkeep round of the core removes, from the picture and the live bucket, the markers
  older than the age, and keeps younger ones and every value (the clock is injected: the
  cutoff falls between two batches the server stamped).
- A sweep that fails (NATS refuses) is one line in the log, the core's upkeep goes on, and
  the next round does it.
- A late joiner still gets exactly its picture after a sweep: the edge's read of the
  bucket, and the client itself (each kept item once, no deleted one).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from nats.aio.client import Client as Nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.kv import KeyValue

from commonsky.bench.cluster import Client, Cluster, marker, track, until, until_async
from commonsky.cluster.core import ClusterCore
from commonsky.cluster.markers import MARKER_AGE_S, RETRY_S, Sweeper
from commonsky.cluster.nats_io import live_bucket, picture_bucket
from commonsky.cluster.picture_kv import read_picture
from commonsky.cluster.wire import Names, picture_key

from .test_late_superseded import settled
from .test_live_failover import delete


async def stored(kv: KeyValue) -> dict[str, tuple[str, float]]:
    """Every message the bucket holds: key -> ("value" or "marker", when stored)."""
    out: dict[str, tuple[str, float]] = {}
    watcher = await kv.watchall(include_history=True)
    try:
        while (got := await watcher.updates(timeout=5)) is not None:
            kind = "marker" if got.operation is not None else "value"
            out[got.key] = (kind, got.created.timestamp())
    finally:
        await watcher.stop()
    return out


class Quiet:
    """What the upkeep asks of the picture writer, doing nothing."""

    def reconcile(self) -> None:
        pass

    async def flush(self, live: bool = True) -> int:
        return 0


def upkeeping(js: Any, sweeper: Sweeper) -> ClusterCore:
    """A core with only what `_upkeep` reads (its store's checks and pruning not due yet)."""
    core = ClusterCore.__new__(ClusterCore)
    core.js, core.markers, core.seen = js, sweeper, {}
    core.picture = Quiet()  # type: ignore[assignment]
    return core


async def a_round(sweeper: Sweeper) -> None:
    """Wait for the sweep an upkeep round starts (the round's own task) to end."""
    await until(lambda: sweeper.task is not None, "an upkeep round starts a sweep")
    assert sweeper.task is not None
    await sweeper.task


async def old_and_young(nc: Nats, names: Names) -> tuple[list[KeyValue], float]:
    """Both buckets with two batches of markers and a value each; returns them and a time
    between the batches as the server stamped them."""
    js = nc.jetstream()
    buckets = [await picture_bucket(js, names), await live_bucket(js, names)]
    for kv in buckets:
        for n in range(3):
            await kv.put(f"USA.old{n}", b"x")
            await kv.delete(f"USA.old{n}")
        await kv.put("USA.kept", b"x")
    fence = [(await stored(kv))["USA.kept"][1] for kv in buckets]
    for kv in buckets:
        for n in range(3):
            await kv.put(f"USA.young{n}", b"x")
            await kv.delete(f"USA.young{n}")
    held = [await stored(kv) for kv in buckets]
    young = min(t for got in held for k, (_, t) in got.items() if "young" in k)
    assert max(fence) < young
    return buckets, (max(fence) + young) / 2


async def test_an_upkeep_round_removes_the_old_markers_and_keeps_the_young(
    nc: Nats, cluster_name: str
) -> None:
    names = Names(cluster_name)
    js = nc.jetstream()
    buckets, between = await old_and_young(nc, names)
    sweeper = Sweeper(js, [(names.picture, buckets[0]), (names.live, buckets[1])],
                      clock=lambda: between + MARKER_AGE_S)  # fmt: skip
    sweeper.next_at = 0.0  # (due at the first round)
    upkeep = asyncio.create_task(upkeeping(js, sweeper)._upkeep())
    try:
        await a_round(sweeper)
        assert not upkeep.done()
    finally:
        upkeep.cancel()
        await asyncio.gather(upkeep, return_exceptions=True)
    assert sweeper.removed == 6
    for kv in buckets:
        assert {k: kind for k, (kind, _) in (await stored(kv)).items()} == {
            "USA.kept": "value",
            **{f"USA.young{n}": "marker" for n in range(3)},
        }


class Refusing:
    """A JetStream context whose purges fail `fails` times (NATS away), then go through."""

    def __init__(self, js: Any, fails: int) -> None:
        self.js, self.fails = js, fails

    def __getattr__(self, name: str) -> Any:
        return getattr(self.js, name)

    async def purge_stream(self, *args: Any, **kwargs: Any) -> bool:
        if self.fails > 0:
            self.fails -= 1
            raise NatsTimeout
        return bool(await self.js.purge_stream(*args, **kwargs))


async def test_a_failed_sweep_is_one_line_and_tried_again(
    nc: Nats, cluster_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    names = Names(cluster_name)
    js = nc.jetstream()
    buckets, between = await old_and_young(nc, names)
    sweeper = Sweeper(Refusing(js, 1), [(names.picture, buckets[0])],  # type: ignore[arg-type]
                      clock=lambda: between + MARKER_AGE_S)  # fmt: skip
    sweeper.next_at = 0.0
    upkeep = asyncio.create_task(upkeeping(js, sweeper)._upkeep())
    try:
        with caplog.at_level(logging.INFO, logger="commonsky.cluster"):
            await a_round(sweeper)
            assert not upkeep.done()  # (the core goes on)
            lines = [r.getMessage() for r in caplog.records]
            assert len(lines) == 1 and "delete markers not removed" in lines[0], lines
            assert "\n" not in lines[0]
            assert time.monotonic() < sweeper.next_at <= time.monotonic() + RETRY_S
            assert "marker" in {kind for kind, _ in (await stored(buckets[0])).values()}
            first = sweeper.task
            sweeper.next_at = 0.0  # (RETRY_S passed)
            await until(lambda: sweeper.task is not first, "the next round tries again")
            await a_round(sweeper)
    finally:
        upkeep.cancel()
        await asyncio.gather(upkeep, return_exceptions=True)
    assert {k for k, (kind, _) in (await stored(buckets[0])).items() if kind == "marker"} == {
        f"USA.young{n}" for n in range(3)
    }


async def test_a_late_joiner_gets_exactly_its_picture_after_a_sweep(
    cluster: Cluster, nc: Nats, cluster_name: str
) -> None:
    names = Names(cluster_name)
    await cluster.core()
    _, ports = await cluster.edge()
    usa = await Client("USA", ports["USA"]).connect()
    peer = await Client("USA", ports["USA"]).connect()
    now = time.time()
    for uid in ("m-kept", "m-gone"):
        await usa.send(marker(uid, now))
    for uid in ("t-kept", "t-gone"):
        await usa.send(track(uid, now))
    js = nc.jetstream()
    picture, live = await js.key_value(names.picture), await js.key_value(names.live)
    keys = {
        uid: picture_key("USA", ("USA", uid)) for uid in ("m-kept", "m-gone", "t-kept", "t-gone")
    }

    async def kinds() -> dict[str, str]:
        return {k: kind for k, (kind, _) in (await stored(picture)).items()}

    async def written() -> bool:
        got = await kinds()
        return all(got.get(k) == "value" for k in keys.values())

    await until_async(written, "the core wrote the four entries")
    for uid in ("m-gone", "t-gone"):
        await usa.send(delete(uid, time.time()))

    async def deleted() -> bool:
        got = await kinds()
        return got.get(keys["m-gone"]) == "marker" and got.get(keys["t-gone"]) == "marker"

    await until_async(deleted, "the deleted items' entries are markers")
    removed = await Sweeper(js, [(names.picture, picture), (names.live, live)], age=0.0).sweep()
    assert removed >= 2
    after = await kinds()
    assert "marker" not in after.values(), after
    assert after[keys["m-kept"]] == after[keys["t-kept"]] == "value"
    # The edge's read: the kept entries, and only them.
    read = await read_picture(picture, "USA", time.time())
    assert sorted(e.uid for e in read.entries) == ["m-kept", "t-kept"]
    assert read.unread == []
    # A client: each kept item once, no deleted one — only the delete it is owed (it may
    # have been away when its party's other device deleted them: hub/withdraw.py `owed`).
    late = await Client("USA", ports["USA"]).connect()
    await settled(late, peer, usa, "late")
    for uid in ("m-kept", "t-kept"):
        assert late.got(f'uid="{uid}"') == 1, (uid, late.uids())
    for uid in ("m-gone", "t-gone"):
        assert uid not in late.uids() and late.uids().count(f"withdrawn.{uid}") == 1
    for client in (usa, peer, late):
        await client.close()
