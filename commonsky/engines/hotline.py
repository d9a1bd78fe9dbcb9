"""The hotline: party-to-party messages that must be received, acknowledged and recorded.

A message is a GeoChat (`b-t-f`) from a TAK client or the HTTP API. The hub stores and
records it before relaying (a durable item), and answers the sender with its own receipt
(`b-t-f-d` from HUB, carrying the ledger sequence).

Who must acknowledge: the parties a message is addressed to (`<marti><dest party|callsign|
uid>`, the API's `to`), or, for a one-to-one GeoChat without addressing, the party of the
contact it is written to (`__chat@id`). A message to a room — `All Chat Rooms`, a team, a
group — reaches every party whose hotline agreement allows it and is recorded, but asks no
acknowledgement: ATAK sends receipts only in one-to-one chats (`GeoChatService
.sendReadStatus`), so a deadline there could only escalate.

A recipient acknowledges with the receipts ATAK sends: delivered (`b-t-f-d`, sent by the
device on arrival) or read (`b-t-f-r`), whose uid and `__chat@messageId` /
`__chatreceipt@messageId` are the message id as the recipient was given it (`USA::<id>`;
`namespace.py` reads it back), or by naming the message (`<link uid="USA::GeoChat…">`), or
through the API; the acknowledgement is recorded and the sender is told. Each such party
has a deadline (`ack_deadline_s` of the agreement, else `timeout_hotline_ack_s`); when it
passes unacknowledged the hub re-sends the message to that party, tells the sender, and
records the escalation — once per message and party.

A message addressed to a callsign no device has reported yet is tracked all the same (the
sender's receipt says so, the hotline list shows it `awaiting` that callsign, with a
deadline): the first device to report that callsign gets it, and its party becomes a
recipient with a deadline from then. A message whose sender deletes it, or a hub thread
whose conflict is cleared because an item was withdrawn, is closed: no more escalation.

State is rebuilt on start from the store, so a restart loses no message and no acknowledgement.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from commonsky.engines.record import LedgerRecorder, Statement
from commonsky.hub.core import Hub
from commonsky.hub.directory import device_callsign
from commonsky.model import HUB, Category, CotEvent, Disclosure, Item, Point, is_deleted
from commonsky.namespace import SHARED, foreign_uid, read_name
from commonsky.protocol.cot import detail_tree, quote
from commonsky.protocol.refs import RECEIPT_TYPES, message_id, uid_form

log = logging.getLogger("commonsky.hotline")


@dataclass
class Message:
    key: tuple[str, str]  # (sender party, uid in the sender's namespace)
    sender: str
    recipients: tuple[str, ...]  # the parties that must acknowledge
    text: str
    sent: float
    deadlines: dict[str, float]
    ledger_seq: int | None = None
    acks: dict[str, float] = field(default_factory=dict)
    escalated: set[str] = field(default_factory=set)
    conflict: str | None = None
    message_id: str = ""  # the id receipts name (GeoChat `messageId`), in the sender's space
    audience: tuple[str, ...] = ()  # every party it reached (a room's message: ack or not)
    awaiting: dict[str, float] = field(default_factory=dict)  # callsign -> deadline
    read: dict[str, float] = field(default_factory=dict)  # read receipts (`b-t-f-r`)
    closed: float | None = None
    device: str = ""  # the sender's device the hub answers, if it is a known device

    @property
    def id(self) -> str:
        return foreign_uid(self.key[0], self.key[1])

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "from": self.sender,
            "to": list(self.recipients),
            "audience": sorted({*self.audience, *self.recipients}),
            "text": self.text,
            "sent": self.sent,
            "deadlines": self.deadlines,
            "acks": self.acks,
            "read": self.read,
            "pending": [p for p in self.recipients if p not in self.acks],
            "overdue": [
                p
                for p in self.recipients
                if p not in self.acks and self.deadlines[p] <= now and self.closed is None
            ],
            "awaiting": sorted(self.awaiting),
            "escalated": sorted(self.escalated),
            "ledger_seq": self.ledger_seq,
            "conflict": self.conflict,
            "closed": self.closed,
        }


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


class HotlineDesk:
    def __init__(self, hub: Hub, recorder: LedgerRecorder | None) -> None:
        self.hub = hub
        self.recorder = recorder
        self.messages: dict[tuple[str, str], Message] = {}
        self.by_message_id: dict[tuple[str, str], Message] = {}  # (sender, message id)
        self.awaiting: dict[str, list[Message]] = {}  # callsign -> messages waiting for it
        self.default_deadline = hub.settings.get_float("timeout_hotline_ack_s")
        self._replaying = False
        hub.observers.append(self.observe)

    def rebuild(self) -> None:
        """Replay stored hotline items (messages and acknowledgements) after a restart."""
        self._replaying = True
        try:
            for item in self.hub.store.since(0):
                if item.category is Category.HOTLINE:
                    self.observe(item, self.hub.route(item, item.received))
        finally:
            self._replaying = False

    # ---- intake -------------------------------------------------------------------------

    def observe(self, item: Item, routes: dict[str, Disclosure]) -> None:
        if item.category is Category.TRACK:
            if self.awaiting:
                callsign = device_callsign(item.event)
                if callsign is not None and callsign in self.awaiting:
                    self._callsign_seen(callsign, item.party, item.received)
            return
        if item.category is not Category.HOTLINE:
            return
        if is_deleted(item.event):
            message = self.messages.get(item.key)
            if message is not None:
                self.close(message, "deleted by its sender", item.received)
            return
        kind = item.event.type
        if kind in RECEIPT_TYPES or kind.startswith(("b-t-f-r", "b-t-f-d")):
            if item.party != HUB:
                via = "tak-read" if kind.startswith("b-t-f-r") else "tak-delivered"
                for ref in referenced_ids(item.event):
                    self.acknowledge(item.party, ref, item.received, via=via)
            return
        if item.key in self.messages:
            return  # a repeat of a known message
        if item.party == HUB and not item.uid.startswith("thread-"):
            return  # the hub's own notices (escalations…) are information, not requests
        awaiting = (
            [c for c in item.event.dest_callsigns if not self.hub.directory.known(c)]
            if item.party != HUB
            else []
        )
        if not routes and not awaiting and item.party != HUB:
            return  # nobody may receive it
        recipients = (
            tuple(sorted(set(item.audience) - {HUB}))
            if item.party == HUB
            else self._must_acknowledge(item, routes)
        )
        deadline = self._deadline_s
        message = Message(
            item.key,
            item.party,
            recipients,
            remarks_of(item.event),
            item.received,
            {p: item.received + deadline(item.party, p) for p in recipients},
            message_id=message_id(item.event),
            audience=tuple(sorted(routes)),
            awaiting={c: item.received + self.default_deadline for c in awaiting},
            device=self._device_of(item),
        )
        if self.recorder is not None:
            message.ledger_seq = self.recorder.seq_of.get((item.party, item.uid, item.seq))
        self.messages[item.key] = message
        self.by_message_id.setdefault((item.party, message.message_id), message)
        for callsign in awaiting:
            self.awaiting.setdefault(callsign, []).append(message)
        if item.party != HUB and not self._replaying:
            self._receipt_to_sender(message)

    def _device_of(self, item: Item) -> str:
        """The sending device of a GeoChat (its uid's sender field), if the directory knows
        it: the hub's answers go to that device, not to every device of the party."""
        form, names = uid_form(item.event.type, item.event.uid)
        if form != "geochat":
            return ""
        key = read_name(item.party, names[0], self.hub.parties)
        known = key.party == item.party and self.hub.directory.callsign(*key) is not None
        return key.uid if known else ""

    def _deadline_s(self, sender: str, party: str) -> float:
        option = self.hub.policy.agreement_option(sender, party, "ack_deadline_s")
        return option or self.default_deadline

    def _must_acknowledge(self, item: Item, routes: dict[str, Disclosure]) -> tuple[str, ...]:
        e = item.event
        if e.dest_parties or e.dest_callsigns or e.dest_uids:
            return tuple(sorted(routes))  # addressing has narrowed the routes already
        conv = conversation(e)
        if conv is None:
            return ()
        owner = read_name(item.party, conv, self.hub.parties).party
        if owner in (SHARED, item.party) or owner not in routes:
            return ()  # a room, a group of the sender's, or its own party
        return (owner,)

    def _callsign_seen(self, callsign: str, party: str, now: float) -> None:
        """A device reported `callsign`: messages waiting for it have found their party."""
        for message in self.awaiting.pop(callsign, []):
            if message.awaiting.pop(callsign, None) is None or message.closed is not None:
                continue
            stored = self.hub.durable.get(message.key)
            routes = self.hub.route(stored.item, now) if stored is not None else {}
            if party != message.sender and party not in routes:
                # No agreement lets it reach that party: still waiting (and escalated on
                # time) for a device it may reach.
                message.awaiting[callsign] = message.sent + self.default_deadline
                self.awaiting.setdefault(callsign, []).append(message)
                continue
            if party == message.sender or party in message.recipients:
                continue  # delivered inside its own party, or already a recipient
            message.recipients = tuple(sorted({*message.recipients, party}))
            message.audience = tuple(sorted({*message.audience, party}))
            message.deadlines[party] = now + self._deadline_s(message.sender, party)
            if self._replaying:
                continue
            if self.recorder is not None:
                self.recorder.record_fact(
                    "delivered",
                    HUB,
                    [party, message.sender],
                    {"of": message.id, "party": party, "callsign": callsign},
                    now,
                )
            text = f"{message.key[1]} delivered to {party} ({callsign} connected)"
            self._tell_sender(message, text, now, "b-t-f-d")

    def _receipt_to_sender(self, message: Message) -> None:
        now = self.hub.clock()
        uid = f"receipt-{uuid.uuid4().hex[:12]}"
        to = [*message.audience, *(f"callsign {c} (not connected yet)" for c in message.awaiting)]
        text = (
            f"Hub received {message.key[1]} for {', '.join(to) or 'nobody yet'}"
            f" (ledger #{message.ledger_seq})"
        )
        extra = (
            f'<link uid="{quote(message.key[1])}" relation="p-p"/>'
            f'<csky_receipt ledger_seq="{message.ledger_seq}"/>'
        )
        event = chat_event(
            uid, text, now, [message.sender], extra, cot_type="b-t-f-d", device=message.device
        )
        self.hub.publish_from_hub(event, Category.HOTLINE, [message.sender])

    # ---- acknowledgements ---------------------------------------------------------------

    def resolve(self, party: str, ref: str) -> Message | None:
        """The message a party's reference names, as that party was given it: its uid
        (`SENDER::GeoChat…`) or its message id (`SENDER::<id>`)."""
        key = read_name(party, ref, self.hub.parties)
        message = self.messages.get(key) or self.by_message_id.get(key)
        if message is None or party not in message.recipients:
            return None
        return message

    def acknowledge(
        self, party: str, ref: str, now: float, via: str = "api", statement: Statement | None = None
    ) -> Message | None:
        message = self.resolve(party, ref)
        if message is not None and via == "tak-read":
            message.read.setdefault(party, now)
        if message is None or party in message.acks:
            return message
        if self._replaying:
            message.acks[party] = now
            return message
        if self.recorder is not None:  # recorded first: an ack the ledger refused never was
            self.recorder.record_fact(
                "ack",
                party,
                [party, message.sender],
                {"of": message.id, "of_ledger_seq": message.ledger_seq or -1, "via": via},
                now,
                statement,
            )
        message.acks[party] = now
        if message.sender != HUB:
            self._tell_sender(message, f"{party} acknowledged {message.key[1]}", now, "b-t-f-r")
        return message

    def _tell_sender(self, message: Message, text: str, now: float, cot_type: str) -> None:
        extra = f'<link uid="{quote(message.key[1])}" relation="p-p"/>'
        event = chat_event(
            f"ack-{uuid.uuid4().hex[:12]}",
            text,
            now,
            [message.sender],
            extra,
            cot_type=cot_type,
            device=message.device,
        )
        self.hub.publish_from_hub(event, Category.HOTLINE, [message.sender])

    def close(self, message: Message, reason: str, now: float) -> None:
        """No more deadlines for this message (recorded once)."""
        if message.closed is not None:
            return
        message.closed = now
        if self.recorder is not None and not self._replaying:
            self.recorder.record_fact(
                "close",
                HUB,
                [message.sender, *message.recipients],
                {"of": message.id, "reason": reason},
                now,
            )

    # ---- deadlines ----------------------------------------------------------------------

    def tick(self, now: float | None = None) -> list[tuple[Message, str]]:
        """Escalate every (message, party) whose deadline passed without acknowledgement."""
        now = self.hub.clock() if now is None else now
        escalated = []
        for message in list(self.messages.values()):
            if message.closed is not None:
                continue
            for callsign, due in list(message.awaiting.items()):
                if due <= now and f"callsign:{callsign}" not in message.escalated:
                    message.escalated.add(f"callsign:{callsign}")
                    self._escalate_unseen(message, callsign, now)
            for party in message.recipients:
                if (
                    party in message.acks
                    or party in message.escalated
                    or message.deadlines[party] > now
                ):
                    continue
                message.escalated.add(party)
                escalated.append((message, party))
                self._escalate(message, party, now)
        return escalated

    def _escalate(self, message: Message, party: str, now: float) -> None:
        log.warning(
            "hotline %s: %s has not acknowledged by the deadline; escalating", message.id, party
        )
        self.hub.resend(message.key, party)
        if self.recorder is not None:
            self.recorder.record_fact(
                "escalation", HUB, [party, message.sender], {"of": message.id, "party": party}, now
            )
        if message.sender != HUB:
            text = (
                f"ESCALATION: {party} has not acknowledged {message.key[1]} within "
                f"{round(message.deadlines[party] - message.sent)} s; re-sent"
            )
            event = chat_event(
                f"esc-{uuid.uuid4().hex[:12]}",
                text,
                now,
                [message.sender],
                f'<link uid="{quote(message.key[1])}" relation="p-p"/>',
                device=message.device,
            )
            self.hub.publish_from_hub(event, Category.HOTLINE, [message.sender])

    def _escalate_unseen(self, message: Message, callsign: str, now: float) -> None:
        log.warning("hotline %s: no device uses callsign %s yet; escalating", message.id, callsign)
        if self.recorder is not None:
            self.recorder.record_fact(
                "escalation", HUB, [message.sender], {"of": message.id, "callsign": callsign}, now
            )
        if message.sender != HUB:
            text = (
                f"ESCALATION: no device using callsign {callsign} that it may reach has"
                " connected within "
                f"{round(message.awaiting[callsign] - message.sent)} s; {message.key[1]} waits"
            )
            self._tell_sender(message, text, now, "b-t-f")

    # ---- threads the hub opens ----------------------------------------------------------

    def open_thread(self, parties: list[str], text: str, conflict: str | None = None) -> Message:
        """A hub message every party must acknowledge (e.g. a conflict between them)."""
        now = self.hub.clock()
        uid = f"thread-{uuid.uuid4().hex[:12]}"
        event = chat_event(uid, text, now, parties)
        item = self.hub.publish_from_hub(event, Category.HOTLINE, parties)
        message = self.messages[item.key]
        message.conflict = conflict
        return message

    def history(self, party: str, other: str | None = None) -> list[dict[str, Any]]:
        now = self.hub.clock()
        out = []
        for message in sorted(self.messages.values(), key=lambda m: m.sent):
            involved = {message.sender, *message.recipients, *message.audience}
            if party in involved and (other is None or other in involved):
                out.append(message.to_json(now))
        return out
