"""Every read of a bucket (a new core's `load` and `restore`, an edge's `read_picture`)
deletes its watch's consumer when done (nats_io.py `read_bucket`). nats-py only
unsubscribes: the watch's ephemeral ordered consumer stayed on the server for 5 minutes,
and every write to the bucket updates each consumer of its stream — each late joiner and
each takeover left one behind, slowing the core's writes (as markers.py found for its
scans). Against the NATS server the other cluster tests use."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

from nats.aio.client import Client

from commonsky.cluster.live_kv import LiveKeeper
from commonsky.cluster.nats_io import live_bucket, picture_bucket, read_bucket
from commonsky.cluster.picture_kv import PictureWriter, read_picture
from commonsky.cluster.wire import Names
from tests.conftest import RunningHub


async def test_reads_leave_no_consumer_on_the_server(
    make_hub: Callable[..., Any], nc: Client, cluster_name: str
) -> None:
    names = Names(cluster_name)
    js = nc.jetstream()
    kv, live = await picture_bucket(js, names), await live_bucket(js, names)
    await kv.put("USA.a", b"not an entry")
    await kv.put("USA.b", b"gone")
    await kv.delete("USA.b")
    await live.put("USA.c", b"not a record")
    running: RunningHub
    async with make_hub() as running:
        hub = running.server.hub
        keeper = LiveKeeper(hub, live, names.live)
        writer = PictureWriter(hub, kv, hub.clock, cast(Any, None), names.picture, keeper)
        # (What each read finds is tested elsewhere; here, that it leaves nothing behind.
        # nats-py's watch may end its read before a value delivered while it started,
        # a race of its own: the counts are not asserted.)
        assert (await keeper.restore()).restored == 0
        assert await writer.load() <= 1  # (USA.a; USA.b deleted)
        assert (await read_picture(kv, "USA", time.time())).entries == []
    for bucket in (names.picture, names.live):
        left = await js.consumers_info(f"KV_{bucket}")
        assert [c.name for c in left] == [], bucket


async def test_read_bucket_gives_each_key_its_latest_and_the_top_revision(
    nc: Client, cluster_name: str
) -> None:
    js = nc.jetstream()
    kv = await picture_bucket(js, Names(cluster_name))
    await kv.put("USA.a", b"1")
    await kv.put("GBR.b", b"2")
    await kv.put("USA.c", b"")
    await kv.delete("USA.a")
    latest, top = await read_bucket(kv)
    assert {k: v for k, (_, v) in latest.items()} == {"USA.a": None, "GBR.b": b"2", "USA.c": b""}
    assert top == max(rev for rev, _ in latest.values())
    usa, usa_top = await read_bucket(kv, "USA.>")
    assert set(usa) == {"USA.a", "USA.c"} and usa_top == top
    assert [c.name for c in await js.consumers_info(f"KV_{Names(cluster_name).picture}")] == []


class _Watch:
    """A watch as nats-py gives it when the server pushed every message before nats-py asked
    its consumer how many were pending: its end marker (None) queued first."""

    def __init__(self, updates: list[Any], delivered: int) -> None:
        self.updates_left = updates
        info = SimpleNamespace(num_pending=0, delivered=SimpleNamespace(consumer_seq=delivered))
        self._sub = SimpleNamespace(consumer_info=self._info(info))
        self.stopped = False

    @staticmethod
    def _info(info: Any) -> Callable[[], Any]:
        async def consumer_info() -> Any:
            return info

        return consumer_info

    async def updates(self, timeout: float) -> Any:
        return self.updates_left.pop(0)

    async def stop(self) -> None:
        self.stopped = True


class _Bucket:
    def __init__(self, watch: _Watch) -> None:
        self.watcher = watch

    async def watch(self, keys: str) -> _Watch:
        return self.watcher


def _entry(key: str, revision: int, delta: int) -> Any:
    return SimpleNamespace(key=key, value=b"v%d" % revision, revision=revision, delta=delta,
                           operation=None)  # fmt: skip


async def test_a_read_goes_on_past_an_end_marker_that_came_before_the_messages() -> None:
    entries = [_entry(f"USA.{n}", n, 2 - n) for n in range(3)]
    watch = _Watch([None, *entries, None], delivered=3)
    latest, top = await read_bucket(cast(Any, _Bucket(watch)))
    assert latest == {f"USA.{n}": (n, b"v%d" % n) for n in range(3)} and top == 2
    assert watch.stopped


async def test_an_end_marker_ends_the_read_when_nothing_was_delivered() -> None:
    watch = _Watch([None], delivered=0)
    assert await read_bucket(cast(Any, _Bucket(watch))) == ({}, 0)


async def test_every_read_of_a_full_bucket_finds_every_key(nc: Client, cluster_name: str) -> None:
    """The real server, many reads: each finds all the keys (a read that stopped at an early
    end marker found none)."""
    kv = await picture_bucket(nc.jetstream(), Names(cluster_name))
    for n in range(300):
        await kv.put(f"USA.k{n}", b"x")
    for _ in range(40):
        latest, _ = await read_bucket(kv)
        assert len(latest) == 300
