"""The bridge's flow rules in memory (two real hubs, links piped): a link over its queue
limit drops live positions but reads durable items from the store again — none lost, none
applied twice, in order; acknowledgements move the sender's cursor."""

from __future__ import annotations

from pathlib import Path

from commonsky.model import Category, CotEvent, Disclosure, Point
from commonsky.policy import Agreement

from ..test_non_interference import NOW
from .test_non_interference_federated import Net

SHARE = [
    Agreement(
        "us-jp", "USA", ("JPN",), frozenset({Category.TRACK, Category.MARKER}), Disclosure.FULL
    )
]


def event(uid: str, cot_type: str) -> CotEvent:
    return CotEvent(
        uid=uid, type=cot_type, time=NOW, start=NOW, stale=NOW + 600, how="m-g",
        point=Point(35.0, 135.0),
    )  # fmt: skip


def test_over_the_limit_durable_items_come_from_the_store(tmp_path: Path) -> None:
    net = Net({"A": ("USA",), "B": ("JPN",)}, {frozenset(("A", "B"))}, SHARE, tmp_path)
    try:
        usa, jpn = net.hubs["A"], net.hubs["B"]
        link = net.feds["A"].links["to-B"]
        link.limit_queue = 5
        net.pump()  # (the sessions' first catch-up: nothing stored yet)
        for i in range(40):
            usa.accept("USA", "d", event(f"m{i}", "b-m-p-s-m"))
            usa.accept("USA", "d", event(f"t{i}", "a-f-A"))
        assert link.dropped > 0  # live positions over the limit were not queued
        net.pump()
        held = [i.uid for i in jpn.store.since(0) if i.party == "USA"]
        assert held == [f"m{i}" for i in range(40)]  # every marker, once, in order
        assert link.session is not None and not link.session.catching_up
        # no acknowledgement without an event loop here: the cursor is where it started
        assert net.feds["A"].seam.cursor("fed-out", "to-B") == 0
        net.feds["B"].acks.flush()  # what the loop would run ACK_DELAY_S later
        net.pump()
        assert net.feds["A"].seam.cursor("fed-out", "to-B") >> 10 == max(
            i.seq for i in usa.store.since(0)
        )
    finally:
        net.close()
