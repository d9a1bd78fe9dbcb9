"""Fault 6 of issue 12: GeoChat as TAK clients use it.

Rooms cross to every party whose hotline agreement allows; ATAK's own receipts acknowledge;
`<marti><dest uid>` addresses like `dest callsign`; addressing narrows inside the sender's
party too; a chat to a callsign nobody uses yet waits for its device; a callsign is
forgotten when its user takes another; the directory survives a restart.
"""

from __future__ import annotations

import json
from pathlib import Path

from commonsky.hub.connection import MemoryPeer
from commonsky.hub.core import Connection
from commonsky.hub.outbox import Outbox
from commonsky.model import CotEvent
from commonsky.protocol.cot import parse_event
from tests.engines import atak
from tests.engines.harness import World, event, make_world

PARTIES = ("USA", "GBR", "FRA", "KOR")


def hotline(src: str, dst: list[str], **extra: object) -> dict:
    return {"name": f"{src} hotline", "from": src, "to": dst, "categories": ["hotline"], **extra}


DEALS = [
    hotline("USA", ["GBR", "FRA"]),
    hotline("GBR", ["USA"]),
    hotline("FRA", ["USA"]),
]


class Device:
    """One more TAK connection of a party, which reports itself like ATAK."""

    def __init__(self, w: World, party: str, uid: str, callsign: str) -> None:
        self.w, self.party, self.uid = w, party, uid
        self.outbox = Outbox(10_000, 10_000)
        self.conn = Connection(party, uid, "test", self.outbox, MemoryPeer(), f"dev-{uid}")
        w.hub.attach(self.conn)
        self.report(callsign)

    def report(self, callsign: str) -> None:
        self.w.hub.accept(self.party, self.uid, atak.sa(self.uid, callsign), self.conn)

    def send(self, e: CotEvent) -> object:
        return self.w.hub.accept(self.party, self.uid, e, self.conn)

    def take(self) -> list[CotEvent]:
        return [parse_event(p.rendered.wire(p.variant, "xml")) for p in self.outbox.take()]

    def chats(self) -> list[CotEvent]:
        return [e for e in self.take() if e.type.startswith("b-t-f")]

    def peers(self) -> list[CotEvent]:
        """Chats from other devices (not the hub's receipts to this party)."""
        return [e for e in self.chats() if not e.uid.startswith("HUB::")]


def test_a_room_message_crosses_to_every_party_the_agreements_allow(tmp_path: Path) -> None:
    w = make_world(tmp_path, DEALS, parties=PARTIES)
    w.send("USA", atak.room_chat("USA-DEV", "EAGLE 2", "Roger"))
    for party in ("GBR", "FRA"):
        (got,) = [e for e in w.take(party) if e.type == "b-t-f"]
        assert got.uid.startswith("GeoChat.USA::USA-DEV.All Chat Rooms.USA::")
        assert atak.attrs(got, "__chat")["id"] == "All Chat Rooms"  # a room, not a uid
    assert [e for e in w.take("KOR") if e.type == "b-t-f"] == []
    (record,) = w.services.hotline.history("USA")
    # Recorded and listed, but nobody is asked to acknowledge a room (ATAK never would).
    assert record["audience"] == ["FRA", "GBR"] and record["to"] == [] and record["pending"] == []
    w.clock.now += 10 * 86400
    assert w.services.hotline.tick() == []


def test_atak_receipts_acknowledge_the_message(tmp_path: Path) -> None:
    w = make_world(tmp_path, DEALS, parties=PARTIES)
    fox = Device(w, "GBR", "EUD-7", "RED FOX 1")
    eagle = Device(w, "USA", "USA-DEV", "EAGLE 2")
    eagle.send(atak.chat("USA-DEV", "EAGLE 2", "GBR::EUD-7", "RED FOX 1", "Confirm", "m-1"))
    (got,) = fox.chats()
    (message,) = w.services.hotline.history("USA")
    assert message["to"] == ["GBR"] and message["pending"] == ["GBR"]
    # The fox's ATAK answers as ATAK does: delivered at once, read when opened.
    w.clock.now += 5
    fox.send(atak.receipt(got, "EUD-7", "RED FOX 1", "b-t-f-d", now=w.clock.now))
    (message,) = w.services.hotline.history("USA")
    assert message["acks"] == {"GBR": w.clock.now} and message["read"] == {}
    receipts = [e for e in eagle.chats() if e.type == "b-t-f-d"]
    # The eagle's ATAK gets the receipt under its own message id, from the fox it knows.
    ataks = [e for e in receipts if e.uid == "m-1"]
    assert len(ataks) == 1 and atak.attrs(ataks[0], "link")["uid"] == "GBR::EUD-7"
    assert atak.attrs(ataks[0], "__chatreceipt")["id"] == "USA-DEV"
    w.clock.now += 5
    fox.send(atak.receipt(got, "EUD-7", "RED FOX 1", "b-t-f-r", now=w.clock.now))
    (message,) = w.services.hotline.history("USA")
    assert message["read"] == {"GBR": w.clock.now}
    w.clock.now += 10 * 86400
    assert w.services.hotline.tick() == []
    # The receipts went to USA only, not to FRA (which has GBR's hotline? no: nor its own).
    assert [e for e in w.take("FRA") if e.type.startswith("b-t-f-")] == []


def test_a_receipt_for_a_message_of_its_own_party_stays_in_that_party(tmp_path: Path) -> None:
    """A receipt answers one message and is for the party that sent it: two USA devices
    chatting, the receipt's uid is a USA message id, and GBR (which USA's hotline reaches)
    has nothing to do with it (corpus 035/036). A barrier shows it did not come."""
    w = make_world(tmp_path, DEALS, parties=PARTIES)
    eagle = Device(w, "USA", "USA-DEV", "EAGLE 2")
    hawk = Device(w, "USA", "USA-HAWK", "HAWK 3")
    eagle.send(atak.chat("USA-DEV", "EAGLE 2", "USA-HAWK", "HAWK 3", "Inside", "m-9"))
    (got,) = hawk.chats()
    hawk.send(atak.receipt(got, "USA-HAWK", "HAWK 3", "b-t-f-r", now=w.clock.now))
    assert [e.uid for e in eagle.chats() if e.type == "b-t-f-r"] == ["m-9"]
    w.send("USA", atak.room_chat("USA-DEV", "EAGLE 2", "barrier"))
    got_gbr = [e for e in w.take("GBR") if e.type.startswith("b-t-f")]
    assert [e.type for e in got_gbr] == ["b-t-f"]  # the barrier only
    assert "barrier" in got_gbr[0].detail


def test_dest_uid_addresses_like_dest_callsign_and_narrows_inside_the_party(
    tmp_path: Path,
) -> None:
    w = make_world(tmp_path, DEALS, parties=PARTIES)
    fox = Device(w, "GBR", "EUD-7", "RED FOX 1")
    badger = Device(w, "GBR", "EUD-8", "BADGER")
    eagle = Device(w, "USA", "USA-DEV", "EAGLE 2")
    hawk = Device(w, "USA", "USA-2", "HAWK")
    pages = {p: Outbox(10_000, 10_000) for p in ("USA", "GBR")}
    for party, outbox in pages.items():  # each party's map page (the API's WebSocket)
        page = Connection(party, "web", "websocket", outbox, MemoryPeer("json"))
        page.oversight = True
        w.hub.attach(page)
    for d in (fox, badger, eagle, hawk):
        d.take()
    # iTAK addresses by uid (OTS cot_parser; TS StreamingEndpointRewriteFilter).
    by_uid = event(
        "itak-1",
        "b-t-f",
        detail='<__chat id="GBR::EUD-7" chatroom="RED FOX 1" senderCallsign="EAGLE 2"/>'
        '<marti><dest uid="GBR::EUD-7"/></marti><remarks>by uid</remarks>',
    )
    eagle.send(by_uid)
    assert [atak.attrs(e, "dest") for e in fox.chats()] == [{"uid": "EUD-7"}]
    # Addressed means addressed: not the fox's neighbour, not the eagle's own neighbour.
    emergency = event(
        "911-1",
        "b-a-o-tbl",
        detail='<emergency type="911 Alert">EAGLE 2</emergency>'
        '<marti><dest callsign="HAWK"/></marti>',
    )
    eagle.send(emergency)
    assert [e.uid for e in hawk.take() if not e.uid.startswith("HUB::")] == ["911-1"]
    # Barriers: an undirected message reaches them all, and nothing addressed came before.
    eagle.send(atak.room_chat("USA-DEV", "EAGLE 2", "barrier"))
    assert [_text(e) for e in badger.chats()] == ["barrier"]
    assert [_text(e) for e in hawk.chats()] == ["barrier"]
    # The party's map page sees everything its party receives.
    seen = {
        p: {json.loads(x.rendered.wire(x.variant, "json"))["uid"] for x in o.take()}
        for p, o in pages.items()
    }
    assert "USA::itak-1" in seen["GBR"] and {"itak-1", "911-1"} <= seen["USA"]


def test_a_chat_to_an_unseen_callsign_waits_for_its_device(tmp_path: Path) -> None:
    w = make_world(tmp_path, [hotline("USA", ["GBR"], ack_deadline_s=600)], parties=PARTIES)
    eagle = Device(w, "USA", "USA-DEV", "EAGLE 2")
    eagle.take()
    # (An ATAK that knew OWL 9 from before, or an iTAK with a contact typed in.)
    eagle.send(atak.chat("USA-DEV", "EAGLE 2", "GBR::EUD-9", "OWL 9", "Welcome", "m-5"))
    (receipt,) = [e for e in eagle.chats() if e.uid.startswith("HUB::receipt-")]
    assert "callsign OWL 9 (not connected yet)" in _text(receipt)
    (message,) = w.services.hotline.history("USA")
    assert message["awaiting"] == ["OWL 9"] and message["to"] == []
    w.clock.now += 60
    owl = Device(w, "GBR", "EUD-9", "OWL 9")  # its first connection
    got = owl.chats()
    assert [e.uid for e in got] == ["GeoChat.USA::USA-DEV.EUD-9.USA::m-5"]
    (message,) = w.services.hotline.history("USA")
    assert message["awaiting"] == [] and message["to"] == ["GBR"]
    assert message["deadlines"]["GBR"] == w.clock.now + 600
    told = [_text(e) for e in eagle.chats()]
    assert any("delivered to GBR (OWL 9 connected)" in t for t in told)
    # An unseen callsign nobody takes escalates to its sender (after the default deadline:
    # no agreement names the party yet), once.
    eagle.send(atak.chat("USA-DEV", "EAGLE 2", "GHOST", "GHOST 1", "Anyone?", "m-6"))
    eagle.take()
    w.clock.now += w.services.hotline.default_deadline - 1
    w.services.hotline.tick()
    assert not any("GHOST 1" in _text(e) for e in eagle.chats())
    w.clock.now += 2
    w.services.hotline.tick()
    w.services.hotline.tick()
    told = [_text(e) for e in eagle.chats() if "GHOST 1" in _text(e)]
    assert len(told) == 1 and told[0].startswith("ESCALATION: no device using callsign GHOST 1")
    facts = [e.payload for e in w.services.recorder.ledger.entries() if e.kind == "escalation"]
    assert {"of": "USA::GeoChat.USA-DEV.GHOST.m-6", "callsign": "GHOST 1"} in facts


def test_a_callsign_in_a_party_it_may_not_reach_leaves_it_waiting(tmp_path: Path) -> None:
    w = make_world(tmp_path, [hotline("USA", ["GBR"])], parties=PARTIES)
    eagle = Device(w, "USA", "USA-DEV", "EAGLE 2")
    eagle.send(atak.chat("USA-DEV", "EAGLE 2", "GBR::EUD-9", "OWL 9", "for GBR's owl", "m-3"))
    korean_owl = Device(w, "KOR", "K-9", "OWL 9")  # no agreement from USA to KOR
    (message,) = w.services.hotline.history("USA")
    assert message["awaiting"] == ["OWL 9"] and message["to"] == []
    british_owl = Device(w, "GBR", "EUD-9", "OWL 9")
    assert [_text(e) for e in british_owl.peers()] == ["for GBR's owl"]
    assert korean_owl.peers() == []  # (the British owl's delivery is the barrier)
    (message,) = w.services.hotline.history("USA")
    assert message["awaiting"] == [] and message["to"] == ["GBR"]


def test_a_callsign_is_forgotten_when_its_user_takes_another(tmp_path: Path) -> None:
    w = make_world(tmp_path, DEALS, parties=PARTIES)
    fox = Device(w, "GBR", "EUD-7", "RED FOX 1")
    fox.report("GREY FOX")
    eagle = Device(w, "USA", "USA-DEV", "EAGLE 2")
    eagle.send(atak.chat("USA-DEV", "EAGLE 2", "GBR::EUD-7", "RED FOX 1", "old name", "m-7"))
    eagle.send(atak.chat("USA-DEV", "EAGLE 2", "GBR::EUD-7", "GREY FOX", "new name", "m-8"))
    assert [_text(e) for e in fox.chats()] == ["new name"]
    assert w.hub.directory.parties("RED FOX 1") == set()
    (old, new) = w.services.hotline.history("USA")
    assert old["awaiting"] == ["RED FOX 1"] and new["to"] == ["GBR"]


def test_the_directory_survives_a_restart(tmp_path: Path) -> None:
    w = make_world(tmp_path, DEALS, parties=PARTIES)
    Device(w, "GBR", "EUD-7", "RED FOX 1")
    w.services.tick()  # housekeeping saves it
    w.services.close()
    w.hub.store.close()
    again = make_world(tmp_path, DEALS, parties=PARTIES)
    assert again.hub.directory.parties("RED FOX 1") == {"GBR"}
    eagle = Device(again, "USA", "USA-DEV", "EAGLE 2")
    eagle.send(atak.chat("USA-DEV", "EAGLE 2", "GBR::EUD-7", "RED FOX 1", "after", "m-9"))
    (message,) = again.services.hotline.history("USA")
    assert message["to"] == ["GBR"] and message["awaiting"] == []  # known, though offline
    fox = Device(again, "GBR", "EUD-7", "RED FOX 1")  # reconnects: the chat was waiting
    assert [_text(e) for e in fox.chats()] == ["after"]


def test_a_directory_file_that_cannot_be_read_is_set_aside(tmp_path: Path) -> None:
    (tmp_path / "directory.json").write_text('{"devices": [["GBR", "EUD-7", "FOX"]')
    w = make_world(tmp_path, DEALS, parties=PARTIES)
    assert len(w.hub.directory) == 0
    assert (tmp_path / "directory.json.bad").read_text().startswith('{"devices"')


def test_a_bad_device_in_the_directory_file_is_left_out_and_the_rest_kept(
    tmp_path: Path,
) -> None:
    """A row a load refuses (too short, or a uid longer than it takes: a hub with
    `limit_attribute_bytes` above 4096 can have kept one) costs that row, not the file."""
    rows = [["GBR", "EUD-7"], ["GBR", "E" * 5000, "LONG"], ["GBR", "EUD-8", "WOLF"]]
    (tmp_path / "directory.json").write_text(json.dumps({"devices": rows}))
    w = make_world(tmp_path, DEALS, parties=PARTIES)
    assert w.hub.directory.parties("WOLF") == {"GBR"} and len(w.hub.directory) == 1
    assert not (tmp_path / "directory.json.bad").exists()


def _text(e: CotEvent) -> str:
    from lxml import etree

    node = etree.fromstring(f"<d>{e.detail}</d>").find("remarks")
    return (node.text or "") if node is not None else ""
