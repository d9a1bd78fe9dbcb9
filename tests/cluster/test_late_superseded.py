"""A key whose picture entry changes kind is written before the outputs of its new version
leave the core, like a durable item's (`picture_kv.PictureWriter._urgent`).

The bug: a live item (track) taking the key of a durable one (marker) was noted as live, so
its entry was written by the periodic live flush (every `LIVE_EVERY_S`), after its outputs
left. Meanwhile the bucket held the marker, an edge replays durable entries at once, and a
client connecting then got the marker its peers no longer had — then the track from the
core. The same held for an entry a party may no longer have: a track superseded by a version
that party may not see (or one that arrived stale) kept its entry until the live flush, and
the edge gave it to the late joiner once the core had answered (the core sends nothing for
a key it no longer holds for the party).

Each test first waits for a live flush (a track's entry appearing), so the next one is
`LIVE_EVERY_S` away: the old code fails every time, not only when a flush happens to lag."""

from __future__ import annotations

import time
from pathlib import Path

from nats.aio.client import Client as Nats
from nats.js.kv import KeyValue

from commonsky.bench.cluster import Client, Cluster, marker, track, until, until_async
from commonsky.cluster.wire import PictureEntry, entry_decoder, picture_key


def usa_rus_markers(data_dir: Path, http: int, ports: dict[str, int], extra: str = "") -> str:
    """USA and RUS; USA's markers go to RUS, its tracks do not."""
    lines = [f'[server]\ndata_dir = "{data_dir}"\nhttp = "127.0.0.1:{http}"\n{extra}']
    for party in ("USA", "RUS"):
        lines.append(f'[[listener]]\nkind = "tak-tcp"\nbind = "127.0.0.1:{ports[party]}"\n'
                     f'party = "{party}"\n[[party]]\nid = "{party}"\n')  # fmt: skip
    lines.append('[[agreement]]\nname = "markers"\nfrom = "USA"\nto = ["RUS"]\n'
                 'categories = ["marker"]\ndisclosure = "full"\n')  # fmt: skip
    return "\n".join(lines)


async def entry(kv: KeyValue, viewer: str, key: tuple[str, str]) -> PictureEntry | None:
    """The bucket's entry of `key` for `viewer`, or None (never written, or deleted)."""
    try:
        got = await kv.get(picture_key(viewer, key))
    except Exception:  # (KeyNotFoundError, KeyDeletedError)
        return None
    return entry_decoder.decode(got.value) if got.value else None


async def after_a_live_flush(kv: KeyValue, sender: Client, uid: str) -> None:
    """Send a track and wait until its entry is in the bucket: a live flush just ran."""
    await sender.send(track(uid, time.time()))

    async def written() -> bool:
        return await entry(kv, "USA", ("USA", uid)) is not None

    await until_async(written, f"the live flush writes {uid}")


async def settled(late: Client, peer: Client, sender: Client, name: str) -> None:
    """Wait until the core has handled `late`'s Attach and the edge gave it the bucket's live
    entries (`Delivery.attached`): `late` sends a marker (behind its Attach in the stream),
    `peer` (its party's) gets it, then `sender`'s next item reaches `late` — after the word."""
    await late.send(marker(f"{name}-here", time.time()))
    await until(lambda: peer.got(f"{name}-here") >= 1, f"{name}'s marker applied")
    await sender.send(marker(f"{name}-after", time.time()))
    await until(lambda: late.got(f"{name}-after") >= 1, f"{name} gets a later item")


async def test_a_track_replacing_a_marker_is_in_the_bucket_before_its_peers_get_it(
    cluster: Cluster, nc: Nats, cluster_name: str
) -> None:
    a, b = await cluster.core_and_two_edges()
    kv = await nc.jetstream().key_value(f"{cluster_name}_picture")
    sender = await Client("USA", a["USA"]).connect()
    watcher = await Client("USA", b["USA"]).connect()
    await sender.send(marker("shape-shifter", time.time()))
    await until(lambda: watcher.got("b-m-p-s-m") >= 1, "the watcher gets the marker")
    await after_a_live_flush(kv, sender, "sync-1")
    await sender.send(track("shape-shifter", time.time(), lat=33.0))
    await until(lambda: watcher.got('lat="33.0"') >= 1, "the watcher gets the track")
    held = await entry(kv, "USA", ("USA", "shape-shifter"))
    assert held is not None and not held.durable and b'lat="33.0"' in held.xml, held
    late = await Client("USA", b["USA"]).connect()
    await settled(late, watcher, sender, "late")
    got = [e for e in late.events if b'uid="shape-shifter"' in e]
    assert len(got) == 1 and b'lat="33.0"' in got[0], got
    for client in (sender, watcher, late):
        await client.close()


async def test_an_entry_a_party_may_no_longer_have_goes_before_the_outputs_leave(
    tmp_path: Path, cluster_name: str, postgres_url: str, nc: Nats
) -> None:
    from .conftest import NATS_URL

    cluster = Cluster(tmp_path, cluster_name, NATS_URL, postgres_url, ("USA", "RUS"),
                      usa_rus_markers)  # fmt: skip
    try:
        a, b = await cluster.core_and_two_edges()
        kv = await nc.jetstream().key_value(f"{cluster_name}_picture")
        sender = await Client("USA", a["USA"]).connect()
        rus = await Client("RUS", b["RUS"]).connect()
        usa = await Client("USA", b["USA"]).connect()
        now = time.time()
        await sender.send(marker("hidden-next", now))
        await sender.send(track("goes-stale", now, lat=34.0))
        await until(lambda: rus.got("USA::hidden-next") >= 1, "RUS gets USA's marker")
        await until(lambda: usa.got("goes-stale") >= 1, "USA's watcher gets the track")
        await after_a_live_flush(kv, sender, "sync-2")
        assert await entry(kv, "USA", ("USA", "goes-stale")) is not None
        # A track under the marker's uid (RUS may not see it), and the track's version that
        # arrived stale (in nobody's picture).
        await sender.send(track("hidden-next", time.time()))
        await sender.send(track("goes-stale", time.time(), lat=35.0, stale_s=-60))
        await until(lambda: usa.got('lat="35.0"') >= 1, "USA's watcher gets the stale version")
        assert await entry(kv, "RUS", ("USA", "hidden-next")) is None
        assert await entry(kv, "USA", ("USA", "goes-stale")) is None
        late_rus = await Client("RUS", b["RUS"]).connect()
        late_usa = await Client("USA", b["USA"]).connect()
        await settled(late_rus, rus, sender, "late-rus")
        await settled(late_usa, usa, sender, "late-usa")
        assert late_rus.got("hidden-next") == 0, late_rus.events
        assert late_usa.got("goes-stale") == 0, late_usa.events
        for client in (sender, rus, usa, late_rus, late_usa):
            await client.close()
    finally:
        cluster.stop()
