"""Items too long for ATAK's stream reader on a cluster's edge (cluster/edge_long.py): the
edge a TAK TLS client streams to writes it, in place of such an item, the `b-f-t-r` the
single process writes (hub/held.py), holds the item, and answers the fetch on its own marti
listener to the party it announced it to. The core holds it too (cluster/core_long.py): the
same party's fetch at another edge (edges sharing a port) gets it from the core; any other
party gets 404 at every edge, as does anyone once the owner deleted it. Role `all` announces
naming its core's marti listener. Real `commonsky serve` processes on NATS and a fresh
PostgreSQL database; the edge's store of long forms alone at the end."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlparse

import pytest
import takproto

from commonsky.bench.cluster import Cluster
from commonsky.cluster import edge_long
from commonsky.cluster.edge import edge_pending
from commonsky.hub.held import STREAM_BYTES, LongMessages
from commonsky.model import Category, Disclosure
from commonsky.policy import Agreement, Party, Policy
from commonsky.protocol.render import PROTO
from commonsky.settings import Settings
from tests.cluster.edge_tak import HOST, client, tak_cluster
from tests.cluster.tak_day import delete
from tests.conftest import TakClient
from tests.integration.test_large_items import as_proto, route
from tests.integration.test_tak_tcp import PROTO_REQUEST, track
from tests.marti.helpers import client_cert, make_ca
from tests.marti.test_long_items import fileshare

WAIT_S = 30.0


async def tak_tls(port: int, ca: Path, cert: tuple[Path, Path], party: str,
                  v1: bool) -> TakClient:  # fmt: skip
    """A TAK client on an edge's tak-tls port with `cert`; `v1`: it speaks TAK protobuf."""
    context = ssl.create_default_context(cafile=str(ca / "ca.pem"))
    context.load_cert_chain(*cert)
    reader, writer = await asyncio.open_connection(HOST, port, ssl=context, server_hostname=HOST)
    tak = TakClient(reader, writer, party=party)
    await tak.wait_for(lambda e: e["type"] == "t-x-takp-v", timeout=WAIT_S)
    if v1:
        tak.send(PROTO_REQUEST)
        answer = await tak.wait_for(lambda e: e["type"] == "t-x-takp-r", timeout=WAIT_S)
        assert 'status="true"' in answer["detail"]
    return tak


async def test_a_long_route_is_announced_by_the_edge_and_fetched_there_by_its_receiver_only(
    tmp_path: Path, cluster: Cluster
) -> None:
    ca = make_ca(tmp_path, HOST)
    certs = {p: client_cert(ca, p, f"{p.lower()}-ops", tmp_path / p) for p in ("USA", "RUS", "KOR")}
    ports = tak_cluster(cluster, ca)  # (the cluster's agreements: USA's airspace to RUS)
    a, _ = await cluster.edge()
    b, _ = await cluster.edge()
    await cluster.core()
    at_a, at_b = ports.by_http[a.http], ports.by_http[b.http]
    usa = await tak_tls(at_a["tak-tls"], ca, certs["USA"], "USA", v1=True)
    rus = await tak_tls(at_a["tak-tls"], ca, certs["RUS"], "RUS", v1=True)
    rus_xml = await tak_tls(at_a["tak-tls"], ca, certs["RUS"], "RUS", v1=False)
    long_route = as_proto(route(500, "route-500"))
    assert len(long_route) > STREAM_BYTES + 10_000
    usa.send(long_route + as_proto(route(20, "short")) + as_proto(track("T-1")))

    shares = []
    for tak in (rus, rus_xml):  # (both wire forms: each gets an announcement in its place)
        offer = await tak.wait_for(lambda e: e["type"] == "b-f-t-r", timeout=WAIT_S)
        await tak.wait_for(lambda e: e["uid"] == "USA::short", timeout=WAIT_S)  # (whole)
        await tak.wait_for(lambda e: e["uid"] == "USA::T-1", timeout=WAIT_S)
        assert "USA::route-500" not in {e["uid"] for e in tak.events}
        share = fileshare(offer)
        assert offer["uid"] == share.get("sha256") == share.get("senderUid")
        shares.append(share)
    paths = []
    for share in shares:
        url = urlparse(share.get("senderUrl", ""))
        assert (url.scheme, url.netloc) == ("https", f"{HOST}:{at_a['marti']}")  # (edge A's)
        path = f"{url.path}?{url.query}&receiver=RUS-1"  # (as commo fetches)
        async with client(at_a, ca, "marti", certs["RUS"]) as marti:
            got = await marti.get(path)
        assert got.status_code == 200, got.text
        assert hashlib.sha256(got.content).hexdigest() == share.get("sha256")
        assert str(len(got.content)) == share.get("sizeInBytes")
        event = ET.fromstring(got.content)
        assert event.get("uid") == "USA::route-500" and len(event.findall("detail/link")) == 500
        paths.append(path)
    # The same party at edge B (not the one that announced): the same bytes, from the core.
    async with client(at_b, ca, "marti", certs["RUS"]) as marti:
        for path, share in zip(paths, shares, strict=True):
            got = await marti.get(path)
            assert got.status_code == 200, got.text
            assert hashlib.sha256(got.content).hexdigest() == share.get("sha256")
    # Another party (KOR: no agreement; USA: not written it), at either edge: 404.
    for at in (at_a, at_b):
        for cert in (certs["KOR"], certs["USA"]):
            async with client(at, ca, "marti", cert) as marti:
                for path in paths:
                    assert (await marti.get(path)).status_code == 404, path
    # A newer version (the same route, made short) ends the fetch of the older, everywhere.
    usa.send(as_proto(route(20, "route-500")))
    await rus.wait_for(lambda e: e["uid"] == "USA::route-500", timeout=WAIT_S)
    for at in (at_a, at_b):
        async with client(at, ca, "marti", certs["RUS"]) as marti:
            for path in paths:
                assert (await marti.get(path)).status_code == 404, path
    for tak in (usa, rus, rus_xml):
        tak.writer.close()


async def test_a_client_given_a_long_route_from_the_picture_fetches_it_at_another_edge(
    tmp_path: Path, cluster: Cluster
) -> None:
    ca = make_ca(tmp_path, HOST)
    certs = {p: client_cert(ca, p, f"{p.lower()}-ops", tmp_path / p) for p in ("USA", "RUS", "KOR")}
    ports = tak_cluster(cluster, ca)
    a, _ = await cluster.edge()
    b, _ = await cluster.edge()
    await cluster.core()
    at_a, at_b = ports.by_http[a.http], ports.by_http[b.http]
    usa = await tak_tls(at_a["tak-tls"], ca, certs["USA"], "USA", v1=False)
    usa_too = await tak_tls(at_a["tak-tls"], ca, certs["USA"], "USA", v1=False)
    usa.send(route(500, "route-early"))
    await usa_too.wait_for(lambda e: e["type"] == "b-f-t-r", timeout=WAIT_S)  # (applied)
    # RUS had no client then: its first, at edge B, is given the route from the picture
    # bucket (as XML, written as protobuf), announced by edge B.
    rus = await tak_tls(at_b["tak-tls"], ca, certs["RUS"], "RUS", v1=True)
    offer = await rus.wait_for(lambda e: e["type"] == "b-f-t-r", timeout=WAIT_S)
    usa.send(track("T-2"))  # (once RUS gets it, the core has handled its client's Attach)
    await rus.wait_for(lambda e: e["uid"] == "USA::T-2", timeout=WAIT_S)
    share = fileshare(offer)
    url = urlparse(share.get("senderUrl", ""))
    assert url.netloc == f"{HOST}:{at_b['marti']}"
    path = f"{url.path}?{url.query}&receiver=RUS-1"
    async with client(at_a, ca, "marti", certs["RUS"]) as marti:  # (edge A: the core's)
        got = await marti.get(path)
    assert got.status_code == 200, got.text
    assert hashlib.sha256(got.content).hexdigest() == share.get("sha256")
    assert ET.fromstring(got.content).get("uid") == "USA::route-early"
    for at in (at_a, at_b):
        async with client(at, ca, "marti", certs["KOR"]) as marti:
            assert (await marti.get(path)).status_code == 404
    for tak in (usa, usa_too, rus):
        tak.writer.close()


async def test_role_all_announces_a_long_route_and_its_core_answers_the_fetch(
    tmp_path: Path, cluster: Cluster
) -> None:
    ca = make_ca(tmp_path, HOST)
    certs = {p: client_cert(ca, p, f"{p.lower()}-ops", tmp_path / p) for p in ("USA", "RUS", "KOR")}
    ports = tak_cluster(cluster, ca)
    process, _ = await cluster.both(serving=True)
    at = ports.by_http[process.http]
    usa = await tak_tls(at["tak-tls"], ca, certs["USA"], "USA", v1=False)
    rus = await tak_tls(at["tak-tls"], ca, certs["RUS"], "RUS", v1=False)
    usa.send(route(500, "route-500"))
    offer = await rus.wait_for(lambda e: e["type"] == "b-f-t-r", timeout=WAIT_S)
    assert "USA::route-500" not in {e["uid"] for e in rus.events}
    share = fileshare(offer)
    url = urlparse(share.get("senderUrl", ""))
    assert (url.scheme, url.netloc) == ("https", f"{HOST}:{at['marti']}")  # (its core's)
    path = f"{url.path}?{url.query}&receiver=RUS-1"
    async with client(at, ca, "marti", certs["RUS"]) as marti:
        got = await marti.get(path)
    assert got.status_code == 200, got.text
    assert hashlib.sha256(got.content).hexdigest() == share.get("sha256")
    assert ET.fromstring(got.content).get("uid") == "USA::route-500"
    for cert in (certs["KOR"], certs["USA"]):
        async with client(at, ca, "marti", cert) as marti:
            assert (await marti.get(path)).status_code == 404
    for tak in (usa, rus):
        tak.writer.close()


async def test_the_owners_delete_ends_the_fetch_at_the_edge_that_announced(
    tmp_path: Path, cluster: Cluster
) -> None:
    """The delete's output carries its own uid; the core names the item it ends
    (`Delivery.ended`), so the edge's holding ends too, and the fetch is the core's: 404."""
    ca = make_ca(tmp_path, HOST)
    certs = {p: client_cert(ca, p, f"{p.lower()}-ops", tmp_path / p) for p in ("USA", "RUS")}
    ports = tak_cluster(cluster, ca)
    a, _ = await cluster.edge()
    await cluster.core()
    at_a = ports.by_http[a.http]
    usa = await tak_tls(at_a["tak-tls"], ca, certs["USA"], "USA", v1=False)
    rus = await tak_tls(at_a["tak-tls"], ca, certs["RUS"], "RUS", v1=False)
    usa.send(route(500, "route-gone"))  # (about 84 KB)
    offer = await rus.wait_for(lambda e: e["type"] == "b-f-t-r", timeout=WAIT_S)
    url = urlparse(fileshare(offer).get("senderUrl", ""))
    path = f"{url.path}?{url.query}&receiver=RUS-1"
    async with client(at_a, ca, "marti", certs["RUS"]) as marti:
        assert (await marti.get(path)).status_code == 200
        usa.send(delete("route-gone"))
        gone = await rus.wait_for(lambda e: e["type"] == "t-x-d-d", timeout=WAIT_S)
        assert 'uid="USA::route-gone"' in str(gone["detail"])
        assert (await marti.get(path)).status_code == 404
    for tak in (usa, rus):
        tak.writer.close()


def _store(tmp_path: Path, clock: list[float], policy: Policy | None = None) -> LongMessages:
    store = edge_long.long_messages(Settings(), policy or Policy([], []), lambda: clock[0])
    store.serve(lambda: "https://edge:8443", tmp_path)
    return store


def _long(uid: str, xml: bytes) -> tuple[object, ...]:
    pending = edge_pending("USA", uid, Category.AIRSPACE.value, 1.0, "xml", xml)
    return pending.rendered, pending.variant, "xml", xml


def test_an_output_whose_renamed_attribute_passes_the_client_limit_is_held(
    tmp_path: Path,
) -> None:
    """The core's rendering prefixes names (`USA::`): an attribute accepted at
    limit_attribute_bytes (4096) is longer in the output, which the edge still reads."""
    link = f"<link uid='USA::{'x' * 4092}' type='b-m-p-c' relation='c'/>".encode()
    xml = route(500, "USA::route-named").replace(b"<link ", link + b"<link ", 1)
    assert len(xml) > STREAM_BYTES
    store = _store(tmp_path, [time.time()])
    held = store.announce(*_long("route-named", xml))  # type: ignore[arg-type]
    assert held is not None and held.xml == xml


def test_an_unreadable_long_output_is_read_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = []
    as_xml = edge_long.as_xml
    monkeypatch.setattr(edge_long, "as_xml", lambda *a: reads.append(1) or as_xml(*a))
    store = _store(tmp_path, [time.time()])
    bad = _long("route-bad", b"<event " + b"x" * STREAM_BYTES)
    with caplog.at_level(logging.ERROR, "commonsky.cluster"):
        for _ in range(3):  # (a write each: the item goes whole)
            assert store.announce(*bad) is None  # type: ignore[arg-type]
    assert len(reads) == 1
    assert [r.getMessage()[:40] for r in caplog.records] == [
        "edge: the long form of USA/'route-bad' ("
    ]


def test_an_agreements_change_ends_every_holding_at_the_edge(tmp_path: Path) -> None:
    """(The edge cannot tell whom a change narrows: each holding ends at the next one.)"""
    now = time.time()
    ends = Agreement("ends", "USA", ("RUS",), frozenset({Category.AIRSPACE}), Disclosure.FULL,
                     None, None, now + 60)  # fmt: skip
    clock = [now]
    store = _store(tmp_path, clock, Policy([Party("USA"), Party("RUS")], [ends]))
    held = store.announce(*_long("route-500", route(500, "USA::route-500")))  # type: ignore[arg-type]
    assert held is not None and held.ends == now + 60  # (the route's stale time is later)
    store.grant("RUS", (held,))
    assert store.get("RUS", held.sha256) is held
    clock[0] = now + 61
    assert store.get("RUS", held.sha256) is None


def test_an_output_written_again_as_protobuf_passes_the_client_limits_too() -> None:
    """A client that switched to TAK protobuf after the core rendered its output as XML:
    the edge writes it again (`edge._convert`), within the output's own bounds, not a
    client's (the renamed attribute is past limit_attribute_bytes)."""
    link = f"<link uid='USA::{'x' * 4092}' type='b-m-p-c' relation='c'/>".encode()
    xml = route(5, "USA::route-named").replace(b"<link ", link + b"<link ", 1)
    pending = edge_pending("USA", "route-named", Category.AIRSPACE.value, 1.0, "xml", xml)
    data = pending.rendered.wire(pending.variant, PROTO)
    event = takproto.parse_proto(data)
    assert event.cotEvent.uid == "USA::route-named"
    assert "x" * 4092 in event.cotEvent.detail.xmlDetail
