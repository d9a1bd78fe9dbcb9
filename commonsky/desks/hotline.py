"""The hotline: party-to-party messages that must be received, acknowledged and recorded.

A message is a GeoChat (`b-t-f`) from a TAK client or the HTTP API. The hub stores and
records it before relaying (a durable item), and answers the sender's device with its own
receipt (`b-t-f-d` from HUB, carrying the ledger sequence).

Who must acknowledge: the parties a message is addressed to (`<marti><dest party|callsign|
uid>`, the API's `to`); for a one-to-one GeoChat without addressing, the party of the
contact it is written to (`__chat@id`); for a message naming no conversation, every party
it reaches. A message to a room — `All Chat Rooms`, a team, a group — reaches every party
whose hotline agreement allows it and is recorded, but asks no acknowledgement: ATAK sends
receipts only in one-to-one chats (`GeoChatService.sendReadStatus`), so a deadline there
could only escalate.

A recipient acknowledges with the receipts ATAK sends: delivered (`b-t-f-d`, sent by the
device on arrival) or read (`b-t-f-r`), whose uid and `__chat@messageId` /
`__chatreceipt@messageId` are the message id as the recipient was given it (`USA::<id>`;
`namespace.py` reads it back), or by naming the message (`<link uid="USA::GeoChat…">`), or
through the API; the acknowledgement is recorded and the sender is told (a device offline
then is told when it reports again: hub/receipts.py holds the notice). Each such party
has a deadline (`ack_deadline_s` of the agreement, else `timeout_hotline_ack_s`); when it
passes unacknowledged the hub re-sends the message to that party, tells the sender, and
records the escalation — once per message and party.

A message addressed to a callsign no device has reported yet is tracked all the same (the
sender's receipt says so, the hotline list shows it `awaiting` that callsign, with the
default deadline): the first device it may reach to report that callsign gets it, and its
party becomes a recipient with a deadline from then. A message whose sender deletes it, or
a hub thread whose conflict is cleared because an item was deleted, is closed: no more
deadlines.

A message is immutable once recorded: the same uid sent again with the same content is a
harmless duplicate (nothing stored or relayed again), with other content it is refused —
a correction is a new message. (Otherwise a sender could rewrite a message its recipient
already acknowledged, and the record would no longer say what was acknowledged.)

Bounded memory: each message's state (acknowledgements, escalations, its ledger entry) is a
row of the store, written in the same commit as the items that change it. Only open
messages — some recipient has not acknowledged, not stale — are held in memory, with a heap
of their deadlines, so a tick never walks the history; a restart reads the open rows back
(never the whole store), and history is paged from the store.
"""

from __future__ import annotations

import heapq
import logging
import uuid
from typing import Any

import msgspec

from commonsky.desks.geochat import (
    chat_event,
    content_digest,
    conversation,
    is_message,
    referenced_ids,
    remarks_of,
    thread_conflict,
)
from commonsky.desks.recorder import LedgerRecorder, Statement
from commonsky.errors import AlreadyRecorded, RemoteProtocolError
from commonsky.hub.desk import Routes
from commonsky.hub.desk_view import DeskView
from commonsky.hub.directory import device_callsign
from commonsky.model import HUB, Category, CotEvent, Disclosure, Item, is_deleted
from commonsky.namespace import SHARED, foreign_uid, read_name
from commonsky.protocol.cot import quote
from commonsky.protocol.refs import message_id, uid_form
from commonsky.store import HotlineRow

log = logging.getLogger("commonsky.hotline")
_INDEXED = "hotline_index_v1"  # store meta key: hotline rows are kept for every message
_TRACK = Category.TRACK  # (`observe`, for every track: see model._DRAWING)


class Message(msgspec.Struct, kw_only=True):
    key: tuple[str, str]  # (sender party, uid in the sender's namespace)
    sender: str
    recipients: tuple[str, ...]  # the parties that must acknowledge
    text: str
    sent: float
    deadlines: dict[str, float]
    seq: int = 0  # the message item's store sequence number (history cursors use it)
    stale: float = float("inf")
    digest: str = ""  # of what makes a resend the same message (see `content_digest`)
    ledger_seq: int | None = None
    acks: dict[str, float] = {}
    escalated: set[str] = set()  # parties, and `callsign:C` for a callsign awaited in vain
    conflict: str | None = None
    message_id: str = ""  # the id receipts name (GeoChat `messageId`), in the sender's space
    audience: tuple[str, ...] = ()  # every party it reached (a room's message: ack or not)
    awaiting: dict[str, float] = {}  # callsign no device has reported yet -> deadline
    read: dict[str, float] = {}  # read receipts (`b-t-f-r`) by party
    closed: float | None = None
    device: str = ""  # the sender's device the hub answers, if it is a known device

    @property
    def id(self) -> str:
        return foreign_uid(self.key[0], self.key[1])

    @property
    def open(self) -> bool:
        if self.closed is not None:
            return False
        return bool(self.awaiting) or any(p not in self.acks for p in self.recipients)

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "seq": self.seq,
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


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Message).decode


class HotlineDesk:
    """The hotline desk: records messages, tracks their acknowledgements and deadlines."""

    name = "hotline"
    categories = (Category.HOTLINE,)

    def __init__(self, hub: DeskView, recorder: LedgerRecorder | None) -> None:
        self.hub = hub  # the hub as a desk sees it (hub/desk_view.py)
        self.recorder = recorder
        self.messages: dict[tuple[str, str], Message] = {}  # the open ones
        self.awaiting: dict[str, set[tuple[str, str]]] = {}  # callsign -> open messages
        self.default_deadline = hub.settings.timeout_hotline_ack_s
        # (deadline, store seq, party, key) of open messages; (stale, seq, key) likewise.
        self._deadlines: list[tuple[float, int, str, tuple[str, str]]] = []
        self._stales: list[tuple[float, int, tuple[str, str]]] = []
        self._replaying = False

    def rebuild(self) -> None:
        """Hold the open messages again after a restart (read from their rows, not replayed).

        A store written before hotline rows existed is indexed once, by replaying its
        hotline items."""
        store = self.hub.rows
        if store.meta(_INDEXED) is None:
            self._index_store()
        now = self.hub.clock()
        for body in store.hotline_open(now):
            message = self._read(body)
            if message is not None:
                self._hold(message)

    def _read(self, body: bytes) -> Message | None:
        """A stored hotline row; None, the row set aside, when it does not decode (never a
        reason not to start, nor to fail a history page)."""
        try:
            return _decode(body)
        except msgspec.DecodeError as exc:
            self.hub.quarantine.add_row("hotline", body, f"hotline row does not decode: {exc}")
            return None

    def _index_store(self) -> None:
        self._replaying = True
        try:
            with self.hub.transaction():
                # A stored item that cannot be replayed is quarantined, not a reason not to start.
                self.hub.rebuild("hotline", self._replay)
                self.hub.rows.set_meta(_INDEXED, "1")
        finally:
            self._replaying = False
        self.messages.clear()
        self._deadlines.clear()
        self._stales.clear()

    # ---- memory -------------------------------------------------------------------------

    def _hold(self, message: Message) -> None:
        """Keep an open message in memory, with its deadlines and staleness in the heaps."""
        if not message.open or message.stale <= self.hub.clock():
            self.messages.pop(message.key, None)
            return
        if message.key in self.messages:
            self.messages[message.key] = message
            return
        self.messages[message.key] = message
        for party, deadline in message.deadlines.items():
            if party not in message.acks and party not in message.escalated:
                heapq.heappush(self._deadlines, (deadline, message.seq, party, message.key))
        for callsign, deadline in message.awaiting.items():
            self.awaiting.setdefault(callsign, set()).add(message.key)
            if f"callsign:{callsign}" not in message.escalated:
                entry = (deadline, message.seq, f"callsign:{callsign}", message.key)
                heapq.heappush(self._deadlines, entry)
        heapq.heappush(self._stales, (message.stale, message.seq, message.key))

    def _save(self, message: Message) -> None:
        self.hub.rows.put_hotline(
            HotlineRow(
                seq=message.seq,
                sender=message.sender,
                uid=message.key[1],
                parties=tuple(
                    dict.fromkeys((message.sender, *message.recipients, *message.audience))
                ),
                open=message.open,
                stale=message.stale,
                body=_encode(message),
            )
        )
        self._hold(message)

    def find(self, key: tuple[str, str]) -> Message | None:
        """A recorded message by (sender, uid): held in memory, else read from the store."""
        message = self.messages.get(key)
        if message is None:
            body = self.hub.rows.hotline(*key)
            message = self._read(body) if body is not None else None
        return message

    def _replay(self, item: Item) -> None:
        if item.category is Category.HOTLINE:
            self.observe(item, self.hub.route(item, item.received))

    # ---- intake -------------------------------------------------------------------------

    def check(self, party: str, event: CotEvent) -> None:
        """Before anything is stored: a recorded message is never rewritten."""
        if not is_message(event.type):
            return None
        known = self.find((party, event.uid))
        if known is None:
            return None
        if known.digest == content_digest(event):
            raise AlreadyRecorded(known.seq)
        raise RemoteProtocolError(
            "hotline_immutable",
            f"hotline message {event.uid[:60]!r} is already recorded with other content "
            "(a recorded message is never rewritten; send a correction as a new message)",
        )

    def observe(self, item: Item, routes: Routes, parsed: object | None = None) -> None:
        if item.category is _TRACK:
            if self.awaiting:
                callsign = device_callsign(item.event)
                if callsign is not None and callsign in self.awaiting:
                    self._callsign_seen(callsign, item.party, item.received)
            return
        if item.category is not Category.HOTLINE:
            return
        if is_deleted(item.event):
            message = self.find(item.key)
            if message is not None:
                self.close(message, "deleted by its sender", item.received)
            return
        kind = item.event.type
        if not is_message(kind):
            if item.party != HUB:
                via = "tak-read" if kind.startswith("b-t-f-r") else "tak-delivered"
                for ref in referenced_ids(item.event):
                    self.acknowledge(item.party, ref, item.received, via=via)
            return
        if item.party == HUB and not item.uid.startswith("thread-"):
            return  # the hub's own notices (escalations…) are information, not requests
        if item.key in self.messages or self.hub.rows.hotline(*item.key) is not None:
            return  # recorded already (a duplicate never gets this far but on replay)
        awaiting = (
            [c for c in item.event.dest_callsigns if not self.hub.directory.known(c)]
            if item.party != HUB
            else []
        )
        recipients = (
            tuple(sorted(set(item.audience) - {HUB}))
            if item.party == HUB
            else self._must_acknowledge(item, routes)
        )
        message = Message(
            key=item.key,
            sender=item.party,
            recipients=recipients,
            text=remarks_of(item.event),
            sent=item.received,
            deadlines={p: item.received + self._deadline_s(item.party, p) for p in recipients},
            seq=item.seq,
            stale=item.event.stale,
            digest=content_digest(item.event),
            conflict=thread_conflict(item.event) if item.party == HUB else None,
            message_id=message_id(item.event),
            audience=tuple(sorted(routes)),
            awaiting={c: item.received + self.default_deadline for c in awaiting},
            device=self._device_of(item),
        )
        if self.recorder is not None:
            message.ledger_seq = self.recorder.seq_of.get((item.party, item.uid, item.seq))
        self._save(message)
        reached = recipients or message.audience or awaiting
        if item.party != HUB and reached and not self._replaying:
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
            return tuple(sorted(routes))  # no conversation named: to everyone it reaches
        owner = read_name(item.party, conv, self.hub.parties).party
        if owner in (SHARED, item.party) or owner not in routes:
            return ()  # a room, or a group of the sender's
        return (owner,)  # one-to-one, to another party's contact

    def _callsign_seen(self, callsign: str, party: str, now: float) -> None:
        """A device reported `callsign`: messages waiting for it may have found their party."""
        for key in sorted(self.awaiting.pop(callsign, ())):
            message = self.messages.get(key)
            if message is None or callsign not in message.awaiting:
                continue
            stored = self.hub.held(key)
            routes = self.hub.route(stored, now) if stored is not None else {}
            if party != message.sender and party not in routes:
                # No agreement lets it reach that party: still waiting (and escalated on
                # time) for a device it may reach.
                self.awaiting.setdefault(callsign, set()).add(key)
                continue
            del message.awaiting[callsign]
            with self.hub.transaction():
                if party != message.sender and party not in message.recipients:
                    deadline = now + self._deadline_s(message.sender, party)
                    message.recipients = tuple(sorted({*message.recipients, party}))
                    message.audience = tuple(sorted({*message.audience, party}))
                    message.deadlines[party] = deadline
                    heapq.heappush(self._deadlines, (deadline, message.seq, party, key))
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
                self._save(message)

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
        (`SENDER::GeoChat…`) or its message id (`SENDER::<id>`, what ATAK's receipts carry);
        None when there is none or `party` is not one of its recipients (the same answer
        either way: whether someone else's message exists is not this party's business)."""
        key = read_name(party, ref, self.hub.parties)
        if key.party == SHARED:
            return None
        message = self.find(key)
        if message is None:
            held = self.hub.chat_key(key)  # a message id, of a message in the picture
            message = self.find(held) if held is not None else None
        if message is None or party not in message.recipients:
            return None
        return message

    def acknowledge(
        self, party: str, ref: str, now: float, via: str = "api", statement: Statement | None = None
    ) -> Message | None:
        message = self.resolve(party, ref)
        if message is None:
            return None
        first_read = via == "tak-read" and party not in message.read
        if first_read:
            message.read[party] = now
        if party in message.acks:
            if first_read:
                self._save(message)
            return message
        if self._replaying:
            message.acks[party] = now
            self._save(message)
            return message
        with self.hub.transaction():  # the fact, the row and the sender's notice: one commit
            if self.recorder is not None:  # recorded first: an ack the ledger refused never was
                link: dict[str, Any] = {"of": message.id, "via": via}
                if message.ledger_seq is not None:
                    link["of_ledger_seq"] = message.ledger_seq
                self.recorder.record_fact(
                    "ack", party, [party, message.sender], link, now, statement
                )
            message.acks[party] = now
            self._save(message)
            if message.sender != HUB:
                text = f"{party} acknowledged {message.key[1]}"
                self._tell_sender(message, text, now, "b-t-f-r")
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
        """No more deadlines for this message (recorded once, with its row)."""
        if message.closed is not None:
            return
        with self.hub.transaction():
            message.closed = now
            if self.recorder is not None and not self._replaying:
                self.recorder.record_fact(
                    "close",
                    HUB,
                    [message.sender, *message.recipients],
                    {"of": message.id, "reason": reason},
                    now,
                )
            self._save(message)

    # ---- deadlines ----------------------------------------------------------------------

    def tick(self, now: float | None = None) -> list[tuple[Message, str]]:
        """Escalate every (message, party) whose deadline passed without acknowledgement;
        let go of messages that went stale. Only due heap entries are looked at."""
        now = self.hub.clock() if now is None else now
        escalated = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _deadline, seq, party, key = heapq.heappop(self._deadlines)
            message = self.messages.get(key)
            if (
                message is None
                or message.seq != seq
                or party in message.acks
                or party in message.escalated
            ):
                continue
            callsign = party.removeprefix("callsign:")
            if callsign != party and callsign not in message.awaiting:
                continue  # its device has connected meanwhile
            message.escalated.add(party)
            escalated.append((message, party))
            with self.hub.transaction():
                if callsign != party:
                    self._escalate_unseen(message, callsign, now)
                else:
                    self._escalate(message, party, now)
                self._save(message)
        while self._stales and self._stales[0][0] <= now:
            _stale, seq, key = heapq.heappop(self._stales)
            held = self.messages.get(key)
            if held is not None and held.seq == seq:
                del self.messages[key]
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
                f" connected within {round(message.awaiting[callsign] - message.sent)} s;"
                f" {message.key[1]} waits"
            )
            self._tell_sender(message, text, now, "b-t-f")

    # ---- threads the hub opens ----------------------------------------------------------

    def open_thread(self, parties: list[str], text: str, conflict: str | None = None) -> Message:
        """A hub message every party must acknowledge (e.g. a conflict between them)."""
        now = self.hub.clock()
        uid = f"thread-{uuid.uuid4().hex[:12]}"
        extra = f'<csky_thread conflict="{quote(conflict)}"/>' if conflict else ""
        event = chat_event(uid, text, now, parties, extra)
        item = self.hub.publish_from_hub(event, Category.HOTLINE, parties)
        message = self.find(item.key)
        assert message is not None  # observed (and saved) as it was published
        return message

    # ---- history ------------------------------------------------------------------------

    def history_page(
        self, party: str, other: str | None = None, before: int | None = None, limit: int = 100
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Up to `limit` messages `party` sent or received (with `other`, if given) sent
        before the message with store sequence `before`, oldest first; and the cursor of
        the next older page (None when this is the last)."""
        rows = self.hub.rows.hotline_page(party, other, before, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        now = self.hub.clock()
        read = (self._read(body) for _seq, body in reversed(rows))
        page = [message.to_json(now) for message in read if message is not None]
        return page, (rows[-1][0] if more else None)

    def history(self, party: str, other: str | None = None) -> list[dict[str, Any]]:
        """The newest page of `history_page`."""
        return self.history_page(party, other)[0]

    def records(self, party: str) -> list[Message]:
        """Every message `party` sent or received, oldest first (paged from the store)."""
        out: list[Message] = []
        before: int | None = None
        while True:
            rows = self.hub.rows.hotline_page(party, None, before, 500)
            out.extend(m for _seq, body in rows if (m := self._read(body)) is not None)
            if len(rows) < 500:
                return out[::-1]
            before = rows[-1][0]
