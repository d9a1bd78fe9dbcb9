"""What every output can carry: the rule refuses what one form cannot carry, and whatever it
accepts renders in every form, parses back, and records in the ledger."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from commonsky.desks.recorder import item_payload
from commonsky.errors import RemoteProtocolError
from commonsky.hub.render import item_json
from commonsky.ledger.entry import canonical_json
from commonsky.model import Category, CotEvent, Item, Point
from commonsky.protocol.bounds import (
    _NOT_A_NAME,
    MAX_TIME_S,
    XML_IMPOSSIBLE,
    _plainly_within,
    check_event,
)
from commonsky.protocol.cot import check_uid, encode_event, parse_event, quote, quote_text
from commonsky.protocol.takv1 import event_to_proto, parse_proto_event

NOW = 1_800_000_000.0


def event(**changes: object) -> CotEvent:
    base = CotEvent(
        uid="u-1",
        type="b-t-f",
        time=NOW,
        start=NOW,
        stale=NOW + 60,
        how="h-g-i-g-o",
        point=Point(35.0, 135.0, 10.0, 5.0, 5.0),
        detail="<remarks>hello</remarks>",
    )
    return msgspec.structs.replace(base, **changes)


def written(
    event: tuple[tuple[str, str], ...] = (("uid", "u-1"),),
    point: tuple[tuple[str, str], ...] = (("lat", "35"), ("lon", "135")),
) -> CotEvent:
    """An event with the sender's text (`CotText`) given."""
    base = parse_event(encode_event(_plain()))
    assert base.text is not None
    text = msgspec.structs.replace(base.text, event=event, point=point)
    return msgspec.structs.replace(base, text=text)


def _plain() -> CotEvent:
    return CotEvent(
        uid="u-1",
        type="b-t-f",
        time=NOW,
        start=NOW,
        stale=NOW + 60,
        how="h-e",
        point=Point(35.0, 135.0),
    )


REFUSED = {
    "NUL in remarks": event(detail="<remarks>a\x00b</remarks>"),
    "U+0001 in uid": event(uid="a\x01"),
    "U+000B in callsign": event(callsign="x\x0by"),
    "U+FFFE in detail": event(detail="<remarks>\ufffe</remarks>"),
    "lone surrogate": event(detail="<remarks>\ud800</remarks>"),
    "stale in year 10000 (UTC)": event(stale=MAX_TIME_S + 86340.0),
    "before 1970": event(time=-1.0, start=-1.0),
    "stale 1e301": event(stale=1e301),
    "hae -1e300": event(point=Point(0.0, 0.0, -1e300)),
    "hae below the ocean floor": event(point=Point(0.0, 0.0, -20_000.0)),
    "ce negative": event(point=Point(0.0, 0.0, 0.0, -1.0)),
    "le infinite": event(point=Point(0.0, 0.0, 0.0, 1.0, math.inf)),
    "speed 1e308": event(speed=1e308),
    "course 1e10": event(course=1e10),
    "NaN time": event(time=math.nan),
    "bad dest party": event(dest_parties=("RUS\x00",)),
    # The sender's text as a stored row altered afterwards could hold it (our parser never
    # yields these): each would break the XML every recipient is sent.
    "attribute name that ends the tag": written(event=(("uid", "u-1"), ('a="1"><x', "2"))),
    "attribute name with a space": written(point=(("lat", "35"), ("l on", "135"))),
    "empty attribute name": written(event=(("", "x"),)),
    "U+0001 in an attribute's text": written(point=(("lat", "3\x015"),)),
}


def test_no_forbidden_character_is_printable_nor_alphanumeric() -> None:
    """What lets `_plainly_within` ask `isprintable` / `isalnum` before searching."""
    for code in range(0x110000):
        c = chr(code)
        if XML_IMPOSSIBLE.match(c):
            assert not c.isprintable(), f"U+{code:04X}"
        if _NOT_A_NAME.match(c):
            assert not c.isalnum(), f"U+{code:04X}"


FORBIDDEN = "\x00\x01\x08\x0b\x0c\x0e\x1f\ud800\udfff\ufffe\uffff\t\n\r <>&\"'=/{} \u3000"
# (Few characters, ASCII and not: every character is checked by the test above.)
TEXTS = st.text(st.sampled_from("ab:-\u00e9\u0394" + FORBIDDEN), max_size=6)


@given(TEXTS, TEXTS, TEXTS)
def test_the_quick_check_is_the_searches(detail: str, name: str, value: str) -> None:
    """`_plainly_within` says yes exactly when neither search finds a character (the rest of
    the event being plainly within)."""
    e = written(event=(("uid", "u-1"), (name, value)))
    e = msgspec.structs.replace(e, detail=detail)
    expected = (
        bool(name)
        and _NOT_A_NAME.search(name) is None
        and XML_IMPOSSIBLE.search(detail + value) is None
    )
    assert _plainly_within(e) is expected


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_values_some_output_cannot_carry_are_refused(case: str) -> None:
    with pytest.raises(RemoteProtocolError) as refused:
        check_event(REFUSED[case])
    assert refused.value.reason in ("bad_value", "bad_time")


def test_what_real_clients_send_is_inside_the_bounds() -> None:
    check_event(written())
    odd = written(event=(("uid", "u-1"), ("version", "2"), ("x-y.z_1", "a & <b> \"'")))
    check_event(odd)  # ... and it renders as XML that reads back as written:
    assert etree.fromstring(encode_event(odd)).get("x-y.z_1") == "a & <b> \"'"
    # CoT's unknown, a negative course and a -4919 m hae are all in the corpus.
    check_event(event(point=Point(0.0, 0.0, 9999999.0, 9999999.0, 9999999.0)))
    check_event(event(point=Point(0.0, 0.0, -4919.1, 0.0, 0.0), course=-108.9, speed=0.0))
    check_event(event(stale=MAX_TIME_S, time=0.0, start=0.0))


def test_the_year_10000_stale_a_tak_client_can_write_is_refused() -> None:
    text = encode_event(event()).replace(b'stale="', b'stale="9999-12-31T23:59:59-23:59" x="', 1)
    parsed = parse_event(text)  # a time the parser reads...
    with pytest.raises(RemoteProtocolError, match="stale"):
        check_event(parsed)  # ...but no output can carry


# Values at and past every edge, text from the whole of Unicode (surrogates included).
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 9999999.0, 1e8, -12_000.0, MAX_TIME_S, 1e300, -1e300]),
)
texts = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
# Mostly inside the bounds, so that accepted events are common; the edges above all the same.


def mostly(good: st.SearchStrategy[object], bad: st.SearchStrategy[object]) -> st.SearchStrategy:
    return st.integers(0, 9).flatmap(lambda k: bad if k == 0 else good)


times = mostly(st.floats(0.0, MAX_TIME_S), floats)
metres = mostly(st.floats(0.0, 1e8), floats)
uids = mostly(st.text(st.characters(codec="ascii", categories=("L", "N", "P")), min_size=1), texts)


@st.composite
def events(draw: st.DrawFn) -> CotEvent:
    return CotEvent(
        uid=draw(uids),
        type=draw(st.sampled_from(["a-f-A", "b-t-f", "u-d-p"])),
        time=draw(times),
        start=draw(times),
        stale=draw(times),
        how=draw(st.sampled_from(["m-g", "h-e"])),
        point=Point(
            draw(st.floats(-90, 90)), draw(st.floats(-180, 180)), draw(metres), draw(metres)
        ),
        detail=f"<remarks>{quote_text(draw(texts))}</remarks>"
        f'<contact callsign="{quote(draw(texts))}"/>',
        speed=draw(mostly(st.none() | st.floats(0, 1000), floats)),
        course=draw(mostly(st.none() | st.floats(0, 360), floats)),
    )


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_an_accepted_event_renders_in_every_form_parses_back_and_records(e: CotEvent) -> None:
    try:
        check_event(e)
        check_uid(e.uid)
    except RemoteProtocolError:
        return
    item = Item("USA", "u", Category.HOTLINE, e, received=NOW, seq=1)
    canonical_json(item_payload(item))  # the ledger can record it
    msgspec.json.encode(item_json(item, e))  # the API and WebSocket can send it
    again = parse_event(encode_event(e))  # CoT XML, read back by the TAK path
    check_event(again)
    assert again.uid == e.uid and abs(again.stale - e.stale) < 1e-3
    check_event(parse_proto_event(event_to_proto(e)))  # TAK protobuf, read back


def test_a_battery_past_uint32_renders_in_protobuf_as_written() -> None:
    e = event(detail='<status battery="99999999999"/>')
    message = parse_proto_event(event_to_proto(e))
    assert 'battery="99999999999"' in message.detail
