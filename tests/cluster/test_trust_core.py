"""Random and mutated stream messages through a core: `ClusterCore._apply` over a real hub on
PostgreSQL (its store, ledger, desks), with the picture bucket's writes acknowledged at once
(NATS is not what is under test here; tests/cluster/test_trust_cluster.py goes through it).

The property: whatever comes, the core applies the batch and goes on (no exception), and
every output it gives a client is (a) an item of the party its edge attached for the
connection it came over — never of a party a message merely claims — and (b) for a client
of that party or of a party an agreement lets see its category. A message the checks drop
gives nothing to anyone, and costs nothing but its line and its count."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commonsky.bench.cluster import chat, cluster_config, marker, track
from commonsky.bench.fuzz_inputs import PARTIES
from commonsky.cluster.core import ClusterCore
from commonsky.cluster.wire import Attach, ConnInfo, Detach, Ingest, Names, encode
from commonsky.config import load_config
from commonsky.model import HUB, Disclosure
from commonsky.protocol.cot import parse_event
from commonsky.server import HubServer
from tests.cluster.conftest import NATS_URL
from tests.cluster.test_trust import INJECTED

NAME = "tp"
NAMES = Names(NAME)
EDGES = ("edge-a", "edge-b")
# One client per party on each edge: (edge, conn id) -> party.
CLIENTS = {(e, f"{e}:{p}#1"): p for e in EDGES for p in PARTIES}
NOW = time.time()
EVENTS = [
    parse_event(track("T-1", NOW)),
    parse_event(track("T-2", NOW, lat=31.0)),
    parse_event(marker("M-1", NOW)),
    parse_event(chat("C-1", "KOR", NOW)),
    parse_event(chat("C-2", "USA", NOW)),
]


class Stored:
    """What the picture bucket's writes are published with, acknowledging each at once."""

    def __init__(self) -> None:
        self.seq = 0

    async def publish_async(self, subject: str, data: bytes, headers: Any = None) -> Any:
        self.seq += 1
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        done.set_result(self.seq)
        return done


@dataclass
class Msg:
    """A message as the durable consumer pushes it."""

    subject: str
    data: bytes
    seq: int
    acked: bool = False

    @property
    def metadata(self) -> Any:
        return SimpleNamespace(sequence=SimpleNamespace(stream=self.seq))

    async def ack(self) -> None:
        self.acked = True


class Core:
    """A core and what it gave each client."""

    def __init__(self, core: ClusterCore, loop: asyncio.AbstractEventLoop) -> None:
        self.core, self.loop = core, loop
        self.seq = 0
        agreements = core.hub.policy.agreements
        shown = [a for a in agreements if a.disclosure is not Disclosure.CONFLICTS_ONLY]
        self.sees = {(a.provider, r, c.value) for a in shown for r in a.recipients
                     for c in a.categories}  # fmt: skip

    def feed(self, subject: str, data: bytes) -> list[tuple[str, str, str, str, str]]:
        """One message through the core; (edge, conn, originator, uid, category) of each
        output (its item's uid as stored)."""
        self.seq += 1
        msg = Msg(subject, data, self.seq)
        self.loop.run_until_complete(self.core._apply([cast(Any, msg)]))
        assert msg.acked  # (dropped or applied: it never comes again)
        self.core.hub.wires.flush()
        outs = [(edge, conn, p.rendered.item.party, p.rendered.item.event.uid,
                 p.rendered.item.category.value)
                for edge, batch in self.core._outs.items()
                for conn, _, pendings in batch for p in pendings]  # fmt: skip
        self.core._outs.clear()
        self.core._refused.clear()
        self.core._closes.clear()
        self.core._attached.clear()
        return outs

    def entitled(self, sender: str, receiver: str, category: str) -> bool:
        """Whether an agreement in the config lets `receiver` see `sender`'s `category`."""
        return sender == receiver or (sender, receiver, category) in self.sees


@pytest.fixture
def core(tmp_path: Path, postgres_url: str, held_port: Callable[[], int]) -> Iterator[Core]:
    ports = {p: held_port() for p in PARTIES}
    path = cluster_config(tmp_path, NAME, NATS_URL, postgres_url, "core", ports, held_port())
    server = HubServer(load_config(path), init=True, writer="test epoch 1")
    loop = asyncio.new_event_loop()
    try:
        fed = fed_core(server, loop)
        assert len(fed.core.proxies) == len(CLIENTS)
        yield fed
    finally:
        loop.close()
        server._release()


def fed_core(server: HubServer, loop: asyncio.AbstractEventLoop) -> Core:
    """A `ClusterCore` on `server`'s hub, fed by hand on `loop` (no NATS: its stream is
    `Stored`), with every client of CLIENTS attached by its edge."""
    running = ClusterCore(server.hub, cast(Any, None), cast(Any, None), cast(Any, None),
                          NAMES, stream=Stored())  # fmt: skip
    fed = Core(running, loop)
    for (edge, conn), party in CLIENTS.items():
        info = ConnInfo(conn, party, f"{party}-user", "tak-tcp", "127.0.0.1:9", "xml")
        fed.feed(NAMES.ingest(edge), encode(Attach(edge, info, None)))
    return fed


def check(fed: Core, subject: str, data: bytes) -> None:
    """The property, for one message (module docstring)."""
    envelope: Any = None
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        envelope = msgspec.msgpack.decode(data, type=Ingest | Attach | Detach)
    dropped_before = _dropped(fed)
    # Who each client is: the party its edge gave it (an Attach, or its first event).
    parties = {key: conn.party for key, conn in fed.core.proxies.items()}
    outs = fed.feed(subject, data)
    parties |= {key: conn.party for key, conn in fed.core.proxies.items()}
    if _dropped(fed) > dropped_before:
        assert outs == [], outs  # (a dropped message gives nothing to anyone)
        return
    for edge, conn, originator, uid, category in outs:
        receiver = parties[(edge, conn)]
        if originator == HUB:
            continue  # (the hub's own notices and receipts: computed per recipient)
        # Whatever made it go out (an event, a client's replay), an item goes only to whom
        # its originator's agreements let see it.
        assert fed.entitled(originator, receiver, category), (originator, receiver, category)
        if isinstance(envelope, Ingest) and uid == envelope.event.uid:
            # The item this event made is its connection's party's, whatever it claimed.
            sender = parties.get((envelope.edge, envelope.conn), envelope.party)
            assert originator == sender, (envelope, originator)


def _dropped(fed: Core) -> float:
    text = fed.core.hub.metrics.render().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("commonsky_cluster_dropped_total{"))  # fmt: skip


texts = st.text(max_size=40)
edges = st.sampled_from(EDGES) | texts


@st.composite
def envelopes(draw: st.DrawFn) -> tuple[str, bytes]:
    """An edge's message, some of its fields changed, on its subject or another."""
    (edge, conn), party = draw(st.sampled_from(sorted(CLIENTS.items())))
    event = draw(st.sampled_from(EVENTS))
    changes: dict[str, Any] = {}
    if draw(st.booleans()):
        changes["uid"] = draw(st.sampled_from(["", "a\nb", "T-1", "x" * 300]) | texts)
    if draw(st.booleans()):
        changes["type"] = draw(st.sampled_from(["", "a-h-A", "b-t-f", "t-x-d-d", "u-d-f"]) | texts)
    if draw(st.booleans()):
        changes["detail"] = draw(st.sampled_from(
            [INJECTED, "<contact", "</detail><detail>", "<a>&x;</a>", "<remarks>hi</remarks>"]
        ) | texts)  # fmt: skip
    if draw(st.booleans()):
        changes["dest_parties"] = tuple(draw(st.lists(st.sampled_from([*PARTIES, HUB, ""]))))
    event = msgspec.structs.replace(event, **changes)
    claimed = draw(st.sampled_from([party, *PARTIES, HUB, "", "xxx"]))
    said = draw(st.sampled_from([edge]) | edges)
    conn = draw(st.sampled_from([conn, *(c for _, c in CLIENTS), "unknown#9"]))
    msg_id = draw(st.sampled_from([f"{said}.r.{draw(st.integers(0, 10**6))}", "", "x.1"]))
    mode = draw(st.sampled_from(["xml", "proto", "json", "", "yaml"]))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        info = ConnInfo(conn, claimed, "u", "tak-tcp", "", mode)
        envelope: Any = Attach(said, info, draw(st.none() | st.integers(0, 5)))
    elif kind == 1:
        envelope = Detach(said, conn)
    else:
        envelope = Ingest(msg_id, said, conn, claimed, "u", mode, event, NOW)
    subject = draw(st.sampled_from([NAMES.ingest(said), NAMES.ingest(edge)])
                   | texts.map(lambda t: f"{NAME}.in.{t}"))  # fmt: skip
    return subject, encode(envelope)


garbage = st.tuples(
    st.sampled_from([NAMES.ingest(e) for e in EDGES]),
    st.binary(max_size=300)
    | st.builds(
        encode, st.dictionaries(texts | st.just("type"), texts | st.integers(-(2**63), 2**63))
    ),
)


@pytest.mark.slow
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(envelopes() | garbage, min_size=1, max_size=6))
def test_hostile_messages_never_stop_the_core_nor_reach_who_may_not_see(
    core: Core, messages: list[tuple[str, bytes]]
) -> None:
    for subject, data in messages:
        check(core, subject, data)
    # The core goes on: a good message afterwards, from a new client of USA's, is applied
    # and given to a new client of RUS's (us-ru: tracks in full).
    n = core.seq
    sender, watcher = ("edge-a", f"edge-a:USA#good{n}"), ("edge-b", f"edge-b:RUS#good{n}")
    info = ConnInfo(watcher[1], "RUS", "u", "tak-tcp", "", "xml")
    core.feed(NAMES.ingest("edge-b"), encode(Attach("edge-b", info, None)))
    good = Ingest(f"edge-a.r.{n}", *sender, "USA", "u", "xml",
                  parse_event(track(f"after-{n}", time.time())), time.time())  # fmt: skip
    outs = core.feed(NAMES.ingest("edge-a"), encode(good))
    assert (*watcher, "USA", f"after-{n}", "track") in outs, outs


def test_the_property_catches_a_message_applied_as_the_party_it_claims(core: Core) -> None:
    """Without the checks (the core before cluster/trust.py), an event over USA's
    connection that claims to be RUS's is applied as RUS's and reaches USA, which sees RUS's
    tracks; `check` says so."""
    usa = ("edge-a", "edge-a:USA#1")
    forged = Ingest("edge-a.r.1", *usa, "RUS", "u", "xml", EVENTS[0], NOW)
    core.core._agrees = lambda envelope: True  # type: ignore[method-assign]
    with pytest.raises(AssertionError):
        check(core, NAMES.ingest("edge-a"), encode(forged))


@pytest.mark.parametrize(("name", "subject", "envelope"), [
    ("a party it does not hold", NAMES.ingest("edge-a"),
     Ingest("edge-a.r.1", "edge-a", "edge-a:USA#1", "RUS", "u", "xml", EVENTS[0], NOW)),
    ("the hub's identity", NAMES.ingest("edge-a"),
     Ingest("edge-a.r.2", "edge-a", "edge-a:USA#1", "HUB", "u", "xml", EVENTS[0], NOW)),
    ("another edge's client", NAMES.ingest("edge-b"),
     Ingest("edge-a.r.3", "edge-a", "edge-a:USA#1", "USA", "u", "xml", EVENTS[0], NOW)),
    ("a detail that forges an event", NAMES.ingest("edge-a"),
     Ingest("edge-a.r.4", "edge-a", "edge-a:USA#1", "USA", "u", "xml",
            msgspec.structs.replace(EVENTS[0], detail=INJECTED), NOW)),
])  # fmt: skip
def test_each_forgery_is_dropped_and_counted(
    core: Core, name: str, subject: str, envelope: Ingest
) -> None:
    before = _dropped(core)
    assert core.feed(subject, encode(envelope)) == []
    assert _dropped(core) == before + 1
    assert core.core.hub.store.count() == 0  # (nothing stored: the marker never came either)
