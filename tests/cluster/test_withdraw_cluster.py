"""An agreement's end takes its markers off the recipients' maps on a cluster too: the core's
hub withdraws them (hub/withdraw.py) through its proxy connections, and the edges write the
deletes to their clients. Real `commonsky serve` processes on NATS and PostgreSQL; the
agreement ends in real time, a little after the cluster is up."""

from __future__ import annotations

import time
from pathlib import Path

from commonsky.bench.cluster import Client, Cluster, HubText, marker, track, until
from commonsky.bench.hubproc import hub_config
from commonsky.times import format_time

LEAD_S = 30.0  # the agreement ends this long after the test starts: the cluster is up by then


def with_ending_markers(until_at: float) -> HubText:
    def base(folder: Path, http: int, ports: dict[str, int], extra: str) -> str:
        return hub_config(folder, http, ports, extra) + (
            '\n[[agreement]]\nname = "us-jp-markers"\nfrom = "USA"\nto = ["JPN"]\n'
            f'categories = ["marker"]\ndisclosure = "full"\n'
            f'valid_until = "{format_time(until_at)}"\n'
        )

    return base


async def test_an_agreements_end_deletes_its_marker_from_the_recipients_clients(
    cluster: Cluster,
) -> None:
    end = time.time() + LEAD_S
    cluster.base = with_ending_markers(end)
    await cluster.core()
    _, a = await cluster.edge()
    usa = await Client("USA", a["USA"]).connect()
    jpn = await Client("JPN", a["JPN"]).connect()
    kor = await Client("KOR", a["KOR"]).connect()
    await usa.send(marker("US-SPOT", time.time()))
    await until(lambda: jpn.got('uid="USA::US-SPOT"') >= 1, "JPN sees USA's marker")
    assert time.time() < end, "the cluster was not up before the agreement ended: raise LEAD_S"
    usa_before = len(usa.events)
    await until(
        lambda: jpn.got('type="t-x-d-d"') >= 1, "JPN is told to delete", deadline=LEAD_S + 60
    )
    (delete,) = [e for e in jpn.events if b'type="t-x-d-d"' in e]
    assert b'<link uid="USA::US-SPOT"' in delete
    # Barriers: a track of each party's own (its clients are sent their party's tracks).
    late = await Client("JPN", a["JPN"]).connect()
    for party, client in (("USA", usa), ("KOR", kor), ("JPN", jpn)):
        mate = await Client(party, a[party]).connect()
        await mate.send(track(f"{party}-BARRIER", time.time()))
        for seer in (client, late) if party == "JPN" else (client,):
            await until(lambda c=seer, p=party: c.got(f"{p}-BARRIER") >= 1, f"{party}'s barrier")
        await mate.close()
    # A client connecting after the end is not given the marker, and is told to take it
    # off (it may have been away at the end: `Withdrawals.owed`, through the core's replay).
    assert "USA::US-SPOT" not in late.uids()
    (owed,) = [e for e in late.events if b'type="t-x-d-d"' in e]
    assert b'<link uid="USA::US-SPOT"' in owed
    assert not [e for e in usa.events[usa_before:] if b"t-x-d-d" in e]
    assert kor.got("US-SPOT") == 0
    for client in (usa, jpn, kor, late):
        await client.close()


async def test_an_owners_delete_is_owed_after_the_core_is_killed(cluster: Cluster) -> None:
    """JPN's client was away when USA deleted its marker, and the core was killed (SIGKILL)
    before it came back: the next core owes the delete again (the tombstone in PostgreSQL),
    so the client is sent it with its replay, which no longer names the marker."""
    cluster.base = with_ending_markers(time.time() + 3600)
    core = await cluster.core()
    _, a = await cluster.edge()
    usa, mate = await Client("USA", a["USA"]).connect(), await Client("USA", a["USA"]).connect()
    jpn = await Client("JPN", a["JPN"]).connect()
    now = time.time()
    await usa.send(marker("GONE", now))
    await usa.send(marker("KEPT", now))
    await until(lambda: jpn.got('uid="USA::KEPT"') >= 1, "JPN sees USA's markers")
    await jpn.close()
    delete = (
        f'<event version="2.0" uid="del-GONE" type="t-x-d-d" time="{format_time(now)}" '
        f'start="{format_time(now)}" stale="{format_time(now + 60)}" how="h-e">'
        '<point lat="0" lon="0" hae="0" ce="10" le="10"/><detail>'
        '<link uid="GONE" relation="none" type="b-m-p-s-m"/><__forcedelete/></detail></event>'
    )
    await usa.send(delete.encode())
    await usa.send(marker("AFTER", now))  # (once its mate has it, the delete was applied)
    await until(lambda: mate.got('uid="AFTER"') >= 1, "USA's mate sees the marker after")
    core.kill()
    await cluster.core()  # (serving once the killed core's lease lapsed)
    back = await Client("JPN", a["JPN"]).connect()
    # (the edge replays the picture bucket first; the core, the deletes owed with the rest)
    await until(lambda: back.got('<link uid="USA::GONE"') >= 1, "JPN is told to delete")
    await until(lambda: back.got('uid="USA::AFTER"') >= 1, "JPN's replay")
    assert "USA::GONE" not in back.uids() and "USA::KEPT" in back.uids()
    for client in (usa, mate, back):
        await client.close()
