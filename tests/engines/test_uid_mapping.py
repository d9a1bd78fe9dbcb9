"""Fault 2 of issue 12: names travel both ways between party namespaces (namespace.py).

A party refers to another party's item under the name it was given (`GBR::EUD-7`); the
owner gets its own uid back, third parties get the name they know the item by, and nobody
can create, overwrite or delete another party's item whatever it writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from commonsky.errors import RemoteProtocolError
from commonsky.model import CotEvent
from commonsky.namespace import handle
from tests.engines import atak
from tests.engines.harness import event, make_world

PARTIES = ("USA", "GBR", "FRA", "KOR", "RUS")


def deal(src: str, dst: list[str], cats: list[str], disclosure: str = "full") -> dict:
    return {
        "name": f"{src}->{','.join(dst)} {'/'.join(cats)} {disclosure}",
        "from": src,
        "to": dst,
        "categories": cats,
        "disclosure": disclosure,
    }


ALLIES = [
    deal("USA", ["GBR"], ["track", "hotline"]),
    deal("GBR", ["USA"], ["track", "hotline"]),
]


def only(events: list[CotEvent], cot_type: str) -> CotEvent:
    found = [e for e in events if e.type == cot_type]
    assert len(found) == 1, [(e.type, e.uid) for e in events]
    return found[0]


def test_chat_to_another_partys_contact_reaches_it_under_its_own_names(tmp_path: Path) -> None:
    w = make_world(tmp_path, ALLIES, parties=PARTIES)
    w.send("GBR", atak.sa("EUD-7", "RED FOX 1"))
    w.send("USA", atak.sa("USA-DEV", "EAGLE 2"))
    assert only(w.take("USA"), "a-f-G-U-C").uid == "GBR::EUD-7"  # how USA knows the fox
    w.take("GBR")

    sent = atak.chat("USA-DEV", "EAGLE 2", "GBR::EUD-7", "RED FOX 1", "Hello fox", "m-1")
    w.send("USA", sent)
    got = only(w.take("GBR"), "b-t-f")
    # Every name of GBR's own device comes back as GBR's uid; USA's names carry USA's prefix.
    assert got.uid == "GeoChat.USA::USA-DEV.EUD-7.USA::m-1"
    assert atak.attrs(got, "__chat")["id"] == "EUD-7"
    assert atak.attrs(got, "__chat")["messageId"] == "USA::m-1"
    assert atak.attrs(got, "chatgrp") == {"uid0": "USA::USA-DEV", "uid1": "EUD-7", "id": "EUD-7"}
    assert atak.attrs(got, "link")["uid"] == "USA::USA-DEV"
    assert atak.attrs(got, "remarks") == {
        "source": "BAO.F.ATAK.USA::USA-DEV",
        "to": "EUD-7",
        "time": "2030-01-01T00:00:00Z",
    }
    assert atak.attrs(got, "__serverdestination")["destinations"].endswith(":tcp:USA::USA-DEV")
    assert atak.attrs(got, "dest") == {"callsign": "RED FOX 1"}

    # GBR answers the way ATAK does: to the sender it was given, `USA::USA-DEV`.
    reply = atak.chat("EUD-7", "RED FOX 1", "USA::USA-DEV", "EAGLE 2", "Loud and clear", "m-2")
    w.send("GBR", reply)
    back = only(w.take("USA"), "b-t-f")
    assert back.uid == "GeoChat.GBR::EUD-7.USA-DEV.GBR::m-2"
    assert atak.attrs(back, "chatgrp") == {"uid0": "GBR::EUD-7", "uid1": "USA-DEV", "id": "USA-DEV"}
    # Nothing of either chat went to parties without an agreement.
    assert w.take("FRA") == [] and w.take("KOR") == []


def test_a_third_party_gets_each_name_as_it_knows_the_item(tmp_path: Path) -> None:
    deals = [
        deal("USA", ["GBR", "FRA", "KOR", "RUS"], ["airspace"]),
        deal("GBR", ["USA", "FRA"], ["track"]),
        deal("GBR", ["KOR"], ["track"], "generalized"),
    ]
    w = make_world(tmp_path, deals, parties=PARTIES)
    w.send("GBR", event("MK-1", "a-h-G", lat=34.2, lon=38.3))
    for party in ("USA", "FRA", "KOR"):
        w.take(party)
    w.send("USA", atak.route("R-1", [("WP-1", 34.0, 38.0), ("GBR::MK-1", 34.2, 38.3)]))
    names = {p: _link_uids(only(w.take(p), "b-m-r")) for p in PARTIES[1:]}
    opaque = handle(b"s" * 32, "GBR", "MK-1")
    assert names["GBR"] == ["USA::WP-1", "MK-1"]  # the owner's own uid
    assert names["FRA"] == ["USA::WP-1", "GBR::MK-1"]  # sees GBR's tracks in full
    assert names["KOR"] == ["USA::WP-1", opaque]  # generalized: the handle it knows it by
    assert names["RUS"] == ["USA::WP-1", opaque]  # may not see it at all: tells nothing
    assert w.received["KOR"][0].uid == opaque  # the same name as the track itself


def test_a_name_of_an_item_one_may_not_see_does_not_depend_on_that_item(tmp_path: Path) -> None:
    deals = [deal("USA", ["RUS"], ["airspace"])]
    seen = []
    for gbr_sends in (None, event("MK-1", "a-h-G"), event("MK-1", "a-h-G", lat=10.0, lon=10.0)):
        w = make_world(tmp_path / str(len(seen)), deals, parties=PARTIES)
        if gbr_sends is not None:
            w.send("GBR", gbr_sends)
        w.send("USA", atak.route("R-1", [("WP-1", 34.0, 38.0), ("GBR::MK-1", 34.2, 38.3)]))
        seen.append([p.rendered.wire(p.variant, "xml") for p in w.outboxes["RUS"].take()])
        w.services.close()
        w.hub.store.close()
    assert seen[0] == seen[1] == seen[2] and seen[0]


def test_a_generalized_handle_written_back_reaches_the_owner_as_its_uid(tmp_path: Path) -> None:
    deals = [
        deal("GBR", ["KOR"], ["track"], "generalized"),
        deal("GBR", ["FRA"], ["track"]),
        deal("KOR", ["GBR", "FRA", "RUS"], ["track"]),
    ]
    w = make_world(tmp_path, deals, parties=PARTIES)
    w.send("GBR", event("MK-1", "a-h-G", lat=34.2, lon=38.3))
    opaque = only(w.take("KOR"), "a-h-G").uid
    assert opaque.startswith("GBR::g-")
    # KOR marks something with the generalized track as its parent.
    w.send("KOR", event("K-1", "a-f-G", detail=f'<link uid="{opaque}" relation="p-p"/>'))
    assert _link_uids(only(w.take("GBR"), "a-f-G")) == ["MK-1"]
    assert _link_uids(only(w.take("FRA"), "a-f-G")) == ["GBR::MK-1"]
    assert _link_uids(only(w.take("RUS"), "a-f-G")) == [opaque]


def test_the_style_link_of_a_shape_keeps_the_shapes_prefix(tmp_path: Path) -> None:
    w = make_world(tmp_path, [deal("USA", ["GBR"], ["airspace"])], parties=PARTIES)
    circle = event(
        "C-1",
        "u-d-c-c",
        detail='<shape><ellipse major="500" minor="500" angle="360"/>'
        '<link uid="C-1.Style" type="b-x-KmlStyle" relation="p-c"><Style/></link></shape>',
    )
    w.send("USA", circle)
    got = only(w.take("GBR"), "u-d-c-c")
    assert (got.uid, _link_uids(got)) == ("USA::C-1", ["USA::C-1.Style"])


@pytest.mark.parametrize(
    "spoof",
    [
        event("GBR::EUD-7", "a-f-G-U-C", detail='<contact callsign="IMPOSTOR"/>'),
        atak.chat("GBR::EUD-7", "RED FOX 1", "USA-DEV", "EAGLE 2", "I am the fox"),
        atak.delete("GBR::EUD-7"),
        atak.delete("GBR::EUD-7", force=True),
    ],
    ids=["uid", "geochat-sender", "delete", "forcedelete"],
)
def test_nobody_creates_overwrites_or_deletes_under_another_partys_name(
    tmp_path: Path, spoof: CotEvent, caplog: pytest.LogCaptureFixture
) -> None:
    w = make_world(tmp_path, ALLIES, parties=PARTIES)
    w.send("GBR", atak.sa("EUD-7", "RED FOX 1"))
    before = w.hub.live[("GBR", "EUD-7")].item
    w.take("GBR")
    with pytest.raises(RemoteProtocolError) as info:
        w.send("USA", spoof)
    assert info.value.reason in ("uid_spoof", "delete_not_owner")
    assert w.hub.live[("GBR", "EUD-7")].item is before
    # Barrier: something GBR is entitled to arrives, and nothing came before it.
    w.send("USA", event("BARRIER", "a-f-A"))
    assert [e.uid for e in w.take("GBR")] == ["USA::BARRIER"]


def test_a_receipt_naming_another_partys_item_touches_nothing_of_it(tmp_path: Path) -> None:
    w = make_world(tmp_path, ALLIES, parties=PARTIES)
    w.send("GBR", atak.sa("EUD-7", "RED FOX 1"))
    before = w.hub.live[("GBR", "EUD-7")].item
    w.take("GBR")
    fake = event("GBR::EUD-7", "b-t-f-r", detail='<__chat messageId="GBR::EUD-7"/>')
    item = w.send("USA", fake)
    assert item.key == ("USA", "GBR::EUD-7")  # stored as USA's, like anything USA sends
    assert w.hub.live[("GBR", "EUD-7")].item is before
    # It answers no message GBR sent USA, so it does not reach GBR (a barrier after it).
    w.send("USA", event("BARRIER", "a-f-A"))
    assert [e.uid for e in w.take("GBR")] == ["USA::BARRIER"]


def _link_uids(e: CotEvent) -> list[str]:
    from lxml import etree

    return [str(n.get("uid")) for n in etree.fromstring(f"<d>{e.detail}</d>").iter("link")]
