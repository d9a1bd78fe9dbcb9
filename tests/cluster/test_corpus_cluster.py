"""The TAK corpus through a cluster: real TAK traffic must work unchanged when one hub is
spread over several processes (issue 19), exactly as through the single process.

The play is the single process's (`commonsky/conformance/play.py`, `tests/corpus/test_corpus.py`
says what it checks and how "unchanged" is defined: `compare.py`); only the hub differs
(`targets.ClusterHub`): two edges and one core, each a `commonsky serve` process, on the
machine's NATS JetStream and a fresh PostgreSQL database — one such cluster per wire, as
the single process has one hub per wire (the same file sent twice is one message). Every
file of `tests/corpus/data` is played through it:
- the sender on edge 0; ALPHA's XML receiver on edge 0 and its protobuf one on edge 1,
  BRAVO's XML receiver on edge 1 and its protobuf one on edge 0 (TAK Protocol v1 is
  negotiated with the edge);
- receivers named in `<marti><dest callsign=…>` announce that callsign first, from their
  own edge (the core's directory must route it there);
- then a late joiner of each party, ALPHA's on edge 1 and BRAVO's on edge 0 (the picture
  from the bucket and the core; the announced callsigns again across edges),
  and `GET /api/items` of each party through an edge's HTTP (`API`).

The expectation is the single process's verdict for every file: accepted, and delivered to
every receiver exactly once and unchanged (or, where it is not for that receiver, not at
all). Nothing is judged by waiting: each receiver's deliveries are those before a barrier.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from commonsky.conformance.play import FileResult, Sample, per_wire
from commonsky.conformance.targets import cluster_hubs
from tests.cluster.conftest import ADMIN_URL, NATS_URL

on_the_cluster = pytest.mark.asyncio(loop_scope="module")  # one cluster per wire, all files

DATA = Path(__file__).parents[1] / "corpus" / "data"
FILES = sorted(p for p in DATA.iterdir() if p.suffix in (".xml", ".bin"))
WIRES = ("xml", "protobuf")
CASES = [
    (path.name, wire)
    for path in FILES
    for wire in (WIRES if path.suffix == ".xml" else ("protobuf",))
]
IDS = [f"{name[:-4]}-as-{wire}" for name, wire in CASES]
# Where GET /api/items is asked: edge 1 (not the sender's), which forwards it to the core
# ("core": the core's own port).
API = "edge:1"

Results = dict[tuple[str, str], FileResult]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def played(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Results]:
    """Every (file, wire) played once through its wire's cluster; the two wires' clusters
    play at the same time (each wire's files one after another, as the single process)."""
    results: Results = {}
    folder = tmp_path_factory.mktemp("corpus")
    async with (
        cluster_hubs(NATS_URL, ADMIN_URL, WIRES, folder, api=API) as hubs,
        per_wire(WIRES, timeout=20.0, hubs=hubs) as benches,
    ):

        async def play(wire: str) -> None:
            for name, case_wire in CASES:
                if case_wire == wire:
                    sample = Sample.load(DATA / name)
                    results[name, wire] = await benches[wire].play(sample, wire)

        await asyncio.gather(*(play(wire) for wire in WIRES))
    yield results


def test_the_whole_corpus_is_played() -> None:
    assert len(FILES) == 84 and len(CASES) == 166


@on_the_cluster
async def test_receivers_are_spread_over_both_edges(played: Results) -> None:
    result = played[CASES[0]]
    receivers = sorted(d.receiver for d in result.deliveries)
    assert receivers == sorted(
        [
            "ALPHA xml @edge0", "ALPHA protobuf @edge1", "BRAVO xml @edge1",
            "BRAVO protobuf @edge0", "ALPHA late join @edge1", "BRAVO late join @edge0",
            "ALPHA /api/items", "BRAVO /api/items",
        ]
    )  # fmt: skip


@on_the_cluster
@pytest.mark.parametrize(("name", "wire"), CASES, ids=IDS)
async def test_conforms_through_the_cluster(played: Results, name: str, wire: str) -> None:
    result = played[name, wire]
    if not result.ok:
        head = f"{name} sent as {wire} (type {result.type!r}, uid {result.uid!r}), a cluster:"
        pytest.fail(head + "".join(f"\n  - {line}" for line in result.differences()), pytrace=False)
