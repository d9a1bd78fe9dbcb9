"""The hotline: party-to-party messages that must be received, acknowledged and recorded.

A message is a GeoChat (`b-t-f`) from a TAK client or the HTTP API. The hub stores and
records it before relaying (a durable item), and answers the sender with its own receipt
(`b-t-f-d` from HUB, carrying the ledger sequence). A recipient acknowledges with a GeoChat
read receipt (`b-t-f-r`, naming the message in `<link uid>`, `<__chatreceipt messageId>` or
`<__chat messageId>`) or through the API; the acknowledgement is recorded and the sender is
told. Each recipient party has a deadline (`ack_deadline_s` of the agreement, else
`timeout_hotline_ack_s`); when it passes unacknowledged the hub re-sends the message to that
party, tells the sender, and records the escalation — once per message and party.

State is rebuilt on start from the store, so a restart loses no message and no acknowledgement.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from commonsky.engines.record import LedgerRecorder, Statement
from commonsky.hub.core import Hub
from commonsky.model import HUB, Category, CotEvent, Disclosure, Item, Point
from commonsky.policy import SEPARATOR
from commonsky.protocol.cot import detail_tree, quote

log = logging.getLogger("commonsky.hotline")


@dataclass
class Message:
    key: tuple[str, str]  # (sender party, uid in the sender's namespace)
    sender: str
    recipients: tuple[str, ...]
    text: str
    sent: float
    deadlines: dict[str, float]
    ledger_seq: int | None = None
    acks: dict[str, float] = field(default_factory=dict)
    escalated: set[str] = field(default_factory=set)
    conflict: str | None = None

    @property
    def id(self) -> str:
        return f"{self.key[0]}{SEPARATOR}{self.key[1]}"

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "from": self.sender,
            "to": list(self.recipients),
            "text": self.text,
            "sent": self.sent,
            "deadlines": self.deadlines,
            "acks": self.acks,
            "pending": [p for p in self.recipients if p not in self.acks],
            "overdue": [
                p for p in self.recipients if p not in self.acks and self.deadlines[p] <= now
            ],
            "escalated": sorted(self.escalated),
            "ledger_seq": self.ledger_seq,
            "conflict": self.conflict,
        }


def remarks_of(event: CotEvent) -> str:
    if not event.detail:
        return ""
    detail = detail_tree(event.detail)
    node = detail.find("remarks")
    return (node.text or "") if node is not None else ""


def referenced_ids(event: CotEvent) -> list[str]:
    """Message ids a read receipt names, in the places ATAK and our API put them."""
    if not event.detail:
        return []
    detail = detail_tree(event.detail)
    ids = [el.get("messageId", "") for el in detail.iter("__chatreceipt", "__chat")]
    ids += [el.get("uid", "") for el in detail.iter("link")]
    return [i for i in ids if i]


def chat_event(
    uid: str,
    text: str,
    now: float,
    dest: list[str],
    extra: str = "",
    cot_type: str = "b-t-f",
    stale_s: float = 86400.0,
    sender: str = "CommonSky hub",
) -> CotEvent:
    dests = "".join(f'<dest party="{quote(d)}"/>' for d in dest)
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
        dest_parties=tuple(dest),
    )


class HotlineDesk:
    def __init__(self, hub: Hub, recorder: LedgerRecorder | None) -> None:
        self.hub = hub
        self.recorder = recorder
        self.messages: dict[tuple[str, str], Message] = {}
        self.default_deadline = hub.settings.get_float("timeout_hotline_ack_s")
        self._replaying = False
        hub.observers.append(self.observe)

    def rebuild(self) -> None:
        """Replay stored hotline items (messages and acknowledgements) after a restart."""
        self._replaying = True
        try:
            # A stored item that cannot be replayed is quarantined, never a reason not to start.
            self.hub.rebuild("hotline", self._replay)
        finally:
            self._replaying = False

    def _replay(self, item: Item) -> None:
        if item.category is Category.HOTLINE:
            self.observe(item, self.hub.route(item, item.received))

    # ---- intake -------------------------------------------------------------------------

    def observe(self, item: Item, routes: dict[str, Disclosure]) -> None:
        if item.category is not Category.HOTLINE:
            return
        kind = item.event.type
        if kind.startswith("b-t-f-r") or kind.startswith("b-t-f-d"):
            if item.party != HUB and kind.startswith("b-t-f-r"):
                for ref in referenced_ids(item.event):
                    self.acknowledge(item.party, ref, item.received, via="tak")
            return
        if item.key in self.messages or (not routes and item.party != HUB):
            return  # a repeat of a known message, or one nobody may receive
        if item.party == HUB and not item.uid.startswith("thread-"):
            return  # the hub's own notices (escalations…) are information, not requests
        recipients = (
            tuple(sorted(set(item.audience) - {HUB}))
            if item.party == HUB
            else tuple(sorted(routes))
        )
        deadlines = {
            p: item.received
            + (
                self.hub.policy.agreement_option(item.party, p, "ack_deadline_s")
                or self.default_deadline
            )
            for p in recipients
        }
        message = Message(
            item.key, item.party, recipients, remarks_of(item.event), item.received, deadlines
        )
        if self.recorder is not None:
            message.ledger_seq = self.recorder.seq_of.get((item.party, item.uid, item.seq))
        self.messages[item.key] = message
        if item.party != HUB and not self._replaying:
            self._receipt_to_sender(message)

    def _receipt_to_sender(self, message: Message) -> None:
        now = self.hub.clock()
        uid = f"receipt-{uuid.uuid4().hex[:12]}"
        text = (
            f"Hub received {message.key[1]} for {', '.join(message.recipients)}"
            f" (ledger #{message.ledger_seq})"
        )
        extra = (
            f'<link uid="{quote(message.key[1])}" relation="p-p"/>'
            f'<csky_receipt ledger_seq="{message.ledger_seq}"/>'
        )
        event = chat_event(uid, text, now, [message.sender], extra, cot_type="b-t-f-d")
        self.hub.publish_from_hub(event, Category.HOTLINE, [message.sender])

    # ---- acknowledgements ---------------------------------------------------------------

    def resolve(self, party: str, ref: str) -> Message | None:
        """The message a party's reference names, as that party saw it (`SENDER::uid`)."""
        if SEPARATOR in ref:
            sender, _, uid = ref.partition(SEPARATOR)
            message = self.messages.get((sender, uid))
        else:
            message = None
        if message is None or party not in message.recipients:
            return None
        return message

    def acknowledge(
        self, party: str, ref: str, now: float, via: str = "api", statement: Statement | None = None
    ) -> Message | None:
        message = self.resolve(party, ref)
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
            text = f"{party} acknowledged {message.key[1]}"
            extra = f'<link uid="{quote(message.key[1])}" relation="p-p"/>'
            event = chat_event(
                f"ack-{uuid.uuid4().hex[:12]}",
                text,
                now,
                [message.sender],
                extra,
                cot_type="b-t-f-r",
            )
            self.hub.publish_from_hub(event, Category.HOTLINE, [message.sender])
        return message

    # ---- deadlines ----------------------------------------------------------------------

    def tick(self, now: float | None = None) -> list[tuple[Message, str]]:
        """Escalate every (message, party) whose deadline passed without acknowledgement."""
        now = self.hub.clock() if now is None else now
        escalated = []
        for message in list(self.messages.values()):
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
            )
            self.hub.publish_from_hub(event, Category.HOTLINE, [message.sender])

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
            involved = {message.sender, *message.recipients}
            if party in involved and (other is None or other in involved):
                out.append(message.to_json(now))
        return out
