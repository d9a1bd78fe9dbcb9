"""Real TAK traffic through the real hub: every file of the corpus, as XML and as protobuf.

`data/` holds 84 messages ATAK, WinTAK, iTAK, TAK Server, FreeTAKServer, node-CoT, takproto
and atak-forwarder really send (personal details replaced; sources in `data/README.md`).
Each is valid traffic a TAK server must accept, relay and replay.

Set-up: one hub per wire on loopback port 0 (its real TAK listeners and HTTP API) with two
parties, ALPHA and BRAVO, each granting the other `full` disclosure of every category. (One
per wire: the same file as XML and then as protobuf would be the same message sent twice,
which a hub takes once — `per_wire` in `commonsky/conformance/play.py`.) Each file is
retimed to now (`time`, `start` and `stale` moved by one whole number of seconds, each in
the form it was written) and sent by a fresh ALPHA connection:
- as XML, exactly the file's bytes but for those three times;
- as TAK protobuf: after the TAK v1 negotiation (`t-x-takp-q` / `t-x-takp-r`), the message
  takproto's `xml2proto` makes of it; the two `.bin` files are a real TAK protobuf frame,
  retimed and sent as protobuf only.
Watching it: an ALPHA and a BRAVO client over XML and over protobuf connected before, one
ALPHA and one BRAVO client connecting after (late join), and `GET /api/items` of each party.
A receiver announces itself first, as the addressee would have, when `<marti><dest …>` names
a callsign (a device report carrying that callsign) or one of its party's uids (a report
under that uid). A receipt (`b-t-f-d`, `b-t-f-r`) answers one message and is for the party
whose message its uid names (the sender's own, in this corpus); anything else is for both.

Each test asserts one thing for every file and wire:
- accepted: no refusal was counted for it;
- delivered unchanged within ALPHA (both wires), and to BRAVO unchanged but for the uid
  mapping (both wires) — or, where the message is not for BRAVO, not at all;
- replayed to a client that joins late, unchanged, when it persists (not already stale and
  not transient: chat receipts `b-t-f-d`/`b-t-f-r`, file transfers `b-f-t-…`, emergency
  cancels `b-a-o-can`, deletes `t-x-d-d`, pings), and not replayed when it does not;
- shown in `/api/items` of each party, unchanged, exactly when it persists.

"Unchanged", precisely (the rule lives in `commonsky/conformance/compare.py`; what is read
never goes through CommonSky's codec: XML with the standard library, protobuf with takproto):
- Every `<event>` attribute keeps its name and the value the sender wrote, as text: `how`
  is not filled in when absent, `access=""` stays `access=""`, `version="2"` stays `"2"`.
  A wire that has no place for a name is not asked to carry it (protobuf: `version`); in
  protobuf and JSON an empty string means "absent or empty" (proto3 cannot tell them apart).
- `time`, `start`, `stale`: the same text XML to XML (`…11Z` is not `…11.000Z`); as the same
  instant when one side is a number (protobuf's milliseconds, JSON's seconds).
- `<point>`: the same attribute text XML to XML (`hae="0"` is not `hae="0.0"`); the same
  double when one side carries a number (protobuf, JSON; NaN equals NaN, JSON's null is NaN).
- `<detail>`: the same elements in the same order, tags, attributes (as text), text and
  children; indentation between elements is not content, a leaf's text is. XML to XML a
  missing `<detail>` must stay missing.
- TAK protobuf's typed detail fields stand for exactly one element with exactly that field's
  attributes (all required ones, `contact@endpoint` only when not empty, nothing else); a
  typed field ignored by TAK's rule (same tag also in `xmlDetail`) stands for nothing.
- The uid mapping (README, "Identity and uids"; `map_references` in
  `commonsky/conformance/views.py` lists every place): BRAVO sees ALPHA's item as
  `ALPHA::uid` (a GeoChat uid name by name: `GeoChat.ALPHA::device.room.ALPHA::message`),
  and every name of an item inside `<detail>` (`link@uid` at any depth, `chatgrp@id/uidN`,
  `__chat@id`, `remarks@to`, `marti/dest@uid`, …) renamed the same way; names every client
  shares (`All Chat Rooms`, team colours) stay. ALPHA's own clients see it unchanged.
- Exactly one copy reaches each receiver; anything else a receiver got before the barrier
  (a position report every receiver is entitled to, sent after the file) counts.

Absence is never judged by waiting: each receiver's deliveries are those before the barrier.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from commonsky.conformance.play import FileResult, Sample, per_wire

on_the_hub = pytest.mark.asyncio(loop_scope="module")  # one hub per wire for the whole module

DATA = Path(__file__).parent / "data"
FILES = sorted(p for p in DATA.iterdir() if p.suffix in (".xml", ".bin"))
CASES = [
    (path.name, wire)
    for path in FILES
    for wire in (("xml", "protobuf") if path.suffix == ".xml" else ("protobuf",))
]
IDS = [f"{name[:-4]}-as-{wire}" for name, wire in CASES]

Play = Callable[[str, str], Awaitable[FileResult]]


def test_the_corpus_is_all_there() -> None:
    assert len([p for p in FILES if p.suffix == ".xml"]) == 82
    assert len([p for p in FILES if p.suffix == ".bin"]) == 2
    sources = (DATA / "README.md").read_text()
    assert all(f"| {p.name} |" in sources for p in FILES)  # each with its source


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def play() -> AsyncIterator[Play]:
    """Plays each (file, wire) once through the wire's private hub; every test reads the
    result."""
    results: dict[tuple[str, str], FileResult] = {}
    lock = asyncio.Lock()
    async with per_wire(("xml", "protobuf"), timeout=20.0) as benches:

        async def played(name: str, wire: str) -> FileResult:
            async with lock:
                if (name, wire) not in results:
                    sample = Sample.load(DATA / name)
                    results[name, wire] = await benches[wire].play(sample, wire)
                return results[name, wire]

        yield played


def _explain(result: FileResult, what: str, lines: list[str]) -> str:
    head = f"{result.name} sent as {result.wire} (type {result.type!r}, uid {result.uid!r}): "
    return head + what + "".join(f"\n  - {line}" for line in lines)


@on_the_hub
@pytest.mark.parametrize(("name", "wire"), CASES, ids=IDS)
async def test_accepted(play: Play, name: str, wire: str) -> None:
    result = await play(name, wire)
    if not result.sent or result.problems:
        pytest.fail(_explain(result, "not played", result.problems), pytrace=False)
    if not result.accepted:
        pytest.fail(_explain(result, "refused", [result.refusal]), pytrace=False)


def _check(result: FileResult, group: str) -> None:
    deliveries = getattr(result, group)
    if not deliveries:
        what = f"never reached the {group} check"
        pytest.fail(_explain(result, what, result.problems), pytrace=False)
    bad = [d for d in deliveries if not d.ok]
    if bad:
        lines = [
            line
            for line in result.differences()
            if line.startswith(tuple(f"[{d.receiver}]" for d in bad))
        ]
        summary = f"{group}: " + ", ".join(f"{d.receiver} {d.status}" for d in bad)
        pytest.fail(_explain(result, summary, lines), pytrace=False)


@on_the_hub
@pytest.mark.parametrize(("name", "wire"), CASES, ids=IDS)
async def test_delivered_unchanged_within_the_party(play: Play, name: str, wire: str) -> None:
    _check(await play(name, wire), "within")


@on_the_hub
@pytest.mark.parametrize(("name", "wire"), CASES, ids=IDS)
async def test_delivered_to_the_other_party_unchanged_but_for_uid_mapping(
    play: Play, name: str, wire: str
) -> None:
    _check(await play(name, wire), "across")


@on_the_hub
@pytest.mark.parametrize(("name", "wire"), CASES, ids=IDS)
async def test_replayed_to_a_client_that_joins_late(play: Play, name: str, wire: str) -> None:
    _check(await play(name, wire), "late")


@on_the_hub
@pytest.mark.parametrize(("name", "wire"), CASES, ids=IDS)
async def test_shown_in_api_items(play: Play, name: str, wire: str) -> None:
    _check(await play(name, wire), "api")
