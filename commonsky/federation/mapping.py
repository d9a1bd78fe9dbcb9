"""CoT <-> TAK Federation v2 messages (`FederatedEvent`, `GeoEvent`, `ContactListEntry`).

Sans-IO: pure functions, no sockets, the clock passed in. The mapping follows TAK Server's
own conversion (its `ProtoBufHelper`, read for the facts, not copied):

- times in milliseconds, point, uid, type, `how` as `coord_source`, `access`;
- `other` is the `<detail>` element as XML, with the children lifted to typed fields
  removed: `<track speed course>` -> speed/course, `<status battery>` (without `readiness`)
  -> battery, `<precisionlocation geopointsrc altsrc>` -> ploc/palt. TAK Server puts these
  back on receipt, so they are moved. An element is lifted only when the typed fields carry
  it exactly (exactly those attributes, no text, no children, a value the field can hold and
  that is not its zero value — proto3 cannot tell a zero from "absent"); otherwise it stays
  in `other`, so details cross intact both ways.
- callsign (`<contact callsign>`), group (`<__group name role>`) and addressing (`<marti>
  <dest callsign|uid>`) are *copied* to screen_name, group_name/group_role, ptp_callsigns /
  ptp_uids and stay in `other` (TAK Server does not rebuild them from the typed fields);
  received without them in `other`, they are rebuilt from the typed fields.
- a delete (`t-x-d-d`) crosses as a contact delete: `ContactListEntry{DELETE, uid = the
  link uid, callsign = the link type}` (TAK Server's own convention), and comes back as a
  `t-x-d-d` naming that uid, stale 20 s after it is made.

CommonSky's own additions ride in one detail element, `<_csky_fed …/>` (a TAK Server keeps
unknown detail elements and ignores them): `seq`/`part` number a durable item for exactly-
once application, `to` lists the receiving hub's parties it is for. Inbound, the event is
rebuilt as CoT XML and parsed by the one locked-down parser (`protocol/cot.py`), so a peer's
`other` gets the same scrutiny as any client's XML.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from lxml import etree

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
    quote_text,
)
from commonsky.protocol.refs import link_target
from commonsky.times import format_time

from . import federation_pb2 as pb

DELETE_TYPE = "t-x-d-d"
DELETE_STALE_S = 20.0  # a contact delete's t-x-d-d is stale this long after it is made
ACK_TYPE = "t-x-csky-fed-ack"  # CommonSky peers only: "applied up to" (never to TAK Server)
EXTENSION = "_csky_fed"
_INT32_MAX = 2**31 - 1
#: Largest `seq` a copy may carry: its position (seq << 10 | part) must fit the store's
#: signed 64-bit cursor, or a peer's huge number would fail the transaction, not be refused.
MAX_SEQ = 2**53 - 1
MAX_SERVER_ID = 256  # characters of one hub's id in a copy's provenance


@dataclass(frozen=True, slots=True)
class Envelope:
    """What CommonSky adds to an event crossing a link (the `<_csky_fed>` element).

    `seq` (>0 for a durable item: the sending hub's store sequence) and `part` (which copy,
    when one item crosses in several forms) make the exactly-once key; `to` are the
    receiving hub's parties this copy is for (empty: whoever the receiver's agreements say);
    `party` is the item's originator, which the receiving link must speak for.
    """

    seq: int = 0
    part: int = 0
    to: tuple[str, ...] = ()
    party: str = ""

    @property
    def position(self) -> int:
        """The (seq, part) pair as one number, for a store cursor: parts < 1024."""
        return (self.seq << 10) | self.part


@dataclass(frozen=True, slots=True)
class Delete:
    """A contact delete received: remove the item `uid` (as the sender names it)."""

    uid: str
    link_type: str


@dataclass(frozen=True, slots=True)
class Received:
    """A decoded inbound `FederatedEvent`: exactly one of event, delete, contact or ack."""

    event: CotEvent | None = None
    envelope: Envelope = Envelope()
    delete: Delete | None = None
    contact: tuple[str, str] | None = None  # a contact created or updated: (uid, callsign)
    ack: int | None = None  # a CommonSky peer's "applied up to this position"
    receipt: str = ""  # with an ack: the peer's signed receipt (federation/receipts.py)


# ---- outbound ---------------------------------------------------------------------------


def to_geo(event: CotEvent, envelope: Envelope | None = None) -> pb.GeoEvent:
    """The GeoEvent for one event (see the module rule for what is lifted or copied)."""
    geo = pb.GeoEvent(
        send_time=round(event.time * 1000),
        start_time=round(event.start * 1000),
        stale_time=round(event.stale * 1000),
        lat=event.point.lat,
        lon=event.point.lon,
        hae=event.point.hae,
        ce=event.point.ce,
        le=event.point.le,
        uid=event.uid,
        type=event.type,
        coord_source=event.how or "",
        access=event.access or "",
    )
    kept: list[str] = []
    detail = detail_tree(event.detail) if event.detail else None
    if detail is not None:
        counts = Counter(child.tag for child in detail)
        for child in detail:
            if counts[child.tag] == 1 and _lift(child, geo):
                continue
            _copy(child, geo)
            kept.append(etree.tostring(child, encoding="unicode", with_tail=False))
    if envelope is not None and (envelope.seq or envelope.to or envelope.party):
        attrs = f'seq="{envelope.seq}" part="{envelope.part}"'
        if envelope.to:
            attrs += f' to="{quote(" ".join(envelope.to))}"'
        if envelope.party:
            attrs += f' party="{quote(envelope.party)}"'
        kept.append(f"<{EXTENSION} {attrs}/>")
    geo.other = f"<detail>{''.join(kept)}</detail>"
    return geo


def _attrs_exactly(element: etree._Element, names: set[str]) -> bool:
    return set(element.attrib) == names and not len(element) and not element.text


def _lift(element: etree._Element, geo: pb.GeoEvent) -> bool:
    """Move `element` into typed fields if they carry it exactly; whether it moved."""
    tag = element.tag
    get = element.get
    if tag == "track" and _attrs_exactly(element, {"speed", "course"}):
        try:
            speed, course = float(get("speed", "")), float(get("course", ""))
        except ValueError:
            return False
        if not (math.isfinite(speed) and math.isfinite(course)) or (speed == 0 and course == 0):
            return False
        if number(speed) != get("speed") or number(course) != get("course"):
            return False  # written some other way (`5`, `5.00`): kept as written
        geo.speed, geo.course = speed, course
        return True
    if tag == "status" and _attrs_exactly(element, {"battery"}):
        battery = get("battery", "")
        if not (battery.isascii() and battery.isdigit() and str(int(battery)) == battery):
            return False
        if not 0 < int(battery) <= _INT32_MAX:
            return False
        geo.battery = int(battery)
        return True
    if tag == "precisionlocation" and _attrs_exactly(element, {"geopointsrc", "altsrc"}):
        ploc, palt = get("geopointsrc", ""), get("altsrc", "")
        if not ploc or not palt:
            return False
        geo.ploc, geo.palt = ploc, palt
        return True
    return False


def _copy(element: etree._Element, geo: pb.GeoEvent) -> None:
    """Copy what TAK's typed fields also say (the element stays in `other`)."""
    tag = element.tag
    if tag == "contact" and element.get("callsign"):
        geo.screen_name = element.get("callsign", "")
        if element.get("phone"):
            geo.phone = element.get("phone", "")
    elif tag == "__group":
        geo.group_name = element.get("name", "")
        geo.group_role = element.get("role", "")
    elif tag == "marti":
        for dest in element.iterfind("dest"):
            if dest.get("callsign"):
                geo.ptp_callsigns.append(dest.get("callsign", ""))
            if dest.get("uid"):
                geo.ptp_uids.append(dest.get("uid", ""))
            if dest.get("mission"):
                geo.mission_names.append(dest.get("mission", ""))


def federated(
    event: CotEvent,
    envelope: Envelope | None = None,
    provenance: tuple[tuple[str, str], ...] = (),
    hops: tuple[int, int] | None = None,
) -> pb.FederatedEvent:
    """The FederatedEvent for one event: a contact delete for a `t-x-d-d` naming a uid, a
    GeoEvent otherwise. `provenance` is (server id, name) of each server it passed, ours
    last; `hops` is (max, current)."""
    message = pb.FederatedEvent()
    target = link_target(event) if event.type == DELETE_TYPE else None
    if target is not None:
        link = detail_tree(event.detail).find("link")
        link_type = link.get("type", "") if link is not None else ""
        message.contact.CopyFrom(
            pb.ContactListEntry(operation=pb.DELETE, uid=target, callsign=link_type)
        )
    else:
        message.event.CopyFrom(to_geo(event, envelope))
    for server_id, name in provenance:
        message.federate_provenance.add(federation_server_id=server_id, federation_server_name=name)
    if hops is not None:
        message.federate_hops.max_hops, message.federate_hops.current_hops = hops
    return message


def contact_create(uid: str, callsign: str) -> pb.FederatedEvent:
    """The contact-list entry TAK Server sends once for each device it federates."""
    message = pb.FederatedEvent()
    message.contact.CopyFrom(pb.ContactListEntry(operation=pb.CREATE, uid=uid, callsign=callsign))
    return message


def ack(position: int, now: float, receipt: str = "") -> pb.FederatedEvent:
    """A CommonSky peer's acknowledgement: every durable copy up to `position` is applied
    (with `receipt`, the signed receipt for the copies applied since the last one)."""
    message = pb.FederatedEvent()
    message.event.CopyFrom(
        pb.GeoEvent(
            uid="csky-fed-ack",
            type=ACK_TYPE,
            send_time=round(now * 1000),
            start_time=round(now * 1000),
            stale_time=round(now * 1000) + 20_000,
            other=f'<detail><{EXTENSION} ack="{position}">{quote_text(receipt)}</{EXTENSION}>'
            "</detail>",
        )
    )
    return message


# ---- inbound ----------------------------------------------------------------------------


def provenance_path(message: pb.FederatedEvent, max_hubs: int) -> tuple[str, ...]:
    """The server ids of the hubs a message passed, first hub first (its provenance), as a
    path a hub may keep (`seam.origin_of` joins it with "," after ">"). A peer's forged path
    is refused (RemoteProtocolError): over `max_hubs` hubs ("hops"; none relays that far),
    an id empty, over MAX_SERVER_ID characters or holding a separator, a space or a control
    character ("provenance"), a hub twice ("loop")."""
    ids = [p.federation_server_id for p in message.federate_provenance]
    if len(ids) > max_hubs:
        raise RemoteProtocolError("hops", f"a path of {len(ids)} hubs; at most {max_hubs}")
    for server_id in ids:
        if not 0 < len(server_id) <= MAX_SERVER_ID or not _plain(server_id):
            raise RemoteProtocolError(
                "provenance", f"a hub id that cannot be one: {server_id[:40]!r}"
            )
    if len(set(ids)) != len(ids):
        raise RemoteProtocolError("loop", f"a path with a hub twice: {','.join(ids)[:120]}")
    return tuple(ids)


def _plain(server_id: str) -> bool:
    return server_id.isprintable() and not any(c in server_id for c in ",> ")


def parse(data: bytes) -> pb.FederatedEvent:
    """Decode one FederatedEvent; RemoteProtocolError("bad_protobuf") when it is not one."""
    message = pb.FederatedEvent()
    try:
        message.ParseFromString(data)
    except DecodeError:
        raise RemoteProtocolError("bad_protobuf", "payload is not a FederatedEvent") from None
    return message


def receive(message: pb.FederatedEvent, limits: XmlLimits = DEFAULT_LIMITS) -> Received:
    """What one inbound FederatedEvent says; raises RemoteProtocolError (the peer's fault:
    count it, log it, keep the link) for an event no CoT parser would accept."""
    if message.HasField("contact") and not message.HasField("event"):
        contact = message.contact
        if contact.operation == pb.DELETE:
            if not contact.uid:
                raise RemoteProtocolError("malformed", "contact delete without a uid")
            check_uid(contact.uid)
            return Received(delete=Delete(contact.uid, contact.callsign))
        return Received(contact=(contact.uid, contact.callsign))
    if not message.HasField("event"):
        raise RemoteProtocolError("malformed", "FederatedEvent with neither event nor contact")
    geo = message.event
    detail, envelope, acked = _other(geo.other, limits)
    if geo.type == ACK_TYPE:
        if acked is None:
            raise RemoteProtocolError("malformed", "acknowledgement without a position")
        return Received(ack=acked[0], receipt=acked[1])
    check_uid(geo.uid)
    try:
        event = parse_event(_xml(geo, detail), limits)
    except (ValueError, OverflowError, OSError):
        raise RemoteProtocolError("bad_protobuf", "GeoEvent with impossible values") from None
    return Received(event=event, envelope=envelope)


def delete_event(delete: Delete, uid: str, now: float) -> CotEvent:
    """The `t-x-d-d` a contact delete stands for, as TAK Server makes it: a new uid, time
    now, stale 20 s later, `<link uid type>` naming what goes."""
    link = f'<link uid="{quote(delete.uid)}" type="{quote(delete.link_type)}" relation="p-p"/>'
    xml = (
        f'<event version="2.0" uid="{quote(uid)}" type="{DELETE_TYPE}" how="h-g-i-g-o"'
        f' time="{format_time(now)}" start="{format_time(now)}"'
        f' stale="{format_time(now + DELETE_STALE_S)}">'
        f'<point lat="0.0" lon="0.0" hae="9999999.0" ce="9999999.0" le="9999999.0"/>'
        f"<detail>{link}<__forcedelete/></detail></event>"
    )
    return parse_event(xml.encode("utf-8"))


def _other(
    other: str, limits: XmlLimits
) -> tuple[list[etree._Element], Envelope, tuple[int, str] | None]:
    """The children of `other` (TAK writes the `<detail>` element itself; a bare list of
    children is taken too), with our `<_csky_fed>` taken out and read."""
    if not other:
        return [], Envelope(), None
    if len(other.encode("utf-8")) > limits.message_bytes:
        raise RemoteProtocolError("too_large", f"detail over {limits.message_bytes} bytes")
    text = other if other.lstrip().startswith("<detail") else f"<detail>{other}</detail>"
    try:
        root = etree.fromstring(text.encode("utf-8"), PARSER)
    except etree.XMLSyntaxError as exc:
        raise RemoteProtocolError("malformed", f"GeoEvent.other is not XML: {exc}") from None
    if root.tag != "detail":
        raise RemoteProtocolError("malformed", f"GeoEvent.other is <{root.tag}>, not <detail>")
    children = [child for child in root if isinstance(child.tag, str)]
    envelope: Envelope = Envelope()
    acked: tuple[int, str] | None = None
    for child in [c for c in children if c.tag == EXTENSION]:
        children.remove(child)
        try:
            if child.get("ack") is not None:
                acked = (int(child.get("ack", "")), child.text or "")
            envelope = Envelope(
                seq=int(child.get("seq", "0")),
                part=int(child.get("part", "0")),
                to=tuple(child.get("to", "").split()),
                party=child.get("party", ""),
            )
        except ValueError:
            raise RemoteProtocolError("malformed", f"<{EXTENSION}> with a bad number") from None
        if (
            not 0 <= envelope.seq <= MAX_SEQ
            or not 0 <= envelope.part < 1024
            or (acked and not 0 <= acked[0] < 2**63)
        ):
            raise RemoteProtocolError("malformed", f"<{EXTENSION}> out of range")
    return children, envelope, acked


def _xml(geo: pb.GeoEvent, children: list[etree._Element]) -> bytes:
    """CoT XML for a GeoEvent: `other`'s children, then what the typed fields add."""
    present = {child.tag for child in children}
    parts = [etree.tostring(child, encoding="unicode", with_tail=False) for child in children]
    if (geo.speed or geo.course) and "track" not in present:
        parts.append(f'<track speed="{number(geo.speed)}" course="{number(geo.course)}"/>')
    if geo.battery and "status" not in present:
        parts.append(f'<status battery="{geo.battery}"/>')
    if (geo.ploc or geo.palt) and "precisionlocation" not in present:
        parts.append(
            f'<precisionlocation geopointsrc="{quote(geo.ploc)}" altsrc="{quote(geo.palt)}"/>'
        )
    if geo.screen_name and "contact" not in present:
        phone = f' phone="{quote(geo.phone)}"' if geo.phone else ""
        parts.append(f'<contact callsign="{quote(geo.screen_name)}"{phone}/>')
    if (geo.group_name or geo.group_role) and "__group" not in present:
        parts.append(f'<__group name="{quote(geo.group_name)}" role="{quote(geo.group_role)}"/>')
    dests = [("callsign", c) for c in geo.ptp_callsigns] + [("uid", u) for u in geo.ptp_uids]
    dests += [("mission", m) for m in geo.mission_names]
    if dests and "marti" not in present:
        parts.append(
            "<marti>" + "".join(f'<dest {k}="{quote(v)}"/>' for k, v in dests) + "</marti>"
        )
    extra = "".join(
        f' {name}="{quote(value)}"'
        for name, value in (("how", geo.coord_source), ("access", geo.access))
        if value
    )
    text = (
        f'<event version="2.0" uid="{quote(geo.uid)}" type="{quote(geo.type)}"'
        f' time="{format_time(geo.send_time / 1000)}"'
        f' start="{format_time(geo.start_time / 1000)}"'
        f' stale="{format_time(geo.stale_time / 1000)}"{extra}>'
        f'<point lat="{number(geo.lat)}" lon="{number(geo.lon)}" hae="{number(geo.hae)}"'
        f' ce="{number(geo.ce)}" le="{number(geo.le)}"/>'
        f"<detail>{''.join(parts)}</detail></event>"
    )
    return text.encode("utf-8")


def absolute_names(
    event: CotEvent, writer: str, reader: str | None, parties: frozenset[str]
) -> CotEvent:
    """A copy as its originator `writer` would write it. It was rendered for the parties it
    is addressed to: their names of the writer's items carry the writer's prefix (`W::x`),
    and a copy for one party `reader` names that party's own items without one. Accepted
    here as the writer's, the first would be kept prefixed (a GeoChat message id no receipt
    finds) and the second read as the writer's own: so `W::x` becomes `x` and, for one
    reader, `x` of the reader's becomes `R::x` (namespace.py's rule; a read receipt that
    crosses a link then acknowledges the message it names)."""
    from commonsky.namespace import read_name
    from commonsky.protocol.refs import references, rewrite

    refs = references(event)
    if not refs.names:
        return event
    own = f"{writer}::"
    names = []
    for name in refs.names:
        if name.startswith(own):
            name = name[len(own) :]
        elif (
            reader is not None
            and reader != writer
            and read_name(reader, name, parties).party == reader
            and not name.startswith(f"{reader}::")
        ):
            name = f"{reader}::{name}"
        names.append(name)
    if names == list(refs.names):
        return event
    return rewrite(event, refs, names, event.uid)
