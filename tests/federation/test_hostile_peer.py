"""A linked peer hub is authenticated but may be a rival: what it sends in the path
(provenance) and the envelope gets a clear refusal, counted by reason — never a failure of
ours — loses nothing already stored, and reaches no party beyond."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commonsky.federation import federation_pb2 as pb
from commonsky.federation.bridge import MAX_RELAY_HOPS
from commonsky.federation.mapping import MAX_SEQ, Envelope, ack, federated
from commonsky.federation.seam import came_over

from .test_non_interference_federated import Net
from .test_relay import CHAIN, LINKS, deal, event, held, watch

DEALS = [deal("us-jp", "USA", "JPN"), deal("us-kr", "USA", "KOR")]


def send(net: Net, hub: str, link: str, message: pb.FederatedEvent) -> None:
    fed = net.feds[hub]
    fed.links[link].receive(pb.FederatedEvent.FromString(message.SerializeToString()))


def copy(
    uid: str, path: list[str], seq: int = 0, to: tuple[str, ...] = ("JPN", "KOR")
) -> pb.FederatedEvent:
    """A copy of USA's item from A to B, for JPN (B's) and KOR (beyond B), with `path`."""
    provenance = tuple((p, p) for p in path)
    return federated(event(uid), Envelope(seq, 0, to, "USA"), provenance, (-1, len(path)))


FORGED = {
    "a separator in an id (two hubs in one)": (["hub-A,hub-X"], "provenance"),
    "an id holding the path's mark": (["hub-A>hub-X"], "provenance"),
    "an empty id": (["hub-A", ""], "provenance"),
    "a space": (["hub A"], "provenance"),
    "a control character": (["hub-A\n"], "provenance"),
    "a huge id": (["x" * 100_000], "provenance"),
    "1000 hubs": ([f"h{i}" for i in range(1000)], "hops"),
    "one hub past the relay limit": ([f"h{i}" for i in range(MAX_RELAY_HOPS + 1)], "hops"),
    "a hub twice": (["hub-A", "hub-X", "hub-A"], "loop"),
    "our own id": (["hub-A", "hub-B"], "loop"),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_a_forged_path_is_refused_and_nothing_else_changes(tmp_path: Path, case: str) -> None:
    path, reason = FORGED[case]
    net = Net(CHAIN, LINKS, DEALS, tmp_path)
    try:
        kor = watch(net, "C", "KOR")
        net.pump()
        send(net, "B", "to-A", copy("before", ["hub-A"], seq=1))
        net.pump()
        kor.take()
        send(net, "B", "to-A", copy("forged", path, seq=2))
        send(net, "B", "to-A", copy("forged-live", path))
        net.pump()
        link = net.feds["B"].links["to-A"]
        assert net.feds["B"].refused == {("to-A", reason): 2}
        assert link.internal_errors == 0
        assert held(net, "B", "USA") == ["before"] and held(net, "C", "USA") == ["before"]
        assert "forged" not in str([p.rendered.wire(p.variant, "xml") for p in kor.take()])
        # the link goes on: the next honest copy is applied and relayed
        send(net, "B", "to-A", copy("after", ["hub-A"], seq=3))
        net.pump()
        assert held(net, "C", "USA") == ["before", "after"]
    finally:
        net.close()


@pytest.mark.parametrize("seq", [MAX_SEQ + 1, 2**63, 2**70])
def test_a_sequence_past_the_store_is_refused_not_a_failure(tmp_path: Path, seq: int) -> None:
    net = Net(CHAIN, LINKS, DEALS, tmp_path)
    try:
        net.pump()
        send(net, "B", "to-A", copy("huge", ["hub-A"], seq=seq))
        send(net, "B", "to-A", ack(seq << 10, 0.0))  # an acknowledgement past it too
        link = net.feds["B"].links["to-A"]
        assert net.feds["B"].refused == {("to-A", "malformed"): 2}
        assert link.internal_errors == 0 and held(net, "B", "USA") == []
        send(net, "B", "to-A", copy("next", ["hub-A"], seq=MAX_SEQ))  # (the largest)
        assert held(net, "B", "USA") == ["next"]
    finally:
        net.close()


def test_a_replay_with_a_new_path_changes_nothing(tmp_path: Path) -> None:
    net = Net(CHAIN, LINKS, DEALS, tmp_path)
    try:
        net.pump()
        send(net, "B", "to-A", copy("m", ["hub-A"], seq=5))
        net.pump()
        (before,) = [i for i in net.hubs["B"].store.since(0) if i.uid == "m"]
        changed = federated(
            event("m", cot_type="a-h-G"), Envelope(5, 0, ("JPN", "KOR"), "USA"),
            (("hub-Q", "Q"), ("hub-A", "A")), (-1, 2),
        )  # fmt: skip
        send(net, "B", "to-A", changed)
        net.pump()
        (after,) = [i for i in net.hubs["B"].store.since(0) if i.uid == "m"]
        assert after == before and came_over(after.origin) == ("to-A", ("hub-A",))
        assert held(net, "C", "USA") == ["m"]
        assert [i.event.type for i in net.hubs["C"].store.since(0) if i.uid == "m"] == ["b-m-p-s-m"]
    finally:
        net.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=st.lists(st.text(max_size=12), max_size=MAX_RELAY_HOPS + 2))
def test_a_kept_path_reads_back_as_sent(
    tmp_path_factory: pytest.TempPathFactory, path: list[str]
) -> None:
    """Whatever a peer puts in the provenance, the hub either refuses it (counted) or keeps
    exactly that path: a path read back from the store is the one that came."""
    net = Net(CHAIN, LINKS, DEALS, tmp_path_factory.mktemp("p"))
    try:
        send(net, "B", "to-A", copy("m", path, seq=1))
        fed = net.feds["B"]
        stored = [i for i in net.hubs["B"].store.since(0) if i.uid == "m"]
        assert fed.links["to-A"].internal_errors == 0
        if fed.refused:
            assert stored == [] and sum(fed.refused.values()) == 1
        else:
            (item,) = stored
            assert came_over(item.origin) == ("to-A", tuple(path))
    finally:
        net.close()


def test_the_demo_counts_what_a_hub_holds_from_each_peer(tmp_path: Path) -> None:
    """The federated demo's ledger check fails when a hub holds durable items from a peer
    whose ledger proves none acknowledged; it counts them from the hub's own file."""
    from commonsky.demo.federated_checks import received_over

    net = Net(CHAIN, LINKS, DEALS, tmp_path)
    try:
        net.pump()
        for i in range(2):
            net.hubs["A"].accept("USA", "d", event(f"m{i}"))
        net.hubs["A"].accept("USA", "d", event("live", cot_type="a-f-A"))
        net.pump()
        assert received_over(tmp_path / "B", "to-A") == 2  # (durable only)
        assert received_over(tmp_path / "B", "to-C") == 0
        assert received_over(tmp_path / "C", "to-B") == 2
    finally:
        net.close()


def test_a_peer_cannot_claim_or_address_past_its_agreements(tmp_path: Path) -> None:
    """B's link to A speaks for USA only and relays for no one; to C, for KOR only. A copy
    claiming another party, or addressed only to a party beyond B, is refused by reason;
    and with one of B's own, it reaches KOR only when B's own agreements entitle KOR."""
    deals_b = [deal("us-jp", "USA", "JPN")]  # B never agreed that USA's items reach KOR
    net = Net(CHAIN, LINKS, DEALS, tmp_path, deals_of={"B": deals_b})
    try:
        kor = watch(net, "C", "KOR")
        net.pump()
        claims = federated(event("as-kor"), Envelope(1, 0, ("JPN",), "KOR"), (("hub-A", "A"),))
        send(net, "B", "to-A", claims)  # A speaks for USA only
        send(net, "B", "to-C", copy("as-usa", ["hub-C"], seq=1, to=("JPN",)))  # C: KOR only
        send(net, "B", "to-A", copy("beyond-only", ["hub-A"], seq=2, to=("KOR",)))
        assert net.feds["B"].refused == {
            ("to-A", "federate_party"): 1,
            ("to-C", "federate_party"): 1,
            ("to-A", "federate_audience"): 1,
        }
        send(net, "B", "to-A", copy("with-jpn", ["hub-A"], seq=3, to=("JPN", "KOR")))
        net.pump()
        assert held(net, "B", "USA") == ["with-jpn"] and held(net, "C", "USA") == []
        assert b"with-jpn" not in b"".join(p.rendered.wire(p.variant, "xml") for p in kor.take())
    finally:
        net.close()


PARTY_NAMES = st.sampled_from(["USA", "JPN", "KOR", "HUB", "", "X"])
HOSTILE = st.lists(
    st.tuples(  # (each drawn half the time as an honest copy would be: so some do cross)
        st.one_of(st.just("USA"), PARTY_NAMES),  # the party claimed
        st.one_of(st.just(["JPN", "KOR"]), st.lists(PARTY_NAMES, max_size=4, unique=True)),
        st.one_of(
            st.just(["hub-A"]),
            st.lists(st.sampled_from(["hub-A", "hub-B", "hub-C", "hub-Q", ""]), max_size=3),
        ),
        st.integers(0, 4),  # seq (0: live)
        st.sampled_from(["b-m-p-s-m", "a-h-G", "t-x-d-d"]),
    ),
    max_size=8,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(messages=HOSTILE)
def test_nothing_a_rival_peer_sends_reaches_past_the_transit_agreements(
    tmp_path_factory: pytest.TempPathFactory,
    messages: list[tuple[str, list[str], list[str], int, str]],
) -> None:
    """Whatever A sends B (any party claimed, any addressees, any path, any sequence): B
    keeps only USA's items (the one party A speaks for); since B never agreed that USA's
    items reach KOR, C holds none and KOR receives none; and nothing fails on our side."""
    deals_b = [deal("us-jp", "USA", "JPN")]
    net = Net(CHAIN, LINKS, DEALS, tmp_path_factory.mktemp("h"), deals_of={"B": deals_b})
    try:
        kor = watch(net, "C", "KOR")
        net.pump()
        for i, (party, to, path, seq, cot_type) in enumerate(messages):
            copy = federated(
                event(f"h{i}", cot_type), Envelope(seq, 0, tuple(to), party),
                tuple((p, p) for p in path), (-1, len(path)),
            )  # fmt: skip
            send(net, "B", "to-A", copy)
            net.pump()
        assert net.feds["B"].links["to-A"].internal_errors == 0
        assert {i.party for i in net.hubs["B"].store.since(0)} <= {"USA"}
        assert [i for i in net.hubs["C"].store.since(0) if i.party == "USA"] == []
        assert b"USA::" not in b"".join(p.rendered.wire(p.variant, "xml") for p in kor.take())
    finally:
        net.close()
