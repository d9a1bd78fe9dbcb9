"""CoT <-> FederatedEvent (sans-IO): details intact both ways, lifting, deletes, envelope."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from commonsky.errors import RemoteProtocolError
from commonsky.federation import federation_pb2 as pb
from commonsky.federation.mapping import (
    ACK_TYPE,
    Envelope,
    ack,
    delete_event,
    federated,
    parse,
    receive,
)
from commonsky.protocol.cot import detail_tree, parse_event

T = "2026-11-30T15:00:00.000Z"
STALE = "2026-11-30T15:05:00.000Z"


def cot(detail: str, cot_type: str = "a-f-G-U-C", uid: str = "ANDROID-1") -> bytes:
    return (
        f'<event version="2.0" uid="{uid}" type="{cot_type}" how="m-g" time="{T}" start="{T}"'
        f' stale="{STALE}"><point lat="35.5" lon="139.25" hae="12.5" ce="4.0" le="9999999.0"/>'
        f"<detail>{detail}</detail></event>"
    ).encode()


def children(detail: str) -> list[str]:
    """The detail's elements as canonical text, in a stable order (lifted elements come
    back at the end, as TAK Server's helper also adds them)."""
    return sorted(etree.tostring(c, method="c14n").decode() for c in detail_tree(detail))


def roundtrip(data: bytes) -> tuple[pb.FederatedEvent, object]:
    event = parse_event(data)
    message = parse(federated(event).SerializeToString())
    return message, receive(message).event


SA = (
    '<contact callsign="RED 1" endpoint="*:-1:stcp"/><__group name="Cyan" role="Team Member"/>'
    '<track speed="3.5" course="271.25"/><status battery="88"/>'
    '<precisionlocation geopointsrc="GPS" altsrc="DTED0"/><takv platform="ATAK" version="5"'
    ' device="x" os="34"/><uid Droid="RED 1"/>'
)


def test_sa_lifts_typed_fields_and_comes_back_intact() -> None:
    message, back = roundtrip(cot(SA))
    geo = message.event
    assert (geo.speed, geo.course, geo.battery) == (3.5, 271.25, 88)
    assert (geo.ploc, geo.palt) == ("GPS", "DTED0")
    assert (geo.screen_name, geo.group_name, geo.group_role) == ("RED 1", "Cyan", "Team Member")
    assert (geo.uid, geo.type, geo.coord_source) == ("ANDROID-1", "a-f-G-U-C", "m-g")
    assert geo.send_time == geo.start_time == 1796050800000
    # moved fields left `other`; the copied ones stayed
    assert "<track" not in geo.other and "<status" not in geo.other
    assert "<contact" in geo.other and geo.other.startswith("<detail>")
    original = parse_event(cot(SA))
    assert back is not None
    assert children(back.detail) == children(original.detail)
    assert (back.uid, back.type, back.how, back.time, back.stale, back.point) == (
        original.uid,
        original.type,
        original.how,
        original.time,
        original.stale,
        original.point,
    )
    assert (back.callsign, back.speed, back.course) == ("RED 1", 3.5, 271.25)


@pytest.mark.parametrize(
    "element",
    [
        '<track speed="0.0" course="0.0"/>',  # proto3 zero = absent: stays XML
        '<track speed="5" course="1.0"/>',  # not written as the field would write it
        '<track speed="1.0" course="2.0" slope="3"/>',  # an attribute the field lacks
        '<status battery="88" readiness="true"/>',  # TAK Server's rule: no readiness
        '<status battery="0"/>',
        '<precisionlocation geopointsrc="GPS"/>',
    ],
)
def test_what_fields_cannot_carry_exactly_stays_in_other(element: str) -> None:
    message, back = roundtrip(cot(element))
    assert etree.tostring(detail_tree(element)[0], method="c14n").decode() in [
        etree.tostring(c, method="c14n").decode()
        for c in etree.fromstring(message.event.other.encode())
    ]
    assert back is not None and children(back.detail) == children(element)


def test_received_typed_fields_without_xml_rebuild_the_detail() -> None:
    """A TAK peer that wrote only the typed fields (other without them)."""
    geo = pb.GeoEvent(
        uid="X",
        type="a-f-A",
        coord_source="m-g",
        send_time=1796050800000,
        start_time=1796050800000,
        stale_time=1796051100000,
        lat=1.0,
        lon=2.0,
        screen_name="VIPER",
        speed=120.0,
        course=90.0,
        ptp_callsigns=["BLUE"],
        other="<detail/>",
    )
    event = receive(pb.FederatedEvent(event=geo)).event
    assert event is not None
    assert event.callsign == "VIPER" and event.speed == 120.0
    assert event.dest_callsigns == ("BLUE",)


def test_delete_is_a_contact_delete_and_back() -> None:
    event = parse_event(
        cot('<link uid="USA::track-7" type="a-h-A" relation="p-p"/><__forcedelete/>', "t-x-d-d")
    )
    message = federated(event)
    assert not message.HasField("event")
    assert message.contact.operation == pb.DELETE
    assert (message.contact.uid, message.contact.callsign) == ("USA::track-7", "a-h-A")
    got = receive(parse(message.SerializeToString()))
    assert got.delete is not None and got.delete.uid == "USA::track-7"
    made = delete_event(got.delete, "delete-1", 1796050800.0)
    assert made.type == "t-x-d-d" and made.stale == 1796050820.0
    assert detail_tree(made.detail).find("link").get("uid") == "USA::track-7"


def test_contact_create_is_noted_not_an_event() -> None:
    got = receive(pb.FederatedEvent(contact=pb.ContactListEntry(operation=pb.CREATE, uid="A")))
    assert got.contact == ("A", "") and got.event is None


def test_envelope_rides_in_detail_and_is_taken_out() -> None:
    event = parse_event(cot("<remarks>hi</remarks>", "b-m-p-s-m", "m1"))
    message = federated(
        event,
        Envelope(seq=42, part=1, to=("JPN", "KOR")),
        provenance=(("hub-a", "USA"),),
        hops=(-1, 1),
    )
    assert "_csky_fed" in message.event.other
    assert message.federate_provenance[0].federation_server_id == "hub-a"
    got = receive(parse(message.SerializeToString()))
    assert got.envelope == Envelope(42, 1, ("JPN", "KOR"))
    assert got.envelope.position == (42 << 10) | 1
    assert got.event is not None and "_csky_fed" not in got.event.detail


def test_ack_round_trip() -> None:
    got = receive(parse(ack(12345, 1796050800.0).SerializeToString()))
    assert got.ack == 12345 and got.event is None
    assert ack(1, 0.0).event.type == ACK_TYPE


@pytest.mark.parametrize(
    "other",
    [
        "<detail><a></detail>",
        "<detail/><detail/>",
        '<!DOCTYPE d [<!ENTITY x "y">]><detail>&x;</detail>',
        '<detail><_csky_fed seq="x"/></detail>',
        '<detail><_csky_fed seq="1" part="5000"/></detail>',
    ],
)
def test_hostile_other_is_refused(other: str) -> None:
    geo = pb.GeoEvent(uid="X", type="a-f-A", stale_time=1, other=other)
    with pytest.raises(RemoteProtocolError):
        receive(pb.FederatedEvent(event=geo))


def test_neither_event_nor_contact_is_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        receive(pb.FederatedEvent())
    with pytest.raises(RemoteProtocolError):
        parse(b"\xff\xff\xff")


_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="<>&\"'"),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(
    callsign=_text,
    remarks=_text,
    speed=st.floats(0.01, 400, allow_nan=False),
    course=st.floats(0, 359.9, allow_nan=False),
    battery=st.integers(1, 100),
    extra=st.booleans(),
)
def test_property_details_survive_the_round_trip(
    callsign: str, remarks: str, speed: float, course: float, battery: int, extra: bool
) -> None:
    detail = (
        f'<contact callsign="{callsign}"/><track speed="{speed!r}" course="{course!r}"/>'
        f'<status battery="{battery}"/><remarks>{remarks}</remarks>'
    )
    if extra:
        detail += f'<link uid="{callsign}" type="a-f-G" relation="p-p"/>'
    original = parse_event(cot(detail))
    _, back = roundtrip(cot(detail))
    assert back is not None
    assert children(back.detail) == children(original.detail)
