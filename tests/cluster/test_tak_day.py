"""A TAK user's day through a cluster — two edges and a core, each a `commonsky serve`
process, on the machine's NATS and a fresh PostgreSQL database — must be the single
process's day: what every client gets, under which uid, is what `commonsky serve` alone
gives the same clients for the same actions (it was played through both and compared; the
expectations below are the single process's).

Parties and traffic: tak_day.py (ALPHA and BRAVO share everything; CHARLIE has ALPHA's
tracks only). Each party has a client on each edge, one speaking XML and the other TAK
Protocol v1 (negotiated with its edge). The actions, in order: devices report themselves;
GeoChat to All Chat Rooms, a direct message across edges and parties and its delivered and
read receipts; markers dropped, moved and deleted (by their owner's party — another
party's delete goes nowhere), routes (one of 1,000 points, 168 kB) and a telestration
(148 kB, as TAK protobuf), an emergency and its cancel; late joiners on the
other edge get exactly the current picture; the Marti API (`clientEndPoints`,
`version/config`) through both edges, before and after a client leaves; then an edge dies
and its clients reconnect to the other, get their picture and go on. CHARLIE is sent
nothing but ALPHA's tracks, through either edge.

The corpus test (test_corpus_cluster.py) plays each captured file once; this plays what
follows one item — its update, delete, cancel, replay and an edge's death — where a
cluster's bucket, routing by edge and proxies could differ from one process. No wait
proves an absence: each step ends at a barrier (`Day.sync`) and checks everything each
client got before it."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import httpx

from commonsky.bench.cluster import Cluster
from tests.cluster.edge_tak import tak_cluster
from tests.cluster.tak_day import (
    HOST,
    PARTIES,
    Day,
    day_config,
    delete,
    device,
    emergency,
    group_chat,
    message_id,
    route,
    single_hub,
    spot,
)
from tests.integration.test_large_items import route as long_route
from tests.integration.test_large_items import telestration
from tests.integration.test_receipts import geochat, receipt
from tests.marti.helpers import client_cert, make_ca

# name: (party, edge, TAK Protocol v1, device uid, callsign, latitude)
CLIENTS = {
    "a1": ("ALPHA", 0, False, "ANDROID-a1", "A1", 20.0),
    "a2": ("ALPHA", 1, True, "ANDROID-a2", "A2", 25.0),
    "b1": ("BRAVO", 1, True, "ANDROID-b1", "B1", 30.0),
    "b2": ("BRAVO", 0, False, "ANDROID-b2", "B2", 35.0),
    "c1": ("CHARLIE", 0, False, "ANDROID-c1", "C1", 40.0),
    "c2": ("CHARLIE", 1, True, "ANDROID-c2", "C2", 45.0),
}
LATE = {"a3": ("ALPHA", 1, True), "b3": ("BRAVO", 0, False), "c3": ("CHARLIE", 1, False)}
SEES = {("ALPHA", "BRAVO"), ("BRAVO", "ALPHA"), ("ALPHA", "CHARLIE")}  # (from, to): devices
PARTY_OF = {name: client[0] for name, client in (CLIENTS | LATE).items()}
# What each party's picture holds once the day's actions are done (a late joiner's replay).
GROUP = "GeoChat.ANDROID-a1.All Chat Rooms.mid-group"
PICTURE = {
    "ALPHA": [f"b-t-f {GROUP}", "b-m-p-s-m BRAVO::M2", "b-m-r BRAVO::R1", "b-m-p-s-m M4",
              "b-m-r BRAVO::R2", "u-d-f-m T30",
              "a-f-G-U-C ANDROID-a1", "a-f-G-U-C ANDROID-a2", "a-f-G-U-C BRAVO::ANDROID-b1",
              "a-f-G-U-C BRAVO::ANDROID-b2"],
    "BRAVO": ["b-t-f GeoChat.ALPHA::ANDROID-a1.All Chat Rooms.ALPHA::mid-group",
              "b-m-p-s-m M2", "b-m-r R1", "b-m-p-s-m ALPHA::M4", "a-f-G-U-C ALPHA::ANDROID-a1",
              "b-m-r R2", "u-d-f-m ALPHA::T30",
              "a-f-G-U-C ALPHA::ANDROID-a2", "a-f-G-U-C ANDROID-b1", "a-f-G-U-C ANDROID-b2"],
    "CHARLIE": ["a-f-G-U-C ALPHA::ANDROID-a1", "a-f-G-U-C ALPHA::ANDROID-a2",
                "a-f-G-U-C ANDROID-c1", "a-f-G-U-C ANDROID-c2"],
}  # fmt: skip
# What a late joiner is owed too: the deletes of the markers its party was given that their
# owner deleted (M1, M5: the joiner may have been away then; hub/withdraw.py `owed`).
OWED = {
    "ALPHA": ["t-x-d-d withdrawn.M1", "t-x-d-d withdrawn.M5"],
    "BRAVO": ["t-x-d-d ALPHA::withdrawn.M1", "t-x-d-d ALPHA::withdrawn.M5"],
    "CHARLIE": [],
}


def expect(day: Day, wanted: dict[str, list[str]]) -> None:
    """Since the last step, each client got exactly `wanted[name]` (none: nothing)."""
    got = {name: sorted(day.new(name)) for name in day.peers}
    assert got == {name: sorted(wanted.get(name, [])) for name in day.peers}


def shared(sender: str, kind: str, uid: str, charlie: bool = False) -> dict[str, list[str]]:
    """An item of `sender`'s party: its other clients get `uid`; ALPHA's and BRAVO's go to
    the other of the two under the sender party's name (`charlie`: to CHARLIE too)."""
    party = PARTY_OF[sender]
    out: dict[str, list[str]] = {}
    for name, other in PARTY_OF.items():
        if name == sender:
            continue
        if other == party:
            out[name] = [f"{kind} {uid}"]
        elif party != "CHARLIE" and (other != "CHARLIE" or charlie):
            out[name] = [f"{kind} {party}::{uid}"]
    return out


def merged(*parts: dict[str, list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in parts:
        for name, items in part.items():
            out.setdefault(name, []).extend(items)
    return out


async def _devices(day: Day, edges: list[dict[str, int]]) -> None:
    for name, (party, edge, proto, *_) in CLIENTS.items():
        await day.join(name, party, edges[edge][party], proto)
    for name, (_, _, _, uid, callsign, lat) in CLIENTS.items():
        day.send(name, device(uid, callsign, lat))
    await day.sync()
    reports = (shared(n, "a-f-G-U-C", c[3], c[0] == "ALPHA") for n, c in CLIENTS.items())
    expect(day, merged(*reports))


async def _chat(day: Day) -> None:
    day.send("a1", group_chat("ANDROID-a1", "A1", "mid-group"))
    await day.sync()
    group = "b-t-f GeoChat.ALPHA::ANDROID-a1.All Chat Rooms.ALPHA::mid-group"
    expect(day, {"a2": [f"b-t-f {GROUP}"], "b1": [group], "b2": [group]})
    # A direct message to B1 (on the other edge, the other party) as ALPHA knows it.
    day.send("a1", geochat("ANDROID-a1", "A1", "BRAVO::ANDROID-b1", "B1", "mid-direct"))
    await day.sync()
    expect(day, {"b1": ["b-t-f GeoChat.ALPHA::ANDROID-a1.ALPHA::B1.ALPHA::mid-direct"]})
    # B1's device answers it as it got it: delivered, then read.
    got = day.got("b1", "b-t-f", "GeoChat.ALPHA::ANDROID-a1.ALPHA::B1.ALPHA::mid-direct")
    as_got = {"detail": f"<detail><__chat messageId='{message_id(got)}'/>"
                        "<link uid='ALPHA::ANDROID-a1'/></detail>"}  # fmt: skip
    for kind in ("b-t-f-d", "b-t-f-r"):
        day.send("b1", receipt(as_got, "ANDROID-b1", "B1", kind))
    await day.sync()
    own = ["b-t-f-d mid-direct", "b-t-f-r mid-direct"]
    expect(day, {"a1": own, "a2": own, "b2": [k.replace(" ", " ALPHA::") for k in own]})


async def _markers(day: Day) -> None:
    day.send("a1", spot("M1", "ANDROID-a1"))
    day.send("b2", spot("M2", "ANDROID-b2"))
    await day.sync()
    expect(day, merged(shared("a1", "b-m-p-s-m", "M1"), shared("b2", "b-m-p-s-m", "M2")))
    day.send("b2", spot("M2", "ANDROID-b2", lat=9.9))  # moved
    day.send("a1", delete("M1", "del-M1"))
    day.send("a1", spot("M4", "ANDROID-a1"))
    day.send("a1", spot("M5", "ANDROID-a1"))
    day.send("b2", route("R1"))
    day.send("b2", long_route(1000, "R2"))  # (168 kB: within limit_message_bytes' 256 KiB)
    day.send("a2", telestration(30, 60, "T30"))  # (148 kB, sent as TAK protobuf)
    await day.sync()
    expect(day, merged(shared("b2", "b-m-p-s-m", "M2"), shared("a1", "t-x-d-d", "del-M1"),
                       shared("a1", "b-m-p-s-m", "M4"), shared("a1", "b-m-p-s-m", "M5"),
                       shared("b2", "b-m-r", "R1"), shared("b2", "b-m-r", "R2"),
                       shared("a2", "u-d-f-m", "T30")))  # fmt: skip
    day.send("b1", delete("ALPHA::M4", "del-M4"))  # not the owner's party: refused
    day.send("a2", delete("M5", "del-M5"))  # another device of the owner's party
    day.send("a2", emergency("ANDROID-a2", "A2"))
    await day.sync()
    alert = "ANDROID-a2-9-1-1"
    expect(day, merged(shared("a2", "t-x-d-d", "del-M5"), shared("a2", "b-a-o-tbl", alert)))
    day.send("a2", emergency("ANDROID-a2", "A2", cancel=True))
    await day.sync()
    expect(day, shared("a2", "b-a-o-can", alert))


async def _late_joiners(day: Day, edges: list[dict[str, int]]) -> None:
    for name, (party, edge, proto) in LATE.items():
        await day.join(name, party, edges[edge][party], proto)
    await day.sync()
    expect(day, {name: PICTURE[party] + OWED[party] for name, (party, *_) in LATE.items()})
    # M2 in its latest version only (the bucket's entry was replaced, not added to).
    view = day.got("a3", "b-m-p-s-m", "BRAVO::M2").view
    assert view is not None and view.point is not None and float(str(view.point["lat"])) == 9.9
    # The long route whole, from the bucket through the other edge (TAK protobuf to a3).
    view = day.got("a3", "b-m-r", "BRAVO::R2").view
    assert view is not None and view.detail is not None
    assert sum(node.tag == "link" for node in view.detail.children) == 1000


def _marti(ca: Path, cert: tuple[Path, Path], port: int) -> httpx.AsyncClient:
    context = ssl.create_default_context(cafile=str(ca / "ca.pem"))
    context.load_cert_chain(*cert)
    return httpx.AsyncClient(base_url=f"https://{HOST}:{port}", verify=context, timeout=60)


async def _contacts(ca: Path, cert: tuple[Path, Path], port: int) -> set[tuple[str, str, str]]:
    """`clientEndPoints` through the Marti port `port`: (callsign, uid, lastStatus)."""
    async with _marti(ca, cert, port) as marti:
        answer = await marti.get("/Marti/api/clientEndPoints")
        assert answer.status_code == 200, answer.text
        config = (await marti.get("/Marti/api/version/config")).json()
    assert config["type"] == "ServerConfig" and config["version"] == "3", config
    assert config["data"]["hostname"] == HOST, config  # (the edge's, as the client called it)
    return {(c["callsign"], c["uid"], c["lastStatus"]) for c in answer.json()["data"]}


def contacts_of(party: str, gone: tuple[str, ...] = ()) -> set[tuple[str, str, str]]:
    """The devices `party` may see, as it knows them (`gone`: callsigns disconnected)."""
    out = set()
    for owner, _, _, uid, callsign, _ in CLIENTS.values():
        if owner == party or (owner, party) in SEES:
            name = uid if owner == party else f"{owner}::{uid}"
            out.add((callsign, name, "Disconnected" if callsign in gone else "Connected"))
    return out


async def _api(day: Day, ca: Path, certs: dict[str, tuple[Path, Path]], marti: list[int]) -> None:
    for party in PARTIES:
        for port in marti:
            assert await _contacts(ca, certs[party], port) == contacts_of(party), (party, port)
    # C1 leaves (on edge 0); asked through edge 1, its device is disconnected.
    await day.peers.pop("c1").close()
    await day.sync()
    expect(day, {})
    assert await _contacts(ca, certs["CHARLIE"], marti[1]) == contacts_of("CHARLIE", ("C1",))


async def _edge_dies(day: Day, kill: Callable[[], None], edges: list[dict[str, int]]) -> None:
    """Edge 1 dies (`kill`); its clients reconnect to edge 0 and get their party's picture,
    their devices report again — B1's is given the message sent to it meanwhile — and the
    day goes on: a marker, a direct message to a client that moved. (One process: the same
    clients leave and come back.)"""
    kill()
    # Sent to B1 while its edge is dead (the core may still believe it connected there):
    # its device is given it once it reports itself again, wherever.
    day.send("a1", geochat("ANDROID-a1", "A1", "BRAVO::ANDROID-b1", "B1", "mid-gone"))
    moved = {n: c[:3] for n, c in CLIENTS.items() if c[1] == 1} | {
        n: c for n, c in LATE.items() if c[1] == 1
    }
    for name, (party, _, proto) in moved.items():
        await day.peers[name].close()
        await day.join(name, party, edges[0][party], proto)
    await day.sync()
    expect(day, {name: PICTURE[party] + OWED[party] for name, (party, *_) in moved.items()})
    for name in ("a2", "b1", "c2"):
        _, _, _, uid, callsign, lat = CLIENTS[name]
        day.send(name, device(uid, callsign, lat))
    day.send("a1", spot("M6", "ANDROID-a1"))
    await day.sync()
    reports = (shared(n, "a-f-G-U-C", CLIENTS[n][3], n == "a2") for n in ("a2", "b1", "c2"))
    gone = {"b1": ["b-t-f GeoChat.ALPHA::ANDROID-a1.ALPHA::B1.ALPHA::mid-gone"]}
    expect(day, merged(*reports, shared("a1", "b-m-p-s-m", "M6"), gone))
    day.send("a1", geochat("ANDROID-a1", "A1", "BRAVO::ANDROID-b1", "B1", "mid-after"))
    await day.sync()
    expect(day, {"b1": ["b-t-f GeoChat.ALPHA::ANDROID-a1.ALPHA::B1.ALPHA::mid-after"]})


async def _day(ca: Path, certs: dict[str, tuple[Path, Path]], edges: list[dict[str, int]],
               marti: list[int], kill: Callable[[], None]) -> None:  # fmt: skip
    day = Day()
    try:
        await _devices(day, edges)
        await _chat(day)
        await _markers(day)
        await _late_joiners(day, edges)
        await _api(day, ca, certs, marti)
        await _edge_dies(day, kill, edges)
    finally:
        await day.close()


def _certificates(tmp_path: Path) -> tuple[Path, dict[str, tuple[Path, Path]]]:
    ca = make_ca(tmp_path, HOST)
    return ca, {p: client_cert(ca, p, f"{p.lower()}-ops", tmp_path / p) for p in PARTIES}


async def test_a_tak_day_through_two_edges_is_the_single_process_day(
    tmp_path: Path, cluster: Cluster
) -> None:
    ca, certs = _certificates(tmp_path)
    cluster.parties = PARTIES
    ports = tak_cluster(cluster, ca, base=day_config)
    edge0, at0 = await cluster.edge()
    edge1, at1 = await cluster.edge()
    await cluster.core()
    marti = [ports.by_http[edge0.http]["marti"], ports.by_http[edge1.http]["marti"]]
    await _day(ca, certs, [at0, at1], marti, edge1.kill)


async def test_the_same_day_on_the_single_process(tmp_path: Path) -> None:
    """The expectations are the single process's: the same day, on `commonsky serve` alone
    (its one TAK port per party and Marti port standing for both edges)."""
    ca, certs = _certificates(tmp_path)
    async with single_hub(tmp_path, ca) as (ports, marti):
        await _day(ca, certs, [ports, ports], [marti, marti], lambda: None)
