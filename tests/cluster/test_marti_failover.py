"""kill -9 of the core that took a data package and whose operator made an enrollment token
(`commonsky serve` processes, as test_failover.py): the standby takes the lease and serves
the package byte for byte, and the token enrolls once there and is refused the second time
— both live in PostgreSQL, not in the dead core's data folder (issue 19)."""

from __future__ import annotations

import os
from pathlib import Path

from commonsky.bench.cluster import Cluster, HubText
from commonsky.bench.hubproc import hub_config
from commonsky.bench.relay import free_port
from tests.cluster.marti_core import HOST, basic, csr, issue_token, sqlite_files
from tests.conftest import RunningHub
from tests.marti.helpers import client_cert, https, make_ca
from tests.marti.uploads import HEADERS, multipart, package, sha


class Ports:
    """The marti and enroll ports of each process, by its `[server] http` port."""

    def __init__(self) -> None:
        self.by_http: dict[int, dict[str, int]] = {}

    def hub_text(self, ca: Path) -> HubText:
        def text(data_dir: Path, http: int, ports: dict[str, int], extra: str) -> str:
            own = self.by_http.setdefault(http, {"marti": free_port(), "enroll": free_port()})
            listeners = "".join(
                f'\n[[listener]]\nkind = "{kind}"\nbind = "{HOST}:{port}"\nca = "{ca}"\n'
                for kind, port in own.items()
            )
            return hub_config(data_dir, http, ports, extra) + listeners

        return text


class _At:
    """What tests.marti.helpers.https reads of a hub: the port of a listener kind."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports

    def port(self, kind: str) -> int:
        return self.ports[kind]


def at(ports: dict[str, int]) -> RunningHub:
    hub = RunningHub.__new__(RunningHub)
    hub.server = _At(ports)  # type: ignore[assignment]
    return hub


async def test_a_package_and_a_token_survive_kill_9_of_their_core(
    tmp_path: Path, cluster: Cluster
) -> None:
    ca = make_ca(tmp_path, HOST)
    usa = client_cert(ca, "USA", "usa-ops", tmp_path / "usa")
    ports = Ports()
    cluster.base = ports.hub_text(ca)
    first = await cluster.core()
    a = ports.by_http[first.http]
    data = package("MP-FAILOVER", {"blob.bin": os.urandom(1_500_000)})
    async with https(at(a), HOST, ca, "marti", usa) as client:
        up = await client.post(f"/Marti/sync/missionupload?hash={sha(data)}&filename=fo.zip",
                               content=multipart(data, "fo.zip"), headers=HEADERS)  # fmt: skip
        assert up.status_code == 200, up.text
    token = issue_token(first.config, "RUS", "rus-9")
    second = await cluster.core(wait=False)  # standing by
    first.kill()  # kill -9
    await second.wait_log(r"cluster core \S+ serving")
    b = ports.by_http[second.http]
    assert b != a
    async with https(at(b), HOST, ca, "marti", usa) as client:
        got = await client.get(f"/Marti/sync/content?hash={sha(data)}")
        assert got.status_code == 200, got.text
        assert got.content == data
    async with https(at(b), HOST, ca, "enroll") as client:
        sign = "/Marti/api/tls/signClient/v2"
        once = await client.post(sign, content=csr("RUS", "rus-9"), headers=basic("rus-9", token))
        assert once.status_code == 200, once.text
        twice = await client.post(sign, content=csr("RUS", "rus-9"), headers=basic("rus-9", token))
        assert twice.status_code == 401 and "already used" in twice.text
    for process in (first, second):
        assert sqlite_files(tmp_path / f"data-core-{process.http}") == []  # (nothing of it)
