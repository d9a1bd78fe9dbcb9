"""The cluster's stream and buckets, found made already, are checked (cluster/js_shape.py): one
made otherwise than the cluster relies on — by an edge's user before any core ran, by an
operator's `nats` command, by another application of the same name — stops the process at
start with one line naming it, each field as it is and must be, and the fix; nothing on the
server is changed (its messages and entries stay). One that differs harmlessly is used as it
is."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from commonsky.bench.cluster import Cluster, Process, cluster_config
from commonsky.cluster.identity import bind_name, bound_hub, check_name
from commonsky.cluster.js_shape import JetStreamMismatch
from commonsky.cluster.lease import Lease
from commonsky.cluster.nats_io import DUPLICATE_WINDOW_S, ensure_stream, live_bucket, picture_bucket
from commonsky.cluster.wire import Names


def _inbound(names: Names, **changes: Any) -> StreamConfig:
    """The inbound stream as the cluster makes it, with `changes`."""
    config = StreamConfig(name=names.stream, subjects=[names.inbound],
                          retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE,
                          duplicate_window=DUPLICATE_WINDOW_S)  # fmt: skip
    return dataclasses.replace(config, **changes)


async def _premade(js: JetStreamContext, config: StreamConfig, subject: str) -> StreamConfig:
    """`config` made, one message published on `subject`; the config the server holds."""
    await js.add_stream(config)
    await js.publish(subject, b"unapplied", headers={"Nats-Msg-Id": "m1"})
    return (await js.stream_info(str(config.name))).config


# (changes to the stream, what the line says of them, the fix it names)
WRONG = {
    "retention": (
        dict(retention=RetentionPolicy.LIMITS),
        "retention 'limits' (must be 'workqueue'); retention cannot be changed in place",
        "nats stream rm",
    ),
    "subject": (
        dict(subjects=["{name}.in.edge-a.*"]),
        "subjects ['{name}.in.edge-a.*'] (must be ['{name}.in.>'])",
        "nats stream edit",
    ),
    "window": (
        dict(duplicate_window=10.0),
        "duplicate window 10 s (must be at least 120 s)",
        "nats stream edit",
    ),
    "storage": (
        dict(storage=StorageType.MEMORY),
        "storage 'memory' (must be 'file'); storage cannot be changed in place",
        "nats stream rm",
    ),
    "max_age": (dict(max_age=3600.0), "max age 3600 s (must be 0, none)", "nats stream edit"),
    "limit": (
        dict(max_msgs=1000),
        "max messages 1000 (must be -1, none, while discard is 'old')",
        "nats stream edit",
    ),
}


@pytest.mark.parametrize("case", list(WRONG))
async def test_a_stream_made_otherwise_is_refused_in_one_line_and_left_as_it_was(
    nc: Nats, cluster_name: str, case: str
) -> None:
    names, js = Names(cluster_name), nc.jetstream()
    changes, said, fix = WRONG[case]
    changes = {k: [s.format(name=cluster_name) for s in v] if k == "subjects" else v
               for k, v in changes.items()}  # fmt: skip
    before = await _premade(js, _inbound(names, **changes), names.ingest("edge-a.r1"))
    with pytest.raises(JetStreamMismatch) as refused:
        await ensure_stream(js, names)
    line = str(refused.value)
    assert "\n" not in line and line.startswith(f"[cluster] name '{cluster_name}': "), line
    assert f"NATS stream {names.stream} exists with {said.format(name=cluster_name)}" in line
    assert f"`{fix} {names.stream}`" in line, line
    info = await js.stream_info(names.stream)
    assert info.config == before  # (nothing edited)
    assert info.state.messages == 1  # (nothing removed)


async def test_a_stream_and_bucket_that_differ_harmlessly_are_used_as_they_are(
    nc: Nats, cluster_name: str
) -> None:
    """A longer duplicate window, a limit with discard `new`, a description; a bucket with a
    size limit and a description (as `nats kv add` might make it): the server's create
    refuses those ("already in use with a different configuration"), the check takes them."""
    names, js = Names(cluster_name), nc.jetstream()
    longer = _inbound(names, duplicate_window=600.0, discard=DiscardPolicy.NEW,
                      max_msgs=1_000_000, description="made by hand")  # fmt: skip
    before = await _premade(js, longer, names.ingest("edge-a.r1"))
    by_hand = KeyValueConfig(bucket=names.picture, history=1, storage=StorageType.FILE,
                             max_bytes=10_000_000, description="made by hand")  # fmt: skip
    await js.create_key_value(config=by_hand)
    await ensure_stream(js, names)
    kv = await picture_bucket(js, names)
    await kv.put("k", b"v")
    assert (await kv.get("k")).value == b"v"
    assert (await js.stream_info(names.stream)).config == before
    info = await js.stream_info(f"KV_{names.picture}")
    assert info.config.description == "made by hand" and info.config.max_bytes == 10_000_000


async def test_a_bucket_made_otherwise_is_refused_in_one_line_and_left_as_it_was(
    nc: Nats, cluster_name: str
) -> None:
    names, js = Names(cluster_name), nc.jetstream()
    picture = await js.create_key_value(config=KeyValueConfig(
        bucket=names.picture, history=5, storage=StorageType.FILE))  # fmt: skip
    live = await js.create_key_value(config=KeyValueConfig(
        bucket=names.live, history=1, storage=StorageType.MEMORY, ttl=60.0))  # fmt: skip
    await picture.put("k", b"one")
    await picture.put("k", b"two")
    await live.put("k", b"held")
    with pytest.raises(JetStreamMismatch) as refused:
        await picture_bucket(js, names)
    line = str(refused.value)
    assert "\n" not in line, line
    assert f"NATS KV bucket {names.picture} exists with history 5 (must be 1): " in line, line
    assert f"`nats stream edit KV_{names.picture}`" in line, line
    with pytest.raises(JetStreamMismatch) as refused:
        await live_bucket(js, names)
    line = str(refused.value)
    assert (
        f"NATS KV bucket {names.live} exists with storage 'memory' (must be 'file'), "
        "ttl 60 s (must be 0, none); storage cannot be changed in place"
    ) in line, line
    assert f"`nats kv rm {names.live}`" in line, line
    assert (await js.stream_info(f"KV_{names.picture}")).state.messages == 2
    assert (await js.stream_info(f"KV_{names.picture}")).config.max_msgs_per_subject == 5
    assert (await live.get("k")).value == b"held"


async def _refused(cluster: Cluster, role: str) -> str:
    """The one line a process of `role` stopping at start printed (exit status 2)."""
    ports = {party: cluster.port() for party in cluster.parties}
    http = cluster.port()
    config = cluster_config(cluster.folder, cluster.name, cluster.nats_url, cluster.store_url,
                            role, ports, http)  # fmt: skip
    return await _exited(cluster.started(config, role, http))


async def _exited(process: Process) -> str:
    """The one line `process`, stopping at start, printed (exit status 2)."""
    assert process.proc is not None
    status = await asyncio.to_thread(process.proc.wait, 60)
    text = process.text()
    assert status == 2 and "Traceback" not in text, text
    lines = [line for line in text.strip().splitlines() if " INFO " not in line]
    assert len(lines) == 1 and lines[0].startswith("commonsky: error: [cluster] "), text
    return lines[0]


async def test_an_edge_and_a_core_say_it_in_the_one_line_they_stop_with(
    cluster: Cluster, nc: Nats
) -> None:
    names, js = Names(cluster.name), nc.jetstream()
    await _premade(js, _inbound(names, retention=RetentionPolicy.LIMITS), names.ingest("e.r"))
    line = await _refused(cluster, "edge")
    assert f"NATS stream {names.stream} exists with retention 'limits'" in line, line
    await js.delete_stream(names.stream)
    await js.create_key_value(config=KeyValueConfig(
        bucket=names.live, history=1, storage=StorageType.MEMORY))  # fmt: skip
    line = await _refused(cluster, "core")
    assert f"NATS KV bucket {names.live} exists with storage 'memory'" in line, line
    assert (await js.stream_info(names.stream)).state.messages == 0  # (the core made it)


# (a lease bucket as another run would have made it, what the line says of it, the fix)
LEASE = {
    "ttl": (
        dict(ttl=30.0),
        "ttl 30 s (must be 5 s, as $.cluster.lease_ttl_s says): stop every process of the "
        "cluster, remove it with `nats kv rm {lease}`",
        "or set $.cluster.lease_ttl_s back to 30 (or, if it is not this cluster's",
    ),
    "storage": (
        dict(ttl=5.0, storage=StorageType.MEMORY),
        "storage 'memory' (must be 'file'); storage cannot be changed in place: stop every "
        "process of the cluster, remove it with `nats kv rm {lease}`",
        "start them again (or, if it is not this cluster's",
    ),
}


@pytest.mark.parametrize("case", list(LEASE))
async def test_a_lease_bucket_of_another_ttl_is_refused_in_one_line_and_left_as_it_was(
    nc: Nats, cluster_name: str, case: str
) -> None:
    """lease_ttl_s changed between two runs: renewing every 5/3 s against a TTL of 30 s is
    harmless, but the other way round (or a memory bucket emptied by a nats-server restart)
    the entry can vanish while its holder believes it holds the lease, and a standby takes it
    too. The server's create refused the bucket as a traceback ("already in use")."""
    names, js = Names(cluster_name), nc.jetstream()
    changes, said, also = LEASE[case]
    config = dict(bucket=names.lease, history=1, storage=StorageType.FILE) | changes
    old = await js.create_key_value(config=KeyValueConfig(**config))  # type: ignore[arg-type]
    await old.create("core", b"a core of the run before")
    before = (await js.stream_info(f"KV_{names.lease}")).config
    lease = Lease(js, bucket=names.lease, holder="core-b", ttl_s=5.0)
    with pytest.raises(JetStreamMismatch) as refused:
        await lease.try_acquire()
    line = str(refused.value)
    assert "\n" not in line and line.startswith(f"[cluster] name '{cluster_name}': "), line
    assert f"NATS KV bucket {names.lease} exists with {said.format(lease=names.lease)}" in line
    assert also in line, line
    assert not lease.held
    assert (await js.stream_info(f"KV_{names.lease}")).config == before  # (nothing edited)
    assert (await old.get("core")).value == b"a core of the run before"


async def test_an_identity_bucket_with_a_ttl_is_refused_in_one_line_and_left_as_it_was(
    nc: Nats, cluster_name: str
) -> None:
    """A binding that expires frees the name for another hub's core: refused."""
    names, js = Names(cluster_name), nc.jetstream()
    hub = await js.create_key_value(config=KeyValueConfig(
        bucket=names.identity, history=1, storage=StorageType.FILE, ttl=3600.0))  # fmt: skip
    await hub.create("hub_id", b"hub-a")
    with pytest.raises(JetStreamMismatch) as refused:
        await check_name(js, names, "hub-a")
    line = str(refused.value)
    assert "\n" not in line, line
    assert f"NATS KV bucket {names.identity} exists with ttl 3600 s (must be 0, none): " in line
    assert f"`nats stream edit KV_{names.identity}`" in line, line
    assert (await js.stream_info(f"KV_{names.identity}")).config.max_age == 3600.0
    assert (await hub.get("hub_id")).value == b"hub-a"


async def test_lease_and_identity_buckets_that_differ_harmlessly_are_used_as_they_are(
    nc: Nats, cluster_name: str
) -> None:
    """Kept history, a description, a size limit (as `nats kv add` might make them): the
    lease holds, renews and releases, the name binds and checks."""
    names, js = Names(cluster_name), nc.jetstream()
    await js.create_key_value(config=KeyValueConfig(
        bucket=names.lease, history=5, ttl=5.0, storage=StorageType.FILE,
        description="made by hand", max_bytes=1_000_000))  # fmt: skip
    await js.create_key_value(config=KeyValueConfig(
        bucket=names.identity, history=10, storage=StorageType.FILE,
        description="made by hand"))  # fmt: skip
    lease = Lease(js, bucket=names.lease, holder="core-a", ttl_s=5.0)
    assert await lease.try_acquire() and await lease.renew() and lease.held
    await lease.release()
    other = Lease(js, bucket=names.lease, holder="core-b", ttl_s=5.0)
    assert await other.try_acquire()  # (after a release: the delete marker in the history)
    await bind_name(js, names, "hub-a")
    await check_name(js, names, "hub-a")
    assert await bound_hub(js, names) == "hub-a"
    for bucket, history in ((names.lease, 5), (names.identity, 10)):
        config = (await js.stream_info(f"KV_{bucket}")).config
        assert (config.description, config.max_msgs_per_subject) == ("made by hand", history)


async def test_a_core_whose_lease_ttl_changed_since_its_last_run_stops_with_one_line(
    cluster: Cluster, nc: Nats
) -> None:
    names, js = Names(cluster.name), nc.jetstream()
    first = await cluster.core()
    first.stop()
    assert (await js.stream_info(f"KV_{names.lease}")).config.max_age == 5.0
    changed = first.config.with_name("core-changed.toml")
    text = first.config.read_text()
    assert "lease_ttl_s = 5.0\n" in text
    changed.write_text(text.replace("lease_ttl_s = 5.0\n", "lease_ttl_s = 7.0\n"))
    line = await _exited(cluster.started(changed, "core"))
    assert (
        f"NATS KV bucket {names.lease} exists with ttl 5 s (must be 7 s, as "
        "$.cluster.lease_ttl_s says)"
    ) in line, line
    assert f"`nats kv rm {names.lease}`" in line and "lease_ttl_s back to 5" in line, line
    assert (await js.stream_info(f"KV_{names.lease}")).config.max_age == 5.0
