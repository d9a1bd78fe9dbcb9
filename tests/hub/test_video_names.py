"""A video feed (`b-i-v`, ATAK's `<__video><ConnectionEntry uid=…>`) across parties: ATAK's
video manager keeps one entry per ConnectionEntry uid, so the entry's uid is namespaced as
the event's is (protocol/refs.py): another party receives it as `PARTY::uid`, and a party
cannot offer an entry under another party's name (`uid_spoof`). Otherwise a rival choosing
the same uid would replace a party's own feed (its address) on that party's devices."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from commonsky.errors import RemoteProtocolError
from commonsky.hub.connection import MemoryPeer
from commonsky.hub.core import Connection, Hub
from commonsky.hub.outbox import Outbox
from commonsky.model import Category, CotEvent, Disclosure
from commonsky.policy import Agreement, Party, Policy
from commonsky.protocol.cot import parse_event
from commonsky.settings import defaults
from commonsky.store.sqlite import SQLiteStore
from tests.protocol.test_refs import CORPUS

NOW = 1_800_000_000.0
PARTIES = ("USA", "JPN")
FEED = "fb637afd-7d37-4d98-8def-839eee6aa4bc"  # the corpus's b-i-v (FreeTAKServer's tests)


def video(address: str, entry: str = FEED) -> CotEvent:
    """The corpus's b-i-v event, current, shared with everyone (its `marti` addressed one
    callsign), with the feed at `address` under entry `entry`."""
    (path,) = CORPUS.glob("143-b-i-v*.xml")
    text = path.read_text().strip().replace("192.0.2.38", address)
    text = text.replace('<marti><dest callsign="GRANITE1"/></marti>', "")
    text = text.replace(
        f'ConnectionEntry networkTimeout="0" uid="{FEED}"',
        f'ConnectionEntry networkTimeout="0" uid="{entry}"',
    )
    text = text.replace("2021-05-22T14:", "2027-01-15T08:").replace(
        "2021-05-22T15:", "2027-01-15T09:"
    )
    return parse_event(text.encode())  # (NOW is 2027-01-15T08:00:00Z)


class World:
    def __init__(self, path: Path) -> None:
        self.store = SQLiteStore(path)
        both = frozenset({Category.VIDEO})
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

    def entries(self, party: str) -> list[tuple[str, str, str]]:
        """(event uid, ConnectionEntry uid, address) of each video feed queued for `party`."""
        out = []
        for pending in self.boxes[party].take():
            event = self.hub.naming.event(pending.rendered, pending.variant)
            root = etree.fromstring(f"<detail>{event.detail}</detail>")
            for entry in root.iter("ConnectionEntry"):
                out.append((event.uid, entry.get("uid", ""), entry.get("address", "")))
        return out


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path / "hub.sqlite3")
    yield w
    w.store.close()


def test_a_rival_feed_under_the_same_uid_reaches_a_party_under_the_rivals_name(
    world: World,
) -> None:
    world.hub.accept("JPN", "u", video("198.51.100.7"))
    assert world.entries("USA") == [(f"JPN::{FEED}", f"JPN::{FEED}", "198.51.100.7")]
    assert world.entries("JPN") == [(FEED, FEED, "198.51.100.7")]  # its own: as sent
    # USA offers a feed under the same uid: JPN's devices get it as USA's, beside their own.
    world.hub.accept("USA", "u", video("203.0.113.66"))
    assert world.entries("JPN") == [(f"USA::{FEED}", f"USA::{FEED}", "203.0.113.66")]
    assert world.entries("USA") == [(FEED, FEED, "203.0.113.66")]


def test_an_entry_under_another_partys_name_is_refused(world: World) -> None:
    world.hub.accept("JPN", "u", video("198.51.100.7"))
    assert world.entries("JPN") == [(FEED, FEED, "198.51.100.7")]
    with pytest.raises(RemoteProtocolError) as info:
        world.hub.accept("USA", "u", video("203.0.113.66", entry=f"JPN::{FEED}"))
    assert info.value.reason == "uid_spoof"
    assert world.boxes["JPN"].take() == []  # (nothing of USA's reached JPN's devices)
