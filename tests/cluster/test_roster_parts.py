"""An edge's beat carries its roster (each client, its devices) and NATS takes no message
over its `max_payload`: a roster over it (some 5,000 clients on an edge, or a gateway
relaying 15,000 devices on one connection) was never sent — `_beat` suppressed the error —
and the core, hearing no beat for `EDGE_SILENT_S`, dropped every client of the edge: they
stayed connected and were sent nothing more. The roster now goes in parts within
`max_payload` (`edge.roster_parts`; a client's devices split when they alone are more),
which the core takes as one — a core taking over, every device of a client whatever its
part."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client as Nats
from nats.aio.msg import Msg

from commonsky.bench.cluster import Client, Cluster, track, until
from commonsky.cluster.wire import ConnInfo, Roster, encode, roster_decoder
from tests.integration.test_receipts import geochat

GATEWAY_DEVICES = 15_000  # (some 85 bytes each in the roster: over NATS's 1 MiB)


def unit(n: int) -> str:
    return f"GATEWAY-UNIT-{n:06d}-0123456789abcdef-0123456789abcdef"


def gateway_report(n: int) -> bytes:
    """A neutral unit's report relayed by a gateway: a device (`endpoint=`) of its own uid."""
    now = datetime.now(UTC)
    stamp, stale = (
        now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    return (
        f'<event version="2.0" uid="{unit(n)}" type="a-n-G-U-C" '
        f'time="{stamp}" start="{stamp}" stale="{stale}" how="m-g"><point lat="{n % 80}" '
        f'lon="{n % 170}" hae="0" ce="10" le="10"/><detail><contact callsign="UNIT {n:06d} '
        f'RELAYED" endpoint="*:-1:stcp"/></detail></event>'
    ).encode()


def test_a_roster_over_the_budget_goes_in_parts_none_over_it_all_of_it_once() -> None:
    from commonsky.cluster.edge import roster_parts  # (here: the next test runs without it)

    many = [ConnInfo(f"tak-tcp:0.0.0.0:8087#10.0.{n // 250}.{n % 250}:5{n:04d}", "USA",
                     f"user-{n}", "tak-tcp:0.0.0.0:8087", f"10.0.0.1:{n}", "xml",
                     {f"ANDROID-{n:016x}": f"VIPER {n}"}) for n in range(6000)]  # fmt: skip
    gateway = ConnInfo("gw", "KOR", "gw", "l", "a", "xml",
                       {f"UNIT-{n:06d}": f"UNIT {n}" for n in range(20_000)})  # fmt: skip
    budget = 1024 * 1024 - 4096
    parts = roster_parts(Roster("edge-1.run", [*many, gateway]), budget)
    assert len(parts) > 1 and max(map(len, parts)) <= budget
    rosters = [roster_decoder.decode(p) for p in parts]
    assert {r.edge for r in rosters} == {"edge-1.run"}
    conns = [c for r in rosters for c in r.conns if c.conn != "gw"]
    assert conns == many  # (each client once, in order)
    devices: dict[str, str] = {}
    for piece in (c for r in rosters for c in r.conns if c.conn == "gw"):
        devices.update(piece.devices)
    assert devices == gateway.devices
    small = Roster("edge-1.run", many[:10])
    assert roster_parts(small, budget) == [encode(small)]  # (one message, as before)


async def test_a_gateway_relaying_many_devices_keeps_its_edge_heard(
    cluster: Cluster, nc: Nats, cluster_name: str
) -> None:
    beats: list[int] = []  # the size of each beat heard

    async def heard(msg: Msg) -> None:
        beats.append(len(msg.data))

    await nc.subscribe(f"{cluster_name}.beat.>", cb=heard)
    first = await cluster.core()
    standby = await cluster.core(wait=False)
    _, a = await cluster.edge()
    jpn, jpn2 = await Client("JPN", a["JPN"]).connect(), await Client("JPN", a["JPN"]).connect()
    gateway = await Client("KOR", a["KOR"]).connect()
    kor = await Client("KOR", a["KOR"]).connect()
    roster = sum(len(unit(n)) + len(f"UNIT {n:06d} RELAYED") for n in range(GATEWAY_DEVICES))
    assert roster > nc.max_payload  # (the gateway's devices alone)
    await gateway.send(b"".join(gateway_report(n) for n in range(GATEWAY_DEVICES)))
    # Behind the gateway's reports in its connection: a KOR track its own party sees.
    await gateway.send(track("kor-after-gateway", time.time()))
    await until(lambda: kor.got("kor-after-gateway") >= 1, "the gateway's reports applied")
    # The edge is heard: beats come, in parts, now that its roster is over max_payload...
    heard = len(beats)
    await until(lambda: len(beats) >= heard + 20, "beats after the roster grew")
    assert sum(beats[heard:]) > nc.max_payload, beats[heard:]  # (more than one NATS message)
    # ... so that, long past EDGE_SILENT_S, its clients are still the core's and served.
    await jpn2.send(track("jpn-later", time.time()))
    await until(lambda: jpn.got("jpn-later") >= 1, "a client of the edge still gets its items")
    # A core taking over learns the edge's clients from its roster, in parts: every device
    # of the gateway's, wherever its part, is addressed to the gateway's connection.
    first.kill()
    await standby.wait_log(r"cluster core \S+ serving")
    for n in (0, GATEWAY_DEVICES - 1):
        await kor.send(geochat("KOR-OPS", "KOR OPS", unit(n), f"UNIT {n:06d} RELAYED", f"m-{n}"))
        await until(lambda n=n: gateway.got(f"m-{n}") >= 1, f"the gateway gets unit {n}'s message")
    for client in (jpn, jpn2, gateway, kor):
        await client.close()
