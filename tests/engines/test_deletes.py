"""Fault 3 of issue 12: ATAK's delete (`t-x-d-d`) is applied, by the owner only.

The item leaves the picture, the store (gone after a restart too) and what a connecting
client is given; every party that received it is told, under the name it got it by; its
conflicts clear and their hotline threads close. The delete itself is never stored.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from commonsky.errors import RemoteProtocolError
from commonsky.hub.connection import MemoryPeer
from commonsky.hub.core import Connection
from commonsky.hub.outbox import Outbox
from commonsky.model import CotEvent
from commonsky.namespace import handle
from tests.engines import atak
from tests.engines.harness import World, drawing, event, make_world, square

PARTIES = ("USA", "GBR", "FRA", "KOR", "RUS")


def deal(src: str, dst: list[str], cats: list[str], disclosure: str = "full") -> dict:
    return {
        "name": f"{src}->{dst} {cats} {disclosure}",
        "from": src,
        "to": dst,
        "categories": cats,
        "disclosure": disclosure,
    }


DEALS = [
    deal("USA", ["GBR"], ["airspace", "track", "hotline"]),
    deal("USA", ["KOR"], ["airspace", "track"], "generalized"),
    deal("GBR", ["USA"], ["airspace", "track", "hotline"]),
]


def join(w: World, party: str, name: str) -> Outbox:
    outbox = Outbox(10_000, 10_000)
    w.hub.attach(Connection(party, name, "test", outbox, MemoryPeer(), name))
    return outbox


def uids(w: World, outbox: Outbox) -> list[tuple[str, str]]:
    from commonsky.protocol.cot import parse_event

    return [
        ((e := parse_event(p.rendered.wire(p.variant, "xml"))).type, e.uid) for p in outbox.take()
    ]


def links(e: CotEvent) -> list[str]:
    return [atak.attrs(e, "link")["uid"]]


@pytest.mark.parametrize("force", [False, True])
def test_deleting_a_drawing_tells_everyone_who_had_it_and_forgets_it(
    tmp_path: Path, force: bool
) -> None:
    w = make_world(tmp_path, DEALS, parties=PARTIES)
    w.send("USA", drawing("AREA-1", square(38.0, 34.0, 1.0)))
    for p in PARTIES:
        w.take(p)
    gone = atak.delete("AREA-1", force=force)
    w.send("USA", gone)
    (to_gbr,) = w.take("GBR")
    assert (to_gbr.type, to_gbr.uid, links(to_gbr)) == (
        "t-x-d-d",
        f"USA::{gone.uid}",
        ["USA::AREA-1"],
    )
    (to_kor,) = w.take("KOR")  # generalized: named by the handle it was given
    assert to_kor.type == "t-x-d-d" and links(to_kor) == [handle(b"s" * 32, "USA", "AREA-1")]
    assert ("<__forcedelete" in to_gbr.detail) is force
    assert w.take("FRA") == [] and w.take("RUS") == []  # never had it
    assert ("USA", "AREA-1") not in w.hub.durable
    # Not in the picture a party is given, not replayed: a late joiner gets only its delete
    # (it may have been away when it was deleted: hub/withdraw.py `owed`).
    assert [r.item.uid for r, _ in w.hub.visible("GBR")] == []
    assert uids(w, join(w, "GBR", "late")) == [("t-x-d-d", "USA::withdrawn.AREA-1")]
    # Gone from the picture after a restart too, and the delete still owed (its tombstone
    # is stored: hub/withdraw.py `owe_deleted`) to a client that was away all along.
    w.services.close()
    w.hub.store.close()
    again = make_world(tmp_path, DEALS, parties=PARTIES)
    assert ("USA", "AREA-1") not in again.hub.durable
    assert uids(again, join(again, "GBR", "after-restart")) == [
        ("t-x-d-d", "USA::withdrawn.AREA-1")
    ]


def test_deleting_a_track_drops_a_pending_update_and_the_live_entry(tmp_path: Path) -> None:
    w = make_world(tmp_path, DEALS, parties=PARTIES)
    w.send("USA", event("T-1", "a-f-A", lat=35.0))
    assert [e.uid for e in w.take("GBR")] == ["USA::T-1"]
    w.send("USA", event("T-1", "a-f-A", lat=35.1))  # pending, not yet written to GBR
    w.send("USA", atak.delete("T-1"))
    got = w.take("GBR")
    assert [e.type for e in got] == ["t-x-d-d"]  # the moot update is not written first
    assert ("USA", "T-1") not in w.hub.live


def test_a_party_cannot_delete_another_partys_item(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = make_world(tmp_path, DEALS, parties=PARTIES)
    w.send("GBR", drawing("GB-AREA", square(38.0, 34.0, 1.0)))
    w.take("USA"), w.take("GBR")
    with pytest.raises(RemoteProtocolError) as info:
        w.send("USA", atak.delete("GBR::GB-AREA"))
    assert info.value.reason == "delete_not_owner" and "GBR" in str(info.value)
    assert ("GBR", "GB-AREA") in w.hub.durable
    # A delete of a uid of its own that happens to match changes nothing of GBR's either.
    w.send("USA", atak.delete("GB-AREA"))
    assert ("GBR", "GB-AREA") in w.hub.durable
    w.send("USA", event("BARRIER", "a-f-A"))  # GBR is entitled to this; nothing came before
    assert [(e.type, e.uid) for e in w.take("GBR")] == [("a-f-A", "USA::BARRIER")]


def test_a_delete_clears_its_conflicts_and_closes_their_thread(tmp_path: Path) -> None:
    w = make_world(tmp_path, DEALS, parties=PARTIES)
    w.send("USA", drawing("US-OPS", square(38.0, 34.0, 1.0)))
    w.send("GBR", drawing("GB-OPS", square(38.5, 34.5, 1.0)))
    assert len(w.services.airspace.engine.conflicts()) == 1
    (thread,) = [m for m in w.services.hotline.messages.values() if m.conflict]
    w.send("GBR", atak.delete("GB-OPS"))
    assert w.services.airspace.engine.conflicts() == []
    assert w.services.airspace.for_party("USA") == [] and w.services.airspace.for_party("GBR") == []
    assert thread.closed == w.clock.now
    w.clock.now += 10 * 86400
    assert w.services.hotline.tick() == []  # a closed thread never escalates
    kinds = [e.kind for e in w.services.recorder.ledger.entries()]
    assert "close" in kinds


def test_a_delete_of_a_chat_closes_it(tmp_path: Path) -> None:
    w = make_world(tmp_path, DEALS, parties=PARTIES)
    w.send("USA", atak.chat("USA-DEV", "EAGLE 2", "GBR::EUD-7", "RED FOX 1", "hi", "m-9"))
    w.send("GBR", atak.sa("EUD-7", "RED FOX 1"))
    (message,) = w.services.hotline.history("USA")
    w.send("USA", atak.delete("GeoChat.USA-DEV.GBR::EUD-7.m-9"))
    (message,) = w.services.hotline.history("USA")
    assert message["closed"] == w.clock.now


def test_a_delete_naming_nothing_stays_inside_the_party(tmp_path: Path) -> None:
    # pytak says hello with a `t-x-d-d` that has no link: not an error, nothing to delete.
    w = make_world(tmp_path, DEALS, parties=PARTIES)
    other = join(w, "USA", "usa-2")
    hello = event("takPing", "t-x-d-d")
    w.send("USA", hello)
    assert uids(w, other) == [("t-x-d-d", "takPing")]
    w.send("USA", event("BARRIER", "a-f-A"))
    assert [e.uid for e in w.take("GBR")] == ["USA::BARRIER"]
