"""Items too long for ATAK's stream reader (65,536 bytes, commoncommo), announced to a TAK TLS
client as a file transfer (`b-f-t-r`) and fetched from the Marti listener the way commo does:
the URL of the announcement, `&receiver=` appended, the stream's own client certificate.

What is fetched is the form the stream would have carried (its names as the receiving party
knows them), to that party only; small items, and clients that could not fetch (`tak-tcp`:
no certificate), are written the item as before (hub/held.py, docs/architecture.md
"Message size")."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlparse

from commonsky.hub.held import STREAM_BYTES
from tests.conftest import RunningHub, TakClient
from tests.integration.test_large_items import as_proto, route
from tests.integration.test_tak_tcp import PROTO_REQUEST, track
from tests.integration.test_withdraw import Clock, iso
from tests.marti.helpers import client_cert, https, marti_hub

DRAWINGS = [
    {
        "name": "US-JP routes",
        "from": "USA",
        "to": ["JPN"],
        "categories": ["airspace", "drawing", "track"],
        "disclosure": "full",
    }
]


async def tls_client(
    hub: RunningHub, host: str, ca: Path, cert: tuple[Path, Path], party: str, v1: bool
) -> TakClient:
    """A TAK client on the hub's tak-tls listener with `cert`; `v1`: it negotiates TAK
    Protocol v1 first, as ATAK does."""
    context = ssl.create_default_context(cafile=str(ca / "ca.pem"))
    context.load_cert_chain(*cert)
    reader, writer = await asyncio.open_connection(
        host, hub.server.port("tak-tls"), ssl=context, server_hostname=host
    )
    client = TakClient(reader, writer, party=party)
    hub.clients.append(client)
    await client.wait_for(lambda e: e["type"] == "t-x-takp-v")
    if v1:
        client.send(PROTO_REQUEST)
        response = await client.wait_for(lambda e: e["type"] == "t-x-takp-r")
        assert 'status="true"' in response["detail"]
    return client


def fileshare(event: dict[str, object]) -> ET.Element:
    detail = event.get("detail") or f"<detail>{event['xmlDetail']}</detail>"
    share = ET.fromstring(str(detail)).find("fileshare")
    assert share is not None, detail
    return share


async def test_a_long_route_is_announced_fetched_by_its_receiver_and_no_one_else(
    tmp_path: Path,
) -> None:
    async with marti_hub(tmp_path, DRAWINGS) as (hub, host, ca):
        usa_cert = client_cert(ca, "USA", "usa-ops", tmp_path / "usa")
        jpn_cert = client_cert(ca, "JPN", "jpn-ops", tmp_path / "jpn")
        kor_cert = client_cert(ca, "KOR", "kor-ops", tmp_path / "kor")
        usa = await tls_client(hub, host, ca, usa_cert, "USA", v1=True)
        jpn = await tls_client(hub, host, ca, jpn_cert, "JPN", v1=True)
        jpn_xml = await tls_client(hub, host, ca, jpn_cert, "JPN", v1=False)
        jpn_tcp = await hub.connect("JPN")  # (no certificate: it could fetch nothing)
        long_route = route(500, "route-500")
        assert len(as_proto(long_route)) > STREAM_BYTES + 10_000
        usa.send(as_proto(long_route) + as_proto(route(20, "short")) + as_proto(track("T-1")))

        # TAK Protocol v1: in place of the route, a file transfer naming it.
        offer = await jpn.wait_for(lambda e: e["type"] == "b-f-t-r", timeout=10)
        await jpn.wait_for(lambda e: e["uid"] == "USA::short", timeout=10)  # (small: as it was)
        await jpn.wait_for(lambda e: e["uid"] == "USA::T-1", timeout=10)
        assert "USA::route-500" not in {e["uid"] for e in jpn.events}
        share = fileshare(offer)
        sha = share.get("sha256", "")
        assert offer["uid"] == sha == share.get("senderUid")
        assert share.get("filename") == share.get("name") == "USA__route-500.cot"
        url = urlparse(share.get("senderUrl", ""))
        assert (url.scheme, url.netloc) == ("https", f"{host}:{hub.server.port('marti')}")
        # XML: the same form's announcement (the same bytes held, the same hash).
        offer_xml = await jpn_xml.wait_for(lambda e: e["type"] == "b-f-t-r", timeout=10)
        assert fileshare(offer_xml).get("sha256") == sha
        # tak-tcp (no certificate to fetch with): the route itself.
        whole = await jpn_tcp.wait_for(lambda e: e["uid"] == "USA::route-500", timeout=10)
        assert whole["detail"].count("<link ") == 500

        # Fetched as commo does: the URL, `receiver` appended, the stream's certificate.
        path = f"{url.path}?{url.query}&receiver=JPN-1"
        async with https(hub, host, ca, "marti", jpn_cert) as client:
            got = await client.get(path)
        assert got.status_code == 200, got.text
        assert hashlib.sha256(got.content).hexdigest() == sha
        assert str(len(got.content)) == share.get("sizeInBytes")
        event = ET.fromstring(got.content)
        assert event.get("uid") == "USA::route-500"  # (as JPN knows it)
        assert len(event.findall("detail/link")) == 500
        # Any other party: 404, exactly as if there were nothing there.
        for cert in (kor_cert, usa_cert):
            async with https(hub, host, ca, "marti", cert) as client:
                assert (await client.get(path)).status_code == 404


async def test_a_newer_version_ends_the_fetch_of_the_older(tmp_path: Path) -> None:
    async with marti_hub(tmp_path, DRAWINGS) as (hub, host, ca):
        usa_cert = client_cert(ca, "USA", "usa-ops", tmp_path / "usa")
        jpn_cert = client_cert(ca, "JPN", "jpn-ops", tmp_path / "jpn")
        usa = await tls_client(hub, host, ca, usa_cert, "USA", v1=True)
        jpn = await tls_client(hub, host, ca, jpn_cert, "JPN", v1=True)
        usa.send(as_proto(route(500, "route-500")))
        first = fileshare(await jpn.wait_for(lambda e: e["type"] == "b-f-t-r", timeout=10))
        usa.send(as_proto(route(20, "route-500")))  # (the same route, made short)
        await jpn.wait_for(lambda e: e["uid"] == "USA::route-500", timeout=10)
        async with https(hub, host, ca, "marti", jpn_cert) as client:
            got = await client.get(f"/Marti/sync/content?hash={first.get('sha256')}")
        assert got.status_code == 404


async def test_an_agreements_end_ends_the_fetch(tmp_path: Path) -> None:
    """Announced while the agreement held, fetched after it ended: 404 (JPN may no longer
    see the route; the hold itself has not expired)."""
    clock = Clock()
    deal = {**DRAWINGS[0], "valid_until": iso(time.time() + 120)}
    async with marti_hub(tmp_path, [deal], clock=clock) as (hub, host, ca):
        usa_cert = client_cert(ca, "USA", "usa-ops", tmp_path / "usa")
        jpn_cert = client_cert(ca, "JPN", "jpn-ops", tmp_path / "jpn")
        usa = await tls_client(hub, host, ca, usa_cert, "USA", v1=True)
        jpn = await tls_client(hub, host, ca, jpn_cert, "JPN", v1=False)
        usa.send(as_proto(route(500, "route-500")))
        share = fileshare(await jpn.wait_for(lambda e: e["type"] == "b-f-t-r", timeout=10))
        path = f"/Marti/sync/content?hash={share.get('sha256')}"
        async with https(hub, host, ca, "marti", jpn_cert) as client:
            assert (await client.get(path)).status_code == 200
            clock.offset = 125.0  # (the agreement ended 5 s ago; HOLD_S is 600)
            assert (await client.get(path)).status_code == 404


async def test_a_client_connecting_later_is_announced_the_route_in_its_replay(
    tmp_path: Path,
) -> None:
    async with marti_hub(tmp_path, DRAWINGS) as (hub, host, ca):
        usa_cert = client_cert(ca, "USA", "usa-ops", tmp_path / "usa")
        jpn_cert = client_cert(ca, "JPN", "jpn-ops", tmp_path / "jpn")
        usa = await tls_client(hub, host, ca, usa_cert, "USA", v1=True)
        usa.send(as_proto(route(500, "route-500")))
        await usa.sync()  # (taken in before any JPN client is there)
        jpn = await tls_client(hub, host, ca, jpn_cert, "JPN", v1=False)
        share = fileshare(await jpn.wait_for(lambda e: e["type"] == "b-f-t-r", timeout=10))
        async with https(hub, host, ca, "marti", jpn_cert) as client:
            got = await client.get(f"/Marti/sync/content?hash={share.get('sha256')}")
        assert got.status_code == 200
        assert ET.fromstring(got.content).get("uid") == "USA::route-500"
