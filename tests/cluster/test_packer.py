"""The core's deliveries to an edge (cluster/packer.py) and the edge's reading of them
(cluster/edge.py `EdgeHub.deliver`): every client gets exactly the bytes its proxy flushed,
in order, across as many deliveries as the size bound makes; each output's bytes go once per
delivery; clients that flushed the same batch share one entry of `Delivery.sends`."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from commonsky.cluster import packer
from commonsky.cluster.edge import EdgeHub
from commonsky.cluster.packer import Packer, pack
from commonsky.cluster.wire import Delivery, Output, delivery_decoder, encode
from commonsky.hub.connection import Connection
from commonsky.hub.held import STREAM_BYTES
from commonsky.hub.outbox import Outbox, Pending, Rendered
from commonsky.model import Category, CotEvent, Item, Point
from commonsky.policy import Policy
from commonsky.settings import defaults


def _bytes(rendered: Rendered, variant: str, mode: str) -> bytes:
    size = int(rendered.item.event.detail or "0")
    return f"{rendered.item.event.uid}/{variant}/{mode}|".encode() + b"x" * size


def _pending(uid: str, variant: str = "full", size: int = 0) -> Pending:
    event = CotEvent(uid, "a-f-G", 0.0, 0.0, 1e18, None, Point(1.0, 2.0), detail=str(size))
    item = Item("USA", "u", Category.TRACK, event, 1.0)
    return Pending(Rendered(item=item, make=_bytes), variant)


def _got(deliveries: list[Delivery]) -> dict[str, list[bytes]]:
    """What each client gets from `deliveries`, in order, as an edge reads them."""
    got: dict[str, list[bytes]] = {}
    for delivery in deliveries:
        for conn, at in delivery.pairs():
            got.setdefault(conn, []).append(delivery.outputs[at].data)
    return got


def test_clients_that_flushed_the_same_batch_share_one_entry() -> None:
    a, b = _pending("A"), _pending("B")
    one = Packer()
    for conn in ("c1", "c2", "c3"):
        one.add(conn, "xml", [a, b])
    one.add("c4", "proto", [a, b])  # (another form: other bytes)
    one.add("c5", "xml", [b, a])  # (another order)
    delivery = one.done()
    assert delivery.sends[0] == (["c1", "c2", "c3"], [0, 1])
    assert len(delivery.sends) == 3
    assert len(delivery.outputs) == 4  # A and B in XML and in protobuf, once each


def test_a_delivery_names_the_items_its_deletes_end() -> None:
    """The owner's delete and a withdrawal carry their own uids: the delivery names their
    targets, each once, by key (what the edge holds of them ends: edge_long.py)."""
    from commonsky.hub.withdraw import withdrawal

    def made(rendered: Rendered, variant: str, mode: str) -> bytes:
        return f"{rendered.item.event.uid}/{variant}/{mode}".encode()

    detail = '<link uid="USA::r1" relation="none" type="none"/><__forcedelete/>'
    event = CotEvent("del-1", "t-x-d-d", 0.0, 0.0, 1e18, None, Point(0.0, 0.0), detail=detail)
    item = Item("USA", "u", Category.AIRSPACE, event, 2.0)
    owners = Pending(Rendered(item=item, make=made), "own")
    withdrawn = Pending(Rendered(item=withdrawal(_pending("T1").rendered.item, 3.0), make=made),
                        "full")  # fmt: skip
    (one,) = pack([("c1", "xml", [_pending("A"), owners, withdrawn]),
                   ("c2", "proto", [owners])], {"USA", "RUS"})  # fmt: skip
    assert one.done().ended == [("USA", "r1"), ("USA", "T1")]
    assert Packer().done().ended == []


def test_outputs_too_long_for_a_tak_stream_are_noted_once_by_their_place() -> None:
    """(What the core holds for a fetch at another edge: cluster/core_long.py.)"""
    short, long = _pending("S"), _pending("L", size=STREAM_BYTES)
    one = Packer()
    for conn in ("c1", "c2"):
        one.add(conn, "xml", [short, long])
    one.add("c3", "proto", [long])
    one.add("page", "json", [long])  # (a map page gets it whole: nothing to hold)
    assert one.longs == {1: long, 2: long}
    assert [one.outputs[at].mode for at in one.longs] == ["xml", "proto"]


def test_a_client_flushed_twice_keeps_its_order() -> None:
    a, b = _pending("A"), _pending("B")
    one = Packer()
    one.add("c1", "xml", [a])
    one.add("c2", "xml", [b])
    one.add("c2", "xml", [a])  # (c2's second batch: after B, not in c1's entry before it)
    assert _got([one.done()])["c2"] == [b"B/full/xml|", b"A/full/xml|"]


# (client, mode, which pool items in which order); some outputs past the size bound
_flushes = st.lists(
    st.tuples(
        st.sampled_from(["c1", "c2", "c3", "c4"]),
        st.sampled_from(["xml", "proto"]),
        st.lists(st.integers(0, 5), max_size=6),
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(flushes=_flushes, big=st.sets(st.integers(0, 5), max_size=2), shared=st.booleans())
def test_every_client_gets_what_it_flushed_in_order(
    flushes: list[tuple[str, str, list[int]]], big: set[int], shared: bool
) -> None:
    # Items 0-5: two of them near half the bound; item 5 in a per-recipient form (its bytes
    # made afresh for each client, not cached). `shared`: one batch object reused as the
    # hub's fan-out does, else each flush its own list.
    pool = [
        _pending(
            str(n), "full:names" if n == 5 else "full", packer.OUT_BYTES // 2 if n in big else 0
        )
        for n in range(6)
    ]
    lists = {tuple(ns): [pool[n] for n in ns] for _, _, ns in flushes}
    flushed = [
        (conn, mode, lists[tuple(ns)] if shared else [pool[n] for n in ns])
        for conn, mode, ns in flushes
    ]
    packed = pack(flushed, {"USA"})
    deliveries = [delivery_decoder.decode(encode(p.done())) for p in packed]
    expected: dict[str, list[bytes]] = {}
    for conn, mode, batch in flushed:
        expected.setdefault(conn, []).extend(p.rendered.wire(p.variant, mode) for p in batch)
    assert _got(deliveries) == {c: b for c, b in expected.items() if b}
    for delivery in deliveries:
        cached = [o.data for o in delivery.outputs if o.uid != "5"]
        assert len(cached) == len(set(cached))  # (each output's bytes once)
        assert len(encode(delivery)) < packer.OUT_BYTES + packer.OUT_BYTES // 2 + 4096
    assert not packed[-1].sends or packed[-1].size < packer.OUT_BYTES


@dataclass(eq=False)
class _Reader:
    """An edge client's peer that keeps what each flush took from its outbox."""

    mode: str = "xml"
    conn: Connection | None = None
    got: list[bytes] = field(default_factory=list)

    def close(self, reason: str) -> None:
        pass

    def flush(self) -> None:
        assert self.conn is not None
        self.got += [p.rendered.wire(p.variant, self.mode) for p in self.conn.outbox.take()]


def test_the_edge_gives_each_client_its_entries_in_order() -> None:
    hub = EdgeHub("e1", Policy([], []), defaults())
    readers = {}
    for conn_id in ("c1", "c2"):
        reader = readers[conn_id] = _Reader()
        reader.conn = Connection("USA", "u", "tak", Outbox(100, 100), reader, id=conn_id)
        hub.attach(reader.conn)
    out = [Output("USA", u, "track", 1.0, False, "xml", u.encode()) for u in ("A", "B", "C")]
    hub.deliver(Delivery(out, [(["c1", "gone", "c2"], [0, 1]), (["c2"], [2, 0])]))
    assert readers["c1"].got == [b"A", b"B"]
    assert readers["c2"].got == [b"A", b"B", b"C", b"A"]
    assert hub.unknown == 2  # (the client no longer here: each of its outputs counted)
