"""What a TAK client sent or received, in one form that XML, protobuf and JSON all read into.

Read with the standard library's XML parser and takproto's protobuf classes only — never
CommonSky's own codec — so a bug in our codec cannot hide itself by being symmetric.

A `View` keeps every value as the wire carried it: XML attribute values stay the text the
sender wrote (`hae="9999999"` is not `hae="9999999.0"`), protobuf doubles and milliseconds
and JSON numbers stay numbers. `compare` then compares text with text, and numerically only
where one side's wire format carries a number.

The uid mapping (`map_references`) is the documented one: another party sees an item as
`PARTY::uid`, and every name of an item it carries (in its GeoChat uid and inside
`<detail>`) is renamed the same way, so a recipient can tie a chat, route or marker to the
contact it names; a name of the recipient's own item (`RECIPIENT::uid`) comes back as
`uid`; names every client shares (`All Chat Rooms`, team colours) stay as they are.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

SEPARATOR = "::"
# The parties of the private hub, and the hub itself: `X::uid` names X's item only for these.
PARTIES: frozenset[str] = frozenset({"ALPHA", "BRAVO", "HUB"})

# Names every ATAK client shares — chat rooms and contact groups, not anybody's item — and
# that no recipient sees renamed: the broadcast room and the legacy streaming rooms
# (`GeoChatService.DEFAULT_CHATROOM_NAME`), the contact-list roots, the team colours and
# roles of ATAK's `arrays.xml` (`squad_values`, `role_values`).
# Kept apart from `commonsky.namespace.SHARED_NAMES` on purpose: the judge must not take the
# product's word for which names stay unrenamed (a name dropped from both would pass unseen).
SHARED_NAMES: frozenset[str] = frozenset(
    {
        "All Chat Rooms",
        "All Streaming",
        "Streaming",
        "RootContactGroup",
        "UserGroups",
        "TeamGroups",
        "TadilJGroup",
        "White",
        "Yellow",
        "Orange",
        "Magenta",
        "Red",
        "Maroon",
        "Purple",
        "Dark Blue",
        "Blue",
        "Cyan",
        "Teal",
        "Green",
        "Dark Green",
        "Brown",
        "Team Member",
        "Team Lead",
        "HQ",
        "Sniper",
        "Medic",
        "Forward Observer",
        "RTO",
        "K9",
    }
)
RECEIPT_TYPES = frozenset({"b-t-f-d", "b-t-f-r"})  # ATAK's delivered and read receipts
_GEOCHAT = "GeoChat."
_SOURCE_PREFIXES = ("BAO.F.ATAK.", "BAO.F.WinTAK.")
_CHAT_ATTRS = frozenset({"id", "messageId", "parent", "deleteChild"})
_UID_N = re.compile(r"uid\d+")

# TAK Protocol v1 typed detail fields: protobuf field -> (XML tag, {attribute: type}).
# Every attribute is required except Contact.endpoint (TAK's proto files: "All items are
# required unless otherwise noted"; "Endpoint is optional; if missing/empty do not populate").
TYPED: dict[str, tuple[str, dict[str, type]]] = {
    "contact": ("contact", {"callsign": str, "endpoint": str}),
    "group": ("__group", {"name": str, "role": str}),
    "precisionLocation": ("precisionlocation", {"geopointsrc": str, "altsrc": str}),
    "status": ("status", {"battery": int}),
    "takv": ("takv", {"device": str, "platform": str, "os": str, "version": str}),
    "track": ("track", {"speed": float, "course": float}),
}
OPTIONAL: frozenset[tuple[str, str]] = frozenset({("contact", "endpoint")})
TIMES = ("time", "start", "stale")
POINT = ("lat", "lon", "hae", "ce", "le")
_PROTO_EVENT = ("type", "access", "qos", "opex", "uid", "how")


@dataclass(frozen=True)
class Node:
    """One XML element as written. `texts` is the element's text then each child's tail,
    with whitespace-only pieces (indentation) read as empty; a leaf's text is kept as is."""

    tag: str
    attrib: dict[str, str]
    texts: tuple[str, ...] = ("",)
    children: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Instant:
    """A time a wire carried as a number: seconds since 1970 and the wire's resolution."""

    seconds: Decimal
    resolution: Decimal


Value = str | float | Instant


@dataclass(frozen=True)
class View:
    """One event as one wire carried it.

    `wire` is "xml", "protobuf" or "api". `event` holds the `<event>` attributes other than
    the times (absent = not in the dict); protobuf and JSON read an empty string as "absent
    or empty" (`loose`), since proto3 cannot tell them apart. `typed` holds protobuf's typed
    detail fields that apply (those whose tag is not also in `xmlDetail`, which wins).
    """

    wire: str
    event: dict[str, str]
    times: dict[str, Value]
    point: dict[str, Value] | None
    detail: Node | None
    typed: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def loose(self) -> bool:
        return self.wire != "xml"

    @property
    def uid(self) -> str:
        return self.event.get("uid", "")

    @property
    def type(self) -> str:
        return self.event.get("type", "")


class Unreadable(ValueError):
    """The bytes are not a CoT event this reader can read (the message says why)."""


# ---- XML ---------------------------------------------------------------------------------


def _piece(text: str | None, leaf: bool) -> str:
    if text is None:
        return ""
    return text if leaf or text.strip() else ""


def node_of(element: ET.Element) -> Node:
    children = tuple(node_of(child) for child in element)
    leaf = not children
    texts = (_piece(element.text, leaf), *(_piece(c.tail, False) for c in element))
    return Node(str(element.tag), dict(element.attrib), texts, children)


def parse_xml(data: bytes) -> ET.Element:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise Unreadable(f"not well-formed XML: {exc}") from None
    if root.tag != "event":
        raise Unreadable(f"the root element is <{root.tag}>, not <event>")
    return root


def view_of_xml(root: ET.Element) -> View:
    event = {k: v for k, v in root.attrib.items() if k not in TIMES}
    times: dict[str, Value] = {k: root.attrib[k] for k in TIMES if k in root.attrib}
    point_el = root.find("point")
    point: dict[str, Value] | None = None
    if point_el is not None:
        point = dict(point_el.attrib)
    detail_el = root.find("detail")
    detail = node_of(detail_el) if detail_el is not None else None
    return View("xml", event, times, point, detail)


# ---- TAK Protocol v1 ---------------------------------------------------------------------


def _ms(value: int) -> Instant:
    return Instant(Decimal(value) / 1000, Decimal("0.001"))


def detail_nodes(xml_detail: str) -> Node:
    """`xmlDetail` read as TAK's receivers must: wrapped in `<detail>` and parsed."""
    try:
        element = ET.fromstring(f"<detail>{xml_detail}</detail>")
    except ET.ParseError as exc:
        raise Unreadable(f"xmlDetail is not well-formed XML: {exc}") from None
    return node_of(element)


def view_of_proto(message: Any) -> View:
    """A takproto `TakMessage`'s CotEvent. The typed fields that apply are kept as numbers
    and strings; one whose tag also appears in xmlDetail is ignored, as TAK's detail.proto
    tells receivers."""
    if not message.HasField("cotEvent"):
        raise Unreadable("TakMessage without a cotEvent")
    cot = message.cotEvent
    event = {name: str(getattr(cot, name)) for name in _PROTO_EVENT}
    times: dict[str, Value] = {
        "time": _ms(cot.sendTime),
        "start": _ms(cot.startTime),
        "stale": _ms(cot.staleTime),
    }
    point: dict[str, Value] = {name: float(getattr(cot, name)) for name in POINT}
    detail: Node | None = None
    typed: dict[str, dict[str, Any]] = {}
    if cot.HasField("detail"):
        d = cot.detail
        detail = detail_nodes(d.xmlDetail)
        in_xml = {child.tag for child in detail.children}
        for name, (tag, attrs) in TYPED.items():
            if d.HasField(name) and tag not in in_xml:
                sub = getattr(d, name)
                typed[name] = {a: getattr(sub, a) for a in attrs}
    return View("protobuf", event, times, point, detail, typed)


# ---- the JSON of /api/items --------------------------------------------------------------


def view_of_api(item: dict[str, Any]) -> View:
    """An item of `GET /api/items`: CoT names, numbers as JSON numbers (NaN is null)."""
    event = {k: str(item[k]) for k in ("uid", "type", "how", "access") if item.get(k) is not None}
    times: dict[str, Value] = {}
    for name in TIMES:
        value = item.get(name)
        if isinstance(value, int | float):
            times[name] = Instant(Decimal(repr(float(value))), Decimal("0.000001"))
    point: dict[str, Value] = {}
    for name in POINT:
        value = item.get(name)
        point[name] = math.nan if value is None else float(value)
    detail_text = item.get("detail")
    detail = detail_nodes(str(detail_text)) if detail_text else None
    return View("api", event, times, point, detail)


# ---- times -------------------------------------------------------------------------------

_TIME = re.compile(r"\s*(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?\s*\Z", re.ASCII)
_EPOCH = datetime(1970, 1, 1)


def instant_of(text: str) -> Decimal:
    """Seconds since 1970 of an xs:dateTime, exactly (no float rounding); ValueError if
    the text is not one."""
    match = _TIME.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an xs:dateTime")
    base, fraction, zone = match.groups()
    moment = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S")
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[-2:])
        moment -= sign * timedelta(hours=hours, minutes=minutes)
    whole = Decimal(int((moment - _EPOCH).total_seconds()))
    return whole + (Decimal(fraction) if fraction else Decimal(0))


# ---- the documented uid mapping ----------------------------------------------------------
#
# Where CoT carries a uid, and how a recipient of another party sees it (README, "Identity
# and uids"): the event uid — a GeoChat message's `GeoChat.<sender>.<conversation>.<message
# id>` name by name, a receipt's (`b-t-f-d`, `b-t-f-r`) as the message id it is — and in
# `<detail>`, at any depth: `link@uid`, `creator@uid`, `chatgrp@id` and `@uidN`,
# `__chat`/`__chatreceipt` `@id`, `@messageId`, `@parent`, `@deleteChild`, `remarks@to`
# (in chat also `@source`, after `BAO.F.ATAK.`/`BAO.F.WinTAK.`, and `@sourceID`),
# `marti/dest@uid`, a `hierarchy`'s `group@uid` and `contact@uid`, `__navcue@id`,
# `fileshare@senderUid` and `ackresponse@senderUid`, `__video@uid` and its
# `ConnectionEntry@uid`, and the uid ending each
# `host:port:proto:uid` of `__serverdestination@destinations`.


def map_name(value: str, sender: str, recipient: str, parties: frozenset[str] = PARTIES) -> str:
    """How `recipient` sees a name a client of `sender` wrote: a shared name as it is, a
    name of the recipient's own item as its own uid, a name in the sender's namespace as
    `SENDER::name`, a third party's as it is."""
    if not value or value in SHARED_NAMES or sender == recipient:
        return value
    prefix, separator, rest = value.partition(SEPARATOR)
    if separator and prefix in parties and rest:
        if prefix == sender:
            return map_name(rest, sender, recipient, parties)
        return rest if prefix == recipient else value
    return f"{sender}{SEPARATOR}{value}"


def map_event_uid(cot_type: str, uid: str, sender: str, recipient: str) -> str:
    """How `recipient` sees the uid of an event a client of `sender` wrote."""
    if sender == recipient:
        return uid
    if cot_type not in RECEIPT_TYPES and cot_type.startswith("b-t-f") and uid.startswith(_GEOCHAT):
        who, dot, tail = uid[len(_GEOCHAT) :].partition(".")
        conversation, dot2, message = tail.rpartition(".")
        if who and dot and dot2 and conversation and message:
            names = (map_name(n, sender, recipient) for n in (who, conversation, message))
            return _GEOCHAT + ".".join(names)
    return map_name(uid, sender, recipient)


def _is_reference(tag: str, name: str, ancestors: tuple[str, ...], chat: bool) -> bool:
    if tag in ("link", "creator"):
        return name == "uid"
    if tag == "chatgrp":
        return name == "id" or _UID_N.fullmatch(name) is not None
    if tag in ("__chat", "__chatreceipt"):
        return name in _CHAT_ATTRS
    if tag == "remarks":
        return name == "to" or (chat and name == "sourceID")
    if tag == "dest":
        return name == "uid" and ancestors[-1:] == ("marti",)
    if tag in ("group", "contact"):
        return name == "uid" and "hierarchy" in ancestors
    if tag in ("fileshare", "ackresponse"):
        return name == "senderUid"
    if tag == "__video" or (tag == "ConnectionEntry" and ancestors[-1:] == ("__video",)):
        return name == "uid"
    return tag == "__navcue" and name == "id"


def _map_value(
    tag: str, name: str, value: str, ancestors: tuple[str, ...], chat: bool, who: tuple[str, str]
) -> str:
    sender, recipient = who
    if _is_reference(tag, name, ancestors, chat):
        return map_name(value, sender, recipient)
    if chat and tag == "remarks" and name == "source":
        for prefix in _SOURCE_PREFIXES:
            if value.startswith(prefix):
                return prefix + map_name(value[len(prefix) :], sender, recipient)
        return map_name(value, sender, recipient)
    if tag == "__serverdestination" and name == "destinations":
        parts = []
        for part in value.split(","):
            if part.count(":") >= 3:
                *head, uid = part.split(":", 3)
                part = ":".join([*head, map_name(uid, sender, recipient)])
            parts.append(part)
        return ",".join(parts)
    return value


def _map_node(node: Node, ancestors: tuple[str, ...], chat: bool, who: tuple[str, str]) -> Node:
    attrib = {
        name: _map_value(node.tag, name, value, ancestors, chat, who)
        for name, value in node.attrib.items()
    }
    inner = (*ancestors, node.tag)
    children = tuple(_map_node(child, inner, chat, who) for child in node.children)
    return replace(node, attrib=attrib, children=children)


def map_references(view: View, sender: str, recipient: str) -> View:
    """`view` as `recipient` should receive it from a client of `sender`."""
    if sender == recipient:
        return view
    event = dict(view.event)
    if "uid" in event:
        event["uid"] = map_event_uid(view.type, event["uid"], sender, recipient)
    detail = view.detail
    if detail is not None:
        chat = view.type.startswith("b-t-f")
        who = (sender, recipient)
        children = tuple(_map_node(child, (), chat, who) for child in detail.children)
        detail = replace(detail, children=children)
    return replace(view, event=event, detail=detail)


def dest_addresses(view: View) -> tuple[list[str], list[str]]:
    """The callsigns and uids a `<marti><dest …/>` addresses (empty: everyone)."""
    callsigns: list[str] = []
    uids: list[str] = []
    if view.detail is None:
        return callsigns, uids
    for child in view.detail.children:
        if child.tag != "marti":
            continue
        for dest in child.children:
            if dest.tag == "dest" and dest.attrib.get("callsign"):
                callsigns.append(dest.attrib["callsign"])
            if dest.tag == "dest" and dest.attrib.get("uid"):
                uids.append(dest.attrib["uid"])
    return callsigns, uids
