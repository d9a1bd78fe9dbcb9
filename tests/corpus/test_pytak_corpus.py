"""Corpus files sent and received by pytak, a real TAK client (XML, TAK_PROTO=0).

pytak writes what it is given and splits what it reads at `</event>`; its own hello
(`t-x-d-d`) goes first, as it does for every user. A sample of the corpus — a position
report, an all-chat message, a direct chat, a spot marker, a rectangle, a route, an
emergency — goes from a pytak client of ALPHA to a pytak client of each party, through the
private two-party hub of `commonsky.conformance`; what arrives must be what was sent
(ALPHA's own client) or what was sent under the documented uid mapping (BRAVO's), by the
definition in `test_corpus.py`.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytak
import pytest
import pytest_asyncio

from commonsky.conformance import ALPHA, BRAVO
from commonsky.conformance.client import event_head
from commonsky.conformance.compare import compare
from commonsky.conformance.play import Bench
from commonsky.conformance.retime import offset_to, retime_xml
from commonsky.conformance.views import (
    map_event_uid,
    map_name,
    map_references,
    parse_xml,
    view_of_xml,
)

on_the_hub = pytest.mark.asyncio(loop_scope="module")
DATA = Path(__file__).parent / "data"
SAMPLE = [
    "004-a-f-G-U-C-AndroidTacticalAssaultKit-CIV-atakcotcaptures.xml",
    "011-b-t-f-AndroidTacticalAssaultKit-CIV-atakcotcaptures.xml",
    "069-b-t-f-atak-forwarder-HackyTests.xml",
    "024-b-m-p-s-m-AndroidTacticalAssaultKit-CIV-Marker-Spot.xml",
    "019-u-d-r-AndroidTacticalAssaultKit-CIV-Drawing-Shapes-Rectangle.xml",
    "028-b-m-r-AndroidTacticalAssaultKit-CIV-Route.xml",
    "031-b-a-o-tbl-Server-RepeaterMessageConversionTest.xml",
]


class PytakClient:
    """A pytak CLITool on a TCP URL: its tx_queue sends, its rx_queue holds what it read."""

    def __init__(self, port: int) -> None:
        config = configparser.ConfigParser()
        config["client"] = {"COT_URL": f"tcp://127.0.0.1:{port}", "TAK_PROTO": "0"}
        self.tool = pytak.CLITool(config["client"])
        self.task: asyncio.Task[None] | None = None
        self.read: list[bytes] = []

    async def start(self) -> None:
        await self.tool.setup()
        self.task = asyncio.create_task(self.tool.run())

    async def send(self, data: bytes) -> None:
        await self.tool.tx_queue.put(data)

    async def until(self, uid: str, timeout: float = 20.0) -> list[bytes]:
        """Everything read before the event `uid`, which is consumed with it."""
        async with asyncio.timeout(timeout):
            while True:
                data = bytes(await self.tool.rx_queue.get()).strip()
                head = event_head(data)
                if head is not None and head.get("uid") == uid:
                    before, self.read = self.read, []
                    return before
                self.read.append(data)

    async def stop(self) -> None:
        """Cancel pytak's workers and close the socket its writer holds."""
        running = list(self.tool.running_tasks)
        workers = [getattr(task, "_pytak_worker", None) for task in running]
        if self.task is not None:
            self.task.cancel()
        for task in running:
            task.cancel()
        await asyncio.gather(*running, *([self.task] if self.task else []), return_exceptions=True)
        for worker in workers:
            writer = getattr(worker, "writer", None)
            if isinstance(writer, asyncio.StreamWriter):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()


def barrier(uid: str) -> bytes:
    data = pytak.gen_cot(lat=-60.0, lon=-150.0, uid=uid, cot_type="a-f-G-U-C", stale=20)
    assert data is not None
    return data


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bench() -> AsyncIterator[Bench]:
    async with Bench.running(timeout=20.0) as running:
        yield running


@on_the_hub
@pytest.mark.parametrize("name", SAMPLE, ids=[n[:3] for n in SAMPLE])
async def test_pytak_clients_see_the_file_unchanged(bench: Bench, name: str) -> None:
    sender = PytakClient(bench.port(ALPHA))
    receivers = {ALPHA: PytakClient(bench.port(ALPHA)), BRAVO: PytakClient(bench.port(BRAVO))}
    clients = [sender, *receivers.values()]
    try:
        for client in clients:
            await client.start()
        tag = f"{name[:3]}-{time.monotonic_ns()}"
        await sender.send(barrier(f"pytak-before-{tag}"))  # after it: this file's doing
        for party, client in receivers.items():
            await client.until(map_name(f"pytak-before-{tag}", ALPHA, party))
        raw = (DATA / name).read_bytes()
        data = retime_xml(raw, offset_to(raw, time.time()))
        await sender.send(data)
        await sender.send(barrier(f"pytak-after-{tag}"))
        sent = view_of_xml(parse_xml(data))
        problems: list[str] = []
        for party, client in receivers.items():
            got = await client.until(map_name(f"pytak-after-{tag}", ALPHA, party))
            uid = map_event_uid(sent.type, sent.uid, ALPHA, party)
            uids = [(event_head(d) or {}).get("uid") for d in got]
            copies = [d for d, u in zip(got, uids, strict=True) if u == uid]
            if not copies:  # under another name it came all the same: its uid differs
                others = {map_name(sent.uid, ALPHA, party), sent.uid}
                copies = [d for d, u in zip(got, uids, strict=True) if u in others]
            if len(copies) != 1:
                problems.append(f"[{party} pytak] {len(copies)} copies")
            for copy in copies:
                want = map_references(sent, ALPHA, party)
                diffs = compare(want, view_of_xml(parse_xml(copy)))
                problems.extend(f"[{party} pytak] {line}" for line in diffs)
        if problems:
            pytest.fail(f"{name}:\n  - " + "\n  - ".join(problems), pytrace=False)
    finally:
        for client in clients:
            await client.stop()
