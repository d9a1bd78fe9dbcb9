"""The TAK stream state machine fed byte by byte, in random chunks and with random bytes."""

from __future__ import annotations

import pytest
import takproto
from hypothesis import given, settings
from hypothesis import strategies as st

from commonsky.protocol.cot import XmlLimits, control_event, encode_event, parse_event
from commonsky.protocol.stream import (
    EventReceived,
    MessageRefused,
    Mode,
    ProtocolSwitched,
    StreamEvent,
    TakStream,
    frame_proto,
)
from commonsky.protocol.takv1 import event_to_proto, parse_proto_event
from tests.protocol.test_cot import EVENT


def feed(stream: TakStream, data: bytes, cuts: list[int]) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    last = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        events += stream.receive_data(data[last:cut], now=0.0)
        last = cut
    return events


def received(events: list[StreamEvent]) -> list[str]:
    return [e.event.uid for e in events if isinstance(e, EventReceived)]


def three_events() -> bytes:
    return b"".join(EVENT.replace(b'uid="A1"', f'uid="E{i}"'.encode()) for i in range(3))


def test_byte_by_byte_equals_all_at_once() -> None:
    data = three_events()
    one_go = TakStream().receive_data(data, 0.0)
    stream = TakStream()
    bytewise = [ev for b in data for ev in stream.receive_data(bytes([b]), 0.0)]
    assert one_go == bytewise and received(one_go) == ["E0", "E1", "E2"]


@given(st.lists(st.integers(0, 2000), max_size=20))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    data = three_events()
    assert received(feed(TakStream(), data, cuts)) == ["E0", "E1", "E2"]


@settings(max_examples=200)
@given(st.binary(max_size=3000), st.sampled_from([Mode.XML, Mode.PROTO]))
def test_random_bytes_only_ever_produce_refusals(data: bytes, mode: Mode) -> None:
    stream = TakStream(XmlLimits(message_bytes=1024))
    stream.mode = mode
    events = stream.receive_data(data, 0.0)
    assert all(isinstance(e, MessageRefused | EventReceived) for e in events)
    fatal = [e for e in events if isinstance(e, MessageRefused) and e.fatal]
    if mode is Mode.XML and not fatal:
        # XML framing always recovers: close whatever junk is open, then a good event arrives.
        assert received(stream.receive_data(b"</event>" + EVENT, 0.0)) == ["A1"]
    elif mode is Mode.XML:
        # …unless it opened with 0xbf where an event starts: unnegotiated protobuf.
        assert [e.reason for e in fatal] == ["proto_not_negotiated"]


def test_ping_is_answered_and_not_delivered() -> None:
    stream = TakStream()
    ping = encode_event(control_event("takPing", "t-x-c-t", 100.0))
    assert stream.receive_data(ping, 101.0) == []
    pong = parse_event(stream.data_to_send())
    assert pong.type == "t-x-c-t-r" and pong.time == 101.0


def test_negotiation_switches_both_sides_to_protobuf() -> None:
    server, client = TakStream(), TakStream(role="client")
    offer = parse_event(server.offer(0.0))
    assert offer.type == "t-x-takp-v" and 'version="1"' in offer.detail
    request = client.request_protobuf(0.0)
    assert server.receive_data(request, 1.0) == [ProtocolSwitched(Mode.PROTO)]
    assert client.receive_data(server.data_to_send(), 1.0) == [ProtocolSwitched(Mode.PROTO)]
    event = parse_event(EVENT)
    wire = client.encode(event)
    assert wire[0] == 0xBF
    got = server.receive_data(wire, 2.0)
    assert isinstance(got[0], EventReceived) and got[0].event.callsign == "Viper & 1"
    # takproto, an independent implementation, reads what we framed.
    parsed = takproto.parse_proto(bytearray(wire))
    assert parsed.cotEvent.uid == "A1" and parsed.cotEvent.detail.contact.callsign == "Viper & 1"


def test_a_second_request_after_switching_is_refused_politely() -> None:
    server = TakStream()
    server.receive_data(TakStream(role="client").request_protobuf(0.0), 0.0)
    server.data_to_send()
    again = control_event(
        "protouid", "t-x-takp-q", 0.0, '<TakControl><TakRequest version="1"/></TakControl>'
    )
    server.receive_data(frame_proto(event_to_proto(again)), 0.0)
    assert b"status" in server.data_to_send()
    assert server.mode is Mode.PROTO


def test_proto_xml_round_trip_keeps_typed_and_extra_detail() -> None:
    event = parse_event(EVENT)
    back = parse_proto_event(event_to_proto(event))
    assert (back.uid, back.callsign, back.speed, back.course) == ("A1", "Viper & 1", 200.0, 90.0)
    assert back.dest_parties == ("RUS",) and back.point == event.point


def test_takproto_made_message_is_read() -> None:
    data = takproto.xml2proto(EVENT.decode(), takproto.TAKProtoVer.STREAM)
    stream = TakStream()
    stream.mode = Mode.PROTO
    events = stream.receive_data(bytes(data), 0.0)
    assert received(events) == ["A1"]


def _control_only(min_version: int, max_version: int, contact: str) -> bytes:
    """A TakMessage with a takControl and no cotEvent: takmessage.proto's "if omitted, no
    event data in this message"."""
    message = takproto.proto.TakMessage()
    message.takControl.minProtoVersion = min_version
    message.takControl.maxProtoVersion = max_version
    message.takControl.contactUid = contact
    return message.SerializeToString()


@settings(max_examples=50)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.booleans(),
)
def test_a_takmessage_without_an_event_is_valid_and_carries_nothing(
    low: int, high: int, contact: str, empty: bool
) -> None:
    """A control-only or empty TakMessage is neither relayed nor refused (it was refused
    as bad_protobuf: a warning and a refusal counted for valid traffic), and the stream
    goes on with the next message."""
    payload = b"" if empty else _control_only(low, high, contact)
    stream = TakStream()
    stream.mode = Mode.PROTO
    events = stream.receive_data(
        frame_proto(payload) + frame_proto(event_to_proto(parse_event(EVENT))), 0.0
    )
    assert not [e for e in events if isinstance(e, MessageRefused)]
    assert received(events) == ["A1"] and stream.completed == 2 and not stream.partial


def test_a_takmessage_of_unknown_fields_only_is_still_refused() -> None:
    """Bytes that decode only as fields TakMessage does not have are no TakMessage."""
    stream = TakStream()
    stream.mode = Mode.PROTO
    (refused,) = stream.receive_data(frame_proto(b"\x48\x05"), 0.0)  # field 9, varint 5
    assert isinstance(refused, MessageRefused) and refused.reason == "bad_protobuf"
    assert not refused.fatal


def test_oversized_xml_is_skipped_and_the_stream_recovers() -> None:
    stream = TakStream(XmlLimits(message_bytes=2048))
    junk = b'<event uid="big" x="' + b"A" * 100_000 + b'"></event>'
    events = stream.receive_data(junk[:50_000], 0.0) + stream.receive_data(
        junk[50_000:] + EVENT, 0.0
    )
    assert [e.reason for e in events if isinstance(e, MessageRefused)] == ["oversized"]
    assert received(events) == ["A1"]
    assert not stream.partial


def test_protobuf_framing_errors_are_fatal() -> None:
    for data, reason in (
        (b"\x00abc", "bad_magic"),
        (b"\xbf\xff\xff\xff\x7f", "oversized"),  # 256 MiB: over 16 x the limit, no message
        (b"\xbf" + b"\xff" * 11, "bad_length"),
    ):
        stream = TakStream()
        stream.mode = Mode.PROTO
        (event,) = stream.receive_data(data, 0.0)
        assert isinstance(event, MessageRefused) and event.fatal and event.reason == reason


def test_oversized_protobuf_is_skipped_by_its_length_and_the_stream_goes_on() -> None:
    """It closed the connection, as if its framing were lost; its length frames it. Nothing
    of it is held: it is dropped as it arrives, in any cut."""
    wire = frame_proto(event_to_proto(parse_event(EVENT)))
    big = b"\xbf" + bytes([0x81, 0x40]) + b"\xbf" * 8193  # length 8193, payload of 0xbf
    stream = TakStream(XmlLimits(message_bytes=8192))
    stream.mode = Mode.PROTO
    data = big + wire
    events = []
    for cut in range(0, len(data), 1000):
        events += stream.receive_data(data[cut : cut + 1000], 0.0)
        assert len(stream._buffer) <= 1000
    (refused,) = [e for e in events if isinstance(e, MessageRefused)]
    assert refused.reason == "oversized" and not refused.fatal
    assert refused.message == (
        "TAK protobuf message of 8193 bytes exceeds limit_message_bytes (8192); skipped"
    )
    assert received(events) == ["A1"] and not stream.partial and stream.completed == 2


def test_a_sender_stalled_inside_an_oversized_protobuf_is_partial() -> None:
    stream = TakStream(XmlLimits(message_bytes=100))
    stream.mode = Mode.PROTO
    stream.receive_data(b"\xbf\xe8\x07" + b"x" * 500, 0.0)  # 1000 declared, 500 sent
    assert stream.partial and not stream._buffer


def test_partial_protobuf_waits_for_the_rest() -> None:
    wire = frame_proto(event_to_proto(parse_event(EVENT)))
    stream = TakStream()
    stream.mode = Mode.PROTO
    assert stream.receive_data(wire[:-1], 0.0) == []
    assert stream.partial
    assert received(stream.receive_data(wire[-1:], 0.0)) == ["A1"]


# ---- issue #12 fault 7: what lies between events, and protobuf nobody asked for ----------


@pytest.mark.parametrize(
    "between",
    [b"\n", b"\r\n", b"  \t\n", b"\x00", b'<?xml version="1.0" encoding="UTF-8"?>',
     b"\n<?xml version='1.0' standalone='yes'?>\n"],
)  # fmt: skip
def test_bytes_between_events_are_not_a_partial_event(between: bytes) -> None:
    stream = TakStream()
    assert received(stream.receive_data(EVENT + between, 0.0)) == ["A1"]
    assert not stream.partial
    # ...and the next event, declaration included, is read as usual.
    assert received(stream.receive_data(EVENT, 0.0)) == ["A1"]
    assert not stream.partial


def test_an_event_begun_is_partial_until_it_ends() -> None:
    stream = TakStream()
    completed = stream.completed
    stream.receive_data(EVENT + b"\n" + EVENT[:30], 0.0)
    assert stream.partial and stream.completed == completed + 1
    stream.receive_data(b"<?xml", 0.0)  # (still inside the event: just more of its bytes)
    stream = TakStream()
    stream.receive_data(b'\n<?xml version="1.0"', 0.0)  # a declaration still arriving
    assert stream.partial


@pytest.mark.parametrize("framing", [takproto.TAKProtoVer.STREAM, takproto.TAKProtoVer.MESH])
@pytest.mark.parametrize("before", [b"", b"\n", EVENT, EVENT + b"\r\n"])
def test_protobuf_without_negotiation_is_refused_by_name(
    framing: takproto.TAKProtoVer, before: bytes
) -> None:
    """pytak's TAK_PROTO=1 sends protobuf at once, without t-x-takp-q."""
    stream = TakStream()
    events = stream.receive_data(before + bytes(takproto.xml2proto(EVENT, framing)), 0.0)
    refused = [e for e in events if isinstance(e, MessageRefused)]
    assert [(e.reason, e.fatal) for e in refused] == [("proto_not_negotiated", True)]
    assert "t-x-takp-q" in refused[0].message
    assert received(events) == (["A1"] if before.strip() else [])


def test_0xbf_inside_an_event_is_just_utf8() -> None:
    # "¿" is c2 bf in UTF-8: a continuation byte, never the start of an event.
    event = EVENT.replace(b"<detail>", "<detail><remarks>¿qué?</remarks>".encode())
    assert received(TakStream().receive_data(event, 0.0)) == ["A1"]


# ---- TAK's <auth> message: ATAK's first bytes on a connection with a user and password ----

# commo's exact form (streamingsocketmanagement.cpp: libxml, declaration, trailing newline
# stripped), and the one TAK Server documents without a declaration.
ATAK_AUTH = (
    b'<?xml version="1.0"?>\n<auth><cot username="viper-2" password="s3cret"'
    b' uid="ANDROID-42"/></auth>'
)
PLAIN_AUTH = b'<auth><cot username="u" password="p" uid="X" callsign="ALPHA"/></auth>'


@pytest.mark.parametrize("auth", [ATAK_AUTH, PLAIN_AUTH])
@given(cuts=st.lists(st.integers(0, 700), max_size=12))
def test_the_auth_message_is_skipped_and_the_first_event_read(auth: bytes, cuts: list[int]) -> None:
    """The auth message first, then the client's first events, in any chunking: every event
    is read (none glued to the auth message and refused), no refusal, nothing partial."""
    stream = TakStream()
    events = feed(stream, auth + three_events(), cuts)
    assert received(events) == ["E0", "E1", "E2"] and len(events) == 3
    assert not stream.partial


def test_the_auth_message_is_never_an_event_nor_quoted() -> None:
    stream = TakStream()
    assert stream.receive_data(ATAK_AUTH, 0.0) == [] and not stream.partial
    stream = TakStream()
    assert stream.receive_data(ATAK_AUTH[:-3], 0.0) == [] and stream.partial  # still coming
    # An element that only starts like one is no auth message: refused as an event would be,
    # without quoting what it held.
    stream = TakStream()
    (refused,) = stream.receive_data(b'<authority secret="s3cret"/></event>' + EVENT, 0.0)[:1]
    assert isinstance(refused, MessageRefused) and "s3cret" not in refused.message
