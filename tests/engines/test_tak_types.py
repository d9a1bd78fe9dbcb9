"""Every type TAK clients send has a category an agreement can name, is kept as a TAK user
expects after a reconnect, and is replayed unless it is a message (issue #12 fault 4).

Small events of our own, in the shape of ATAK's (corpus files named beside each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from commonsky.errors import RemoteProtocolError
from commonsky.model import DURABLE, Category, CotEvent, Item, category_of, category_of_event
from commonsky.protocol.cot import parse_event
from commonsky.store.sqlite import SQLiteStore
from tests.engines.harness import T0, World, event, make_world

LINK = '<link uid="ANDROID-0a1b2c" type="a-f-G-U-C" parent_callsign="RAVEN1" relation="p-p"/>'

# type -> (category, an event in the shape of the corpus file named)
SHAPES: dict[str, tuple[Category | None, str]] = {
    "b-m-p-s-m": (Category.MARKER, f'<status readiness="true"/><archive/>{LINK}'),  # 024
    "b-m-p-s-p-loc": (Category.MARKER, ""),  # 049, 064
    "b-m-p-s-p-op": (Category.MARKER, f"{LINK}<precisionlocation altsrc='DTED2'/>"),  # 066
    "b-m-p-w-GOTO": (Category.MARKER, f'{LINK}<height unit="feet" value="0.0">0.0</height>'),
    "b-m-p-w": (Category.MARKER, "<archive/>"),
    "b-m-p-c": (Category.MARKER, "<archive/>"),
    "u-rb-a": (Category.DRAWING, '<range value="886.1"/><bearing value="45.6"/>'),  # 027
    "u-r-b-c-c": (Category.DRAWING, '<shape><ellipse major="468" minor="468"/></shape>'),
    "u-r-b-bullseye": (Category.DRAWING, '<bullseye mils="false" distance="328.5"/>'),  # 025
    "u-d-v": (Category.DRAWING, "<archive/>"),
    "b-i-v": (Category.VIDEO, '<__video><ConnectionEntry protocol="rtmp" port="1935"/></__video>'),
    "b-f-t-r": (Category.FILE, '<fileshare filename="MP.zip" sizeInBytes="1814"/><ackrequest/>'),
    "b-f-t-a": (Category.FILE, '<ackresponse success="true" tag="MP.zip"/>'),  # 014, 055
    "b-a-o-tbl": (Category.EMERGENCY, f'{LINK}<emergency type="911 Alert">RAVEN1</emergency>'),
    "b-a-o": (Category.EMERGENCY, '<emergency type="Manual Alert: Gunshot">X</emergency>'),
    "b-a-o-opn": (Category.EMERGENCY, '<emergency type="Troops In Contact">X</emergency>'),
    "b-a-o-pan": (Category.EMERGENCY, '<emergency type="Ring The Bell">X</emergency>'),
    "b-a-o-can": (Category.EMERGENCY, '<emergency cancel="true">RAVEN1</emergency>'),
    "b-a-g": (Category.EMERGENCY, '<emergency type="Geo-fence Breached">X</emergency>'),
    "b-r-f-h-c": (Category.CASEVAC, f'{LINK}<_medevac_ urgent="1" litter="1" title="MED.1"/>'),
    "b-a-o-csky": (Category.ALERT, ""),
    "u-d-f-m": (Category.DRAWING, "<labels_on value='true'/>"),
    "overhead_marker": (Category.OTHER, '<model name="DELTA"/>'),  # 067
    "t-k-d": (Category.OTHER, ""),
    "y-a-r": (Category.OTHER, ""),
    "t-x-d-d": (None, '<link uid="M1" relation="none" type="none"/><__forcedelete/>'),
    "a-f-G-U-C": (Category.TRACK, '<contact callsign="RAVEN1"/>'),
    "b-t-f": (Category.HOTLINE, ""),
    "u-d-f": (Category.AIRSPACE, ""),
    "u-d-p": (Category.SITE, ""),
}
TRANSIENT = {"b-f-t-r", "b-f-t-a", "b-a-o-can", "t-x-d-d"}


def everything_from(provider: str, to: list[str]) -> dict[str, object]:
    return {
        "name": f"{provider} shares all",
        "from": provider,
        "to": to,
        "categories": [c.value for c in Category],
        "disclosure": "full",
    }


def shaped(cot_type: str, uid: str | None = None, stale_s: float = 3600.0) -> CotEvent:
    return event(uid or f"uid-{cot_type}", cot_type, detail=SHAPES[cot_type][1], stale_s=stale_s)


@pytest.mark.parametrize("cot_type", sorted(SHAPES))
def test_the_table_gives_each_tak_type_its_category(cot_type: str) -> None:
    assert category_of(cot_type) is SHAPES[cot_type][0]


def test_casevac_is_a_medical_request_not_a_public_alert() -> None:
    assert category_of("b-r-f-h-c") is Category.CASEVAC is not Category.ALERT
    assert Category.CASEVAC in DURABLE


def crossing(world: World, provider: str, recipient: str, events: list[CotEvent]) -> set[str]:
    """Uids `recipient` receives of `events` from `provider`, with a barrier after them: an
    entitled track sent last, whose arrival shows everything before it was handled."""
    world.take(recipient)
    for e in events:
        world.send(provider, e)
    world.send(provider, event("barrier", "a-f-A-M-F"))
    got = {e.uid for e in world.take(recipient)}
    assert f"{provider}::barrier" in got
    return got - {f"{provider}::barrier"}


def named(categories: list[str]) -> dict[str, object]:
    return {
        "name": "some",
        "from": "USA",
        "to": ["JPN"],
        "categories": ["track", *categories],
        "disclosure": "full",
    }


# (Airspace and sites need real geometry: test_airspace_desk sends them.)
@pytest.mark.parametrize(
    "cot_type",
    sorted(
        t
        for t, (c, _) in SHAPES.items()
        if c not in (None, Category.TRACK, Category.AIRSPACE, Category.SITE)
    ),
)
def test_each_category_crosses_exactly_when_an_agreement_names_it(
    tmp_path: Path, cot_type: str
) -> None:
    category = SHAPES[cot_type][0]
    assert category is not None
    others = [c.value for c in Category if c not in (category, Category.TRACK)]
    without = make_world(tmp_path / "without", [named(others)])
    assert crossing(without, "USA", "JPN", [shaped(cot_type)]) == set()
    with_it = make_world(tmp_path / "with", [named([category.value])])
    assert crossing(with_it, "USA", "JPN", [shaped(cot_type)]) == {f"USA::uid-{cot_type}"}


def test_deletes_stay_inside_the_party(tmp_path: Path) -> None:
    world = make_world(tmp_path, [everything_from("USA", ["JPN"])])
    assert crossing(world, "USA", "JPN", [shaped("t-x-d-d")]) == set()


@pytest.mark.parametrize("cot_type", ["t-x-m-c", "t-x-m-n", "t-x-m-d", "t-x-m-i", "t-x-m-r"])
def test_a_clients_mission_notice_is_refused_by_name(tmp_path: Path, cot_type: str) -> None:
    world = make_world(tmp_path, [everything_from("USA", ["JPN"])])
    with pytest.raises(RemoteProtocolError) as info:
        world.send("USA", event("mission", cot_type, detail='<mission name="M1"/>'))
    assert info.value.reason == "mission_notice"
    assert world.take("USA") == [] and world.take("JPN") == []


def test_after_a_restart_every_durable_item_is_replayed_and_no_message_is(tmp_path: Path) -> None:
    world = make_world(tmp_path, [everything_from("USA", ["JPN"])])
    skipped = (Category.AIRSPACE, Category.SITE, Category.HOTLINE)
    for cot_type, (category, _) in SHAPES.items():
        if category not in skipped:
            world.send("USA", shaped(cot_type))
    again = make_world(tmp_path, [everything_from("USA", ["JPN"])])  # a new hub, same store
    replayed = {e.type for e in again.take("JPN")}
    durable = {t for t, (c, _) in SHAPES.items() if c in DURABLE and t not in TRANSIENT}
    durable -= {"u-d-f", "u-d-p", "b-t-f"}  # (not sent here)
    assert replayed == durable
    # ...and within the sender's party too.
    assert {e.type for e in again.take("USA")} == durable


def test_a_late_joiner_gets_the_whole_picture_but_no_message(tmp_path: Path) -> None:
    world = make_world(tmp_path, [everything_from("USA", ["JPN"])])
    for cot_type in ("b-m-p-s-m", "overhead_marker", "b-f-t-r", "b-f-t-a", "u-rb-a", "b-i-v"):
        world.send("USA", shaped(cot_type))
    from commonsky.hub.connection import MemoryPeer
    from commonsky.hub.core import Connection
    from commonsky.hub.outbox import Outbox

    late = Outbox(100, 100)
    world.hub.attach(Connection("JPN", "late", "test", late, MemoryPeer(), "j2"))
    got = {parse_event(p.rendered.wire(p.variant, "xml")).type for p in late.take()}
    assert got == {"b-m-p-s-m", "overhead_marker", "u-rb-a", "b-i-v"}


def test_a_cancel_removes_the_emergency_it_cancels(tmp_path: Path) -> None:
    """ATAK's 911 beacon and its cancel share the uid `<device>-9-1-1` (corpus 031)."""
    world = make_world(tmp_path, [everything_from("USA", ["JPN"])])
    world.send("USA", shaped("b-a-o-tbl", uid="ANDROID-0a1b2c-9-1-1"))
    world.send("USA", shaped("b-a-o-can", uid="ANDROID-0a1b2c-9-1-1"))
    assert [e.type for e in world.take("JPN")] == ["b-a-o-tbl", "b-a-o-can"]
    again = make_world(tmp_path, [everything_from("USA", ["JPN"])])
    assert [e.type for e in again.take("JPN")] == []


def test_an_item_stored_under_the_old_table_is_routed_by_todays(tmp_path: Path) -> None:
    """A CASEVAC request stored as `alert` before this change crosses as `casevac`."""
    store = SQLiteStore(tmp_path)
    old = Item("USA", "u", Category.ALERT, shaped("b-r-f-h-c"), T0)
    store.append(old)
    store.close()
    casevac_only = {**named(["casevac"]), "categories": ["casevac"]}
    alert_only = {**named(["alert"]), "categories": ["alert"]}
    assert [e.type for e in make_world(tmp_path, [casevac_only]).take("JPN")] == ["b-r-f-h-c"]
    assert make_world(tmp_path, [alert_only]).take("JPN") == []


def test_a_drawing_carrying_the_airspace_extension_is_airspace() -> None:
    plain = shaped("u-d-f-m")
    declared = event("t", "u-d-f-m", detail='<csky_airspace kind="operating-area"/>')
    assert category_of_event(plain) is Category.DRAWING
    assert category_of_event(declared) is Category.AIRSPACE
    # Only as an element of <detail>, not as text somebody wrote.
    remark = event("t", "u-d-f-m", detail="<remarks>&lt;csky_airspace/&gt;</remarks>")
    assert category_of_event(remark) is Category.DRAWING


@pytest.mark.parametrize("disclosure", ["full", "generalized"])
def test_an_item_of_unknown_position_goes_everywhere_an_item_goes(
    tmp_path: Path, disclosure: str
) -> None:
    """NaN in `<point>` (ATAK's acks write it) through store, ledger and every rendering."""
    import math

    from commonsky.hub.render import item_json

    agreement = {**everything_from("USA", ["JPN"]), "disclosure": disclosure}
    world = make_world(tmp_path, [agreement])
    nowhere = parse_event(
        b'<event version="2.0" uid="ANDROID-1-9-1-1" type="b-a-o-tbl" time="2027-01-15T08:00:00Z"'
        b' start="2027-01-15T08:00:00Z" stale="2027-01-15T09:00:00Z" how="m-g">'
        b'<point lat="NaN" lon="NaN" hae="NaN" ce="NaN" le="NaN"/>'
        b'<detail><emergency type="911 Alert">RAVEN1</emergency></detail></event>'
    )
    item = world.send("USA", nowhere)
    assert item.seq > 0  # stored (and so recorded in the ledger)
    for party in ("USA", "JPN"):
        for pending in world.outboxes[party].take():
            for mode in ("xml", "proto", "json"):
                assert pending.rendered.wire(pending.variant, mode)
    got = item_json(item, item.event)
    assert all(math.isnan(got[k]) for k in ("lat", "lon", "hae"))
    again = make_world(tmp_path, [agreement])  # and it does not stop the hub starting again
    (replayed,) = again.take("JPN")
    assert replayed.type.startswith("b-a-o") and not replayed.point.position_known


@pytest.mark.parametrize("cot_type", sorted(t for t, (c, _) in SHAPES.items() if c is not None))
def test_the_demos_independent_leak_checker_classifies_alike(cot_type: str) -> None:
    """demo/checks.py keeps its own table (so a policy bug cannot hide in both); the two
    must agree on every type TAK clients send, or the demo would cry leak or miss one."""
    from commonsky.demo.checks import kind_of

    category = category_of(cot_type)
    assert category is not None
    assert kind_of(cot_type) == category.value


def test_a_message_ends_no_item_of_another_category(tmp_path: Path) -> None:
    """ATAK's file-transfer acknowledgement uses its device's uid (corpus 055): the device's
    position stays in the picture a late joiner gets."""
    world = make_world(tmp_path, [everything_from("USA", ["JPN"])])
    world.send("USA", event("ANDROID-077658", "a-f-G-U-C", detail='<contact callsign="A1"/>'))
    world.send("USA", shaped("b-f-t-a", uid="ANDROID-077658"))
    world.send("USA", event("ANDROID-077658", "b-t-f-r", detail='<__chatreceipt messageId="m"/>'))
    from commonsky.hub.connection import MemoryPeer
    from commonsky.hub.core import Connection
    from commonsky.hub.outbox import Outbox

    late = Outbox(100, 100)
    world.hub.attach(Connection("JPN", "late", "test", late, MemoryPeer(), "j2"))
    got = [parse_event(p.rendered.wire(p.variant, "xml")) for p in late.take()]
    assert [(e.uid, e.type) for e in got] == [("USA::ANDROID-077658", "a-f-G-U-C")]
