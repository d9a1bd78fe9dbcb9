"""A durable item's picture entry is written before its outputs leave the core
(`ClusterCore._sender`): a client that connects after its peers were given version n of an
item never reads an older version from the bucket (it used to: the core wrote the bucket a
moment after delivering, so a late joiner could get v(n-1) from the bucket, then v(n))."""

from __future__ import annotations

import re
import time

from commonsky.bench.cluster import Client, Cluster, until
from commonsky.times import format_time

_VERSION = re.compile(rb'callsign="[^"]*-v(\d+)"')


def marker_version(uid: str, version: int, now: float) -> bytes:
    """Spot marker `uid` (durable), its version in its callsign."""
    return (
        f'<event version="2.0" uid="{uid}" type="b-m-p-s-m" time="{format_time(now)}" '
        f'start="{format_time(now)}" stale="{format_time(now + 3600)}" how="h-g-i-g-o">'
        f'<point lat="35" lon="{139 + version * 0.01}" hae="0" ce="10" le="10"/><detail>'
        f'<contact callsign="{uid}-v{version}"/></detail></event>'
    ).encode()


def versions(client: Client, uid: str) -> list[int]:
    """The versions of `uid` the client received, in order."""
    needle = f'uid="{uid}"'.encode()
    return [int(m.group(1)) for e in client.events if needle in e
            if (m := _VERSION.search(e))]  # fmt: skip


async def test_a_late_joiner_never_reads_a_version_older_than_its_peers_got(
    cluster: Cluster,
) -> None:
    a, b = await cluster.core_and_two_edges()
    sender = await Client("USA", a["USA"]).connect()
    peer = await Client("USA", b["USA"]).connect()
    late: list[Client] = []
    uid = "us-marker-order"
    for version in range(1, 7):
        await sender.send(marker_version(uid, version, time.time()))
        # Barrier: a client already there was given version n ...
        await until(lambda v=version: v in versions(peer, uid), f"the peer gets v{version}")
        # ... so a client connecting now, on either edge, starts from version n.
        joiner = await Client("USA", (a, b)[version % 2]["USA"]).connect()
        late.append(joiner)
        await until(lambda j=joiner, v=version: v in versions(j, uid),
                    f"the late joiner gets v{version}")  # fmt: skip
        got = versions(joiner, uid)
        assert min(got) == version, (version, got)
    assert versions(peer, uid) == sorted(versions(peer, uid))
    for client in (sender, peer, *late):
        await client.close()
