"""Hostile frames published straight onto the cluster's inbound stream, past every edge, to
a real core (`commonsky serve`, role core) with a real edge and TAK clients: each is dropped
(counted in the core's /metrics by reason, one line naming the edge and the reason), none
reaches a client, and the core serves on (cluster/trust.py)."""

from __future__ import annotations

import asyncio
import re
import time

import msgspec
from nats.aio.client import Client as Nats

from commonsky.bench.cluster import Client, Cluster, track, until, until_async
from commonsky.bench.hubproc import http_get, hub_config, parse_metrics
from commonsky.cluster.trust import envelope_limit
from commonsky.cluster.wire import Ingest, Names, Roster, encode, roster_decoder
from commonsky.protocol.cot import parse_event
from commonsky.settings import defaults
from tests.cluster.test_trust import INJECTED


async def edge_roster(nc: Nats, names: Names, clients: int) -> Roster:
    """The edge's beat once it lists `clients` clients (who it says they are)."""
    beats: asyncio.Queue[Roster] = asyncio.Queue()

    async def got(msg: object) -> None:
        beats.put_nowait(roster_decoder.decode(msg.data))  # type: ignore[attr-defined]

    sub = await nc.subscribe(names.beats, cb=got)
    try:
        async with asyncio.timeout(60):
            while len((roster := await beats.get()).conns) < clients:
                pass
        return roster
    finally:
        await sub.unsubscribe()


async def test_hostile_frames_on_the_stream_are_dropped_counted_and_said_once(
    cluster: Cluster, nc: Nats, cluster_name: str
) -> None:
    names = Names(cluster_name)
    # An event's limit whose envelope limit (`envelope_limit`: 6x, plus 64 KiB) is under the
    # NATS server's 1 MiB max_payload: a frame over it can still be published, and the core's
    # own size check is what refuses it (at the default 256 KiB, NATS refuses it first).
    limit = 65536
    cluster.base = lambda data, http, ports, more: hub_config(
        data, http, ports, f"{more}limit_message_bytes = {limit}\n"
    )
    oversize = envelope_limit(defaults().replace(limit_message_bytes=limit)) + 1
    core = await cluster.core()
    _, ports = await cluster.edge()
    usa = await Client("USA", ports["USA"]).connect()
    rus = await Client("RUS", ports["RUS"]).connect()
    kor = await Client("KOR", ports["KOR"]).connect()
    # The clients are announced once each has sent something (and the edge read its picture).
    for client in (usa, rus, kor):
        await client.send(track(f"hello-{client.party}", time.time()))
    await until(lambda: rus.got("hello-USA") >= 1, "RUS sees USA's first track")
    roster = await edge_roster(nc, names, 3)
    edge = roster.edge
    conn = {info.party: info.conn for info in roster.conns}
    js = nc.jetstream()
    now = time.time()

    def ingest(n: int, name: str, party: str = "USA", on: str = "USA", **event: object) -> Ingest:
        made = msgspec.structs.replace(parse_event(track(name, now)), **event)
        return Ingest(f"{edge}.hostile.{n}", edge, conn[on], party, "u", "xml", made, now)

    frames: list[tuple[str, bytes]] = [
        # USA's connection claiming to be KOR's (us-kr has no agreement: KOR would see it
        # as its own party's track) and the hub's.
        ("party_mismatch", encode(ingest(1, "forged-kor", party="KOR"))),
        ("hub_party", encode(ingest(2, "forged-hub", party="HUB"))),
        # A detail that ends USA's event and starts one of its own choosing (uid "forged").
        ("bad_detail", encode(ingest(3, "carrier", detail=INJECTED))),
        ("bad_uid", encode(ingest(4, "no-uid", uid=""))),
        ("empty_type", encode(ingest(5, "no-type", type=""))),
        ("unknown_party", encode(ingest(6, "forged-xxx", party="XXX"))),
        ("undecodable", b"\x00garbage\xff" * 10),
        ("oversize", encode(ingest(7, "big", detail="<r/>" * (oversize // 4)))),
        ("bad_id", encode(msgspec.structs.replace(ingest(8, "stolen-id"), id="other.1.1"))),
    ]
    for n, (_, data) in enumerate(frames):
        await js.publish(names.ingest(edge), data, headers={"Nats-Msg-Id": f"hostile-{n}"})
    # Another edge's client, on this edge's subject.
    other = msgspec.structs.replace(ingest(9, "forged-edge"), edge="elsewhere", id="elsewhere.1")
    await js.publish(names.ingest(edge), encode(other), headers={"Nats-Msg-Id": "hostile-x"})
    expected = {reason: 1 for reason, _ in frames} | {"wrong_subject": 1}

    async def counted() -> bool:
        status, body = await http_get(cluster.core_http[0], "/metrics")
        dropped = parse_metrics(body.decode()).get("commonsky_cluster_dropped_total", {})
        return (
            status == 200
            and {re.sub(r'\{reason="(.*)"\}', r"\1", k): v for k, v in dropped.items()} == expected
        )

    await until_async(counted, f"the core counts {expected}")
    # The core serves on; what the clients send after the frames comes after them.
    await usa.send(track("after-hostile", time.time()))
    await until(lambda: rus.got("after-hostile") >= 1, "RUS sees USA's track after the frames")
    await kor.send(track("kor-barrier", time.time()))
    kor2 = await Client("KOR", ports["KOR"]).connect()
    await until(lambda: kor2.got("kor-barrier") >= 1, "a second KOR client gets KOR's track")
    for client in (usa, rus, kor, kor2):
        for uid in ("forged", "forged-kor", "forged-hub", "carrier", "no-type", "forged-xxx",
                    "forged-edge", "stolen-id"):  # fmt: skip
            assert client.got(f'uid="{uid}"') == 0, (client.party, uid, client.events)
    # One line each, naming the edge and the reason.
    log = core.text()
    for reason in expected:
        lines = [line for line in log.splitlines()
                 if "dropped a message" in line and f"({reason})" in line]  # fmt: skip
        assert len(lines) == 1, (reason, lines)
        assert edge in lines[0] or reason in ("undecodable", "wrong_subject"), lines[0]
    assert "Traceback" not in log
    for client in (usa, rus, kor, kor2):
        await client.close()
