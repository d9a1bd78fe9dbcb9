"""kill -9 of the core that took a data package and whose operator made an enrollment token
(`commonsky serve` processes, as test_failover.py, reached through an edge): the standby
takes the lease and serves the package byte for byte, and the token enrolls once there and
is refused the second time — both live in PostgreSQL, not in the dead core's data folder
(issue 19)."""

from __future__ import annotations

import os
from pathlib import Path

from commonsky.bench.cluster import Cluster
from tests.cluster.edge_tak import HOST, client, tak_cluster
from tests.cluster.marti_core import basic, csr, issue_token, sqlite_files
from tests.marti.helpers import client_cert, make_ca
from tests.marti.uploads import HEADERS, multipart, package, sha


async def test_a_package_and_a_token_survive_kill_9_of_their_core(
    tmp_path: Path, cluster: Cluster
) -> None:
    ca = make_ca(tmp_path, HOST)
    usa = client_cert(ca, "USA", "usa-ops", tmp_path / "usa")
    ports = tak_cluster(cluster, ca)
    edge, _ = await cluster.edge()  # (the clients' one address: the cores bind no marti port)
    at = ports.by_http[edge.http]
    first = await cluster.core()
    data = package("MP-FAILOVER", {"blob.bin": os.urandom(1_500_000)})
    async with client(at, ca, "marti", usa) as marti:
        up = await marti.post(f"/Marti/sync/missionupload?hash={sha(data)}&filename=fo.zip",
                              content=multipart(data, "fo.zip"), headers=HEADERS)  # fmt: skip
        assert up.status_code == 200, up.text
    token = issue_token(first.config, "RUS", "rus-9")
    second = await cluster.core(wait=False)  # standing by
    first.kill()  # kill -9
    await second.wait_log(r"cluster core \S+ serving")
    async with client(at, ca, "marti", usa) as marti:
        got = await marti.get(f"/Marti/sync/content?hash={sha(data)}")
        assert got.status_code == 200, got.text
        assert got.content == data
    async with client(at, ca, "enroll") as enroll:
        sign = "/Marti/api/tls/signClient/v2"
        once = await enroll.post(sign, content=csr("RUS", "rus-9"), headers=basic("rus-9", token))
        assert once.status_code == 200, once.text
        twice = await enroll.post(sign, content=csr("RUS", "rus-9"), headers=basic("rus-9", token))
        assert twice.status_code == 401 and "already used" in twice.text
    for process in (first, second):
        assert sqlite_files(tmp_path / f"data-core-{process.http}") == []  # (nothing of it)
