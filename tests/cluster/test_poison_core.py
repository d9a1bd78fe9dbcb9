"""A poison message (cluster/poison.py): a stream message whose application raises what nobody
foresaw, in the middle of a batch of durable items, through `ClusterCore._apply` over a real
hub on PostgreSQL (test_trust_core.py's fixture). Before it, the exception left the core's
consumer unacknowledged and every core that took the lease stopped on the same message.

- A Python exception (our bug): the message is dropped, counted and recorded; the others are
  stored and delivered once each; the core goes on; a core taking over that is given the
  batch again (its acknowledgements lost) applies none of it again, the poison included.
- A statement the database refuses (its transaction aborted): the core records the message
  and stops, nothing of the segment sent nor stored; the next core applies the others once
  each and never the poison."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest

from commonsky.bench.cluster import chat, cluster_config, marker
from commonsky.bench.fuzz_inputs import PARTIES
from commonsky.cluster.core import ClusterCore, Fatal
from commonsky.cluster.wire import Ingest, encode
from commonsky.config import load_config
from commonsky.model import HUB
from commonsky.protocol.cot import parse_event
from commonsky.server import HubServer
from tests.cluster.conftest import NATS_URL
from tests.cluster.test_trust_core import NAME, NAMES, Core, Msg, fed_core
from tests.cluster.test_trust_core import core as core  # (the fixture)

SENDER = ("edge-a", "edge-a:USA#1")
GOOD = ("HOT-1", "M-1", "M-2")  # a hotline message to JPN and two markers, around BOOM


def batch(first_seq: int) -> list[Msg]:
    """HOT-1, BOOM (a marker), M-1, M-2 from USA's client on edge-a, as the stream has them."""
    now = time.time()
    events = [chat("HOT-1", "JPN", now), marker("BOOM", now), marker("M-1", now),
              marker("M-2", now)]  # fmt: skip
    return [Msg(NAMES.ingest("edge-a"), ingest(f"edge-a.r.{i}", e), first_seq + i)
            for i, e in enumerate(events)]  # fmt: skip


def ingest(msg_id: str, event: bytes) -> bytes:
    """The edge's message for `event` from USA's client on edge-a."""
    return encode(Ingest(msg_id, *SENDER, "USA", "u", "xml", parse_event(event), time.time()))


def run(fed: Core, msgs: list[Msg]) -> Counter[tuple[str, str, str]]:
    """One batch through the core; how many times each (edge, conn, uid) was sent."""
    fed.loop.run_until_complete(fed.core._apply(cast(Any, msgs)))
    return sent(fed)


def sent(fed: Core) -> Counter[tuple[str, str, str]]:
    """What the core sent each client since (the hub's own receipts left out)."""
    fed.core.hub.wires.flush()
    outs = Counter((edge, conn, p.rendered.item.event.uid)
                   for edge, b in fed.core._outs.items() for conn, _, ps in b for p in ps
                   if p.rendered.item.party != HUB)  # fmt: skip
    fed.core._outs.clear()
    return outs


def boom(fed: Core, action: Callable[[ClusterCore], None]) -> list[str]:
    """Make applying the event of uid BOOM do `action` first; returns the uids it hit."""
    hit: list[str] = []
    apply = fed.core._ingest

    def ingest(env: Ingest) -> None:
        if env.event.uid == "BOOM":
            hit.append(env.id)
            action(fed.core)
        apply(env)

    fed.core._ingest = ingest  # type: ignore[method-assign]
    return hit


def crash(core: ClusterCore) -> None:
    raise RuntimeError("a bug of ours on this message")


def refused(core: ClusterCore) -> None:
    """A statement the database refuses, swallowed as `Hub._observe` swallows a desk's
    failure: the transaction is aborted, and nothing says so but its state."""
    with contextlib.suppress(psycopg.DataError):
        core.store.connection().execute("SELECT 1/0")


def per_uid(outs: Counter[tuple[str, str, str]]) -> dict[str, set[int]]:
    """uid -> the counts it was sent to each client with."""
    got: dict[str, set[int]] = {}
    for (_, _, uid), n in outs.items():
        got.setdefault(uid, set()).add(n)
    return got


def metric(fed: Core, line: str) -> float:
    text = fed.core.hub.metrics.render().decode()
    return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(line))


def stored(fed: Core) -> list[str]:
    """The uids of the items stored from the edges (the hub's own receipts left out)."""
    rows = fed.core.store.connection().execute(
        "SELECT uid FROM commonsky_items WHERE party <> %s", (HUB,)
    )
    return sorted(bytes(r[0]).decode() for r in rows)


@pytest.fixture
def second(tmp_path: Path, postgres_url: str, held_port: Callable[[], int]) -> Iterator[Any]:
    """Builds the core that takes over (on the same database, its own data folder)."""
    made: list[tuple[HubServer, asyncio.AbstractEventLoop]] = []

    def make() -> Core:
        ports = {p: held_port() for p in PARTIES}
        path = cluster_config(tmp_path, NAME, NATS_URL, postgres_url, "core", ports, held_port())
        server = HubServer(load_config(path), writer="test epoch 2")
        loop = asyncio.new_event_loop()
        made.append((server, loop))
        fed = fed_core(server, loop)
        fed.seq = 100
        return fed

    yield make
    for server, loop in made:
        loop.close()
        server._release()


def test_a_message_whose_application_raises_is_dropped_and_the_core_goes_on(
    core: Core, second: Callable[[], Core]
) -> None:
    hit = boom(core, crash)
    msgs = batch(100)
    outs = run(core, msgs)  # (the old core: RuntimeError out of `_apply`, nothing acked)
    assert all(m.acked for m in msgs)
    assert hit == ["edge-a.r.1"]
    # The others: each stored once, sent once to each client that gets it.
    assert stored(core) == sorted(GOOD)
    got = per_uid(outs)
    assert set(got) == set(GOOD), outs
    assert all(counts == {1} for counts in got.values()), outs
    assert metric(core, 'commonsky_internal_errors_total{where="core_apply"}') == 1
    assert metric(core, 'commonsky_cluster_dropped_total{reason="internal_error"}') == 1
    # The core goes on: a later message is applied and sent.
    after = batch(200)[2:3]
    after[0].data = ingest("edge-a.r.after", marker("M-3", time.time()))
    assert per_uid(run(core, after)) == {"M-3": {1}}
    # A core taking over, given the batch again (as if the acknowledgements were lost):
    # nothing of it is applied again, the poison included (its id recorded as applied).
    fed = second()
    hit_again = boom(fed, crash)
    again = batch(100)
    run(fed, again)
    assert all(m.acked for m in again)
    assert hit_again == []
    assert fed.core.repeated == 4
    assert stored(fed) == sorted((*GOOD, "M-3"))
    assert metric(fed, "commonsky_internal_errors_total{") == 0


def test_a_message_whose_write_the_database_refuses_stops_the_core_once(
    core: Core, second: Callable[[], Core]
) -> None:
    hit = boom(core, refused)
    msgs = batch(100)
    with pytest.raises(Fatal, match="refused"):
        run(core, msgs)  # (the old core: psycopg's InFailedSqlTransaction, and no record)
    assert hit == ["edge-a.r.1"]
    assert not any(m.acked for m in msgs)
    # Nothing of the segment stored (the database threw its transaction away) nor sent.
    assert stored(core) == []
    assert sent(core) == Counter()
    assert metric(core, 'commonsky_cluster_dropped_total{reason="internal_error"}') == 1
    # The next core gets the batch again: the others applied once each, the poison never.
    fed = second()
    hit_again = boom(fed, refused)
    again = batch(100)
    outs = run(fed, again)
    assert all(m.acked for m in again)
    assert hit_again == []
    assert fed.core.repeated == 1
    assert stored(fed) == sorted(GOOD)
    got = per_uid(outs)
    assert set(got) == set(GOOD), outs
    assert all(counts == {1} for counts in got.values()), outs


def test_a_segment_whose_ids_cannot_be_recorded_is_rolled_back_and_stops_the_core(
    core: Core, second: Callable[[], Core], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No one message to blame: left by that exception, the store's block would have
    committed the segment's items without their ids (applied again by the next core)."""

    def fails(ids: Any, at: float, seqs: Any) -> None:
        raise RuntimeError("a bug of ours recording the ids")

    monkeypatch.setattr(core.core.store, "mark_applied", fails)
    msgs = batch(100)
    with pytest.raises(Fatal, match="segment"):
        run(core, msgs)  # (the old core: the RuntimeError, and the items committed)
    assert not any(m.acked for m in msgs)
    assert stored(core) == []
    assert sent(core) == Counter()
    fed = second()
    outs = run(fed, batch(100))
    assert fed.core.repeated == 0
    assert stored(fed) == sorted((*GOOD, "BOOM"))
    assert set(per_uid(outs)) == {*GOOD, "BOOM"}
    assert all(counts == {1} for counts in per_uid(outs).values()), outs
