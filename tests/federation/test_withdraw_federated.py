"""Withdrawals for parties behind a federation link (hub/withdraw.py, bridge.py `withdrawn`):
at an agreements' change the peer's copy goes, by a contact delete like the owner's, only
when every party behind the link that got that form stops getting it; never to a peer for
parties it does not hold, never for a party that keeps it (or got it and stopped earlier)."""

from __future__ import annotations

from pathlib import Path

from commonsky.hub.outbox import Outbox
from commonsky.model import Category, Disclosure
from commonsky.policy import Agreement
from commonsky.protocol.refs import link_target

from ..test_non_interference import NOW
from .test_non_interference_federated import Net
from .test_relay import event, watch

MARKER, TRACK = frozenset({Category.MARKER}), frozenset({Category.TRACK})


def deal(
    to: str, kinds: frozenset[Category], until: float | None, level: Disclosure = Disclosure.FULL
) -> Agreement:
    return Agreement(f"us-{to}-{min(kinds)}-{level}", "USA", (to,), kinds, level, None, None, until)


def at(net: Net, now: float) -> int:
    """Move every hub's clock to `now`; A's withdrawals at the changes due; carry them."""
    for hub in net.hubs.values():
        hub.clock = lambda: now
    queued = net.hubs["A"].withdrawals.check()
    net.pump()
    return queued


def deletes(box: Outbox) -> list[str]:
    return [
        link_target(p.rendered.item.event) or ""
        for p in box.take()
        if p.rendered.item.event.type == "t-x-d-d"
    ]


def test_the_copy_goes_only_when_all_its_holders_behind_the_link_stop(tmp_path: Path) -> None:
    layout = {"A": ("USA",), "B": ("JPN", "KOR"), "C": ("RUS",)}
    deals = [
        deal("JPN", MARKER, NOW + 10),  # JPN alone at B gets m1: it goes at NOW + 10
        deal("RUS", MARKER, None),  # C holds m1 for RUS, who keeps it
        deal("JPN", TRACK, NOW + 10),  # JPN and KOR get t1: KOR keeps it past NOW + 10,
        deal("KOR", TRACK, NOW + 20),  # so B keeps its copy then, and at NOW + 20 too
    ]
    net = Net(layout, {frozenset("AB"), frozenset("AC")}, deals, tmp_path)
    try:
        jpn, kor, rus = watch(net, "B", "JPN"), watch(net, "B", "KOR"), watch(net, "C", "RUS")
        net.pump()
        net.hubs["A"].accept("USA", "d", event("m1"))
        net.hubs["A"].accept("USA", "d", event("t1", "a-f-A"))
        net.pump()
        assert ("USA", "m1") in net.hubs["B"].durable and ("USA", "t1") in net.hubs["B"].live
        jpn.take(), kor.take(), rus.take()
        at(net, NOW + 10)
        assert net.feds["A"].withdrawals_sent == 1
        assert ("USA", "m1") not in net.hubs["B"].durable
        assert deletes(jpn) == ["USA::m1"] and deletes(kor) == []
        assert ("USA", "m1") in net.hubs["C"].durable and deletes(rus) == []
        assert ("USA", "t1") in net.hubs["B"].live  # KOR keeps it: nothing crossed
        assert net.hubs["A"].live[("USA", "t1")].seen["JPN"] == {"full"}  # (B still shows it)
        at(net, NOW + 20)  # KOR's ends: JPN got t1 and stopped earlier, so B keeps it still
        assert net.feds["A"].withdrawals_sent == 1
        assert ("USA", "t1") in net.hubs["B"].live and deletes(jpn) == deletes(kor) == []
    finally:
        net.close()


def test_a_downgrade_takes_the_full_copy_and_an_end_the_generalized_one(tmp_path: Path) -> None:
    deals = [
        deal("JPN", MARKER, NOW + 10),  # m1 in full until NOW + 10, then generalized
        deal("JPN", MARKER, None, Disclosure.GENERALIZED),
        deal("JPN", TRACK, NOW + 10, Disclosure.GENERALIZED),  # t1 generalized until then
    ]
    net = Net({"A": ("USA",), "B": ("JPN",)}, {frozenset("AB")}, deals, tmp_path)
    try:
        jpn = watch(net, "B", "JPN")
        net.pump()
        net.hubs["A"].accept("USA", "d", event("m1"))
        net.hubs["A"].accept("USA", "d", event("t1", "a-f-A"))
        net.pump()
        (handle,) = [k for k in net.hubs["B"].live if k[0] == "USA"]
        assert ("USA", "m1") in net.hubs["B"].durable and handle[1].startswith("g-")
        jpn.take()
        at(net, NOW + 10)
        assert net.feds["A"].withdrawals_sent == 2
        assert ("USA", "m1") not in net.hubs["B"].durable and handle not in net.hubs["B"].live
        assert sorted(deletes(jpn)) == sorted(["USA::m1", f"USA::{handle[1]}"])
        net.hubs["A"].accept("USA", "d", event("m1"))  # the next version: generalized
        net.pump()
        ((_, uid),) = [k for k in net.hubs["B"].durable if k[0] == "USA"]
        assert uid.startswith("g-")
    finally:
        net.close()
