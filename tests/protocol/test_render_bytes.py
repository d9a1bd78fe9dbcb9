"""CoT XML as `render` writes it (issue #19's shortcuts in `cot.encode_event`): every value
read back exactly, by lxml (not our parser), and a few events byte for byte as written
before the shortcuts (`<event>` and `<point>` joined without a regex search)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from msgspec.structs import replace

from commonsky.bench.relay import event_bytes
from commonsky.errors import RemoteProtocolError
from commonsky.model import CotEvent
from commonsky.protocol.bounds import XML_IMPOSSIBLE
from commonsky.protocol.cot import parse_event
from commonsky.protocol.render import XML, render
from commonsky.times import format_time

_IN_REPO = Path(__file__).parents[1] / "corpus" / "data"
CORPUS = Path(
    os.environ.get(
        "COMMONSKY_TAK_CORPUS", _IN_REPO if _IN_REPO.is_dir() else "/work/shared/tak-corpus"
    )
)
DOCUMENTS = [path.read_bytes().strip() for path in sorted(CORPUS.glob("*.xml"))]
BENCH = parse_event(event_bytes("alpha", 3, 7, 12345, 1764620000.0))
_PROLOGUE = b'<?xml version="1.0" encoding="UTF-8"?>'


def expected_event(event: CotEvent) -> list[tuple[str, str]]:
    """`<event>`'s attributes as the sender wrote them, the uid's value the event's."""
    assert event.text is not None
    return [(n, event.uid if n == "uid" else v) for n, v in event.text.event]


def check_read_back(event: CotEvent) -> None:
    """lxml reads every attribute of `<event>` and `<point>`, in order, and `<detail>`'s
    children exactly as the event holds them."""
    assert event.text is not None
    data = render(event, XML)
    assert data.startswith(_PROLOGUE)
    root = etree.fromstring(data)
    assert root.items() == expected_event(event)
    has_detail = bool(event.detail or event.text.detail)
    assert [child.tag for child in root] == ["point", "detail"][: 1 + has_detail]
    assert root[0].items() == list(event.text.point)
    if has_detail:
        detail = root[1]
        assert detail.text is None and not detail.attrib
        assert "".join(etree.tostring(c, encoding="unicode") for c in detail) == event.detail


def corpus_events() -> list[CotEvent]:
    events = []
    for data in DOCUMENTS:
        with contextlib.suppress(RemoteProtocolError):
            events.append(parse_event(data))
    return events


@pytest.mark.parametrize("uid", [None, "S<1> & \"two\" 'three'\tTab\nNl\rCr é ✈"])
def test_every_corpus_event_reads_back_exactly(uid: str | None) -> None:
    events = corpus_events()
    assert len(events) > 40  # (the corpus is there)
    for event in events:
        check_read_back(event if uid is None else replace(event, uid=uid))


# Any character XML 1.0 can carry (what a parsed attribute can hold), with the ones
# that need escaping in attributes (`&<>"`, tab, newline, CR) often.
_CHARS = st.characters(codec="utf-8").filter(lambda c: not XML_IMPOSSIBLE.search(c))
_VALUES = st.text(st.sampled_from("&<>\"'\t\n\r a1.-:é✈") | _CHARS, max_size=12)
_NAMES = st.sampled_from(["how", "access", "qos", "opex", "version", "remark", "x-y.z_1"])


@st.composite
def written_events(draw: st.DrawFn) -> bytes:
    """A CoT event with random attribute values, written by lxml (its own escaping)."""
    event = etree.Element("event")
    event.set("uid", draw(_VALUES.filter(lambda v: v.strip() != "" and v.isprintable())))
    event.set("type", draw(_VALUES.filter(bool)))
    for name in draw(st.lists(_NAMES, unique=True, max_size=4)):
        event.set(name, draw(_VALUES))
    for name, value in (("time", "2026-07-07T21:28:06.25Z"), ("stale", "2026-07-07T21:38:06Z")):
        event.set(name, value)
    if draw(st.booleans()):
        event.set("start", "2026-07-07T21:28:06Z")
    point = etree.SubElement(event, "point", lat="1.5", lon="-2")
    point.set("ce", draw(st.sampled_from(["10", " 10 ", "9999999", "1e1"])))
    if draw(st.booleans()):
        etree.SubElement(etree.SubElement(event, "detail"), "remarks").text = draw(_VALUES)
    return etree.tostring(event)


@settings(max_examples=300, deadline=None)
@given(written_events(), st.none() | _VALUES.filter(bool))
def test_generated_events_read_back_exactly(data: bytes, uid: str | None) -> None:
    try:
        event = parse_event(data)
    except RemoteProtocolError:  # (a uid or type the parse refuses: nothing is written)
        return
    check_read_back(event if uid is None else replace(event, uid=uid))


_CHANGES: list[dict[str, object]] = [
    {"stale": 60.0},
    {"time": 60.0},
    {"start": 60.0},
    {"time": 1.0, "start": 1.0},
    {"type": "a-h-G"},
    {"how": None},
    {"how": "h-e"},
    {"access": "Undefined"},
    {"qos": "q-1"},
    {"qos": None, "opex": None},
    {"opex": 'o"p', "access": None},
]


@pytest.mark.parametrize("change", _CHANGES)
@settings(max_examples=60, deadline=None)
@given(written_events())
def test_a_changed_value_is_written_from_it(change: dict[str, object], data: bytes) -> None:
    """What the hub changed is written from the value, in the sender's place for it (or
    after the sender's attributes when the sender wrote none); all else as written."""
    try:
        event = parse_event(data)
    except RemoteProtocolError:
        return
    assert event.text is not None
    values = {
        name: getattr(event, name) + shift if name in ("time", "start", "stale") else shift
        for name, shift in change.items()
    }
    changed = replace(event, **values)
    wanted = dict(event.text.event)
    for name, value in values.items():
        text = format_time(value) if isinstance(value, float) else value
        if text is None:
            wanted.pop(name, None)
        else:
            wanted[name] = text  # type: ignore[assignment]
    assert etree.fromstring(render(changed, XML)).items() == list(wanted.items())


_BENCH_BYTES = (
    b'<event version="2.0" uid="S3-T7" type="a-f-A-M-F" time="2025-12-01T20:13:20.000Z"'
    b' start="2025-12-01T20:13:20.000Z" stale="2025-12-01T20:15:20.000Z" how="m-g">'
    b'<point lat="30.35" lon="41.5" hae="8100" ce="10" le="10"/><detail>'
    b'<contact callsign="alpha-S3-T7"/><track speed="230" course="90"/><bench s="12345"/>'
    b"</detail></event>"
)
# Quotes either way, entities, character references, a namespaced attribute (left out).
_ODD = (
    b'<event xmlns:x="urn:x" version="2.0" uid="a&amp;b&lt;c&gt;d&quot;e\'f" type="a-f-G"'
    b' x:z="1" time=\'2026-07-07T21:28:06Z\' start="2026-07-07T21:28:06Z"'
    b' stale="2026-07-07T21:38:06Z" how=\'say "hi"\''
    b' remark="tab&#9;nl&#10;cr&#13;&#xe9;\xc3\xa9"><point lat="1" lon="2" ce="&#32;5"/></event>'
)
_ODD_TAIL = (
    b' type="a-f-G" time="2026-07-07T21:28:06Z" start="2026-07-07T21:28:06Z"'
    b' stale="2026-07-07T21:38:06Z" how="say &quot;hi&quot;"'
    b' remark="tab&#9;nl&#10;cr&#13;\xc3\xa9\xc3\xa9"><point lat="1" lon="2" ce=" 5"/></event>'
)


def test_fixed_events_are_written_byte_for_byte() -> None:
    assert render(BENCH, XML) == _PROLOGUE + _BENCH_BYTES
    # The hub's uid-marked form (hub/render.py): U+0000 is written as it is.
    marked = _PROLOGUE + _BENCH_BYTES.replace(b'uid="S3-T7"', b'uid="\x00"')
    assert render(replace(BENCH, uid="\x00"), XML) == marked
    odd = parse_event(_ODD)
    assert render(odd, XML) == (
        _PROLOGUE + b'<event version="2.0" uid="a&amp;b&lt;c&gt;d&quot;e\'f"' + _ODD_TAIL
    )
    assert render(replace(odd, uid="S<1>"), XML) == (
        _PROLOGUE + b'<event version="2.0" uid="S&lt;1&gt;"' + _ODD_TAIL
    )


def test_a_text_not_from_the_parser_is_written_as_it_holds() -> None:
    """A `CotText` made elsewhere: a name twice is written twice, no uid is no uid."""
    assert BENCH.text is not None
    pairs = BENCH.text.event
    twice = replace(BENCH.text, event=(*pairs, ("version", "2")))
    data = render(replace(BENCH, text=twice), XML)
    assert data.count(b' version="') == 3  # (the XML declaration's, and the event's two)
    assert b'<event version="2.0" ' in data and b' how="m-g" version="2">' in data
    no_uid = replace(BENCH.text, event=tuple(p for p in pairs if p[0] != "uid"))
    assert b"uid=" not in render(replace(BENCH, text=no_uid, uid="S1"), XML)
