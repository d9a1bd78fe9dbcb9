"""A file transfer's request (`b-f-t-r`) and acknowledgement (`b-f-t-a`) across parties: the
devices they name in `fileshare@senderUid` / `ackresponse@senderUid` reach the other party as
it knows those devices (`PARTY::uid`), as every other name does (protocol/refs.py). ATAK
sends its acknowledgement to the contact `senderUid` names, and the hub's own offers
(marti/ingest.py `_transfer`) already name the uploader that way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from commonsky.hub.connection import MemoryPeer
from commonsky.hub.core import Connection, Hub
from commonsky.hub.outbox import Outbox
from commonsky.model import Category, CotEvent, Disclosure, Point
from commonsky.policy import Agreement, Party, Policy
from commonsky.settings import defaults
from commonsky.store.sqlite import SQLiteStore

NOW = 1_800_000_000.0
PARTIES = ("USA", "JPN")
SHA = "72fbcc94207812f67580f2fb246dc3f0c2b3777249c5ccd6ca4af04a0e8671ed"
REQUEST = (
    f'<fileshare filename="mp.zip" senderUrl="https://hub:8443/Marti/sync/content?hash={SHA}"'
    f' sizeInBytes="1814" sha256="{SHA}" senderUid="ANDROID-u1" senderCallsign="VIPER1"'
    ' name="mp"/><ackrequest uid="2d35c256-8740-4c39-a8c6-211cbb18fc55" ackrequested="true"'
    ' tag="mp"/>'
)
ACK = (
    '<ackresponse uid="2d35c256-8740-4c39-a8c6-211cbb18fc55" sizeInBytes="1814"'
    f' sha256="{SHA}" senderUid="ANDROID-j1" reason="File transferred successfully"'
    ' success="true" tag="mp"/>'
)


class World:
    def __init__(self, path: Path) -> None:
        self.store = SQLiteStore(path)
        both = frozenset({Category.FILE, Category.TRACK})
        policy = Policy(
            [Party(p) for p in PARTIES],
            [
                Agreement("us-jp", "USA", ("JPN",), both, Disclosure.FULL),
                Agreement("jp-us", "JPN", ("USA",), both, Disclosure.FULL),
            ],
        )
        self.hub = Hub(policy, self.store, defaults(), b"k" * 32, clock=lambda: NOW)
        self.boxes: dict[str, Outbox] = {}
        for party in PARTIES:
            self.boxes[party] = Outbox(1000, 1000)
            conn = Connection(party, party, "test", self.boxes[party], MemoryPeer(), id=party)
            self.hub.attach(conn)

    def send(self, party: str, uid: str, cot_type: str, detail: str) -> None:
        event = CotEvent(
            uid=uid, type=cot_type, time=NOW, start=NOW, stale=NOW + 10, how="h-e",
            point=Point(35.0, 139.0), detail=detail,
        )  # fmt: skip
        self.hub.accept(party, "u", event)

    def sender_uids(self, party: str) -> list[tuple[str, str]]:
        """(type, every senderUid in its detail) of each event queued for `party`."""
        out = []
        for pending in self.boxes[party].take():
            event = self.hub.naming.event(pending.rendered, pending.variant)
            root = etree.fromstring(f"<detail>{event.detail}</detail>")
            out += [(event.type, e.get("senderUid", "")) for e in root.iter() if e.get("senderUid")]
        return out


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path / "hub.sqlite3")
    yield w
    w.store.close()


def test_a_file_transfer_names_its_devices_as_the_other_party_knows_them(world: World) -> None:
    world.send("USA", "95b24edf-a0f1-43e4-9b72-8047f0d5a780", "b-f-t-r", REQUEST)
    assert world.sender_uids("JPN") == [("b-f-t-r", "USA::ANDROID-u1")]
    assert world.sender_uids("USA") == [("b-f-t-r", "ANDROID-u1")]  # its own party: as sent
    world.send("JPN", "2d35c256-8740-4c39-a8c6-211cbb18fc55", "b-f-t-a", ACK)
    assert world.sender_uids("USA") == [("b-f-t-a", "JPN::ANDROID-j1")]


def test_a_name_given_back_reads_as_the_recipients_own_device(world: World) -> None:
    """The acknowledgement naming the requester as it was given (`USA::ANDROID-u1`) reaches
    USA under USA's own uid for that device."""
    ack = ACK.replace('senderUid="ANDROID-j1"', 'senderUid="USA::ANDROID-u1"')
    world.send("JPN", "2d35c256-8740-4c39-a8c6-211cbb18fc55", "b-f-t-a", ack)
    assert world.sender_uids("USA") == [("b-f-t-a", "ANDROID-u1")]
