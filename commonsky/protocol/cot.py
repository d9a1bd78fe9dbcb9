"""CoT XML: one event's bytes <-> `CotEvent`, with a parser that cannot be turned against us.

Rules: no DTD, no entity, no network, no huge tree; the document must be valid UTF-8, at
most `limit_message_bytes`, at most `limit_xml_depth` deep, with no attribute longer than
`limit_attribute_bytes`. Anything else is a `RemoteProtocolError` naming the reason (which is
also the metric label). Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree

from commonsky.errors import RemoteProtocolError
from commonsky.model import CotEvent, Point


@dataclass(frozen=True, slots=True)
class XmlLimits:
    message_bytes: int = 65536
    depth: int = 32
    attribute_bytes: int = 4096


DEFAULT_LIMITS = XmlLimits()

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
    collect_ids=False,
)

UNKNOWN = 9999999.0  # CoT's "not known" value for hae, ce and le


def parse_time(text: str | None, field: str) -> float:
    if not text:
        raise RemoteProtocolError("malformed", f"event has no {field} time")
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise RemoteProtocolError("malformed", f"{field}={text[:40]!r} is not a time") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


@functools.lru_cache(maxsize=1024)
def format_time(epoch: float) -> str:
    # Cached: an event's time and start are usually one instant, and the hub renders many
    # events made at the same instant (one fused event per recipient, say).
    iso = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return iso.removesuffix("+00:00") + "Z"


def detail_tree(detail: str) -> etree._Element:
    """The `<detail>` of an accepted event as a tree.

    The text came out of `parse_event` (our parser re-serialised it), so it is well-formed
    and free of DTDs and entities; the same locked-down parser is used all the same.
    """
    return etree.fromstring(f"<detail>{detail}</detail>", _PARSER)


def _float(element: etree._Element, name: str, default: float | None = None) -> float:
    raw = element.get(name)
    if raw is None:
        if default is None:
            raise RemoteProtocolError("malformed", f"<{element.tag}> has no {name}")
        return default
    try:
        value = float(raw)
    except ValueError:
        raise RemoteProtocolError("malformed", f"{name}={raw[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise RemoteProtocolError("malformed", f"{name}={raw[:40]!r} is not finite")
    return value


def _check_shape(root: etree._Element, limits: XmlLimits) -> None:
    # Depth and attribute size are checked on the parsed tree: lxml has already refused
    # anything that is not well-formed, and the whole message is bounded in size.
    stack: list[tuple[etree._Element, int]] = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > limits.depth:
            raise RemoteProtocolError("too_deep", f"elements nested deeper than {limits.depth}")
        for value in element.attrib.values():
            if len(value) > limits.attribute_bytes:
                raise RemoteProtocolError(
                    "attribute_too_long",
                    f"an attribute of <{element.tag}> is longer than {limits.attribute_bytes} "
                    "(limit_attribute_bytes)",
                )
        if element.text is not None and len(element.text) > limits.message_bytes:
            raise RemoteProtocolError("oversized", "element text too long")
        stack.extend((child, depth + 1) for child in element)


def parse_event(data: bytes, limits: XmlLimits = DEFAULT_LIMITS) -> CotEvent:
    """Decode one complete CoT `<event>` document."""
    if len(data) > limits.message_bytes:
        raise RemoteProtocolError(
            "oversized", f"event of {len(data)} bytes exceeds limit_message_bytes"
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError("bad_utf8", f"invalid UTF-8 at byte {exc.start}") from None
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data or b"<!doctype" in data:
        raise RemoteProtocolError("dtd", "DTDs and entity declarations are refused")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise RemoteProtocolError("malformed", f"not well-formed XML: {exc}") from None
    if root is None or root.tag != "event":
        raise RemoteProtocolError("malformed", "the root element is not <event>")
    _check_shape(root, limits)
    return _event_from_tree(root)


def check_uid(uid: str) -> None:
    """The CoT uid rule, one for every path (TAK XML, TAK protobuf, the API); raises
    RemoteProtocolError naming what is wrong."""
    if not uid or len(uid) > 256 or any(ch.isspace() for ch in uid):
        raise RemoteProtocolError("malformed", "uid is empty, over 256 characters or has spaces")


def _event_from_tree(root: etree._Element) -> CotEvent:
    uid = root.get("uid")
    cot_type = root.get("type")
    if not uid or not cot_type:
        raise RemoteProtocolError("malformed", "<event> needs uid and type")
    check_uid(uid)
    time = parse_time(root.get("time"), "time")
    start = parse_time(root.get("start") or root.get("time"), "start")
    stale = parse_time(root.get("stale"), "stale")
    point_el = root.find("point")
    if point_el is None:
        raise RemoteProtocolError("malformed", "<event> has no <point>")
    lat = _float(point_el, "lat")
    lon = _float(point_el, "lon")
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise RemoteProtocolError("malformed", f"point lat={lat} lon={lon} out of range")
    point = Point(
        lat=lat,
        lon=lon,
        hae=_float(point_el, "hae", UNKNOWN),
        ce=_float(point_el, "ce", UNKNOWN),
        le=_float(point_el, "le", UNKNOWN),
    )
    detail_el = root.find("detail")
    callsign = ""
    speed: float | None = None
    course: float | None = None
    dest_callsigns: list[str] = []
    dest_parties: list[str] = []
    detail = ""
    if detail_el is not None:
        detail = "".join(etree.tostring(child, encoding="unicode") for child in detail_el)
        contact = detail_el.find("contact")
        if contact is not None:
            callsign = contact.get("callsign", "")
        track = detail_el.find("track")
        if track is not None:
            speed = _float(track, "speed", math.nan)
            course = _float(track, "course", math.nan)
            speed = None if math.isnan(speed) else speed
            course = None if math.isnan(course) else course
        for dest in detail_el.iterfind("marti/dest"):
            if dest.get("callsign"):
                dest_callsigns.append(dest.get("callsign", ""))
            if dest.get("party"):
                dest_parties.append(dest.get("party", ""))
    return CotEvent(
        uid=uid,
        type=cot_type,
        time=time,
        start=start,
        stale=stale,
        how=root.get("how", "h-g-i-g-o"),
        point=point,
        detail=detail,
        access=root.get("access", ""),
        qos=root.get("qos", ""),
        opex=root.get("opex", ""),
        callsign=callsign,
        speed=speed,
        course=course,
        dest_callsigns=tuple(dest_callsigns),
        dest_parties=tuple(dest_parties),
    )


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


def _num(value: float) -> str:
    return repr(float(value)) if value != UNKNOWN else "9999999.0"


def encode_event(event: CotEvent) -> bytes:
    """CoT XML bytes for one event. `detail` is trusted: it came out of our own parser."""
    extra = "".join(
        f' {name}="{quote(value)}"'
        for name, value in (("access", event.access), ("qos", event.qos), ("opex", event.opex))
        if value
    )
    p = event.point
    text = (
        f'<?xml version="1.0" encoding="UTF-8"?>'
        f'<event version="2.0" uid="{quote(event.uid)}" type="{quote(event.type)}"'
        f' time="{format_time(event.time)}" start="{format_time(event.start)}"'
        f' stale="{format_time(event.stale)}" how="{quote(event.how)}"{extra}>'
        f'<point lat="{p.lat!r}" lon="{p.lon!r}" hae="{_num(p.hae)}" ce="{_num(p.ce)}"'
        f' le="{_num(p.le)}"/>'
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
