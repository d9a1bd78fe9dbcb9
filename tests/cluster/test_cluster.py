"""Two edges and a core as their own processes (`commonsky serve` with `[cluster]`), on the
machine's NATS and a fresh PostgreSQL database: clients on different edges see each other's
items under the agreements (bench/fuzz.hub_config's), and nothing else reaches them — or
reaches an edge holding no entitled client; a client connecting later gets its picture from
the bucket even while no core runs."""

from __future__ import annotations

import contextlib
import time

from nats.aio.client import Client as Nats
from nats.js.errors import NoKeysError

from commonsky.bench.cluster import Client, Cluster, chat, marker, track, until, until_async
from commonsky.cluster.wire import delivery_decoder, picture_key


async def test_clients_on_two_edges_see_what_the_agreements_give(
    cluster: Cluster, nc: Nats, cluster_name: str
) -> None:
    # Every delivery to every edge, as it crosses NATS: what reached which client.
    crossed: list[tuple[str, str, bytes]] = []  # (edge subject, conn id, bytes)

    async def spy(msg: object) -> None:
        delivery = delivery_decoder.decode(msg.data)  # type: ignore[attr-defined]
        for conn, at in delivery.pairs():
            crossed.append((msg.subject, conn, delivery.outputs[at].data))  # type: ignore[attr-defined]

    await nc.subscribe(f"{cluster_name}.out.>", cb=spy)
    a, b = await cluster.core_and_two_edges()
    usa = await Client("USA", a["USA"]).connect()
    kor = await Client("KOR", a["KOR"]).connect()
    kor2 = await Client("KOR", a["KOR"]).connect()
    rus = await Client("RUS", b["RUS"]).connect()
    jpn = await Client("JPN", b["JPN"]).connect()
    usa2 = await Client("USA", b["USA"]).connect()

    now = time.time()
    await usa.send(track("us-track-1", now))
    # us-ru: tracks in full; us-jp: generalized (its own uid and callsign never shown);
    # USA's own clients on the other edge; KOR has no agreement with USA.
    await until(lambda: rus.got("us-track-1") >= 1, "RUS (edge B) sees USA's track")
    await until(lambda: usa2.got("us-track-1") >= 1, "USA's other client (edge B) sees it")
    await until(lambda: len(jpn.events) >= 1, "JPN (edge B) gets the generalized track")
    assert jpn.got("us-track-1") == 0, jpn.events
    # Barrier for KOR: a later item to KOR through the same edge, after the core handled
    # USA's (RUS has it); the core sends to one edge in order, so USA's would be before.
    await kor2.send(track("kor-own-1", time.time()))
    await until(lambda: kor.got("kor-own-1") >= 1, "KOR sees its own party's track")
    assert kor.got("us-track-1") == 0, kor.events
    # Hotline RUS -> KOR (ru-kr) across edges; never to USA or JPN.
    await rus.send(chat("ru-kr-chat-1", "KOR", time.time()))
    await until(lambda: kor.got("ru-kr-chat-1") >= 1, "KOR (edge A) gets RUS's hotline message")
    await usa.send(track("us-track-2", time.time()))
    await until(lambda: rus.got("us-track-2") >= 1, "RUS sees USA's second track")
    await until(lambda: usa2.got("us-track-2") >= 1, "USA (edge B) sees USA's second track")
    for client in (usa, usa2, jpn):
        assert client.got("ru-kr-chat-1") == 0, (client.party, client.events)
    # No broadcast-and-filter: what crossed NATS went only to entitled clients' edges.
    port_party = {port: party for ports in cluster.edge_ports for party, port in ports.items()}
    for subject, conn, data in crossed:
        party = port_party[int(conn.split("#")[0].rsplit(":", 1)[1])]
        if b"us-track-1" in data:
            assert party in ("USA", "RUS"), (subject, conn)
        if b"ru-kr-chat-1" in data:
            assert party in ("RUS", "KOR"), (subject, conn)
    for client in (usa, kor, kor2, rus, jpn, usa2):
        await client.close()


async def test_a_late_client_gets_its_picture_from_the_bucket_without_a_core(
    cluster: Cluster, nc: Nats, cluster_name: str
) -> None:
    core = await cluster.core()
    _, a = await cluster.edge()
    _, b = await cluster.edge()
    usa = await Client("USA", a["USA"]).connect()
    rus = await Client("RUS", b["RUS"]).connect()
    await usa.send(track("us-late-1", time.time()))
    jpn = await Client("JPN", b["JPN"]).connect()
    await jpn.send(chat("jp-us-chat-1", "USA", time.time()))  # (jp-us: hotline in full)
    await until(lambda: rus.got("us-late-1") >= 1, "RUS sees USA's track live")
    # The core writes the bucket a moment after it delivers: wait for both entries.
    kv = await nc.jetstream().key_value(f"{cluster_name}_picture")
    wanted = {picture_key("RUS", ("USA", "us-late-1")), picture_key("USA", ("JPN", "jp-us-chat-1"))}
    held: set[str] = set()

    async def poll() -> bool:
        with contextlib.suppress(NoKeysError):
            held.update(await kv.keys())
        return wanted <= held

    await until_async(poll, "the picture bucket holds both items")
    core.kill()  # no core now: the picture comes from the bucket
    late = await Client("RUS", a["RUS"]).connect()
    await until(lambda: late.got("us-late-1") >= 1, "a late RUS client gets USA's track")
    late_usa = await Client("USA", b["USA"]).connect()
    await until(lambda: late_usa.got("jp-us-chat-1") >= 1, "a late USA client gets the message")
    kor = await Client("KOR", b["KOR"]).connect()
    # A new core (the one that died is not coming back) sends what the bucket did not give.
    await cluster.core()
    await usa.send(track("us-late-2", time.time()))
    await until(lambda: late.got("us-late-2") >= 1, "the late RUS client gets live items")
    await kor.send(track("kor-late-barrier", time.time()))
    kor2 = await Client("KOR", a["KOR"]).connect()
    await until(lambda: kor2.got("kor-late-barrier") >= 1, "a late KOR client gets KOR's track")
    for uid in ("us-late-1", "us-late-2", "jp-us-chat-1"):
        assert kor2.got(uid) == 0 and kor.got(uid) == 0, uid
    # Nothing twice: the picture from the bucket and the core's rest do not overlap.
    assert late.got("us-late-1") == 1, late.uids()
    assert late_usa.got("jp-us-chat-1") == 1, late_usa.uids()
    for client in (usa, rus, late, jpn, late_usa, kor, kor2):
        await client.close()


async def test_two_processes_of_role_all_fail_over_to_each_other(cluster: Cluster) -> None:
    first, a = await cluster.both(serving=True)
    _, b = await cluster.both(serving=False)
    usa = await Client("USA", a["USA"]).connect()
    rus = await Client("RUS", b["RUS"]).connect()
    await usa.send(track("all-track-1", time.time()))
    await usa.send(marker("all-marker-1", time.time()))
    await until(lambda: rus.got("all-track-1") >= 1, "RUS (second process) sees USA's track")
    usa_b = await Client("USA", b["USA"]).connect()
    await until(lambda: usa_b.got("all-marker-1") >= 1, "USA's client on the second process")
    first.kill()  # its edge and the core go: the second process's core takes over
    usa2 = await Client("USA", b["USA"]).connect()
    # (A stored item; live tracks, kept in memory only, go with the core as in one process.)
    await until(lambda: usa2.got("all-marker-1") >= 1, "USA, reconnected, gets its picture")
    await usa2.send(track("all-track-2", time.time()))
    await until(lambda: rus.got("all-track-2") >= 1, "RUS gets what follows from the new core")
    assert not rus.closed.is_set()
    for client in (usa, rus, usa_b, usa2):
        await client.close()


async def test_edges_share_a_port_and_one_takes_the_clients_of_another(
    cluster: Cluster,
) -> None:
    await cluster.core()
    first, ports = await cluster.edge()
    second, same = await cluster.edge(ports)  # the same ports: SO_REUSEPORT, not "in use"
    assert same == ports
    # The kernel spreads new connections over both edges; a client of each party on each.
    # (16 clients: all on one edge by chance once in 32,768 runs.)
    usa = [await Client("USA", ports["USA"]).connect() for _ in range(16)]
    await usa[0].send(marker("shared-port-marker", time.time()))
    for client in usa[1:]:
        await until(lambda c=client: c.got("shared-port-marker") >= 1, "every USA client")
    first.kill()
    # Whoever was on the dead edge reconnects to the same address: the other edge answers,
    # with the picture, and what is sent now reaches the clients that stayed.
    again = await Client("USA", ports["USA"]).connect()
    await until(lambda: again.got("shared-port-marker") >= 1, "a reconnected client's picture")
    await again.send(marker("after-the-kill", time.time()))
    for client in usa:  # each one was on the dead edge (closed) or gets it from the other
        await until(lambda c=client: c.closed.is_set() or c.got("after-the-kill") >= 1,
                    "each client closed with its edge, or served by the other")  # fmt: skip
    stayed = [c for c in usa if c.got("after-the-kill")]
    assert stayed and len(stayed) < len(usa), "the kernel spread the clients over both edges"
    assert all(c.closed.is_set() for c in usa if c not in stayed)
    assert second.proc is not None and second.proc.poll() is None
    for client in (*usa, again):
        await client.close()


async def test_a_refusal_decided_by_the_core_reaches_the_clients_session(cluster: Cluster) -> None:
    await cluster.core()
    edge, ports = await cluster.edge()
    jpn = await Client("JPN", ports["JPN"]).connect()
    # A launch report whose body is not JSON: the launch desk's check (on the core) refuses.
    bad = marker("bad-launch-1", time.time()).replace(b'type="b-m-p-s-m"', b'type="b-l-r"')
    await jpn.send(bad.replace(b"<detail>", b"<detail><csky_launch>{not json</csky_launch>"))
    await edge.wait_log(r"refused by the core \(launch-report-invalid\)")
    await jpn.send(marker("after-refusal", time.time()))  # the connection goes on
    jpn2 = await Client("JPN", ports["JPN"]).connect()
    await until(lambda: jpn2.got("after-refusal") >= 1, "JPN's next item is relayed")
    assert not jpn.closed.is_set()
    for client in (jpn, jpn2):
        await client.close()
