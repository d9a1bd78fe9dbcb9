"""The yardstick itself: `compare` finds every kind of change and forgives only what it says.

Small events of our own, in the shape of the corpus's; what is read goes through the standard
library's XML parser and takproto, never CommonSky's codec.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from takproto.functions import xml2message
from takproto.proto import TakMessage

from commonsky.conformance.client import event_head, frame, unframe
from commonsky.conformance.compare import compare
from commonsky.conformance.retime import event_time, offset_to, retime_proto, retime_xml
from commonsky.conformance.views import (
    Instant,
    View,
    instant_of,
    map_event_uid,
    map_name,
    map_references,
    parse_xml,
    view_of_api,
    view_of_proto,
    view_of_xml,
)

DATA = Path(__file__).parent / "data"

TRACK = (
    b"<?xml version='1.0' encoding='UTF-8' standalone='yes'?>\n"
    b"<event version='2.0' uid='ANDROID-aa11' type='a-f-G-U-C' time='2026-01-02T03:04:05.678Z'"
    b" start='2026-01-02T03:04:05.678Z' stale='2026-01-02T03:10:05.678Z' how='m-g' access=''>\n"
    b"  <point lat='10.5' lon='20.25' hae='0' ce='9999999' le='9999999'/>\n"
    b"  <detail>\n"
    b"    <contact callsign='RED FOX 1' endpoint='*:-1:stcp'/>\n"
    b"    <__group name='Cyan' role='Team Member'/>\n"
    b"    <precisionlocation altsrc='???'/>\n"
    b"    <track course='0.0' speed='1.5'/>\n"
    b"    <link uid='ANDROID-bb22' type='a-f-G-U-C' relation='p-p'/>\n"
    b"    <remarks>  two  spaces  </remarks>\n"
    b"  </detail>\n"
    b"</event>"
)

CHAT = (
    b'<event version="2.0" uid="GeoChat.ANDROID-aa11.All Chat Rooms.m-1" type="b-t-f"'
    b' time="2026-01-02T03:04:05Z" start="2026-01-02T03:04:05Z" stale="2026-01-03T03:04:05Z"'
    b' how="h-g-i-g-o"><point lat="0.0" lon="0.0" hae="9999999.0" ce="9999999" le="9999999"/>'
    b'<detail><__chat id="All Chat Rooms" chatroom="All Chat Rooms">'
    b'<chatgrp id="All Chat Rooms" uid0="ANDROID-aa11" uid1="BRAVO::ANDROID-cc33"/></__chat>'
    b'<link uid="ANDROID-aa11" type="a-f-G-U-C" relation="p-p"/>'
    b'<remarks source="BAO.F.ATAK.ANDROID-aa11" to="HUB::X-1">Roger</remarks>'
    b'<marti><dest uid="ANDROID-dd44" callsign="RED FOX 1"/></marti>'
    b"<__serverdestination destinations='192.0.2.7:4242:tcp:ANDROID-aa11'/>"
    b"<__video><ConnectionEntry uid='ANDROID-aa11'/></__video></detail></event>"
)


def xml_view(data: bytes) -> View:
    return view_of_xml(parse_xml(data))


def edit(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1, old
    return data.replace(old, new)


def proto_view(message: TakMessage) -> View:
    copy = TakMessage()
    copy.ParseFromString(message.SerializeToString())  # what a receiver would read
    return view_of_proto(copy)


# ---- XML to XML: text as written --------------------------------------------------------


@pytest.mark.parametrize("path", sorted(DATA.glob("*.xml")), ids=lambda p: p.name[:3])
def test_every_corpus_file_is_unchanged_against_itself(path: Path) -> None:
    view = xml_view(path.read_bytes())
    assert compare(view, view) == []
    assert compare(view, xml_view(path.read_bytes())) == []


def test_quoting_attribute_order_and_indentation_are_not_content() -> None:
    rewritten = (
        b'<event how="m-g" access="" uid="ANDROID-aa11" version="2.0" type="a-f-G-U-C"'
        b' stale="2026-01-02T03:10:05.678Z" start="2026-01-02T03:04:05.678Z"'
        b' time="2026-01-02T03:04:05.678Z"><point le="9999999" ce="9999999" hae="0"'
        b' lon="20.25" lat="10.5"></point><detail><contact endpoint="*:-1:stcp"'
        b' callsign="RED FOX 1"></contact><__group role="Team Member" name="Cyan"/>'
        b'<precisionlocation altsrc="???"/><track speed="1.5" course="0.0"/>'
        b'<link relation="p-p" type="a-f-G-U-C" uid="ANDROID-bb22"/>'
        b"<remarks>  two  spaces  </remarks></detail></event>"
    )
    assert compare(xml_view(TRACK), xml_view(rewritten)) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (b"how='m-g' ", b"", "event@how: expected 'm-g', received (absent)"),
        (b" access=''", b"", "event@access: expected '', received (absent)"),
        (b"version='2.0'", b"version='2'", "event@version: expected '2.0', received '2'"),
        (b"aa11' type='a-f-G-U-C'", b"aa11' type='a-f-G'", "event@type"),
        (b"uid='ANDROID-aa11'", b"uid='ANDROID-aa12'", "event@uid"),
        (b"hae='0'", b"hae='0.0'", "point@hae: expected '0', received '0.0' (same number"),
        (b"lat='10.5'", b"lat='10.50000001'", "point@lat: expected '10.5', received"),
        (b" le='9999999'", b"", "point@le: expected '9999999', received (absent)"),
        (
            b"time='2026-01-02T03:04:05.678Z'",
            b"time='2026-01-02T03:04:05.678000Z'",
            "event@time: expected '2026-01-02T03:04:05.678Z', received "
            "'2026-01-02T03:04:05.678000Z' (same instant",
        ),
        (b"stale='2026-01-02T03:10:05.678Z'", b"stale='2026-01-02T03:10:05.679Z'", "event@stale"),
        (b"callsign='RED FOX 1'", b"callsign='RED FOX  1'", "detail/contact[1]@callsign"),
        (b" endpoint='*:-1:stcp'", b"", "detail/contact[1]@endpoint"),
        (b"<precisionlocation altsrc='???'/>", b"", "detail/precisionlocation[1]: expected"),
        (
            b"<precisionlocation altsrc='???'/>",
            b"<precisionlocation geopointsrc='' altsrc='???'/>",
            "detail/precisionlocation[1]@geopointsrc: expected (absent), received ''",
        ),
        (b"two  spaces  <", b"two spaces<", "detail/remarks[1] text"),
        (b"<remarks>", b"<remarks source='x'>", "detail/remarks[1]@source"),
        (b"</detail>", b"<archive/></detail>", "detail/archive: not expected, received"),
        (b"course='0.0'", b"course='0'", "detail/track[1]@course: expected '0.0', received '0'"),
    ],
)
def test_every_change_is_found(old: bytes, new: bytes, expected: str) -> None:
    found = compare(xml_view(TRACK), xml_view(edit(TRACK, old, new)))
    assert any(line.startswith(expected) for line in found), found


def test_order_of_elements_is_content() -> None:
    swapped = edit(
        TRACK,
        b"<contact callsign='RED FOX 1' endpoint='*:-1:stcp'/>\n"
        b"    <__group name='Cyan' role='Team Member'/>",
        b"<__group name='Cyan' role='Team Member'/>\n"
        b"    <contact callsign='RED FOX 1' endpoint='*:-1:stcp'/>",
    )
    assert compare(xml_view(TRACK), xml_view(swapped)) != []


def test_a_missing_detail_must_stay_missing_in_xml() -> None:
    bare = re.sub(rb"<detail>.*</detail>", b"", TRACK, flags=re.DOTALL)
    empty = re.sub(rb"<detail>.*</detail>", b"<detail/>", TRACK, flags=re.DOTALL)
    assert compare(xml_view(bare), xml_view(empty)) == [
        "detail: expected no <detail>, received <detail>"
    ]
    assert compare(xml_view(bare), xml_view(bare)) == []


# ---- the uid mapping ---------------------------------------------------------------------


def test_uid_mapping_renames_the_event_and_every_reference() -> None:
    seen = map_references(xml_view(CHAT), "ALPHA", "BRAVO")
    # A GeoChat uid names the sender's device, the conversation and the message.
    assert seen.uid == "GeoChat.ALPHA::ANDROID-aa11.All Chat Rooms.ALPHA::m-1"
    detail = seen.detail
    assert detail is not None
    chat, link, remarks, marti, destination, video = detail.children
    assert chat.attrib["id"] == "All Chat Rooms"  # a room every client shares
    chatgrp = chat.children[0].attrib
    assert chatgrp == {
        "id": "All Chat Rooms",
        "uid0": "ALPHA::ANDROID-aa11",
        "uid1": "ANDROID-cc33",
    }
    assert link.attrib["uid"] == "ALPHA::ANDROID-aa11"
    assert remarks.attrib == {
        "source": "BAO.F.ATAK.ALPHA::ANDROID-aa11",  # ATAK's sender, after its prefix
        "to": "HUB::X-1",  # another party's name stays that party's
    }
    assert marti.children[0].attrib == {"uid": "ALPHA::ANDROID-dd44", "callsign": "RED FOX 1"}
    assert destination.attrib == {"destinations": "192.0.2.7:4242:tcp:ALPHA::ANDROID-aa11"}
    # A video entry's uid: ATAK keeps one feed per uid, so it is a name like the event's.
    assert video.children[0].attrib == {"uid": "ALPHA::ANDROID-aa11"}
    assert map_references(xml_view(CHAT), "ALPHA", "ALPHA") == xml_view(CHAT)


def test_names_outside_a_chat_and_receipts() -> None:
    marker = edit(TRACK, b"<remarks>", b"<remarks source='BAO.F.ATAK.ANDROID-aa11'>")
    seen = map_references(xml_view(marker), "ALPHA", "BRAVO")
    assert seen.uid == "ALPHA::ANDROID-aa11"
    assert seen.detail is not None
    remarks = next(n for n in seen.detail.children if n.tag == "remarks")
    assert remarks.attrib == {"source": "BAO.F.ATAK.ANDROID-aa11"}  # a chat's only
    assert map_event_uid("b-t-f-r", "m-1", "ALPHA", "BRAVO") == "ALPHA::m-1"  # a message id
    assert map_event_uid("a-f-G", "GeoChat.x.y.z", "ALPHA", "BRAVO") == "ALPHA::GeoChat.x.y.z"


def test_an_unmapped_reference_is_a_difference() -> None:
    sent = xml_view(CHAT)
    assert compare(map_references(sent, "ALPHA", "BRAVO"), sent) != []
    assert map_name("BRAVO::x", "ALPHA", "BRAVO") == "x"
    assert map_name("ALPHA::x", "ALPHA", "BRAVO") == "ALPHA::x"  # the sender's echo
    assert map_name("fe80::1", "ALPHA", "BRAVO") == "ALPHA::fe80::1"  # no party's prefix
    assert map_name("x", "ALPHA", "BRAVO") == "ALPHA::x"
    assert map_name("Cyan", "ALPHA", "BRAVO") == "Cyan"
    assert map_name("", "ALPHA", "BRAVO") == ""


# ---- TAK protobuf ------------------------------------------------------------------------


def test_protobuf_carries_numbers_and_milliseconds() -> None:
    sent = xml_view(TRACK)
    message = xml2message(TRACK)
    # takproto types <precisionlocation altsrc='???'/>, which it may not (next test); the
    # element goes back into xmlDetail where it was, before <link> and <remarks>.
    detail = message.cotEvent.detail
    detail.ClearField("precisionLocation")
    detail.xmlDetail = "<precisionlocation altsrc='???'/>" + detail.xmlDetail
    assert compare(sent, proto_view(message)) == []  # typed fields have no order
    message.cotEvent.lat = 10.500000001
    message.cotEvent.sendTime += 1
    message.cotEvent.how = ""
    found = compare(sent, proto_view(message))
    assert any(line.startswith("point@lat") for line in found)
    assert any(line.startswith("event@time") for line in found)
    assert any(line.startswith("event@how: expected 'm-g', received ''") for line in found)


def test_a_typed_field_must_stand_for_exactly_its_element() -> None:
    sent = xml_view(TRACK)
    message = xml2message(TRACK)  # takproto types <precisionlocation altsrc='???'/>
    found = compare(sent, proto_view(message))
    assert found[0].startswith(
        "detail/precisionlocation: received as protobuf's typed precisionLocation but "
        "<precisionlocation altsrc='???'/> has no geopointsrc"
    ), found
    both = edit(TRACK, b"altsrc='???'", b"geopointsrc='GPS' altsrc='???'")
    assert compare(xml_view(both), proto_view(xml2message(both))) == []


@pytest.mark.parametrize(
    ("element", "typed_ok"),
    [
        (b"<contact callsign='A'/>", True),
        (b"<contact callsign='A' endpoint=''/>", False),  # endpoint would vanish
        (b"<contact callsign='A' phone='5551234'/>", False),  # no place for phone
        (b"<status battery='88'/>", True),
        (b"<status battery='88' readiness='true'/>", False),
        (b"<track speed='1' course='2'/>", True),  # numbers, compared as numbers
        (b"<track speed='1'/>", False),  # course is required
        (b"<track speed='1' course='2'>x</track>", False),
        (b"<takv platform='ATAK' version='4.6'/>", False),  # device and os are required
    ],
)
def test_typed_field_shape(element: bytes, typed_ok: bool) -> None:
    data = re.sub(rb"<detail>.*</detail>", b"<detail>" + element + b"</detail>", TRACK, flags=re.S)
    message = xml2message(data)
    tag = ET.fromstring(element).tag
    field = {"contact": "contact", "status": "status", "track": "track", "takv": "takv"}[tag]
    assert message.cotEvent.detail.HasField(field)  # takproto always types it
    message.cotEvent.detail.xmlDetail = ""
    assert (compare(xml_view(data), proto_view(message)) == []) is typed_ok


def test_xml_detail_wins_over_a_typed_field_with_the_same_tag() -> None:
    message = xml2message(TRACK)
    message.cotEvent.detail.xmlDetail += "<status battery='5'/>"
    message.cotEvent.detail.status.battery = 99
    view = proto_view(message)
    assert "status" not in view.typed  # TAK's detail.proto: the typed one is ignored


def test_frames_round_trip_through_takproto() -> None:
    message = xml2message(TRACK)
    assert unframe(frame(message)) == message
    assert unframe(b"\xbf\x01\xbf" + message.SerializeToString()) == message
    stream = (DATA / "168-a-f-G-E-V-C-takproto-test_functions-stream.bin").read_bytes()
    mesh = (DATA / "167-a-f-G-E-V-C-takproto-test_functions-mesh.bin").read_bytes()
    assert unframe(stream) == unframe(mesh)
    assert frame(unframe(stream)) == stream


# ---- JSON of /api/items ------------------------------------------------------------------


def test_api_items_numbers_and_what_it_must_carry() -> None:
    sent = xml_view(TRACK)
    item = {
        "uid": "ANDROID-aa11",
        "type": "a-f-G-U-C",
        "how": "m-g",
        "access": "",
        "time": float(instant_of("2026-01-02T03:04:05.678Z")),
        "start": float(instant_of("2026-01-02T03:04:05.678Z")),
        "stale": float(instant_of("2026-01-02T03:10:05.678Z")),
        "lat": 10.5,
        "lon": 20.25,
        "hae": 0,
        "ce": 9999999,
        "le": 9999999.0,
        "detail": "".join(
            ET.tostring(child, "unicode") for child in parse_xml(TRACK).find("detail") or []
        ),
    }
    assert compare(sent, view_of_api(item)) == []
    for name in ("how", "start"):
        found = compare(sent, view_of_api({k: v for k, v in item.items() if k != name}))
        assert found == [
            f"event@{name}: expected {_shown(sent, name)}, /api/items does not carry it"
        ]
    nan = view_of_api(dict(item, hae=None))
    assert compare(dict_point(sent, hae="NaN"), nan) == []


def _shown(view: View, name: str) -> str:
    return repr(view.event.get(name) or view.times.get(name))


def dict_point(view: View, **point: str) -> View:
    assert view.point is not None
    return View(view.wire, view.event, view.times, {**view.point, **point}, view.detail)


# ---- times -------------------------------------------------------------------------------


def test_instants_are_exact() -> None:
    assert instant_of("1970-01-01T00:00:01.5Z") == Decimal("1.5")
    assert instant_of("1970-01-01T01:00:00+01:00") == 0
    assert instant_of("2026-07-02T16:19:11Z") == instant_of("2026-07-02T16:19:11.000Z")
    with pytest.raises(ValueError, match="not an xs:dateTime"):
        instant_of("yesterday")
    assert Instant(Decimal(1), Decimal(0)).seconds == 1


_FORMATS = st.sampled_from(["", ".1", ".79", ".794", ".794123"])
_ZONES = st.sampled_from(["Z", "+00:00", "-05:00", ""])
_QUOTES = st.sampled_from(["'", '"'])


@given(
    base=st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2030, 1, 1)),
    fraction=_FORMATS,
    zone=_ZONES,
    quote=_QUOTES,
    start_s=st.integers(-3600, 3600),
    stale_s=st.integers(0, 10**7),
    now=st.floats(1.5e9, 2.5e9),
)
def test_retiming_moves_the_three_times_together_and_keeps_their_form(
    base: dt.datetime, fraction: str, zone: str, quote: str, start_s: int, stale_s: int, now: float
) -> None:
    def stamp(moment: dt.datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + zone

    q = quote
    times = {
        "time": stamp(base),
        "start": stamp(base + dt.timedelta(seconds=start_s)),
        "stale": stamp(base + dt.timedelta(seconds=stale_s)),
    }
    attrs = " ".join(f"{k}={q}{v}{q}" for k, v in times.items())
    data = (
        f"<event version={q}2.0{q} uid={q}u{q} type={q}a-f-G{q} {attrs} how={q}m-g{q}>"
        f"<point lat={q}0{q} lon={q}0{q}/><detail><remarks time={q}{times['time']}{q}/>"
        f"</detail></event>"
    ).encode()
    moved = retime_xml(data, offset_to(data, now))
    root = ET.fromstring(moved)
    assert abs(float(instant_of(root.get("time", ""))) - now) <= 0.5 + 1e-3
    shift = instant_of(root.get("time", "")) - instant_of(times["time"])
    for name, text in times.items():
        got = root.get(name, "")
        assert instant_of(got) - instant_of(text) == shift  # intervals kept exactly
        assert got[19:] == text[19:]  # same fraction digits and zone
    remarks = root.find("detail/remarks")
    assert remarks is not None and remarks.get("time") == times["time"]  # content untouched
    assert moved.count(q.encode()) == data.count(q.encode())


def test_retiming_a_file_without_times_changes_nothing() -> None:
    data = b"<event uid='x'><point lat='0' lon='0'/></event>"
    assert event_time(data) is None
    assert retime_xml(data, offset_to(data, 2e9)) == data


def test_retiming_protobuf_moves_milliseconds() -> None:
    message = xml2message(TRACK)
    before = (message.cotEvent.sendTime, message.cotEvent.startTime, message.cotEvent.staleTime)
    offset = retime_proto(message, 2e9)
    after = (message.cotEvent.sendTime, message.cotEvent.startTime, message.cotEvent.staleTime)
    assert all(b - a == offset * 1000 for a, b in zip(before, after, strict=True))
    assert abs(message.cotEvent.sendTime / 1000 - 2e9) <= 0.5 + 1e-3


# ---- what the reader reads ---------------------------------------------------------------


def test_event_head_reads_attributes_only() -> None:
    assert event_head(b'<event uid="a>b" type="t"><point') is not None
    assert event_head(b'<event uid="a&gt;b" type="t"/>') == {"uid": "a>b", "type": "t"}
    assert event_head(b"<other/>") is None
    assert event_head(b"\xff\xfe") is None


# ---- a property: nothing changes unseen --------------------------------------------------

_NAMES = st.sampled_from(["uid", "callsign", "to", "id", "x", "value"])
_VALUES = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=8)


@st.composite
def detail_trees(draw: st.DrawFn, depth: int = 0) -> ET.Element:
    element = ET.Element(draw(st.sampled_from(["link", "contact", "__chat", "chatgrp", "a_b"])))
    for name in draw(st.lists(_NAMES, max_size=3, unique=True)):
        element.set(name, draw(_VALUES))
    if depth < 2:
        for _ in range(draw(st.integers(0, 2))):
            element.append(draw(detail_trees(depth + 1)))
    if not len(element):
        element.text = draw(st.one_of(st.none(), _VALUES.filter(lambda t: t.strip() != "")))
    return element


@given(children=st.lists(detail_trees(), min_size=1, max_size=4), data=st.data())
def test_any_single_attribute_change_is_found(
    children: list[ET.Element], data: st.DataObject
) -> None:
    event = ET.fromstring(TRACK)
    detail = event.find("detail")
    assert detail is not None
    detail.clear()
    detail.extend(children)
    sent = ET.tostring(event)
    assert compare(xml_view(sent), xml_view(sent)) == []
    everything = [e for child in children for e in child.iter() if e.attrib]
    if not everything:
        return
    target = data.draw(st.sampled_from(everything))
    name = data.draw(st.sampled_from(sorted(target.attrib)))
    old = target.get(name, "")
    target.set(name, data.draw(_VALUES.filter(lambda v: v != old)))
    changed = ET.tostring(event)
    assert compare(xml_view(sent), xml_view(changed)) != []
