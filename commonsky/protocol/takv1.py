"""TAK Protocol v1 payloads: `CotEvent` <-> TakMessage protobuf (schema from takproto).

Both directions are ours. Outbound, known <detail> children move into the typed protobuf
fields and the rest goes to `xmlDetail`. Inbound, the protobuf is turned back into CoT XML
text and passed through the same locked-down XML parser as any CoT event, so the peer's
`xmlDetail` gets exactly the same scrutiny (no DTD, no entities, limits) as plain XML.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError
from lxml import etree
from takproto.proto import TakMessage

from commonsky.errors import RemoteProtocolError
from commonsky.model import CotEvent
from commonsky.protocol.cot import (
    DEFAULT_LIMITS,
    XmlLimits,
    detail_tree,
    format_time,
    parse_event,
    quote,
)

_TYPED = ("contact", "__group", "precisionlocation", "status", "takv", "track")


def event_to_proto(event: CotEvent) -> bytes:
    """Serialised TakMessage (without stream framing) for one event."""
    message = TakMessage()
    cot = message.cotEvent
    cot.type = event.type
    cot.uid = event.uid
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
        rest: list[str] = []
        out = cot.detail
        for child in detail:
            tag = child.tag
            if tag == "contact" and set(child.attrib) <= {"callsign", "endpoint"}:
                out.contact.callsign = child.get("callsign", "")
                out.contact.endpoint = child.get("endpoint", "")
            elif tag == "__group" and set(child.attrib) <= {"name", "role"}:
                out.group.name = child.get("name", "")
                out.group.role = child.get("role", "")
            elif tag == "precisionlocation" and set(child.attrib) <= {"geopointsrc", "altsrc"}:
                out.precisionLocation.geopointsrc = child.get("geopointsrc", "")
                out.precisionLocation.altsrc = child.get("altsrc", "")
            elif tag == "status" and set(child.attrib) == {"battery"} and _is_uint(child):
                out.status.battery = int(child.get("battery", "0"))
            elif tag == "takv" and set(child.attrib) <= {"device", "platform", "os", "version"}:
                for name in ("device", "platform", "os", "version"):
                    setattr(out.takv, name, child.get(name, ""))
            elif tag == "track" and set(child.attrib) == {"speed", "course"} and _floats(child):
                out.track.speed = float(child.get("speed", "0"))
                out.track.course = float(child.get("course", "0"))
            else:
                # Anything the typed fields cannot carry exactly travels as XML text.
                child_copy = etree.tostring(child, encoding="unicode", with_tail=False)
                rest.append(child_copy)
        if rest:
            out.xmlDetail = "".join(rest)
    return bytes(message.SerializeToString())


def _is_uint(element: etree._Element) -> bool:
    # `battery` is a uint32 in the protobuf; a larger value travels in xmlDetail as written.
    value = element.get("battery", "")
    return value.isdigit() and int(value) < 2**32


def _floats(element: etree._Element) -> bool:
    try:
        float(element.get("speed", "")), float(element.get("course", ""))
    except ValueError:
        return False
    return True


def _num(value: float) -> str:
    return repr(float(value))


def proto_to_xml(payload: bytes) -> bytes:
    """CoT XML text for a TakMessage payload; raises RemoteProtocolError when undecodable."""
    message = TakMessage()
    try:
        message.ParseFromString(payload)
    except DecodeError:
        raise RemoteProtocolError("bad_protobuf", "payload is not a TakMessage") from None
    if not message.HasField("cotEvent"):
        raise RemoteProtocolError("bad_protobuf", "TakMessage without a cotEvent")
    cot = message.cotEvent
    parts: list[str] = []
    d = cot.detail
    if cot.HasField("detail"):
        if d.xmlDetail:
            parts.append(d.xmlDetail)
        if d.HasField("contact"):
            attrs = f'callsign="{quote(d.contact.callsign)}"'
            if d.contact.endpoint:
                attrs += f' endpoint="{quote(d.contact.endpoint)}"'
            parts.append(f"<contact {attrs}/>")
        if d.HasField("group"):
            parts.append(f'<__group name="{quote(d.group.name)}" role="{quote(d.group.role)}"/>')
        if d.HasField("precisionLocation"):
            pl = d.precisionLocation
            parts.append(
                f'<precisionlocation geopointsrc="{quote(pl.geopointsrc)}"'
                f' altsrc="{quote(pl.altsrc)}"/>'
            )
        if d.HasField("status"):
            parts.append(f'<status battery="{d.status.battery}"/>')
        if d.HasField("takv"):
            tv = d.takv
            parts.append(
                f'<takv device="{quote(tv.device)}" platform="{quote(tv.platform)}"'
                f' os="{quote(tv.os)}" version="{quote(tv.version)}"/>'
            )
        if d.HasField("track"):
            parts.append(f'<track speed="{_num(d.track.speed)}" course="{_num(d.track.course)}"/>')
    extra = "".join(
        f' {name}="{quote(value)}"'
        for name, value in (("access", cot.access), ("qos", cot.qos), ("opex", cot.opex))
        if value
    )
    text = (
        f'<event version="2.0" uid="{quote(cot.uid)}" type="{quote(cot.type)}"'
        f' time="{format_time(cot.sendTime / 1000)}" start="{format_time(cot.startTime / 1000)}"'
        f' stale="{format_time(cot.staleTime / 1000)}" how="{quote(cot.how)}"{extra}>'
        f'<point lat="{_num(cot.lat)}" lon="{_num(cot.lon)}" hae="{_num(cot.hae)}"'
        f' ce="{_num(cot.ce)}" le="{_num(cot.le)}"/>'
        f"<detail>{''.join(parts)}</detail></event>"
    )
    return text.encode("utf-8")


def parse_proto_event(payload: bytes, limits: XmlLimits = DEFAULT_LIMITS) -> CotEvent:
    try:
        return parse_event(proto_to_xml(payload), limits)
    except (ValueError, OverflowError, OSError):
        # Times far outside the calendar make datetime raise; the peer's fault all the same.
        raise RemoteProtocolError("bad_protobuf", "TakMessage with impossible values") from None
