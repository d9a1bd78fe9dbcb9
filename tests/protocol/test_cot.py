"""CoT XML codec: round trips and refusals, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commonsky.errors import RemoteProtocolError
from commonsky.model import CotEvent, Point
from commonsky.protocol.cot import (
    XmlLimits,
    check_uid,
    detail_tree,
    encode_event,
    parse_event,
    quote_text,
)

EVENT = (
    b'<?xml version="1.0" encoding="UTF-8"?><event version="2.0" uid="A1" type="a-f-A" '
    b'time="2024-01-01T00:00:00Z" start="2024-01-01T00:00:00Z" stale="2024-01-01T00:01:00Z" '
    b'how="m-g"><point lat="1.5" lon="-2" hae="100" ce="5" le="6"/><detail>'
    b'<contact callsign="Viper &amp; 1"/><track speed="200" course="90"/>'
    b'<marti><dest callsign="OPS"/><dest party="RUS"/></marti></detail></event>'
)


def test_parse_lifts_routing_fields() -> None:
    event = parse_event(EVENT)
    assert (event.uid, event.type, event.how) == ("A1", "a-f-A", "m-g")
    assert event.point == Point(1.5, -2.0, 100.0, 5.0, 6.0)
    assert event.stale - event.time == 60
    assert (event.callsign, event.speed, event.course) == ("Viper & 1", 200.0, 90.0)
    assert event.dest_callsigns == ("OPS",) and event.dest_parties == ("RUS",)


def test_encode_parse_round_trip() -> None:
    event = parse_event(EVENT)
    assert parse_event(encode_event(event)) == event


texts = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
    min_size=1,
    max_size=30,
)


@given(
    uid=texts,
    callsign=texts,
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
)
def test_round_trip_any_text(uid: str, callsign: str, lat: float, lon: float) -> None:
    from xml.sax.saxutils import quoteattr

    event = CotEvent(
        uid=uid,
        type="a-h-G",
        time=1e9,
        start=1e9,
        stale=1e9 + 60,
        how="m-g",
        point=Point(lat, lon),
        detail=f"<contact callsign={quoteattr(callsign)}/>",
        callsign=callsign,
    )
    first = parse_event(encode_event(event))
    assert (first.uid, first.callsign, first.point) == (uid, callsign, event.point)
    assert parse_event(encode_event(first)) == first


@given(text=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")))
def test_element_text_quoting_survives_a_parser(text: str) -> None:
    """`quote_text` (JSON bodies in detail elements) keeps quotes as they are and gives back
    exactly the text after parsing, carriage returns and markup characters included."""
    legal = "".join(c for c in text if c in "\t\n\r" or ord(c) >= 0x20)
    event = CotEvent(
        uid="q",
        type="b-l-f",
        time=1e9,
        start=1e9,
        stale=1e9 + 60,
        how="h-e",
        point=Point(0.0, 0.0),
        detail=f"<csky_fused>{quote_text(legal)}</csky_fused>",
    )
    node = detail_tree(parse_event(encode_event(event)).detail).find("csky_fused")
    assert node is not None and (node.text or "") == legal
    assert "&quot;" not in quote_text(legal)


@pytest.mark.parametrize(
    "uid",
    [
        "GeoChat.ANDROID-695052bbc591dcae.All Chat Rooms.b4936fac-b0ca-4fd3-892d-35596f0dc749",
        "GeoChat.ANDROID-25c87a3703c73d08.RED FOX 1.563040b9-2ac9-4af3-9e01-4cb2b05d98ea",
        "GeoChat.USA-1.GBR::EUD-7.m-1",  # a chat to another party's contact
        " ",  # any non-empty string: only controls are refused
        "fe80::1",
        "Ω ☃ 🛩",
        "u" * 256,
    ],
)
def test_any_uid_without_control_characters_is_accepted(uid: str) -> None:
    from xml.sax.saxutils import quoteattr

    data = EVENT.replace(b'uid="A1"', b"uid=" + quoteattr(uid).encode())
    assert parse_event(data).uid == uid
    check_uid(uid)


@given(st.text(min_size=1, max_size=300))
def test_check_uid_refuses_exactly_controls_xml_cannot_carry_and_length(uid: str) -> None:
    import unicodedata

    bad = len(uid) > 256 or any(
        unicodedata.category(c) in ("Cc", "Cs") or c in "\ufffe\uffff" for c in uid
    )
    if bad:
        with pytest.raises(RemoteProtocolError) as info:
            check_uid(uid)
        assert info.value.reason == "bad_uid"
    else:
        check_uid(uid)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<event uid='x' type='a'/>", "malformed"),  # no times
        (EVENT.replace(b'lat="1.5"', b'lat="91"'), "malformed"),
        (EVENT.replace(b'lat="1.5"', b'lat="inf"'), "malformed"),  # (NaN is "unknown")
        (EVENT.replace(b'hae="100"', b'hae="-Infinity"'), "malformed"),
        (EVENT.replace(b'lon="-2"', b'lon="east"'), "malformed"),
        (EVENT.replace(b'<point lat="1.5" lon="-2" hae="100" ce="5" le="6"/>', b""), "malformed"),
        (EVENT.replace(b'time="2024-01-01T00:00:00Z"', b'time="yesterday"'), "malformed"),
        (EVENT.replace(b'uid="A1"', b'uid=""'), "bad_uid"),
        (EVENT.replace(b'uid="A1"', b'uid="A&#9;1"'), "bad_uid"),  # a tab is a control
        (EVENT.replace(b'uid="A1"', b'uid="A&#10;1"'), "bad_uid"),
        (EVENT.replace(b'uid="A1"', b'uid="A\xc2\x851"'), "bad_uid"),  # U+0085, C1 control
        (EVENT.replace(b'uid="A1"', b'uid="A&#127;"'), "bad_uid"),  # DEL
        (EVENT.replace(b'uid="A1"', b'uid="A&#xFFFF;"'), "malformed"),  # lxml refuses it
        (EVENT.replace(b'uid="A1"', b'uid="' + b"u" * 257 + b'"'), "bad_uid"),
        (EVENT.replace(b"<event ", b"<evil ").replace(b"</event>", b"</evil>"), "malformed"),
        (EVENT[:-10], "malformed"),
        (EVENT.replace(b"Viper", b"Vi\xc3\x28per"), "bad_utf8"),
        (b'<!DOCTYPE x [<!ENTITY a "b">]>' + EVENT[38:], "dtd"),
        (
            EVENT.replace(b"<detail>", b"<detail>" + b"<x>" * 40).replace(
                b"</detail>", b"</x>" * 40 + b"</detail>"
            ),
            "too_deep",
        ),
        (EVENT.replace(b'how="m-g"', b'how="' + b"m" * 5000 + b'"'), "attribute_too_long"),
        (EVENT + b" " * 270_000, "oversized"),
    ],
)
def test_refusals_name_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_event(data, XmlLimits())
    assert info.value.reason == reason


def test_entities_are_never_expanded_even_if_predeclared() -> None:
    # XML's five predefined entities are fine; anything else is not well-formed here.
    with pytest.raises(RemoteProtocolError):
        parse_event(EVENT.replace(b"Viper &amp; 1", b"&custom;"))


@given(
    depth=st.integers(0, 12),
    value=st.integers(0, 300),
    limit_depth=st.integers(1, 16),
    limit_attribute=st.integers(1, 400),
)
def test_shape_limits_hold_whether_or_not_the_walk_is_skipped(
    depth: int, value: int, limit_depth: int, limit_attribute: int
) -> None:
    """The shape walk is skipped for a document too short or too flat to break its limits
    (`_parse_document`): refused exactly when the nesting or an attribute breaks one."""
    nested = b"<x>" * depth + b"</x>" * depth
    data = EVENT.replace(b"<detail>", b"<detail>" + nested).replace(
        b'how="m-g"', b'how="' + b"m" * value + b'"'
    )
    limits = XmlLimits(message_bytes=65536, depth=limit_depth, attribute_bytes=limit_attribute)
    deepest = max(4, 2 + depth)  # event > detail > marti > dest, or the x nesting
    longest = max(value, len("2024-01-01T00:00:00Z"))
    expected = {"too_deep"} if deepest > limit_depth else set()
    if longest > limit_attribute:
        expected.add("attribute_too_long")  # (both broken: the walk meets one first)
    try:
        parse_event(data, limits)
        refused = None
    except RemoteProtocolError as exc:
        refused = exc.reason
    assert refused in expected if expected else refused is None
