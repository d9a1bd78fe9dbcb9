"""A relay changes nothing the sender wrote (issue #12 faults 8 and 9), in XML and protobuf.

Protobuf output is read back with takproto (not our decoder), so a fault of ours cannot hide
by being symmetric.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import msgspec
import pytest
import takproto
from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace
from takproto.proto import TakMessage

from commonsky.model import UNKNOWN, Category, Item, Point
from commonsky.protocol.cot import encode_event, parse_event
from commonsky.protocol.stream import frame_proto
from commonsky.protocol.takv1 import event_to_proto, parse_proto_event


def event_xml(attrs: str = 'how="m-g"', point: str = "", detail: str = "") -> bytes:
    point = point or 'lat="10.5" lon="20.25" hae="120.0" ce="5.0" le="6.0"'
    return (
        f'<event version="2.0" uid="F1" type="a-f-G-U-C" time="2026-07-07T21:28:06.250Z"'
        f' start="2026-07-07T21:28:06.250Z" stale="2026-07-07T21:38:06.250Z" {attrs}>'
        f"<point {point}/><detail>{detail}</detail></event>"
    ).encode()


def relayed(data: bytes) -> ET.Element:
    """What a client reads after the hub decoded and re-encoded the event (XML)."""
    return ET.fromstring(encode_event(parse_event(data)))


def via_proto(data: bytes) -> TakMessage:
    """What a protobuf client reads, decoded by takproto."""
    return takproto.parse_proto(bytearray(frame_proto(event_to_proto(parse_event(data)))))


# ---- event attributes -----------------------------------------------------------------


def test_no_how_is_invented_when_the_sender_wrote_none() -> None:
    data = event_xml(attrs="")
    assert "how" not in relayed(data).attrib
    assert via_proto(data).cotEvent.how == ""
    assert parse_proto_event(event_to_proto(parse_event(data))).how is None
    assert relayed(event_xml(attrs='how="h-e"')).get("how") == "h-e"


def test_an_empty_access_is_kept_where_the_format_can_carry_it() -> None:
    assert relayed(event_xml(attrs='how="m-g" access=""')).get("access") == ""
    assert "access" not in relayed(event_xml()).attrib
    assert relayed(event_xml(attrs='how="m-g" access="Undefined"')).get("access") == "Undefined"
    # proto3 strings have no presence: protobuf can carry "Undefined", not "".
    assert via_proto(event_xml(attrs='how="m-g" access="Undefined"')).cotEvent.access == "Undefined"


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        ("2026-07-07T21:28:06.250Z", "2026-07-07T21:28:06.250Z"),
        ("2026-07-07T21:28:06.250123Z", "2026-07-07T21:28:06.250123Z"),
        ("2026-07-07T21:28:06.000001Z", "2026-07-07T21:28:06.000001Z"),
        ("2026-07-07T21:28:06Z", "2026-07-07T21:28:06Z"),
        ("2026-07-07T21:28:06.1Z", "2026-07-07T21:28:06.1Z"),  # not `.100Z`
        ("2026-07-07T21:28:06.250+00:00", "2026-07-07T21:28:06.250+00:00"),
    ],
)
def test_times_are_kept_in_xml_as_written(written: str, kept: str) -> None:
    data = event_xml().replace(b"2026-07-07T21:28:06.250Z", written.encode())
    out = relayed(data)
    assert (out.get("time"), out.get("start")) == (kept, kept)


# ---- the sender's text ------------------------------------------------------------------


def test_numbers_are_relayed_in_the_senders_text() -> None:
    """Corpus: `ce='9999999'` was relayed as `9999999.0`, `lat='0'` as `0.0`."""
    written = {"lat": "0", "lon": "19.9923187627977192449", "hae": "9999999", "ce": "242"}
    written["le"] = "35.10"
    point = relayed(event_xml(point=" ".join(f'{k}="{v}"' for k, v in written.items())))
    assert point.find("point") is not None
    assert dict(point.find("point").attrib) == written  # type: ignore[union-attr]


def test_what_the_sender_left_out_stays_out() -> None:
    data = (
        b'<event uid="F1" type="a-f-G" time="2026-07-07T21:28:06Z"'
        b' stale="2026-07-07T21:38:06Z"><point lat="1" lon="2"/></event>'
    )
    out = relayed(data)
    assert dict(out.attrib) == {
        "uid": "F1",
        "type": "a-f-G",
        "time": "2026-07-07T21:28:06Z",
        "stale": "2026-07-07T21:38:06Z",
    }  # no version, start or how invented
    assert [child.tag for child in out] == ["point"]  # no <detail> either
    assert dict(out[0].attrib) == {"lat": "1", "lon": "2"}  # nor hae, ce, le


def test_version_order_and_an_empty_detail_are_kept() -> None:
    data = (
        event_xml()
        .replace(b'version="2.0"', b'version="2"')
        .replace(b"<detail></detail>", b"<detail/>")
    )
    out = relayed(data)
    assert out.get("version") == "2"
    assert list(out.attrib) == list(ET.fromstring(data).attrib)
    assert [child.tag for child in out] == ["point", "detail"]


def test_a_namespaced_attribute_is_left_out_rather_than_broken() -> None:
    """Written back without its namespace declaration it would not parse."""
    data = event_xml(attrs='how="m-g" xmlns:x="urn:x" x:note="n" xml:lang="en"')
    out = relayed(data)
    assert dict(out.attrib) == dict(relayed(event_xml()).attrib)


def test_what_the_hub_changes_on_purpose_is_the_only_change() -> None:
    """The uid mapping and a changed time are written from the values; every other
    attribute keeps its text."""
    data = event_xml(point='lat="10" lon="20" hae="0" ce="9999999" le="9999999"')
    event = parse_event(data)
    moved = replace(event, uid="ALPHA::F1", stale=event.stale + 1.5)
    out = ET.fromstring(encode_event(moved))
    assert out.get("uid") == "ALPHA::F1"
    assert out.get("stale") == "2026-07-07T21:38:07.750Z"
    assert out.get("time") == "2026-07-07T21:28:06.250Z"  # as written
    assert dict(out[0].attrib) == dict(ET.fromstring(data)[0].attrib)
    shifted = replace(event, point=Point(lat=11.5, lon=20.0, hae=0.0, ce=UNKNOWN, le=UNKNOWN))
    point = ET.fromstring(encode_event(shifted)).find("point")
    assert point is not None
    assert dict(point.attrib) == {
        "lat": "11.5",
        "lon": "20",
        "hae": "0",
        "ce": "9999999",
        "le": "9999999",
    }


def test_the_senders_text_survives_the_store() -> None:
    """Items are stored as msgpack (store/__init__.py): a replay renders the same bytes."""
    data = event_xml(point='lat="0" lon="0" hae="9999999" ce="9999999" le="9999999"')
    item = Item("ALPHA", "F1", Category.TRACK, parse_event(data), received=0.0)
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(item), type=Item)
    assert encode_event(back.event) == encode_event(item.event)


def test_protobuf_without_detail_is_relayed_without_detail() -> None:
    message = via_proto(event_xml())
    message.cotEvent.ClearField("detail")
    out = ET.fromstring(encode_event(parse_proto_event(message.SerializeToString())))
    assert [child.tag for child in out] == ["point"]


NUMBERS = st.one_of(
    st.integers(-89, 89).map(str),
    st.integers(0, 12).flatmap(
        lambda places: st.decimals(-89, 89, places=places, allow_nan=False).map(str)
    ),
    st.floats(-89, 89, allow_nan=False).map(lambda f: f"{f:.{int(abs(f)) % 17}f}"),
    st.floats(-89, 89, allow_nan=False).map(lambda f: f"{f:e}"),
    st.sampled_from(["0", "-0", "0.0", "00.50", "+1", "NaN", "nan", "1E1", " 2.5 "]),
)
VALUES = st.one_of(NUMBERS, st.sampled_from(["9999999", "9999999.0", "9.999999e6"]))
TIMES = st.builds(
    lambda fraction, zone: f"2026-07-07T21:28:06{fraction}{zone}",
    st.sampled_from(["", ".1", ".25", ".250", ".2501", ".250123"]),
    st.sampled_from(["Z", "+00:00", "+02:00", "-05:30"]),
)


@given(NUMBERS, NUMBERS, st.lists(VALUES, min_size=3, max_size=3), TIMES, TIMES)
def test_any_number_and_time_text_is_relayed_as_written(
    lat: str, lon: str, values: list[str], time: str, stale: str
) -> None:
    numbers = [lat, lon, *values]
    names = ("lat", "lon", "hae", "ce", "le")
    point = " ".join(f'{n}="{v}"' for n, v in zip(names, numbers, strict=True))
    data = event_xml(point=point)
    data = data.replace(b"2026-07-07T21:28:06.250Z", time.encode(), 2)
    data = data.replace(b"2026-07-07T21:38:06.250Z", stale.encode())
    event = parse_event(data)
    out = ET.fromstring(encode_event(event))
    sent = ET.fromstring(data)
    assert dict(out.attrib) == dict(sent.attrib)
    assert dict(out[0].attrib) == dict(sent[0].attrib)


# ---- NaN and unknown values --------------------------------------------------------------


def test_nan_in_point_means_unknown_and_is_relayed_as_written() -> None:
    """ATAK's file-transfer acknowledgement (corpus 055) writes hae/ce/le as NaN."""
    data = event_xml(point='lat="0.0" lon="0.0" hae="NaN" ce="NaN" le="nan"')
    event = parse_event(data)
    assert math.isnan(event.point.hae) and not event.point.hae_known
    point = relayed(data).find("point")
    assert point is not None
    assert (point.get("hae"), point.get("ce"), point.get("le")) == ("NaN", "NaN", "nan")
    cot = via_proto(data).cotEvent
    assert math.isnan(cot.hae) and math.isnan(cot.le) and cot.lat == 0.0
    assert math.isnan(parse_proto_event(event_to_proto(event)).point.ce)


def test_an_unknown_position_is_accepted_and_known_to_be_unknown() -> None:
    event = parse_event(event_xml(point='lat="NaN" lon="NaN" hae="9999999" ce="9999999"'))
    assert not event.point.position_known and not event.point.hae_known
    assert parse_event(event_xml()).point.position_known


@pytest.mark.parametrize("value", ["inf", "-Infinity", "1e400", "x"])
def test_what_is_not_a_number_or_unknown_stays_refused(value: str) -> None:
    from commonsky.errors import RemoteProtocolError

    with pytest.raises(RemoteProtocolError) as info:
        parse_event(event_xml(point=f'lat="1" lon="2" hae="{value}"'))
    assert info.value.reason == "malformed"


# ---- protobuf typed fields ---------------------------------------------------------------


def detail_of(message: TakMessage) -> tuple[set[str], str]:
    detail = message.cotEvent.detail
    typed = {f.name for f, _ in detail.ListFields() if f.name != "xmlDetail"}
    return typed, detail.xmlDetail


@pytest.mark.parametrize(
    ("element", "field"),
    [
        ('<precisionlocation geopointsrc="GPS" altsrc="DTED0"/>', "precisionLocation"),
        ('<contact callsign="RAVEN 1"/>', "contact"),
        ('<contact callsign="RAVEN 1" endpoint="*:-1:stcp"/>', "contact"),
        ('<__group name="Cyan" role="Team Member"/>', "group"),
        ('<status battery="88"/>', "status"),
        ('<takv device="PIXEL" platform="ATAK-CIV" os="33" version="4.10"/>', "takv"),
        ('<track speed="12.5" course="271.0"/>', "track"),
    ],
)
def test_an_element_with_exactly_its_required_attributes_is_typed(element: str, field: str) -> None:
    typed, xml_detail = detail_of(via_proto(event_xml(detail=element)))
    assert (typed, xml_detail) == ({field}, "")


@pytest.mark.parametrize(
    "element",
    [
        "<precisionlocation altsrc='???'/>",  # corpus 024: a typed field would add geopointsrc=""
        "<precisionlocation geopointsrc='USER'/>",
        '<contact callsign="RAVEN 1" endpoint=""/>',  # an empty endpoint is "do not populate"
        '<contact callsign="RAVEN 1" phone="555"/>',
        "<contact endpoint='*:-1:stcp'/>",
        '<__group name="Cyan"/>',
        '<status readiness="true"/>',  # corpus 024
        '<status battery="88" readiness="true"/>',
        '<status battery="-1"/>',
        '<status battery="99999999999"/>',
        '<takv platform="ATAK-CIV" version="4.10"/>',
        '<track course="0.0"/>',  # corpus 067
        '<track speed="1" course="2" slope="3"/>',
        '<contact callsign="X">text</contact>',
        '<contact callsign="X"><phone/></contact>',
    ],
)
def test_an_element_that_does_not_fit_its_typed_field_stays_xml(element: str) -> None:
    typed, xml_detail = detail_of(via_proto(event_xml(detail=element)))
    assert typed == set()
    assert ET.fromstring(xml_detail).tag == ET.fromstring(element).tag


def test_a_repeated_element_stays_xml_both_times() -> None:
    detail = '<contact callsign="A"/><contact callsign="B"/>'
    typed, xml_detail = detail_of(via_proto(event_xml(detail=detail)))
    assert typed == set() and xml_detail.count("<contact") == 2


def test_an_element_sent_both_typed_and_in_xml_detail_is_read_from_xml_detail() -> None:
    """detail.proto, receivers' rule 5."""
    message = via_proto(event_xml(detail='<contact callsign="TYPED"/><remarks>x</remarks>'))
    message.cotEvent.detail.xmlDetail += '<contact callsign="IN-XML"/>'
    event = parse_proto_event(message.SerializeToString())
    assert event.callsign == "IN-XML" and event.detail.count("<contact") == 1


CHILDREN = st.sampled_from(
    [
        '<contact callsign="C"/>',
        '<contact callsign="C" endpoint="10.0.0.1:4242:tcp"/>',
        '<contact callsign="C" endpoint=""/>',
        '<__group name="Cyan" role="HQ"/>',
        '<__group role="HQ"/>',
        '<precisionlocation geopointsrc="GPS" altsrc="DTED0"/>',
        "<precisionlocation altsrc='???'/>",
        '<status battery="50"/>',
        '<status readiness="true"/>',
        '<takv device="D" platform="P" os="O" version="V"/>',
        '<takv platform="P"/>',
        '<track speed="1.5" course="90.0"/>',
        '<track course="NaN" speed="NaN"/>',
        '<track course="0.0"/>',
        "<remarks>hello</remarks>",
        "<archive/>",
    ]
)


def _elements(detail: ET.Element) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    return sorted(
        (child.tag, tuple(sorted((k, _canon(v)) for k, v in child.attrib.items())))
        for child in detail
    )


def _canon(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    return "NaN" if math.isnan(number) else repr(number)


@given(st.lists(CHILDREN, max_size=6))
def test_xml_to_protobuf_and_back_keeps_every_element_and_attribute(children: list[str]) -> None:
    """Whatever mix of typed-looking elements a client sends, the protobuf reader gets the
    same elements with the same attributes (numbers compared as numbers)."""
    data = event_xml(detail="".join(children))
    back = ET.fromstring(encode_event(parse_proto_event(event_to_proto(parse_event(data)))))
    before, after = ET.fromstring(data).find("detail"), back.find("detail")
    assert before is not None and after is not None
    assert _elements(after) == _elements(before)
