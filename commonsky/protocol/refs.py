"""Where CoT carries uids: the names the hub translates between party namespaces.

Pure functions (no I/O, no hub state): `references` lists every name an event carries, in a
fixed order; `rewrite` puts other names in the same places. The rule that picks the names
is in `commonsky/namespace.py`.

The event uid takes one of three forms, by type:
- a GeoChat message (`b-t-f…` other than the receipts) whose uid is
  `GeoChat.<sender uid>.<conversation id>.<message id>` (ATAK
  `GeoChatService.bundleToCot`; ATAK reads the sender as the second dot-separated field,
  `ChatMessageParser.getSenderUid`, and the message id as the last): three names — the
  sender's device (whose party owns the message), the conversation (a contact's uid, a
  group's uid or a shared room such as `All Chat Rooms`) and the message id;
- a delivered or read receipt (`b-t-f-d`, `b-t-f-r`): the uid *is* the message id it
  answers (ATAK `GeoChatService.sendStatusMessage`) — a name of someone else's message;
- anything else: the item's own name.

Names in `<detail>`, in document order:

| element | attribute |
|---|---|
| `link` (sender's device, marker's parent, route waypoint, shape's style, delete target) | `uid` |
| `chatgrp` (conversation and its members) | `id`, `uid0`, `uid1`, … |
| `__chat`, `__chatreceipt` | `id` (conversation), `messageId`, `parent`, `deleteChild` |
| `remarks` | `to`; in GeoChat also `source` (`BAO.F.ATAK.<uid>`, `BAO.F.WinTAK.<uid>` or a |
| | bare uid) and `sourceID` (WinTAK) |
| `marti/dest` | `uid` (iTAK addresses by uid) |
| `hierarchy//group`, `hierarchy//contact` (group chat members) | `uid` |
| `creator` | `uid` |
| `__navcue` (a route's cue at a waypoint) | `id` |
| `fileshare`, `ackresponse` (a file transfer's request and acknowledgement) | `senderUid` |
| `__video` and its `ConnectionEntry` (a video feed: ATAK keeps one entry per uid) | `uid` |
| `__serverdestination` | `destinations`: the uid after `host:port:proto:` |
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from lxml import etree
from msgspec.structs import replace

from commonsky.model import CotEvent
from commonsky.protocol.cot import detail_tree

UidForm = Literal["plain", "geochat", "receipt"]
RECEIPT_TYPES = frozenset({"b-t-f-d", "b-t-f-r"})  # ATAK `ChatLine.Status` (exact types)
_GEOCHAT = "GeoChat."
_SOURCE_PREFIXES = ("BAO.F.ATAK.", "BAO.F.WinTAK.")
# A cheap test that spares parsing the detail of the many events with no reference at all
# (an ATAK position report carries contact, __group, status, takv, track, uid@Droid).
_CANDIDATE = re.compile(
    r"\s(?:uid\d*|id|messageId|parent|deleteChild|to|source|sourceID|destinations|senderUid)="
)
_UID_N = re.compile(r"uid\d+")


@dataclass(frozen=True, slots=True)
class References:
    """Every name an event carries, as written: the uid's first (`in_uid` of them: none for
    a plain uid, one for a receipt, three for a GeoChat message), then `<detail>`'s."""

    form: UidForm
    names: tuple[str, ...]
    in_uid: int


NONE = References("plain", (), 0)


def uid_form(cot_type: str, uid: str) -> tuple[UidForm, tuple[str, ...]]:
    """The form of an event uid and the names it holds (see the module header)."""
    if cot_type in RECEIPT_TYPES:
        return "receipt", (uid,)
    if cot_type.startswith("b-t-f") and uid.startswith(_GEOCHAT):
        sender, dot, tail = uid[len(_GEOCHAT) :].partition(".")
        conversation, dot2, message = tail.rpartition(".")
        if sender and dot and dot2 and conversation and message:
            return "geochat", (sender, conversation, message)
    return "plain", ()


def references(event: CotEvent) -> References:
    form, in_uid = uid_form(event.type, event.uid)
    in_detail: list[str] = []
    if event.detail and _CANDIDATE.search(event.detail):
        chat = event.type.startswith("b-t-f")
        for element, attribute, codec in _slots(detail_tree(event.detail), chat):
            in_detail.extend(codec.names(element.get(attribute, "")))
    if not in_uid and not in_detail:
        return NONE
    return References(form, (*in_uid, *in_detail), len(in_uid))


def rewrite(event: CotEvent, refs: References, names: Sequence[str], plain_uid: str) -> CotEvent:
    """`event` with each of `refs.names` replaced by the name at the same index of `names`;
    a plain uid becomes `plain_uid` (a GeoChat or receipt uid is rebuilt from its names)."""
    if refs.form == "geochat":
        uid = f"{_GEOCHAT}{names[0]}.{names[1]}.{names[2]}"
    elif refs.form == "receipt":
        uid = names[0]
    else:
        uid = plain_uid
    detail = event.detail
    if len(refs.names) > refs.in_uid:
        tree = detail_tree(event.detail)
        given = iter(names[refs.in_uid :])
        for element, attribute, codec in _slots(tree, event.type.startswith("b-t-f")):
            element.set(attribute, codec.put(element.get(attribute, ""), given))
        detail = "".join(etree.tostring(child, encoding="unicode") for child in tree)
    return replace(event, uid=uid, detail=detail)


class _Plain:
    """The whole value is one name."""

    @staticmethod
    def names(value: str) -> list[str]:
        return [value]

    @staticmethod
    def put(value: str, given: Iterator[str]) -> str:
        return next(given)


class _Source:
    """`remarks@source` in GeoChat: `BAO.F.ATAK.<uid>`, `BAO.F.WinTAK.<uid>` or the uid."""

    @staticmethod
    def names(value: str) -> list[str]:
        for prefix in _SOURCE_PREFIXES:
            if value.startswith(prefix):
                return [value[len(prefix) :]]
        return [value]

    @staticmethod
    def put(value: str, given: Iterator[str]) -> str:
        for prefix in _SOURCE_PREFIXES:
            if value.startswith(prefix):
                return prefix + next(given)
        return next(given)


class _Destinations:
    """`__serverdestination@destinations`: `host:port:proto:uid`, comma-separated (ATAK
    `GeoChatService.addSendDetails`; the uid may itself hold colons)."""

    @staticmethod
    def names(value: str) -> list[str]:
        return [p.split(":", 3)[3] for p in value.split(",") if p.count(":") >= 3]

    @staticmethod
    def put(value: str, given: Iterator[str]) -> str:
        out = []
        for part in value.split(","):
            if part.count(":") >= 3:
                head = part.split(":", 3)[:3]
                part = ":".join([*head, next(given)])
            out.append(part)
        return ",".join(out)


_Codec = type[_Plain] | type[_Source] | type[_Destinations]
_CHAT_ATTRS = ("id", "messageId", "parent", "deleteChild")


def _slots(tree: etree._Element, chat: bool) -> Iterator[tuple[etree._Element, str, _Codec]]:
    """Every (element, attribute, codec) holding names, in document order."""
    for element in tree.iterdescendants():
        tag = str(element.tag)
        attrib = element.attrib
        if tag in ("link", "creator"):
            if "uid" in attrib:
                yield element, "uid", _Plain
        elif tag == "chatgrp":
            for name in list(attrib):
                if name == "id" or _UID_N.fullmatch(str(name)):
                    yield element, str(name), _Plain
        elif tag in ("__chat", "__chatreceipt"):
            for name in _CHAT_ATTRS:
                if name in attrib:
                    yield element, name, _Plain
        elif tag == "remarks":
            if "to" in attrib:
                yield element, "to", _Plain
            if chat and "source" in attrib:
                yield element, "source", _Source
            if chat and "sourceID" in attrib:
                yield element, "sourceID", _Plain
        elif tag == "dest":
            parent = element.getparent()
            if parent is not None and parent.tag == "marti" and "uid" in attrib:
                yield element, "uid", _Plain
        elif tag in ("group", "contact"):
            if "uid" in attrib and any(a.tag == "hierarchy" for a in element.iterancestors()):
                yield element, "uid", _Plain
        elif tag == "__navcue":
            if "id" in attrib:
                yield element, "id", _Plain
        elif tag in ("fileshare", "ackresponse"):
            if "senderUid" in attrib:
                yield element, "senderUid", _Plain
        elif tag == "__video" or (tag == "ConnectionEntry" and _in_video(element)):
            if "uid" in attrib:
                yield element, "uid", _Plain
        elif tag == "__serverdestination" and "destinations" in attrib:
            yield element, "destinations", _Destinations


def _in_video(element: etree._Element) -> bool:
    parent = element.getparent()
    return parent is not None and parent.tag == "__video"


def video_uids(event: CotEvent) -> list[str]:
    """The uids of the video feed entries an event carries (`__video@uid`, its
    `ConnectionEntry@uid`): the names ATAK's video manager keys its entries by."""
    if not event.detail or "__video" not in event.detail:
        return []
    found = []
    for video in detail_tree(event.detail).iter("__video"):
        for element in (video, *video.iterchildren("ConnectionEntry")):
            if element.get("uid"):
                found.append(element.get("uid", ""))
    return found


def message_id(event: CotEvent) -> str:
    """The id receipts name a GeoChat by: `__chat@messageId`, else the last field of a
    GeoChat uid (ATAK `ChatMessageParser.getMessageId`), else the uid."""
    if event.detail and "messageId=" in event.detail:
        chat = detail_tree(event.detail).find("__chat")
        if chat is not None and chat.get("messageId"):
            return chat.get("messageId", "")
    form, names = uid_form(event.type, event.uid)
    return names[2] if form == "geochat" else event.uid


def answered_id(event: CotEvent) -> str:
    """The message id a receipt (`b-t-f-d`, `b-t-f-r`) answers: its `__chatreceipt` or
    `__chat` `messageId` when it carries one, else its uid. ATAK writes the id in both
    places; node-CoT's delivered receipt (corpus `035-b-t-f-d-node-CoT-chat-test.xml`)
    takes `<id>.d` as its uid, so the attribute is the one to read."""
    if event.detail and "messageId=" in event.detail:
        for element in detail_tree(event.detail).iter("__chatreceipt", "__chat"):
            if element.get("messageId"):
                return element.get("messageId", "")
    return event.uid


def link_target(event: CotEvent) -> str | None:
    """The uid a delete (`t-x-d-d`) names: its first `<link uid>` (as ATAK's
    `CotDeleteImporter` reads it), or None when it names nothing (pytak's hello)."""
    if not event.detail or "<link" not in event.detail:
        return None
    link = detail_tree(event.detail).find("link")
    uid = link.get("uid") if link is not None else None
    return uid or None
