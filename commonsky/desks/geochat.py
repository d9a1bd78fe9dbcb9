"""GeoChat as CoT carries it: what the hotline desk reads from a message or a receipt, and
the messages the hub writes itself. Pure functions, no hub state.

ATAK's GeoChat (`GeoChatService`, `ChatMessageParser`): the text is `<remarks>`, the
conversation `__chat@id`, the message id `__chat@messageId`; a receipt (`b-t-f-d`
delivered, `b-t-f-r` read) carries the message id as its uid and in
`__chatreceipt@messageId` / `__chat@messageId`.
"""

from __future__ import annotations

import hashlib

from commonsky.model import CotEvent, Point
from commonsky.protocol.cot import detail_tree, quote
from commonsky.protocol.refs import RECEIPT_TYPES


def is_message(cot_type: str) -> bool:
    """A GeoChat message, as opposed to a delivery or read receipt about one."""
    return cot_type.startswith("b-t-f") and not cot_type.startswith(("b-t-f-r", "b-t-f-d"))


def content_digest(event: CotEvent) -> str:
    """What a message says and to whom: its type, text and addressees (not its times or
    client decorations, which a client's retry may change) — as read, so that the same
    message sent again in the other wire (TAK protobuf after XML) is the same content."""
    parts = [event.type, remarks_of(event), *sorted(event.dest_parties), "\x00"]
    parts += sorted(event.dest_callsigns)
    if event.dest_uids:  # (only when there are: digests recorded before they counted hold)
        parts += ["\x00", *sorted(event.dest_uids)]
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def remarks_of(event: CotEvent) -> str:
    if not event.detail:
        return ""
    detail = detail_tree(event.detail)
    node = detail.find("remarks")
    return (node.text or "") if node is not None else ""


def referenced_ids(event: CotEvent) -> list[str]:
    """Names a receipt gives the message it answers, in the places ATAK and our API put them:
    its uid (ATAK: the message id), `__chatreceipt`/`__chat@messageId`, `<link uid>`."""
    ids = [event.uid] if event.type in RECEIPT_TYPES else []
    if event.detail:
        detail = detail_tree(event.detail)
        ids += [el.get("messageId", "") for el in detail.iter("__chatreceipt", "__chat")]
        ids += [el.get("uid", "") for el in detail.iter("link")]
    return list(dict.fromkeys(i for i in ids if i))


def conversation(event: CotEvent) -> str | None:
    """The conversation id of a GeoChat (`__chat@id`), if it has one."""
    if not event.detail or "<__chat" not in event.detail:
        return None
    chat = detail_tree(event.detail).find("__chat")
    return chat.get("id") if chat is not None else None


def chat_event(
    uid: str,
    text: str,
    now: float,
    dest: list[str],
    extra: str = "",
    cot_type: str = "b-t-f",
    stale_s: float = 86400.0,
    sender: str = "CommonSky hub",
    device: str = "",
) -> CotEvent:
    """A hub-made GeoChat to the parties `dest` — or, given `device`, to that one device
    of theirs (the one that sent what this answers)."""
    dests = (
        f'<dest uid="{quote(device)}"/>'
        if device
        else "".join(f'<dest party="{quote(d)}"/>' for d in dest)
    )
    detail = (
        f'<__chat chatroom="hotline" id="hotline" senderCallsign="{quote(sender)}"'
        f' messageId="{quote(uid)}"/><marti>{dests}</marti>'
        f"<remarks>{quote(text)}</remarks>{extra}"
    )
    return CotEvent(
        uid=uid,
        type=cot_type,
        time=now,
        start=now,
        stale=now + stale_s,
        how="h-g-i-g-o",
        point=Point(0.0, 0.0),
        detail=detail,
        dest_parties=() if device else tuple(dest),
        dest_uids=(device,) if device else (),
    )


def thread_conflict(event: CotEvent) -> str | None:
    """The conflict a hub thread is about (`<csky_thread conflict=…>`), if any."""
    if "csky_thread" not in event.detail:
        return None
    node = detail_tree(event.detail).find("csky_thread")
    return node.get("conflict") if node is not None else None
