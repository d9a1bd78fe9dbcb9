"""`commonsky_applied` is pruned by the core: an id goes once its stream message is
acknowledged (at or below the durable consumer's ack floor) and it is older than
APPLIED_KEEP_S (30 duplicate windows); one not yet acknowledged, or recent, stays."""

from __future__ import annotations

import time

from nats.aio.client import Client as Nats

from commonsky.cluster.core import APPLIED_KEEP_S, ClusterCore
from commonsky.cluster.nats_io import ensure_stream
from commonsky.cluster.wire import Names
from commonsky.store.postgres import PostgresStore


def _ids(store: PostgresStore) -> set[str]:
    return {str(r[0]) for r in store._read("SELECT id FROM commonsky_applied", ())}


async def test_acknowledged_old_ids_are_pruned_the_rest_stay(
    nc: Nats, cluster_name: str, postgres_url: str
) -> None:
    names = Names(cluster_name)
    js = nc.jetstream()
    await ensure_stream(js, names)
    for n in range(1, 5):
        await js.publish(names.ingest("e1"), b"x", headers={"Nats-Msg-Id": f"m{n}"})
    sub = await js.pull_subscribe(names.inbound, durable=names.consumer, stream=names.stream)
    msgs = await sub.fetch(4, timeout=5)
    assert [m.metadata.sequence.stream for m in msgs] == [1, 2, 3, 4]
    for msg in msgs[:3]:  # m4 stays unacknowledged (a core died before its ack)
        await msg.ack_sync()

    store = PostgresStore(postgres_url)
    try:
        old = time.time() - APPLIED_KEEP_S - 60
        with store.transaction():
            store.mark_applied(["m1", "m2", "m4"], old, [1, 2, 4])
            store.mark_applied(["m3"], time.time(), [3])  # acknowledged, but recent
        core = ClusterCore.__new__(ClusterCore)  # (only what pruning reads)
        core.js, core.names, core.store = js, names, store
        assert _ids(store) == {"m1", "m2", "m3", "m4"}
        assert await core.prune_applied() == 2
        assert _ids(store) == {"m3", "m4"}
        assert store.applied(["m1", "m2", "m3", "m4"]) == {"m3", "m4"}
    finally:
        store.close()
        await sub.unsubscribe()
