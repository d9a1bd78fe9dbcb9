"""`parse_event` reads what lxml reads, whichever way it hands lxml the document (issue #19).

An event that starts with `<event` is parsed with spaces after it (`cot._PAD`: libxml2 then
skips ~100 input refills); one that starts otherwise, say with a space, is parsed as it is.
The two must never differ: the same event, the same refusal, and the error message of the
document itself (its own line and column). Checked on the real traffic of the corpus, on
every truncation of some of it, and on generated hostile bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from commonsky.bench.relay import event_bytes
from commonsky.errors import RemoteProtocolError
from commonsky.model import CotEvent
from commonsky.protocol import cot
from commonsky.protocol.cot import parse_event
from commonsky.protocol.xmlsafe import PARSER

_IN_REPO = Path(__file__).parents[1] / "corpus" / "data"
CORPUS = Path(
    os.environ.get(
        "COMMONSKY_TAK_CORPUS", _IN_REPO if _IN_REPO.is_dir() else "/work/shared/tak-corpus"
    )
)
DOCUMENTS = [path.read_bytes().strip() for path in sorted(CORPUS.glob("*.xml"))]
BENCH = event_bytes("alpha", 3, 7, 12345, 1764620000.0)


def outcome(data: bytes) -> CotEvent | tuple[str, str]:
    try:
        return parse_event(data)
    except RemoteProtocolError as exc:
        return exc.reason, str(exc)


def lxml_error(data: bytes) -> str | None:
    """lxml's own message for `data` parsed exactly as given, or None when it parses."""
    try:
        etree.fromstring(data, PARSER)
    except etree.XMLSyntaxError as exc:
        return f"not well-formed XML: {exc}"
    return None


def check_same(data: bytes) -> None:
    """`data` reads as `data` after a space (parsed unpadded) does, and a refusal for
    XML that is not well-formed carries lxml's message for `data` itself."""
    got, unpadded = outcome(data), outcome(b" " + data)
    if isinstance(got, CotEvent):
        assert repr(got) == repr(unpadded)  # (every field; NaN, CoT's unknown, is no value)
        return
    assert isinstance(unpadded, tuple) and got[0] == unpadded[0]
    if got[1].startswith("not well-formed XML"):
        assert got[1] == lxml_error(data)


def test_the_corpus_is_there() -> None:
    assert len(DOCUMENTS) >= 80


@pytest.mark.parametrize("data", DOCUMENTS, ids=range(len(DOCUMENTS)))
def test_a_corpus_event_reads_the_same_padded_or_not(data: bytes) -> None:
    check_same(data)


@pytest.mark.parametrize("data", DOCUMENTS, ids=range(len(DOCUMENTS)))
def test_a_corpus_event_is_what_lxml_reads(data: bytes) -> None:
    """Field by field against a tree lxml reads from the document as it is."""
    try:
        event = parse_event(data)
    except RemoteProtocolError:
        return
    root = etree.fromstring(data, PARSER)
    point = root.find("point")
    assert event.uid == root.get("uid") and event.type == root.get("type")
    assert event.how == root.get("how") and event.access == root.get("access")
    assert event.text is not None
    assert event.text.event == tuple((k, v) for k, v in root.items() if k[0] != "{")
    assert event.text.point == tuple((k, v) for k, v in point.items() if k[0] != "{")
    detail = root.find("detail")
    assert event.text.detail is (detail is not None)
    if detail is not None:
        written = "".join(etree.tostring(child, encoding="unicode") for child in detail)
        assert event.detail == written
        contact = detail.find("contact")
        assert event.callsign == ("" if contact is None else contact.get("callsign", ""))


@pytest.mark.parametrize("data", [BENCH, *DOCUMENTS[:12:3]], ids=range(5))
def test_every_truncation_is_refused_as_before(data: bytes) -> None:
    for end in range(len(data)):
        check_same(data[:end])


_JUNK = st.binary(max_size=12) | st.sampled_from(
    [b"<", b">", b"</event>", b"<!--", b"-->", b"<![CDATA[", b"]]>", b"&amp;", b"&x;", b"\xff",
     b"\xc3", b"<?x?>", b"<a>", b"</a>", b"<point/>", b"\x00", b"\r\n", b"'", b'"']
)  # fmt: skip


@settings(max_examples=300)
@given(at=st.integers(0, len(BENCH)), junk=st.lists(_JUNK, max_size=3), cut=st.integers(0, 40))
def test_hostile_bytes_read_the_same_padded_or_not(at: int, junk: list[bytes], cut: int) -> None:
    data = BENCH[:at] + b"".join(junk) + BENCH[at + cut :]
    check_same(data)
    check_same(data + b" \n")


def test_a_short_event_reaches_libxml2_with_room_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libxml2 refills its input at each step within 250 bytes (INPUT_CHUNK) of the end of a
    document: a short event is given spaces after it, so its parse has none to do."""
    given_to_lxml: list[bytes] = []
    fromstring = etree.fromstring

    def recording(data: bytes, parser: etree.XMLParser) -> etree._Element:
        given_to_lxml.append(data)
        return fromstring(data, parser)

    monkeypatch.setattr(cot.etree, "fromstring", recording)
    assert parse_event(BENCH).uid == "S3-T7"
    (handed,) = given_to_lxml
    assert handed.startswith(BENCH) and len(handed) >= len(BENCH) + 250
    assert not handed[len(BENCH) :].strip(b" ")


_PIECES = [
    BENCH,
    event_bytes("bravo", 1, 2, 3, 1764620000.0),
    b"\r\n \x00",
    b'<?xml version="1.0" encoding="UTF-8"?>',
    BENCH.replace(b'type="a-f-A-M-F"', b'type="t-x-c-t"'),  # a ping: answered, not an item
    BENCH.replace(b'type="a-f-A-M-F"', b'type="t-x-takp-v"'),  # an offer: not an item
    BENCH.replace(b'type="a-f-A-M-F"', b'type="t-x-d-d"'),  # a delete: an item
    BENCH.replace(b'type="a-f-A-M-F"', b'type="t-xx"'),  # an item
    BENCH.replace(b"<point", b"<pointe"),  # refused: no <point>
    *DOCUMENTS[:8],
]


@settings(max_examples=150)
@given(
    order=st.lists(st.integers(0, len(_PIECES) - 1), max_size=12),
    cuts=st.lists(st.integers(0, 20000), max_size=6),
)
def test_a_stream_gives_each_events_own_reading_in_order(order: list[int], cuts: list[int]) -> None:
    """Whatever is between events and however the bytes arrive, the stream yields, in
    order, what `parse_event` reads from each event (items only) or its refusal."""
    from commonsky.protocol.stream import EventReceived, MessageRefused, TakStream

    pieces = [_PIECES[index] for index in order]
    expected: list[object] = []
    for piece in pieces:
        if piece.startswith(b"<event"):
            got = outcome(piece)
            if isinstance(got, tuple):
                expected.append(got)
            elif not got.type.startswith("t-x-takp") and got.type not in ("t-x-c-t",):
                expected.append(repr(got))
    data = b"".join(pieces)
    stream = TakStream()
    seen: list[object] = []
    for start, end in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)], strict=True):
        for item in stream.receive_data(data[start:end], 1764620000.0):
            if isinstance(item, EventReceived):
                seen.append(repr(item.event))
            elif isinstance(item, MessageRefused):
                seen.append((item.reason, item.message))
    assert seen == expected
