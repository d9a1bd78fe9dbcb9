"""Large items as ATAK writes them, through `commonsky serve` over TCP and TAK Protocol v1.

The generators write what ATAK sends for a long route (`b-m-r`: a `<link>` per point, a
checkpoint every tenth with its nav cue), a freehand line (`u-d-f`: a `<link point>` per
vertex) and a telestration (`u-d-f-m`: each stroke a whole `u-d-f` event escaped into a
`line` attribute), in the shapes of the corpus's ATAK examples (`tests/corpus/data`:
`Route.cot`, `Drawing Shapes - Free Form.cot`, `… - Telestration.cot`), with no indentation
and ATAK's full-precision doubles. docs/architecture.md ("Message size") gives their sizes:

    python -c "from tests.integration.test_large_items import sizes; sizes()"
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import math
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import takproto

from commonsky.settings import Settings
from tests.conftest import TakClient, token_of
from tests.integration.test_tak_tcp import PROTO_REQUEST, track

ROOT = Path(__file__).parents[2]
HEADER = "<?xml version='1.0' encoding='UTF-8' standalone='yes'?>"


def _times(now: datetime) -> tuple[str, str]:
    def text(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    return text(now), text(now + timedelta(days=1))


def _event(kind: str, uid: str, point: str, detail: str) -> bytes:
    start, stale = _times(datetime.now(UTC))
    return (
        f"{HEADER}<event version='2.0' uid='{uid}' type='{kind}' time='{start}' start='{start}'"
        f" stale='{stale}' how='h-e' access='Undefined'>{point}<detail>{detail}</detail></event>"
    ).encode()


NO_POINT = "<point lat='0.0' lon='0.0' hae='9999999.0' ce='9999999.0' le='9999999.0'/>"


def route(points: int, uid: str = "", remarks: str = "") -> bytes:
    """A route of `points` points (checkpoints `b-m-p-c`, every tenth and the last a
    waypoint `b-m-p-w` with a nav cue), as ATAK's route tool sends it."""
    links, cues = [], []
    for i in range(points):
        lat = 38.84 + 0.0004 * i + 1e-13 * i * i
        lon = -77.05 + 0.00031 * math.sin(i / 7) + 1e-12 * i
        waypoint = i % 10 == 0 or i == points - 1
        pid = str(uuid.uuid4())
        kind, name = ("b-m-p-w", f"CP{i}") if waypoint else ("b-m-p-c", "")
        links.append(
            f"<link uid='{pid}' callsign='{name}' type='{kind}' "
            f"point='{lat!r},{lon!r},{120 + i % 50 * 0.731:.3f}' remarks='' relation='c'/>"
        )
        if waypoint:
            cues.append(
                f"<__navcue voice='Stay Right' id='{pid}' text='Stay Right'>"
                "<trigger mode='d' value='70'/></__navcue>"
            )
    detail = (
        "".join(links) + "<link_attr planningmethod='Infil' color='-65536' method='Driving' "
        "prefix='CP' style='0' type='Vehicle' stroke='6' direction='Infil' routetype='Primary'"
        " order='Ascending Check Points'/><strokeColor value='-65536'/>"
        "<strokeWeight value='6.0'/><strokeStyle value='solid'/>"
        f"<remarks>{remarks}</remarks><contact callsign='LONG ROUTE'/><archive/>"
        "<labels_on value='false'/><color value='-65536'/>"
        f"<__routeinfo><__navcues>{''.join(cues)}</__navcues></__routeinfo>"
    )
    return _event("b-m-r", uid or str(uuid.uuid4()), NO_POINT, detail)


def freehand(points: int, uid: str = "") -> bytes:
    """A freehand line of `points` vertices, as ATAK's drawing tool sends it."""
    vertices = [
        (38.837 + 0.001 * math.cos(i / 40) + 1e-14 * i, -77.063 + 0.001 * math.sin(i / 40))
        for i in range(points)
    ]
    first = f"<point lat='{vertices[0][0]!r}' lon='{vertices[0][1]!r}' hae='9999999.0'"
    detail = (
        "".join(f"<link point='{lat!r},{lon!r}'/>" for lat, lon in vertices)
        + "<strokeColor value='-1'/><strokeWeight value='4.0'/><fillColor value='-1761607681'/>"
        "<contact callsign='Freehand 1'/><remarks/><archive/><labels_on value='false'/>"
        "<color value='-1'/>"
    )
    return _event(
        "u-d-f", uid or str(uuid.uuid4()), f"{first} ce='9999999.0' le='9999999.0'/>", detail
    )


def telestration(strokes: int, points: int, uid: str = "") -> bytes:
    """`strokes` strokes of `points` vertices each, as ATAK's telestration sends them."""
    lines = "".join(
        "<link line='" + html.escape(freehand(points).decode()).replace("&#x27;", "&apos;") + "'/>"
        for _ in range(strokes)
    )
    detail = (
        lines + "<strokeColor value='-1'/><strokeWeight value='4.0'/>"
        "<contact callsign='Telestration 1'/><remarks/><archive/><labels_on value='false'/>"
    )
    return _event("u-d-f-m", uid or str(uuid.uuid4()), NO_POINT, detail)


def as_proto(xml: bytes) -> bytes:
    return bytes(takproto.xml2proto(xml.decode(), takproto.TAKProtoVer.STREAM))


def payload_length(frame: bytes) -> int:
    """The length a TAK protobuf frame declares (after its 0xbf)."""
    length, shift = 0, 0
    for byte in frame[1:]:
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return length
        shift += 7
    raise ValueError("no length")


def sizes() -> None:
    """The table of docs/architecture.md, "Message size"."""
    made: list[tuple[str, Callable[[], bytes]]] = [
        *[(f"route {n}", lambda n=n: route(n)) for n in (13, 250, 400, 500, 1000, 2000)],
        *[(f"freehand {n}", lambda n=n: freehand(n)) for n in (1200, 2000)],
        ("telestration 10x46", lambda: telestration(10, 46)),
        ("telestration 20x60", lambda: telestration(20, 60)),
        ("telestration 30x60", lambda: telestration(30, 60)),
    ]
    for name, make in made:
        xml = make()
        print(f"{name:20} xml {len(xml):>8,} proto frame {len(as_proto(xml)):>8,}")


# ---- the hub, as an operator runs it ------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, held_port: Callable[[], int]) -> AsyncIterator[dict[str, int]]:
    """`python -m commonsky serve` of this checkout: USA and JPN on tak-tcp, each granting
    the other `full` airspace and drawings (routes, shapes) and tracks; its stderr in
    `tmp_path / "hub.log"`."""
    ports = {"http": held_port(), "USA": held_port(), "JPN": held_port()}
    grants = "\n".join(
        f'[[agreement]]\nname = "{a}-{b}"\nfrom = "{a}"\nto = ["{b}"]\n'
        'categories = ["airspace", "drawing", "track"]\n'
        for a, b in (("USA", "JPN"), ("JPN", "USA"))
    )
    config = tmp_path / "hub.toml"
    config.write_text(
        f'[server]\ndata_dir = "hub"\nhttp = "127.0.0.1:{ports["http"]}"\n'
        + "".join(
            f'[[listener]]\nkind = "tak-tcp"\nbind = "127.0.0.1:{ports[p]}"\nparty = "{p}"\n'
            f'[[party]]\nid = "{p}"\ntoken = "{token_of(p)}"\n'
            for p in ("USA", "JPN")
        )
        + grants
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # (this checkout's commonsky)
    with (tmp_path / "hub.log").open("w") as log:
        hub = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "commonsky", "serve", "--config", str(config),
            cwd=tmp_path, env=env, stderr=log,
        )  # fmt: skip
        try:
            async with httpx.AsyncClient() as http:
                for _ in range(300):
                    with contextlib.suppress(httpx.HTTPError):
                        got = await http.get(f"http://127.0.0.1:{ports['http']}/healthz")
                        if got.status_code == 200:
                            break
                    assert hub.returncode is None, (tmp_path / "hub.log").read_text()
                    await asyncio.sleep(0.1)
            yield ports
        finally:
            hub.send_signal(signal.SIGTERM)
            await asyncio.wait_for(hub.wait(), 30)


async def v1_client(port: int, party: str) -> TakClient:
    """A TAK client that has negotiated TAK Protocol v1, as ATAK does on connecting."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = TakClient(reader, writer, party=party)
    await client.wait_for(lambda e: e["type"] == "t-x-takp-v")
    client.send(PROTO_REQUEST)
    response = await client.wait_for(lambda e: e["type"] == "t-x-takp-r")
    assert 'status="true"' in response["detail"]
    return client


async def test_a_long_route_and_a_telestration_relay_whole(
    tmp_path: Path, held_port: Callable[[], int]
) -> None:
    """A 1,000-point route (168 kB) and a telestration of 30 strokes (148 kB) were refused
    as `oversized` at the 64 KiB the limit was."""
    async with serving(tmp_path, held_port) as ports:
        usa, jpn = await v1_client(ports["USA"], "USA"), await v1_client(ports["JPN"], "JPN")
        long_route, drawing = route(1000, "route-1000"), telestration(30, 60, "tele-30")
        assert len(long_route) > 160_000 and len(drawing) > 140_000
        usa.send(as_proto(long_route) + as_proto(drawing))
        got = await jpn.wait_for(lambda e: e["uid"] == "USA::route-1000", timeout=20)
        assert got["wire"] == "proto" and got["xmlDetail"].count("<link ") == 1000
        got = await jpn.wait_for(lambda e: e["uid"] == "USA::tele-30", timeout=20)
        assert got["xmlDetail"].count("<link line=") == 30
        await usa.close()
        await jpn.close()


@pytest.mark.parametrize("wire", ["proto", "xml"])
async def test_a_message_just_over_the_limit_is_refused_in_one_line_and_the_rest_goes_on(
    tmp_path: Path, held_port: Callable[[], int], wire: str
) -> None:
    """Over TAK Protocol v1 it closed the connection; now it is skipped by its length, as XML
    is to its end: the connection's earlier item stays, its next one is relayed, and the hub
    says why in one line naming the size and the setting's value."""
    limit = Settings().limit_message_bytes
    if wire == "proto":
        big = _exactly(limit + 1, lambda xml: payload_length(as_proto(xml)), as_proto)
        why = f"TAK protobuf message of {limit + 1} bytes exceeds limit_message_bytes ({limit})"
    else:
        big = _exactly(limit + 1, len, lambda xml: xml)
        why = f"event of {limit + 1} bytes exceeds limit_message_bytes ({limit})"
    encode = as_proto if wire == "proto" else (lambda xml: xml)
    async with serving(tmp_path, held_port) as ports:
        jpn = await v1_client(ports["JPN"], "JPN")
        if wire == "proto":
            usa = await v1_client(ports["USA"], "USA")
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", ports["USA"])
            usa = TakClient(reader, writer, party="USA")
        usa.send(encode(route(20, "before")))
        await jpn.wait_for(lambda e: e["uid"] == "USA::before")
        usa.send(big + encode(track("after")))
        await jpn.wait_for(lambda e: e["uid"] == "USA::after", timeout=20)
        await usa.sync()  # (the same connection: still open, still read)
        assert "USA::too-big" not in {e["uid"] for e in jpn.events}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['http']}") as http:
            token = {"Authorization": f"Bearer {token_of('USA')}"}
            uids = {i["uid"] for i in (await http.get("/api/items", headers=token)).json()}
        assert {"before", "after"} <= uids and "too-big" not in uids, uids
        await usa.close()
        await jpn.close()
    lines = [ln for ln in (tmp_path / "hub.log").read_text().splitlines() if "refused" in ln]
    assert len(lines) == 1, lines
    assert "refused (oversized)" in lines[0] and why in lines[0], lines[0]


def _exactly(length: int, size: Callable[[bytes], int], wire: Callable[[bytes], bytes]) -> bytes:
    """A route (no XML declaration) whose `size` is exactly `length` bytes (its remarks make
    up the difference), as `wire` sends it."""
    fill = 0
    for _ in range(5):
        xml = route(1500, "too-big", remarks="x" * fill).removeprefix(HEADER.encode())
        if size(xml) == length:
            return wire(xml)
        fill += length - size(xml)
        assert fill > 0
    raise AssertionError(f"no route of exactly {length} bytes")
