"""CoT XML: one event's bytes <-> `CotEvent`, with a parser that cannot be turned against us.

Rules: no DTD, no entity, no network, no huge tree; the document must be valid UTF-8, at
most `limit_message_bytes`, at most `limit_xml_depth` deep, with no attribute longer than
`limit_attribute_bytes`. Anything else is a `RemoteProtocolError` naming the reason (which is
also the metric label). Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lxml import etree

from commonsky import times
from commonsky.errors import RemoteProtocolError
from commonsky.model import UNKNOWN, CotEvent, CotText, Point
from commonsky.protocol.xmlsafe import PARSER as PARSER
from commonsky.protocol.xmlsafe import detail_tree as detail_tree
from commonsky.times import format_time


@dataclass(frozen=True, slots=True)
class XmlLimits:
    message_bytes: int = 262_144  # (the defaults of the settings of these names)
    depth: int = 32
    attribute_bytes: int = 4096


DEFAULT_LIMITS = XmlLimits()

UID_MAX_CHARS = 256
# Control characters (Unicode category Cc: C0, DEL, C1 — tab and newlines included), and what
# XML 1.0 cannot carry at all: U+FFFE, U+FFFF and lone surrogates (which lxml never yields
# from XML, but a protobuf string can hold).
_BAD_UID_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ufffe\uffff\ud800-\udfff]")


def check_uid(uid: str) -> None:
    """Refuse a uid no CoT peer can use; accept every other string.

    The CoT event schema (MITRE `CoT Base-Event Schema`, `uid` is `xs:string`) allows any
    non-empty string, and real clients use spaces: ATAK's GeoChat uid is
    `GeoChat.<sender uid>.<chat room>.<message id>`, where the room is `All Chat Rooms` or a
    callsign such as `RED FOX 1`. The only rules are: non-empty, at most `UID_MAX_CHARS`
    (256) characters, and no control character nor code point XML 1.0 cannot carry
    (U+0000–U+001F, U+007F–U+009F, U+FFFE, U+FFFF, surrogates).

    Raises `RemoteProtocolError` with reason `bad_uid` naming the rule broken. The one
    place this rule lives: the CoT and TAK protobuf decoders and the HTTP API call it.
    """
    if not uid:
        raise RemoteProtocolError("bad_uid", "uid is empty")
    if len(uid) > UID_MAX_CHARS:
        raise RemoteProtocolError("bad_uid", f"uid is over {UID_MAX_CHARS} characters")
    if uid.isascii() and uid.isprintable():  # (U+0020–U+007E: the search is skipped)
        return
    bad = _BAD_UID_CHAR.search(uid)
    if bad is not None:
        raise RemoteProtocolError(
            "bad_uid", f"uid has control character U+{ord(bad.group()):04X} at {bad.start()}"
        )


def parse_time(text: str | None, field: str) -> float:
    if not text:
        raise RemoteProtocolError("malformed", f"event has no {field} time")
    try:
        return times.parse_time(text.strip())
    except ValueError:
        raise RemoteProtocolError("malformed", f"{field}={text[:40]!r} is not a time") from None


def _number(attrs: dict[str, str], tag: str, name: str, default: float | None = None) -> float:
    """A number attribute of `<tag>` (its attributes: `attrs`). `NaN` (any case) is CoT's
    "unknown" as ATAK writes it (its file-transfer acknowledgements carry `hae="NaN"`) and
    is kept as NaN; infinities are refused."""
    raw = attrs.get(name)
    if raw is None:
        if default is None:
            raise RemoteProtocolError("malformed", f"<{tag}> has no {name}")
        return default
    try:
        value = float(raw)
    except ValueError:
        raise RemoteProtocolError("malformed", f"{name}={raw[:40]!r} is not a number") from None
    if math.isinf(value):
        raise RemoteProtocolError("malformed", f"{name}={raw[:40]!r} is not finite")
    return value


def _check_shape(root: etree._Element, limits: XmlLimits, where: str = "") -> None:
    # Depth and attribute size are checked on the parsed tree: lxml has already refused
    # anything that is not well-formed, and the whole message is bounded in size.
    stack: list[tuple[etree._Element, int]] = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > limits.depth:
            raise RemoteProtocolError(
                "too_deep", f"{where}elements nested deeper than {limits.depth}"
            )
        for name, value in element.attrib.items():
            if len(value) > limits.attribute_bytes and not (
                element.tag == "link" and name == "line"  # checked as a document of its own
            ):
                raise RemoteProtocolError(
                    "attribute_too_long",
                    f"{where}an attribute of <{element.tag}> is longer than "
                    f"{limits.attribute_bytes} "
                    "(limit_attribute_bytes)",
                )
        if element.text is not None and len(element.text) > limits.message_bytes:
            raise RemoteProtocolError("oversized", f"{where}element text too long")
        stack.extend((child, depth + 1) for child in element)


def parse_event(data: bytes, limits: XmlLimits = DEFAULT_LIMITS) -> CotEvent:
    """Decode one complete CoT `<event>` document."""
    if len(data) > limits.message_bytes:
        raise RemoteProtocolError(
            "oversized",
            f"event of {len(data)} bytes exceeds limit_message_bytes ({limits.message_bytes})",
        )
    if not data.isascii():  # (ASCII is UTF-8: most events skip the decoding)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError("bad_utf8", f"invalid UTF-8 at byte {exc.start}") from None
    root = _parse_document(data, limits, "")
    if b"link" in data:  # (no <link> element without these bytes: the search is skipped)
        for link in root.iterfind("detail/link[@line]"):
            _check_stroke(link.get("line", ""), limits)
    return _event_from_tree(root)


# Spaces after the root element, where XML allows them (`Misc`). libxml2 refills its input
# (a call of ~120 instructions) at each step taken within 250 bytes (`INPUT_CHUNK`) of its
# end: a whole short event, ~100 calls, 12k instructions of the 70k of its parse (issue #19;
# measured with callgrind, lxml 6.1 / libxml2 2.14). Only after a document that starts with
# `<event`: its encoding is then UTF-8, where these bytes are spaces (in UTF-16, undeclared,
# they would not be); appended whitespace cannot complete a document that is not whole.
_PAD = b" " * 256


def _parse_document(data: bytes, limits: XmlLimits, where: str) -> etree._Element:
    """An `<event>` document parsed with every rule: no DTD or entity, well-formed, bounded."""
    if b"<!" in data and (b"<!DOCTYPE" in data or b"<!ENTITY" in data or b"<!doctype" in data):
        raise RemoteProtocolError("dtd", f"{where}DTDs and entity declarations are refused")
    padded = data.startswith(b"<event")
    try:
        root = etree.fromstring(data + _PAD if padded else data, PARSER)
    except etree.XMLSyntaxError as exc:
        message = str(exc)
        if padded:  # (the error as the document itself gives it: its line and column)
            try:
                etree.fromstring(data, PARSER)
            except etree.XMLSyntaxError as unpadded:
                message = str(unpadded)
        raise RemoteProtocolError("malformed", f"{where}not well-formed XML: {message}") from None
    if root is None or root.tag != "event":
        raise RemoteProtocolError("malformed", f"{where}the root element is not <event>")
    # The walk can only fail on a document longer than an attribute may be (no value or
    # text is longer than its document) or with more `<` than the depth allowed (each
    # element opens with one): most events are neither, and skip it.
    if len(data) > min(limits.attribute_bytes, limits.message_bytes) or (
        data.count(b"<") > limits.depth
    ):
        _check_shape(root, limits, where)
    return root


def check_detail(detail: str, limits: XmlLimits = DEFAULT_LIMITS) -> None:
    """Refuse a `<detail>` text (`CotEvent.detail`) our parser could not have produced: not
    well-formed (it would end the `<event>` it is written into), a DTD or entity, deeper or
    with longer attributes than `limits`, or a telestration stroke that breaks the rules
    (`parse_event`'s). For an event that did not come from `parse_event` — a cluster core's
    inbound stream (cluster/trust.py). Raises RemoteProtocolError (its reason: `malformed`,
    `dtd`, `too_deep`, `attribute_too_long`, `oversized`)."""
    data = f"<event><detail>{detail}</detail></event>".encode("utf-8", "surrogatepass")
    root = _parse_document(data, limits, "detail: ")  # (its walk when the size needs one)
    if len(root) != 1 or root[0].tag != "detail" or root[0].tail:
        raise RemoteProtocolError("malformed", "detail: it closes its <detail>")
    if "link" in detail:
        for link in root.iterfind("detail/link[@line]"):
            _check_stroke(link.get("line", ""), limits)


def stroke_events(root: etree._Element) -> list[etree._Element]:
    """The strokes of a telestration (`u-d-f-m`, ATAK's "MultiPolyline"): each is a whole
    `u-d-f` event, escaped into the `line` attribute of a `<link>` in `<detail>` (ATAK
    `takcot/examples/Drawing Shapes - Telestration.cot`). `root` is a `<detail>` element."""
    # Already checked by `parse_event` (`_check_stroke`) when the event was accepted.
    return [
        etree.fromstring(link.get("line", "").encode("utf-8"), PARSER)
        for link in root.iterfind("link[@line]")
    ]


def _check_stroke(line: str, limits: XmlLimits) -> None:
    # A stroke is a document that every receiving client parses again: it gets the same
    # rules as the event that carries it (its size is bounded by the carrier's), and strokes
    # do not nest.
    where = "detail.link@line (a telestration stroke): "
    root = _parse_document(line.encode("utf-8"), limits, where)
    if root.find("detail/link[@line]") is not None:
        raise RemoteProtocolError("malformed", f"{where}strokes do not nest")


def _event_from_tree(root: etree._Element) -> CotEvent:
    # Each element's attributes are read once, as written (`_written`) and as a dict: one
    # call into lxml per element rather than one per attribute.
    written = _written(root)
    attrs = dict(written)
    uid = attrs.get("uid")
    cot_type = attrs.get("type")
    if uid is None or not cot_type:
        raise RemoteProtocolError("malformed", "<event> needs uid and type")
    check_uid(uid)
    time_text = attrs.get("time")
    time = parse_time(time_text, "time")
    start_text = attrs.get("start") or time_text
    # (`start` is most often written as `time` is: read once)
    start = time if start_text == time_text else parse_time(start_text, "start")
    stale = parse_time(attrs.get("stale"), "stale")
    # The first <point> and <detail> children, found in one pass over the children
    # (ElementPath's `find` costs more per call than this whole loop).
    point_el = detail_el = None
    for child in root:
        tag = child.tag
        if tag == "point":
            point_el = child if point_el is None else point_el
        elif tag == "detail" and detail_el is None:
            detail_el = child
    if point_el is None:
        raise RemoteProtocolError("malformed", "<event> has no <point>")
    at = _written(point_el)
    at_attrs = dict(at)
    lat = _number(at_attrs, "point", "lat")
    lon = _number(at_attrs, "point", "lon")
    if abs(lat) > 90.0 or abs(lon) > 180.0:  # (NaN, unknown, compares false: accepted)
        raise RemoteProtocolError("malformed", f"point lat={lat} lon={lon} out of range")
    point = Point(
        lat=lat,
        lon=lon,
        hae=_number(at_attrs, "point", "hae", UNKNOWN),
        ce=_number(at_attrs, "point", "ce", UNKNOWN),
        le=_number(at_attrs, "point", "le", UNKNOWN),
    )
    if detail_el is None:
        detail, callsign, speed, course, dests = "", "", None, None, _NO_DESTS
    else:
        detail, callsign, speed, course, dests = _read_detail(detail_el)
    text = CotText(
        event=written,
        point=at,
        detail=detail_el is not None,
        time=time,
        start=start,
        stale=stale,
        at=point,
    )
    return CotEvent(
        uid=uid,
        type=cot_type,
        time=time,
        start=start,
        stale=stale,
        how=attrs.get("how"),
        point=point,
        detail=detail,
        access=attrs.get("access"),
        qos=attrs.get("qos"),
        opex=attrs.get("opex"),
        callsign=callsign,
        speed=speed,
        course=course,
        dest_callsigns=dests[0],
        dest_parties=dests[1],
        dest_uids=dests[2],
        text=text,
    )


# `<marti><dest …/>` read from `<detail>`: (callsigns, parties, uids), each as written.
_Dests = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
_NO_DESTS: _Dests = ((), (), ())


def _read_detail(
    detail_el: etree._Element,
) -> tuple[str, str, float | None, float | None, _Dests]:
    """What `_event_from_tree` lifts out of `<detail>` (the routing fields), and its text:
    (text, callsign, speed, course, `marti/dest` callsigns, parties and uids)."""
    children = list(detail_el)
    text = _children_text(detail_el, children)
    contact = track = None
    martis = []
    for child in children:  # (the first <contact> and <track>, every <marti>)
        tag = child.tag
        if tag == "contact":
            contact = child if contact is None else contact
        elif tag == "track":
            track = child if track is None else track
        elif tag == "marti":
            martis.append(child)
    callsign = "" if contact is None else contact.get("callsign", "")
    speed = course = None
    if track is not None:
        moving: dict[str, str] = dict(track.items())  # type: ignore[arg-type]
        speed = _number(moving, "track", "speed", math.nan)
        course = _number(moving, "track", "course", math.nan)
        speed = None if math.isnan(speed) else speed
        course = None if math.isnan(course) else course
    if not martis:
        return text, callsign, speed, course, _NO_DESTS
    callsigns: list[str] = []
    parties: list[str] = []
    uids: list[str] = []
    for marti in martis:
        for dest in marti:
            if dest.tag != "dest":
                continue
            if dest.get("callsign"):
                callsigns.append(dest.get("callsign", ""))
            if dest.get("party"):
                parties.append(dest.get("party", ""))
            if dest.get("uid"):
                uids.append(dest.get("uid", ""))
    return text, callsign, speed, course, (tuple(callsigns), tuple(parties), tuple(uids))


def _children_text(detail_el: etree._Element, children: list[etree._Element]) -> str:
    """`<detail>`'s children as text, each as `tostring` writes it alone (with its tail).

    The same text as `<detail>` written whole, less its own tags, when `<detail>` has no
    text before its first child, no attribute and no namespace in scope (a namespace would be
    declared on `<detail>` written whole, on each child written alone): one `tostring`
    instead of one per child. Otherwise each child alone."""
    if detail_el.text is None and not detail_el.attrib and not detail_el.nsmap:
        whole = etree.tostring(detail_el, encoding="unicode", with_tail=False)
        if whole == "<detail/>":
            return ""
        if whole.startswith("<detail>") and whole.endswith("</detail>"):
            return whole[8:-9]
    return "".join([etree.tostring(child, encoding="unicode") for child in children])


def _written(element: etree._Element) -> tuple[tuple[str, str], ...]:
    """An element's attributes as written, in order. A namespaced one (`{uri}name` in lxml)
    is left out: written back without its namespace declaration it would not parse."""
    items: tuple[tuple[str, str], ...] = tuple(element.items())  # type: ignore[arg-type]
    for name, _ in items:
        if name[0] == "{":
            return tuple(item for item in items if item[0][0] != "{")
    return items


# "&" first, so the entities the later replacements write are not escaped again.
_ATTR_ESCAPES = (
    ("&", "&amp;"),
    ("<", "&lt;"),
    (">", "&gt;"),
    ('"', "&quot;"),
    ("\n", "&#10;"),
    ("\r", "&#13;"),
    ("\t", "&#9;"),
)
_NEEDS_ESCAPE = re.compile('[&<>"\n\r\t]')


def quote(value: str) -> str:
    """Text safe inside an XML attribute or element. (A regex scan and a few `replace`
    calls: `str.translate` with a mapping costs ~100 ns a character, which showed when the
    hub quotes kilobytes of JSON for each fused launch event.)"""
    if not _NEEDS_ESCAPE.search(value):
        return value
    for char, entity in _ATTR_ESCAPES:
        value = value.replace(char, entity)
    return value


_NEEDS_TEXT_ESCAPE = re.compile("[&<>\r]")


def quote_text(value: str) -> str:
    """Text safe inside an element (not an attribute): `&`, `<`, `>` and carriage returns
    (which a parser would fold into newlines) are escaped, quotes are not. JSON carried in
    a detail element is full of quotes, which `quote` would turn into `&quot;` — a sixth
    more bytes to store, record and send in every copy."""
    if not _NEEDS_TEXT_ESCAPE.search(value):
        return value
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return value.replace("\r", "&#13;")


def number(value: float) -> str:
    """A CoT number as TAK clients read it: NaN as `NaN` (Java's `Double.parseDouble`
    refuses Python's `nan`), others as the shortest text that reads back the same."""
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def encode_event(event: CotEvent) -> bytes:
    """CoT XML bytes for one event. `detail` is trusted: it came out of our own parser.

    An event read from CoT is written back as its sender wrote it (`CotText`): each
    attribute of `<event>` and `<point>` in its own text and order while its value is
    unchanged, `<detail>` only if there was one. What the hub changed (a uid, a time, the
    point) is written from the value. An attribute the sender left out (`how`, `access`,
    `qos`, `opex`, `version`, a `<point>`'s `hae`…) stays out."""
    text = event.text
    if text is None:
        return _encode_made(event)
    p = event.point
    head = _head_as_read(event, text) or _head(event, text)
    at = _attributes(text.point) if p is text.at or p == text.at else _point(p, text)
    if event.detail or text.detail:
        return (
            f'<?xml version="1.0" encoding="UTF-8"?><event{head}><point{at}/>'
            f"<detail>{event.detail}</detail></event>"
        ).encode()
    return f'<?xml version="1.0" encoding="UTF-8"?><event{head}><point{at}/></event>'.encode()


def _clean_attributes(pairs: Iterable[tuple[str, str]], count: int) -> str | None:
    """` name="value"` for each of the `count` (name, value) pairs, when no name or value
    holds a character `quote` escapes (else None: `_attributes` writes them).

    The text is joined in C (no Python step per attribute) and tested whole with a few
    `in` tests (memchr) and one count: a `"` in a name or value shows as more than the two
    each attribute writes. A regex search over the values cost ~50 instructions a
    character, a sixth of writing a relayed event (issue #19, callgrind)."""
    written = " " + '" '.join(map('="'.join, pairs)) + '"'
    if written.count('"') != 2 * count or "&" in written or "<" in written or ">" in written:
        return None  # (with no pair, `written` is ` "`: one quote, not none)
    if "\n" in written or "\r" in written or "\t" in written:
        return None
    return written


def _head_as_read(event: CotEvent, text: CotText) -> str | None:
    """`<event>`'s attributes when no value but the uid is other than the one read (most
    relayed events, and the hub's uid-marked form: `hub/render.py`): the sender's pairs,
    its uid's value replaced in place. None when another value changed, an attribute
    name repeats, the sender wrote no uid, or a value needs escaping: `_head` writes it."""
    if event.time != text.time or event.stale != text.stale or event.start != text.start:
        return None
    read = dict(text.event)
    if len(read) != len(text.event) or "uid" not in read or read.get("type") != event.type:
        return None
    if read.get("how") != event.how or read.get("access") != event.access:
        return None
    if read.get("qos") != event.qos or read.get("opex") != event.opex:
        return None
    read["uid"] = event.uid  # (a dict keeps the key's place)
    return _clean_attributes(read.items(), len(read))


def _attributes(pairs: Sequence[tuple[str, str]]) -> str:
    """` name="value"` for each (name, value), the value `quote`d: most events have none
    to escape (this runs for every event written), and are joined without a search."""
    written = _clean_attributes(pairs, len(pairs))
    if written is not None:
        return written
    return "".join([f' {name}="{quote(value)}"' for name, value in pairs])


def _head(event: CotEvent, text: CotText) -> str:
    """`<event>`'s attributes: the sender's, in its order and text where the value is the
    one read; a value the hub set that the sender did not write comes after them."""
    pairs: list[tuple[str, str]] = []
    seen = 0  # which of `start` and `_OPTIONAL` the sender wrote (bits)
    for name, raw in text.event:
        field = _HEAD.get(name)
        if field is None:
            value = raw  # `version`, and whatever else the sender wrote
        elif field == -1:
            value = event.uid
        elif field == -2:
            value = event.type
        elif field == -3:
            value = raw if event.time == text.time else format_time(event.time)
        elif field == -4:
            value = raw if event.stale == text.stale else format_time(event.stale)
        elif field == -5:
            seen |= 1
            value = raw if event.start == text.start else format_time(event.start)
        else:  # (an optional one: its bit)
            seen |= field
            current = getattr(event, name)
            if current is None:
                continue  # (the hub removed it)
            value = current
        pairs.append((name, value))
    if seen != _WROTE_ALL:  # what the sender did not write: only a value the hub set
        if not seen & 1 and event.start != text.start:
            pairs.append(("start", format_time(event.start)))
        for name, bit in _OPTIONAL.items():
            current = getattr(event, name)
            if not seen & bit and current is not None:
                pairs.append((name, current))
    return _attributes(pairs)


_OPTIONAL = {"how": 2, "access": 4, "qos": 8, "opex": 16}
_WROTE_ALL = 31
# `<event>`'s attributes `_head` writes from a value: uid -1, type -2, time -3, stale -4,
# start -5, an optional one its bit in `_OPTIONAL` (positive).
_HEAD = {"uid": -1, "type": -2, "time": -3, "stale": -4, "start": -5, **_OPTIONAL}
_POINT = ("lat", "lon", "hae", "ce", "le")


def _point(p: Point, text: CotText) -> str:
    """`<point>`'s attributes when the hub changed the point: each number as written while
    its value is the one read, else as a number; one the sender left out stays out while it
    is still the default it was read as."""
    values = {"lat": p.lat, "lon": p.lon, "hae": p.hae, "ce": p.ce, "le": p.le}
    was = text.at
    read = {"lat": was.lat, "lon": was.lon, "hae": was.hae, "ce": was.ce, "le": was.le}
    parts: list[str] = []
    for name, raw in text.point:
        value = values.pop(name, None)
        if value is None or _same(value, read[name]):
            parts.append(f' {name}="{quote(raw)}"')
        else:
            parts.append(f' {name}="{number(value)}"')
    for name in _POINT:
        if name in values and not _same(values[name], read[name]):
            parts.append(f' {name}="{number(values[name])}"')
    return "".join(parts)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _encode_made(event: CotEvent) -> bytes:
    """CoT XML for an event the hub made (no sender's text): every field as a value."""
    extra = "".join(
        f' {name}="{quote(value)}"'
        for name, value in (
            ("how", event.how),
            ("access", event.access),
            ("qos", event.qos),
            ("opex", event.opex),
        )
        if value is not None
    )
    p = event.point
    text = (
        f'<?xml version="1.0" encoding="UTF-8"?>'
        f'<event version="2.0" uid="{quote(event.uid)}" type="{quote(event.type)}"'
        f' time="{format_time(event.time)}" start="{format_time(event.start)}"'
        f' stale="{format_time(event.stale)}"{extra}>'
        f'<point lat="{number(p.lat)}" lon="{number(p.lon)}" hae="{number(p.hae)}"'
        f' ce="{number(p.ce)}" le="{number(p.le)}"/>'
        f"<detail>{event.detail}</detail></event>"
    )
    return text.encode("utf-8")


def control_event(
    uid: str,
    cot_type: str,
    now: float,
    detail: str = "",
    stale_s: float = 20.0,
    how: str = "h-g-i-g-o",
) -> CotEvent:
    """A hub-made event at 0,0 (pong, protocol negotiation, notices' carriers)."""
    return new_event(uid, cot_type, now, now + stale_s, Point(lat=0.0, lon=0.0), detail, how)


def new_event(
    uid: str,
    cot_type: str,
    now: float,
    stale: float,
    point: Point,
    detail: str = "",
    how: str = "h-e",
) -> CotEvent:
    """An event made at `now` (its time and start) that goes stale at `stale`: what the hub
    publishes itself (fused events, conflict notices, warnings) and what tools draw."""
    return CotEvent(
        uid=uid,
        type=cot_type,
        time=now,
        start=now,
        stale=stale,
        how=how,
        point=point,
        detail=detail,
    )
