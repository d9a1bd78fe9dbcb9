"""The TAK session (timers, refusals, negotiation) driven by a fake clock: no socket, no
sleep. The same situations as tests/integration/test_tak_liveness.py, in memory, plus what
only a state machine can be asked exactly (the instant a timer fires, the refusal that
closes)."""

from __future__ import annotations

import pytest
import takproto
from hypothesis import given
from hypothesis import strategies as st

from commonsky.errors import VERDICTS, LocalProtocolError
from commonsky.protocol.cot import control_event, encode_event, parse_event
from commonsky.protocol.render import frame_proto, render
from commonsky.protocol.session import (
    TIMEOUT_SETTING,
    EventReceived,
    MessageRefused,
    Mode,
    SessionLimits,
    TakSession,
)
from commonsky.protocol.stream import ProtocolSwitched, version_request
from commonsky.protocol.takv1 import event_to_proto
from tests.protocol.test_cot import EVENT

IDLE, PARTIAL, REFUSALS = 120.0, 30.0, 3
WALL = 1_700_000_000.0  # the hub's clock: only stamps the session's own replies


def session(now: float = 0.0, role: str = "server") -> TakSession:
    return TakSession(SessionLimits(IDLE, PARTIAL, REFUSALS), now, role=role)


def event(uid: str) -> bytes:
    return EVENT.replace(b'uid="A1"', f'uid="{uid}"'.encode())


def test_the_greeting_offers_tak_protocol_v1_once() -> None:
    s = session()
    offer = parse_event(s.start(WALL))
    assert offer.type == "t-x-takp-v" and 'version="1"' in offer.detail
    with pytest.raises(LocalProtocolError):
        s.start(WALL)


def test_a_silent_client_is_closed_as_idle_at_the_instant_the_setting_says() -> None:
    s = session(now=10.0)
    assert s.deadline() == 10.0 + IDLE
    assert s.expired(10.0 + IDLE - 0.001) is None
    assert s.expired(10.0 + IDLE) == "idle"
    assert TIMEOUT_SETTING["idle"].startswith("timeout_idle_s")


def test_a_client_that_is_sent_traffic_is_not_idle_while_it_says_nothing() -> None:
    """A stationary ATAK: says nothing for an hour while the hub sends it an update every
    10 s (the write buffer keeping up)."""
    s = session()
    for t in range(0, 3600, 10):
        s.sent(float(t))
        assert s.expired(float(t) + 9.9) is None
    assert s.expired(3590.0 + IDLE) == "idle"


def test_a_newline_after_each_event_is_not_a_partial_event() -> None:
    s = session()
    now = 0.0
    for n in range(200):  # 200 events 0.5 s apart: far longer than timeout_partial_event_s
        data = event(f"N{n}") + b"\n"
        if n % 2:
            data += b'<?xml version="1.0" encoding="UTF-8"?>\n'
        got = s.receive_data(data, now, WALL)
        assert [e.event.uid for e in got if isinstance(e, EventReceived)] == [f"N{n}"]
        now += 0.5
        assert s.expired(now) is None
    assert s.deadline() == now - 0.5 + IDLE  # only the idle timer runs


def test_a_sender_stalled_inside_one_event_is_closed_for_it() -> None:
    s = session()
    data = event("SLOW")
    s.receive_data(data[:40], 5.0, WALL)
    assert s.deadline() == 5.0 + PARTIAL
    s.receive_data(data[40:80], 20.0, WALL)  # more bytes of the same event: clock not reset
    assert s.expired(5.0 + PARTIAL - 0.001) is None
    assert s.expired(5.0 + PARTIAL) == "partial_event"


def test_an_event_fed_one_byte_per_second_completes_only_within_the_limit() -> None:
    s = session()
    data = event("DRIP")
    got = []
    for i, byte in enumerate(data):
        now = float(i)
        if s.expired(now) is not None:
            break
        got += s.receive_data(bytes([byte]), now, WALL)
    assert not got and s.expired(float(PARTIAL)) == "partial_event"


def test_refusals_close_at_the_limit_and_a_fatal_one_at_once() -> None:
    s = session()
    refusals = [e for e in s.receive_data(b"<event/></event>" * REFUSALS, 0.0, WALL)]
    assert all(isinstance(e, MessageRefused) for e in refusals) and len(refusals) == REFUSALS
    verdicts = [s.refused(e) for e in refusals if isinstance(e, MessageRefused)]
    assert verdicts == [None] * (REFUSALS - 1) + ["refusals"]

    fatal = session()
    (first,) = fatal.receive_data(frame_proto(b"x"), 0.0, WALL)  # protobuf nobody negotiated
    assert isinstance(first, MessageRefused) and first.reason == "proto_not_negotiated"
    assert fatal.refused(first) == "proto_not_negotiated"


def test_the_hubs_refusals_of_bad_input_count_with_the_streams() -> None:
    s = session()
    assert s.refused(MessageRefused("bad_value", "course out of range")) is None
    (bad,) = s.receive_data(b"<event/></event>", 0.0, WALL)
    assert isinstance(bad, MessageRefused) and s.refused(bad) is None
    assert s.refused(MessageRefused("bad_time", "year 10000")) == "refusals"


@given(
    st.lists(st.sampled_from(sorted(VERDICTS)), max_size=4 * REFUSALS),
    st.integers(0, REFUSALS - 1),
)
def test_the_hubs_verdicts_on_valid_messages_never_close(verdicts: list[str], bad: int) -> None:
    """A delete or an edit of another party's marker, a quota, a rewritten chat, a refused
    shape: what ATAK sends in its user's ordinary work. However many, interleaved with fewer
    bad messages than the limit, the connection stays; the limit still counts the bad ones."""
    s = session()
    closes = [s.refused(MessageRefused(reason, "refused")) for reason in verdicts]
    closes += [s.refused(MessageRefused("malformed", "not XML")) for _ in range(bad)]
    assert closes == [None] * (len(verdicts) + bad)
    more = [s.refused(MessageRefused("malformed", "not XML")) for _ in range(REFUSALS - bad)]
    assert more[-1] == "refusals"


def test_negotiation_switches_both_directions_to_protobuf() -> None:
    s = session()
    s.start(WALL)
    got = s.receive_data(encode_event(version_request(WALL)), 1.0, WALL)
    assert got == [ProtocolSwitched(Mode.PROTO)] and s.mode is Mode.PROTO
    reply = parse_event(s.data_to_send())  # the answer still in XML
    assert reply.type == "t-x-takp-r" and 'status="true"' in reply.detail
    ping = control_event("ping", "t-x-c-t", WALL)
    assert s.receive_data(render(ping, "proto"), 2.0, WALL) == []
    pong = takproto.parse_proto(s.data_to_send())  # answered in the negotiated form
    assert pong.cotEvent.type == "t-x-c-t-r"
    track = parse_event(event("P1"))
    (received,) = s.receive_data(frame_proto(event_to_proto(track)), 3.0, WALL)
    assert isinstance(received, EventReceived) and received.event.uid == "P1"


@given(st.lists(st.tuples(st.integers(1, 400), st.floats(0.0, 1.0)), min_size=1, max_size=30))
def test_any_chunking_and_spacing_within_the_limit_gives_the_same_events(
    cuts: list[tuple[int, float]],
) -> None:
    """Events cut anywhere, each chunk arriving at any moment, as long as every event is
    complete within timeout_partial_event_s of its first byte: never closed, same events.
    (Three events over less than the limit in all: each one is within it.)"""
    data = b"".join(event(f"E{i}") for i in range(3))
    s = session()
    points = sorted({(min(c * 3, len(data)), f) for c, f in cuts})
    times = sorted(f * (PARTIAL - 0.001) for _, f in points)
    last, got = 0, []
    for (cut, _), now in zip([*points, (len(data), 1.0)], [*times, PARTIAL - 0.001], strict=True):
        got += s.receive_data(data[last:cut], now, WALL)
        last = max(last, cut)
        assert s.expired(now) is None
    assert [e.event.uid for e in got if isinstance(e, EventReceived)] == ["E0", "E1", "E2"]


def test_render_is_the_one_wire_form_and_refuses_an_unknown_mode() -> None:
    track = parse_event(event("R1"))
    assert render(track, "xml") == encode_event(track)
    assert render(track, "proto") == frame_proto(event_to_proto(track))
    with pytest.raises(LocalProtocolError):
        render(track, "json")
