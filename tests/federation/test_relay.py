"""Relaying across more than one link (bridge.py's rule, docs/federation.md "Relaying"):
hubs A–B and B–C linked, A–C not. An item of A's party that C's party may see crosses
A → B → C when B's own parties may see that form too (a hub holds only what its own parties
may see), exactly once on each hop, with its path; never otherwise, never back."""

from __future__ import annotations

from pathlib import Path

from commonsky.federation import federation_pb2 as pb
from commonsky.federation.mapping import federated
from commonsky.federation.seam import came_over
from commonsky.hub.connection import MemoryPeer
from commonsky.hub.core import Connection
from commonsky.hub.outbox import Outbox
from commonsky.model import Category, CotEvent, Disclosure, Point
from commonsky.policy import Agreement

from ..test_non_interference import NOW
from .test_non_interference_federated import Net

CHAIN = {"A": ("USA",), "B": ("JPN",), "C": ("KOR",)}
LINKS = {frozenset(("A", "B")), frozenset(("B", "C"))}
KINDS = frozenset({Category.TRACK, Category.MARKER})


def deal(name: str, provider: str, to: str, level: Disclosure = Disclosure.FULL) -> Agreement:
    return Agreement(name, provider, (to,), KINDS, level)


def event(uid: str, cot_type: str = "b-m-p-s-m", stale: float = 600.0) -> CotEvent:
    return CotEvent(
        uid=uid, type=cot_type, time=NOW, start=NOW, stale=NOW + stale, how="m-g",
        point=Point(35.0, 135.0),
    )  # fmt: skip


def watch(net: Net, hub: str, party: str) -> Outbox:
    box = Outbox(10_000, 10_000)
    net.hubs[hub].attach(Connection(party, "obs", "test", box, MemoryPeer(), f"obs-{party}"))
    return box


def held(net: Net, hub: str, party: str) -> list[str]:
    return [i.uid for i in net.hubs[hub].store.since(0) if i.party == party]


def test_an_item_crosses_two_links_once_with_its_path(tmp_path: Path) -> None:
    deals = [deal("us-jp", "USA", "JPN"), deal("us-kr", "USA", "KOR")]
    net = Net(CHAIN, LINKS, deals, tmp_path)
    try:
        # A knows KOR only as a party its peer B relays for
        assert net.feds["A"].links["to-B"].config.relay == ("KOR",)
        kor, jpn = watch(net, "C", "KOR"), watch(net, "B", "JPN")
        net.pump()
        for i in range(3):
            net.hubs["A"].accept("USA", "d", event(f"m{i}"))
            net.pump()
        assert held(net, "B", "USA") == ["m0", "m1", "m2"]  # JPN may see them: B holds them
        assert held(net, "C", "USA") == ["m0", "m1", "m2"]  # and sends them on, once each
        got = [p.rendered.wire(p.variant, "xml") for p in kor.take()]
        assert [b"USA::m0" in w for w in got] == [True, False, False]
        assert sum(b"USA::" in w for w in got) == 3 and len(jpn.take()) == 3
        (item,) = [i for i in net.hubs["C"].store.since(0) if i.uid == "m0"]
        assert came_over(item.origin) == ("to-B", ("hub-A", "hub-B"))  # its path
        # a delete follows the same way
        net.hubs["A"].accept("USA", "d", event("m1", stale=-1.0))
        net.pump()
        assert ("USA", "m1") not in net.hubs["B"].durable
        assert ("USA", "m1") not in net.hubs["C"].durable
        assert ("USA", "m0") in net.hubs["C"].durable
        # each hop acknowledged with a receipt: the cursors moved on both links
        net.feds["B"].acks.flush()
        net.feds["C"].acks.flush()
        net.pump()
        assert net.feds["A"].seam.cursor("fed-out", "to-B") > 0
        assert net.feds["B"].seam.cursor("fed-out", "to-C") > 0
    finally:
        net.close()


def test_a_form_only_for_parties_beyond_the_peer_never_leaves(tmp_path: Path) -> None:
    # KOR may see USA's markers, JPN may not (or only generalized): B would hold what none of
    # its parties may see, so nothing crosses for KOR; the generalized form JPN may see does.
    deals = [deal("us-kr", "USA", "KOR"), deal("us-jp", "USA", "JPN", Disclosure.GENERALIZED)]
    for who, shared in (("nobody at B", deals[:1]), ("JPN, generalized", deals)):
        net = Net(CHAIN, LINKS, shared, tmp_path / who.replace(" ", "-"))
        try:
            kor = watch(net, "C", "KOR")
            net.pump()
            net.hubs["A"].accept("USA", "d", event("secret-plan"))
            net.pump()
            assert b"secret-plan" not in b"".join(
                p.rendered.wire(p.variant, "xml") for p in kor.take()
            )
            assert "secret-plan" not in held(net, "C", "USA")
            assert "secret-plan" not in held(net, "B", "USA")  # (generalized: a handle)
            assert len(held(net, "B", "USA")) == (1 if shared is deals else 0)
        finally:
            net.close()


def test_the_transit_hub_relays_only_what_its_own_agreements_allow(tmp_path: Path) -> None:
    deals = [deal("us-jp", "USA", "JPN"), deal("us-kr", "USA", "KOR")]
    without = {"B": deals[:1]}  # B's operator never agreed that USA's items reach KOR
    net = Net(CHAIN, LINKS, deals, tmp_path, deals_of=without)
    try:
        net.pump()
        net.hubs["A"].accept("USA", "d", event("m0"))
        net.pump()
        assert held(net, "B", "USA") == ["m0"] and held(net, "C", "USA") == []
    finally:
        net.close()


def test_with_a_direct_link_nothing_is_relayed(tmp_path: Path) -> None:
    deals = [deal("us-jp", "USA", "JPN"), deal("us-kr", "USA", "KOR")]
    net = Net(CHAIN, LINKS | {frozenset(("A", "C"))}, deals, tmp_path)
    try:
        net.pump()
        net.hubs["A"].accept("USA", "d", event("m0"))
        net.pump()
        (item,) = [i for i in net.hubs["C"].store.since(0) if i.uid == "m0"]
        assert came_over(item.origin) == ("to-A", ("hub-A",))  # straight from A
        assert net.feds["B"].links["to-C"].items_out == 0
    finally:
        net.close()


def test_a_copy_that_passed_us_is_refused_and_not_relayed_back(tmp_path: Path) -> None:
    deals = [deal("us-jp", "USA", "JPN"), deal("us-kr", "USA", "KOR")]
    net = Net(CHAIN, LINKS, deals, tmp_path)
    try:
        net.pump()
        fed_b = net.feds["B"]
        copy = federated(
            event("loop"), None, (("hub-A", "A"), ("hub-B", "B")), (-1, 2)
        )  # (a copy claiming to have passed B already)
        fed_b.received(fed_b.links["to-A"], pb.FederatedEvent.FromString(copy.SerializeToString()))
        assert fed_b.refused == {("to-A", "loop"): 1}
        net.hubs["A"].accept("USA", "d", event("m0"))
        net.pump()
        # C holds it from B, and nothing of it went back to A (its own item)
        assert net.feds["C"].links["to-B"].items_out == 0
        assert held(net, "A", "USA") == ["m0"]
    finally:
        net.close()
