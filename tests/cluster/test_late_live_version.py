"""A client joining a cluster gets the current version of a live item once, as from the
single process — not the older version the picture bucket still holds (the core writes live
entries every `picture_kv.LIVE_EVERY_S`) followed by the current one from the core.

Found by the corpus played through a cluster (`test_corpus_cluster.py`: files 053/054 and
167/168 update an item an earlier file sent; late joiners got two copies, the first one the
earlier file's). The edge now holds the bucket's live entries until the core has handled
the client's Attach (`Delivery.attached`) and drops those the core sent it meanwhile."""

from __future__ import annotations

import time

from nats.aio.client import Client as Nats

from commonsky.bench.cluster import Client, Cluster, track, until, until_async
from commonsky.cluster.wire import entry_decoder, picture_key


async def test_a_late_client_gets_a_track_updated_since_the_bucket_was_written_once(
    cluster: Cluster, nc: Nats, cluster_name: str
) -> None:
    a, b = await cluster.core_and_two_edges()
    sender = await Client("USA", a["USA"]).connect()
    watcher = await Client("USA", b["USA"]).connect()
    kv = await nc.jetstream().key_value(f"{cluster_name}_picture")
    key = picture_key("USA", ("USA", "moving-track"))

    async def bucket_lat() -> bytes | None:
        try:
            entry = await kv.get(key)
        except Exception:  # (not written yet)
            return None
        return entry_decoder.decode(entry.value).xml if entry.value else None

    await sender.send(track("moving-track", time.time(), lat=30.0))

    async def first_written() -> bool:
        return b'lat="30.0"' in (await bucket_lat() or b"")

    await until_async(first_written, "the bucket holds the first version")
    # The second version right after the bucket's live write: the next is LIVE_EVERY_S away.
    await sender.send(track("moving-track", time.time(), lat=31.0))
    await until(lambda: watcher.got('lat="31.0"') >= 1, "the watcher sees the second version")
    assert b'lat="30.0"' in (await bucket_lat() or b""), "the bucket was written again already"
    late = await Client("USA", b["USA"]).connect()
    await until(lambda: late.got('lat="31.0"') >= 1, "the late client gets the current version")
    await sender.send(track("after-the-join", time.time()))
    await until(lambda: late.got("after-the-join") >= 1, "the late client sees a later track")
    assert late.got("moving-track") == 1, late.events
    for client in (sender, watcher, late):
        await client.close()
