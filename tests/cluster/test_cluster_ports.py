"""The ports a test cluster gives its processes (bench/cluster.py `Cluster.port`): held from
the moment they are chosen until the cluster stops, so that no other process is given one in
the seconds before the edge binds it. Edges bind with SO_REUSEPORT: a port another edge took
meanwhile would be shared without a word, and a TAK client's TLS handshake that the kernel
hands to the other process ends in a reset (the httpx.ConnectError test_edge_marti.py's
enrolment test met now and then)."""

from __future__ import annotations

import socket
from pathlib import Path

from commonsky.bench.cluster import Cluster
from tests.cluster.edge_tak import HOST, client, tak_cluster
from tests.marti.helpers import make_ca
from tests.test_ports import given_by_bind0


async def test_ports_chosen_for_processes_are_given_to_no_other_bind_until_the_cluster_stops(
    tmp_path: Path, cluster: Cluster
) -> None:
    ca = make_ca(tmp_path, HOST)
    with socket.socket() as freed:
        freed.bind((HOST, 0))
        free = freed.getsockname()[1]
    assert given_by_bind0(free)  # (the probe: a port that is free is given)
    ports = tak_cluster(cluster, ca)  # (the first edge's marti, enroll and tak-tls: chosen now)
    assert not [p for p in ports.first.values() if given_by_bind0(p)], ports.first
    a, _ = await cluster.edge()
    core = await cluster.core()
    # A core's marti, enroll and tak-tls ports are never bound (role "core"): held all the same.
    assert not [p for p in ports.by_http[core.http].values() if given_by_bind0(p)]
    # Held, not listening: every connection goes to the edge (enroll without credentials:
    # the edge's own 401), none to the holder.
    for _ in range(20):
        async with client(ports.by_http[a.http], ca, "enroll") as enroll:
            assert (await enroll.get("/Marti/api/tls/config")).status_code == 401
    cluster.stop()
    assert all(given_by_bind0(p) for p in ports.first.values())  # (given back at the stop)
