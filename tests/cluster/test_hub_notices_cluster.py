"""The hotline desk's notices through a cluster (tests/integration/test_hub_notices.py for one
process): the sender's device on edge A goes offline, the recipient on edge B acknowledges
through the API (forwarded to the core), the sender comes back on edge B and gets the hub's
notice once; the recipient's party never gets it. Then the same across a core's failover:
the standby core holds the notice again from PostgreSQL.

The fuzz bench's parties and agreements (KOR and RUS share the hotline both ways). Traffic
in the corpus's shapes (the helpers of the single-process receipts test); every wait on an
absence is a barrier (`_settled`: test_receipts_cluster.py)."""

from __future__ import annotations

import uuid

import httpx

from commonsky.bench.cluster import Client, Cluster, until, until_async
from commonsky.bench.hubproc import OPERATOR, token
from commonsky.bench.memory import metric_sum
from tests.cluster.test_receipts_cluster import _events, _settled
from tests.integration.test_receipts import device, geochat


def _acks(client: Client, mid: str) -> list[bytes]:
    """The hub's acknowledgement notices `client` received naming message `mid`."""
    return [e for e in _events(client, "b-t-f-r", mid) if b'uid="HUB::ack-' in e]


async def _offline(cluster: Cluster, client: Client, party: str, left: int) -> None:
    """Close `client`; wait until the core holds `left` connections of `party`."""
    await client.close()
    headers = {"Authorization": f"Bearer {OPERATOR}"}
    url = f"http://127.0.0.1:{cluster.edge_http[0]}/core/metrics"

    async def gone() -> bool:
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(url, headers=headers)).text
        return metric_sum(text, "commonsky_connections", {"party": party}) == left

    await until_async(gone, f"the core lets the {party} connection go")


async def _ack(cluster: Cluster, party: str, mid: str) -> None:
    """`party` acknowledges message `mid` through an edge's API (forwarded to the core)."""
    headers = {"Authorization": f"Bearer {token(party)}"}
    base = f"http://127.0.0.1:{cluster.edge_http[1]}"
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as api:
        (message,) = [m for m in (await api.get("/api/hotline")).json() if mid in m["id"]]
        r = await api.post(f"/api/hotline/{message['id']}/ack")
        assert r.status_code == 200, r.text


async def _exchange(cluster: Cluster, failover: bool) -> None:
    a, b = await cluster.core_and_two_edges()
    standby = await cluster.core(wait=False) if failover else None
    kor_watch = await Client("KOR", b["KOR"]).connect()
    rus_watch = await Client("RUS", a["RUS"]).connect()
    sender = await Client("KOR", a["KOR"]).connect()
    await sender.send(device("KOR-DEV", "TIGER 1"))
    recipient = await Client("RUS", b["RUS"]).connect()
    await recipient.send(device("RUS-DEV", "BEAR 1"))
    await _settled(sender, kor_watch)
    await _settled(recipient, rus_watch)
    mid = str(uuid.uuid4())
    await sender.send(geochat("KOR-DEV", "TIGER 1", "RUS::RUS-DEV", "BEAR 1", mid))
    await until(lambda: bool(_events(recipient, "b-t-f", mid)), "the recipient gets the message")
    await _offline(cluster, sender, "KOR", 1)  # (kor_watch stays)
    await _ack(cluster, "RUS", mid)
    if standby is not None:
        cluster.processes[0].kill()  # (the serving core: the first process started)
        await standby.wait_log(r"cluster core \S+ serving")
    # The sender's device comes back on the other edge: the notice, once.
    back = await Client("KOR", b["KOR"]).connect()
    await back.send(device("KOR-DEV", "TIGER 1"))
    await until(lambda: bool(_acks(back, mid)), "the sender's device gets the notice", 60)
    await _settled(back, kor_watch)
    (notice,) = _acks(back, mid)
    assert f"RUS acknowledged GeoChat.KOR-DEV.BEAR 1.{mid}".encode() in notice
    # Never to the recipient's party, nor to another device of the sender's.
    assert not [e for e in await _settled(recipient, rus_watch) if b"HUB::ack-" in e]
    assert not [e for e in await _settled(kor_watch, back) if b"HUB::ack-" in e]
    # Back again in a new session: given already, never again.
    await _offline(cluster, back, "KOR", 1)
    again = await Client("KOR", a["KOR"]).connect()
    await again.send(device("KOR-DEV", "TIGER 1"))
    assert not [e for e in await _settled(again, kor_watch) if b"HUB::ack-" in e]
    for client in (kor_watch, rus_watch, recipient, again):
        await client.close()


async def test_a_notice_for_an_offline_sender_reaches_it_back_on_another_edge(
    cluster: Cluster,
) -> None:
    await _exchange(cluster, failover=False)


async def test_a_held_notice_outlives_the_cores_failover(cluster: Cluster) -> None:
    await _exchange(cluster, failover=True)
