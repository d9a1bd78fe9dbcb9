"""TAK Protocol v1 payloads: `CotEvent` <-> TakMessage protobuf (schema from takproto).

Both directions are ours. Outbound, known <detail> children move into the typed protobuf
fields and the rest goes to `xmlDetail`. Inbound, the protobuf is turned back into CoT XML
text and passed through the same locked-down XML parser as any CoT event, so the peer's
`xmlDetail` gets exactly the same scrutiny (no DTD, no entities, limits) as plain XML.
"""

from __future__ import annotations

import math
from collections import Counter

from google.protobuf.message import DecodeError
from lxml import etree
from takproto.proto import TakMessage
from takproto.proto.detail_pb2 import Detail

from commonsky.errors import RemoteProtocolError
from commonsky.model import CotEvent
from commonsky.protocol.cot import (
    DEFAULT_LIMITS,
    PARSER,
    XmlLimits,
    check_uid,
    detail_tree,
    number,
    parse_event,
    quote,
)
from commonsky.times import format_time

# Which <detail> children have typed fields, with the attributes each needs. takproto's
# schema (`src-protobuf/*.proto`): "All items are required unless otherwise noted", a
# missing one means "the conversion to the message format will be rejected and fall back
# to opaque XML"; the one item noted optional is contact's endpoint ("if missing/empty do
# not populate"). And `detail.proto`: whole elements only, and an element that appears more
# often than its field holds stays XML. So an element is typed only when it carries exactly
# its required attributes (plus a non-empty endpoint), nothing else, no text, no children —
# otherwise the receiver would read back attributes the sender never wrote (an empty
# `geopointsrc` on `<precisionlocation altsrc='???'/>`) or lose some it did.
_REQUIRED: dict[str, frozenset[str]] = {
    "contact": frozenset({"callsign"}),
    "__group": frozenset({"name", "role"}),
    "precisionlocation": frozenset({"geopointsrc", "altsrc"}),
    "status": frozenset({"battery"}),
    "takv": frozenset({"device", "platform", "os", "version"}),
    "track": frozenset({"speed", "course"}),
}
_UINT32_MAX = 2**32 - 1


def event_to_proto(event: CotEvent) -> bytes:
    """Serialised TakMessage (without stream framing) for one event.

    What protobuf cannot carry is left out as the format requires: `access=""` (proto3
    strings have no presence) and times finer than a millisecond.
    """
    message = TakMessage()
    cot = message.cotEvent
    cot.type = event.type
    cot.uid = event.uid
    if event.how:
        cot.how = event.how
    if event.access:
        cot.access = event.access
    if event.qos:
        cot.qos = event.qos
    if event.opex:
        cot.opex = event.opex
    cot.sendTime = round(event.time * 1000)
    cot.startTime = round(event.start * 1000)
    cot.staleTime = round(event.stale * 1000)
    cot.lat = event.point.lat
    cot.lon = event.point.lon
    cot.hae = event.point.hae
    cot.ce = event.point.ce
    cot.le = event.point.le
    if event.detail:
        # Our own canonical detail text: safe to parse, it came out of our parser.
        detail = detail_tree(event.detail)
        counts = Counter(child.tag for child in detail)
        rest: list[str] = []
        out = cot.detail
        for child in detail:
            if counts[child.tag] > 1 or not _typed(child, out):
                # Anything the typed fields cannot carry exactly travels as XML text.
                rest.append(etree.tostring(child, encoding="unicode", with_tail=False))
        if rest:
            out.xmlDetail = "".join(rest)
    elif event.text is not None and event.text.detail:
        cot.detail.SetInParent()  # the sender's empty <detail/>: present, as in XML
    return bytes(message.SerializeToString())


def _typed(element: etree._Element, out: Detail) -> bool:
    """Put `element` into its typed field if it fits exactly; whether it did."""
    tag = element.tag
    required = _REQUIRED.get(tag) if isinstance(tag, str) else None
    if required is None or len(element) or element.text:
        return False
    attrs = set(element.attrib)
    get = element.get
    if tag == "contact":
        endpoint = get("endpoint")
        if attrs - {"endpoint"} != required or endpoint == "":
            return False
        out.contact.callsign = get("callsign", "")
        if endpoint is not None:
            out.contact.endpoint = endpoint
        return True
    if attrs != required:
        return False
    if tag == "__group":
        out.group.name, out.group.role = get("name", ""), get("role", "")
    elif tag == "precisionlocation":
        location = out.precisionLocation
        location.geopointsrc, location.altsrc = get("geopointsrc", ""), get("altsrc", "")
    elif tag == "status":
        battery = get("battery", "")
        if not (battery.isascii() and battery.isdigit() and int(battery) <= _UINT32_MAX):
            return False
        out.status.battery = int(battery)
    elif tag == "takv":
        for name in ("device", "platform", "os", "version"):
            setattr(out.takv, name, get(name, ""))
    else:  # track
        try:
            speed, course = float(get("speed", "")), float(get("course", ""))
        except ValueError:
            return False
        if math.isinf(speed) or math.isinf(course):
            return False
        out.track.speed, out.track.course = speed, course
    return True


def _decode(payload: bytes) -> TakMessage | None:
    """The TakMessage of a payload, or None for one that carries no event (below); raises
    RemoteProtocolError when undecodable.

    takmessage.proto: `cotEvent` is optional, "if omitted, no event data in this message"
    (and `takControl` "if omitted, continue using last reported control information"). So a
    message with a `takControl` only, or an empty one, is valid and carries nothing to relay.
    A message without a `cotEvent` made of fields TakMessage does not have is no such message:
    refused as bad_protobuf, as any payload that is not a TakMessage."""
    message = TakMessage()
    try:
        message.ParseFromString(payload)
    except DecodeError:
        raise RemoteProtocolError("bad_protobuf", "payload is not a TakMessage") from None
    if message.HasField("cotEvent"):
        return message
    size = message.ByteSize()
    message.DiscardUnknownFields()
    if message.ByteSize() != size:
        raise RemoteProtocolError("bad_protobuf", "TakMessage without a cotEvent")
    return None


def _to_xml(message: TakMessage) -> bytes:
    """CoT XML text for a TakMessage that has a cotEvent."""
    cot = message.cotEvent
    check_uid(cot.uid)  # before it is quoted into XML, so the reason names the uid rule
    parts: list[str] = []
    d = cot.detail
    if cot.HasField("detail"):
        # detail.proto, receivers' rule 5: an element that is also in xmlDetail (a sender
        # that did not remove it) is taken from xmlDetail and the typed field ignored.
        present = _tags(d.xmlDetail) if d.xmlDetail else set()
        if d.xmlDetail:
            parts.append(d.xmlDetail)
        if d.HasField("contact") and "contact" not in present:
            attrs = f'callsign="{quote(d.contact.callsign)}"'
            if d.contact.endpoint:
                attrs += f' endpoint="{quote(d.contact.endpoint)}"'
            parts.append(f"<contact {attrs}/>")
        if d.HasField("group") and "__group" not in present:
            parts.append(f'<__group name="{quote(d.group.name)}" role="{quote(d.group.role)}"/>')
        if d.HasField("precisionLocation") and "precisionlocation" not in present:
            pl = d.precisionLocation
            parts.append(
                f'<precisionlocation geopointsrc="{quote(pl.geopointsrc)}"'
                f' altsrc="{quote(pl.altsrc)}"/>'
            )
        if d.HasField("status") and "status" not in present:
            parts.append(f'<status battery="{d.status.battery}"/>')
        if d.HasField("takv") and "takv" not in present:
            tv = d.takv
            parts.append(
                f'<takv device="{quote(tv.device)}" platform="{quote(tv.platform)}"'
                f' os="{quote(tv.os)}" version="{quote(tv.version)}"/>'
            )
        if d.HasField("track") and "track" not in present:
            track = d.track
            parts.append(f'<track speed="{number(track.speed)}" course="{number(track.course)}"/>')
    # proto3 strings have no presence: an empty one is an attribute the sender left out.
    extra = "".join(
        f' {name}="{quote(value)}"'
        for name, value in (
            ("how", cot.how),
            ("access", cot.access),
            ("qos", cot.qos),
            ("opex", cot.opex),
        )
        if value
    )
    text = (
        f'<event version="2.0" uid="{quote(cot.uid)}" type="{quote(cot.type)}"'
        f' time="{format_time(cot.sendTime / 1000)}" start="{format_time(cot.startTime / 1000)}"'
        f' stale="{format_time(cot.staleTime / 1000)}"{extra}>'
        f'<point lat="{number(cot.lat)}" lon="{number(cot.lon)}" hae="{number(cot.hae)}"'
        f' ce="{number(cot.ce)}" le="{number(cot.le)}"/>'
        f"{_detail(cot.HasField('detail'), parts)}</event>"
    )
    return text.encode("utf-8")


def _detail(present: bool, parts: list[str]) -> str:
    """`<detail>` as the sender sent it: none when the message has no detail field."""
    return f"<detail>{''.join(parts)}</detail>" if present else ""


def _tags(xml_detail: str) -> set[str]:
    """Tags of xmlDetail's top-level elements; empty when it does not parse (the whole
    event is then refused by `parse_event`, with the same parser and every limit)."""
    try:
        root = etree.fromstring(f"<detail>{xml_detail}</detail>".encode(), PARSER)
    except etree.XMLSyntaxError:
        return set()
    return {child.tag for child in root if isinstance(child.tag, str)}


def parse_proto_event(payload: bytes, limits: XmlLimits = DEFAULT_LIMITS) -> CotEvent:
    """The event of a TakMessage payload; RemoteProtocolError when it is refused or carries
    no event (`read_proto` tells that case apart)."""
    event = read_proto(payload, limits)
    if event is None:
        raise RemoteProtocolError("bad_protobuf", "TakMessage without a cotEvent")
    return event


def read_proto(payload: bytes, limits: XmlLimits = DEFAULT_LIMITS) -> CotEvent | None:
    """The event of a TakMessage payload, or None for a valid message that carries none (a
    `takControl` alone, an empty message: `_decode`); RemoteProtocolError when refused."""
    message = _decode(payload)
    if message is None:
        return None
    try:
        return parse_event(_to_xml(message), limits)
    except (ValueError, OverflowError, OSError):
        # Times far outside the calendar make datetime raise; the peer's fault all the same.
        raise RemoteProtocolError("bad_protobuf", "TakMessage with impossible values") from None
