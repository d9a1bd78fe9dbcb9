"""Events in the shapes ATAK writes them (ATAK-CIV 4.6 sources, the corpus), for desk tests.

Each builder follows the ATAK code named in its docstring, so a test can play a client:
read what the hub delivered, answer the way ATAK would.
"""

from __future__ import annotations

import uuid

from lxml import etree

from commonsky.model import CotEvent
from tests.engines.harness import T0, event


def sa(uid: str, callsign: str, lat: float = 35.0, lon: float = 38.0, now: float = T0) -> CotEvent:
    """A device's report of itself (corpus 004: contact endpoint, __group, takv)."""
    return event(
        uid,
        "a-f-G-U-C",
        lat=lat,
        lon=lon,
        now=now,
        detail=f'<contact endpoint="*:-1:stcp" callsign="{callsign}"/>'
        '<__group name="Cyan" role="Team Member"/><takv device="Pixel" platform="ATAK-CIV"'
        ' os="34" version="4.6.0.5"/>',
    )


def chat(
    sender: str,
    sender_callsign: str,
    to: str,
    to_callsign: str,
    text: str,
    message_id: str | None = None,
    addressed: bool = True,
    now: float = T0,
) -> CotEvent:
    """A one-to-one GeoChat as `GeoChatService.bundleToCot`/`addSendDetails` write it, with
    the `<marti><dest callsign>` commo adds for a server contact (corpus 050). `to` is the
    contact's uid as the sender knows it (`GBR::EUD-7` for another party's)."""
    mid = message_id or str(uuid.uuid4())
    marti = f'<marti><dest callsign="{to_callsign}"/></marti>' if addressed else ""
    return event(
        f"GeoChat.{sender}.{to}.{mid}",
        "b-t-f",
        now=now,
        stale_s=86400.0,
        detail=f'<__chat parent="RootContactGroup" groupOwner="false" messageId="{mid}"'
        f' chatroom="{to_callsign}" id="{to}" senderCallsign="{sender_callsign}">'
        f'<chatgrp uid0="{sender}" uid1="{to}" id="{to}"/></__chat>'
        f'<link uid="{sender}" type="a-f-G-U-C" relation="p-p"/>'
        f'<__serverdestination destinations="192.0.2.7:4242:tcp:{sender}"/>'
        f'<remarks source="BAO.F.ATAK.{sender}" to="{to}" time="2030-01-01T00:00:00Z">'
        f"{text}</remarks>{marti}",
    )


def room_chat(sender: str, sender_callsign: str, text: str, now: float = T0) -> CotEvent:
    """A message to `All Chat Rooms` (corpus 011): no `<marti>`, so to everyone."""
    mid = str(uuid.uuid4())
    room = "All Chat Rooms"
    return event(
        f"GeoChat.{sender}.{room}.{mid}",
        "b-t-f",
        now=now,
        stale_s=86400.0,
        detail=f'<__chat id="{room}" chatroom="{room}" messageId="{mid}"'
        f' senderCallsign="{sender_callsign}"><chatgrp id="{room}" uid0="{sender}"'
        f' uid1="{room}"/></__chat><link relation="p-p" type="a-f-G-U-C" uid="{sender}"/>'
        f'<remarks source="BAO.F.ATAK.{sender}" time="2030-01-01T00:00:00Z">{text}</remarks>',
    )


def receipt(
    received: CotEvent, me: str, my_callsign: str, kind: str = "b-t-f-d", now: float = T0
) -> CotEvent:
    """The receipt ATAK's `GeoChatService.sendStatusMessage` answers a received one-to-one
    GeoChat with: uid = the message id as received, `__chatreceipt` (the conversation id is
    the sender, as `ChatMessageParser` sets it when the chat was to this device), chatgrp
    from this device to the sender, `link` to this device (corpus 035/036)."""
    detail = etree.fromstring(f"<d>{received.detail}</d>")
    chat_el = detail.find("__chat")
    link = detail.find("link")
    assert chat_el is not None and link is not None
    message_id = chat_el.get("messageId")
    sender = link.get("uid")
    element = "__chatreceipt" if kind == "b-t-f-d" else "__chat"
    return event(
        str(message_id),
        kind,
        now=now,
        stale_s=86400.0,
        detail=f'<{element} parent="RootContactGroup" groupOwner="false"'
        f' messageId="{message_id}" chatroom="{chat_el.get("senderCallsign")}" id="{sender}"'
        f' senderCallsign="{my_callsign}"><chatgrp uid0="{me}" uid1="{sender}" id="{sender}"/>'
        f'</{element}><link uid="{me}" type="a-f-G-U-C" relation="p-p"/>',
    )


def delete(target: str, force: bool = False, now: float = T0) -> CotEvent:
    """A delete as `CotDeleteImporter` documents it: `<link uid relation type>`, optionally
    `<__forcedelete/>`."""
    return event(
        f"delete-{uuid.uuid4().hex[:8]}",
        "t-x-d-d",
        now=now,
        stale_s=20.0,
        detail=f'<link uid="{target}" relation="none" type="none"/>'
        + ("<__forcedelete/>" if force else ""),
    )


def route(uid: str, waypoints: list[tuple[str, float, float]], now: float = T0) -> CotEvent:
    """A route (`b-m-r`, corpus 028): a `<link>` per waypoint, uid, type, point."""
    links = "".join(
        f'<link uid="{w}" callsign="" type="b-m-p-c" point="{lat},{lon}" remarks="" relation="c"/>'
        for w, lat, lon in waypoints
    )
    return event(
        uid,
        "b-m-r",
        lat=0.0,
        lon=0.0,
        now=now,
        stale_s=86400.0,
        detail=f'{links}<link_attr color="-1" method="Driving" routetype="Primary"/>'
        '<contact callsign="ROUTE 1"/>',
    )


def attrs(e: CotEvent, tag: str) -> dict[str, str]:
    """The attributes of the first `tag` in an event's detail."""
    node = etree.fromstring(f"<d>{e.detail}</d>").find(f".//{tag}")
    assert node is not None, f"no <{tag}> in {e.detail}"
    return {str(k): str(v) for k, v in node.attrib.items()}
