"""The hotline: party-to-party messages that must be received, acknowledged and recorded.

A message is a GeoChat (`b-t-f`) from a TAK client or the HTTP API. The hub stores and
records it before relaying (a durable item), and answers the sender with its own receipt
(`b-t-f-d` from HUB, carrying the ledger sequence). A recipient acknowledges with a GeoChat
read receipt (`b-t-f-r`, naming the message in `<link uid>`, `<__chatreceipt messageId>` or
`<__chat messageId>`) or through the API; the acknowledgement is recorded and the sender is
told. Each recipient party has a deadline (`ack_deadline_s` of the agreement, else
`timeout_hotline_ack_s`); when it passes unacknowledged the hub re-sends the message to that
party, tells the sender, and records the escalation — once per message and party.

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

import hashlib
import heapq
import logging
import uuid
from typing import Any

import msgspec

from commonsky.engines.record import LedgerRecorder, Statement
from commonsky.errors import AlreadyRecorded, RemoteProtocolError
from commonsky.hub.core import Hub
from commonsky.model import HUB, Category, CotEvent, Disclosure, Item, Point
from commonsky.policy import SEPARATOR
from commonsky.protocol.cot import detail_tree, quote
from commonsky.store import HotlineRow

log = logging.getLogger("commonsky.hotline")
_INDEXED = "hotline_index_v1"  # store meta key: hotline rows are kept for every message


class Message(msgspec.Struct, kw_only=True):
    key: tuple[str, str]  # (sender party, uid in the sender's namespace)
    sender: str
    recipients: tuple[str, ...]
    text: str
    sent: float
    deadlines: dict[str, float]
    seq: int = 0  # the message item's store sequence number (history cursors use it)
    stale: float = float("inf")
    digest: str = ""  # of what makes a resend the same message (see `content_digest`)
    ledger_seq: int | None = None
    acks: dict[str, float] = {}
    escalated: set[str] = set()
    conflict: str | None = None

    @property
    def id(self) -> str:
        return f"{self.key[0]}{SEPARATOR}{self.key[1]}"

    @property
    def open(self) -> bool:
        return any(p not in self.acks for p in self.recipients)

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "seq": self.seq,
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


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Message).decode


def is_message(cot_type: str) -> bool:
    """A GeoChat message, as opposed to a delivery or read receipt about one."""
    return cot_type.startswith("b-t-f") and not cot_type.startswith(("b-t-f-r", "b-t-f-d"))


def content_digest(event: CotEvent) -> str:
    """What a message says and to whom: its type, text and addressees (not its times or
    client decorations, which a client's retry may change)."""
    parts = [event.type, remarks_of(event), *sorted(event.dest_parties), "\x00"]
    parts += sorted(event.dest_callsigns)
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


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
        self.messages: dict[tuple[str, str], Message] = {}  # the open ones
        self.default_deadline = hub.settings.get_float("timeout_hotline_ack_s")
        # (deadline, store seq, party, key) of open messages; (stale, seq, key) likewise.
        self._deadlines: list[tuple[float, int, str, tuple[str, str]]] = []
        self._stales: list[tuple[float, int, tuple[str, str]]] = []
        self._replaying = False
        hub.validators[Category.HOTLINE] = self.validate
        hub.observers.append(self.observe)

    def rebuild(self) -> None:
        """Hold the open messages again after a restart (read from their rows, not replayed).

        A store written before hotline rows existed is indexed once, by replaying its
        hotline items."""
        store = self.hub.store
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
                self.hub.store.set_meta(_INDEXED, "1")
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
        heapq.heappush(self._stales, (message.stale, message.seq, message.key))

    def _save(self, message: Message) -> None:
        self.hub.store.put_hotline(
            HotlineRow(
                seq=message.seq,
                sender=message.sender,
                uid=message.key[1],
                parties=(message.sender, *message.recipients),
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
            body = self.hub.store.hotline(*key)
            message = self._read(body) if body is not None else None
        return message

    def _replay(self, item: Item) -> None:
        if item.category is Category.HOTLINE:
            self.observe(item, self.hub.route(item, item.received))

    # ---- intake -------------------------------------------------------------------------

    def validate(self, party: str, event: CotEvent) -> None:
        """Before anything is stored: a recorded message is never rewritten."""
        if not is_message(event.type):
            return
        known = self.find((party, event.uid))
        if known is None:
            return
        if known.digest == content_digest(event):
            raise AlreadyRecorded(known.seq)
        raise RemoteProtocolError(
            "hotline_immutable",
            f"hotline message {event.uid[:60]!r} is already recorded with other content "
            "(a recorded message is never rewritten; send a correction as a new message)",
        )

    def observe(self, item: Item, routes: dict[str, Disclosure]) -> None:
        if item.category is not Category.HOTLINE:
            return
        kind = item.event.type
        if not is_message(kind):
            if item.party != HUB and kind.startswith("b-t-f-r"):
                for ref in referenced_ids(item.event):
                    self.acknowledge(item.party, ref, item.received, via="tak")
            return
        if item.party == HUB and not item.uid.startswith("thread-"):
            return  # the hub's own notices (escalations…) are information, not requests
        if item.key in self.messages or self.hub.store.hotline(*item.key) is not None:
            return  # recorded already (a duplicate never gets this far but on replay)
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
            key=item.key,
            sender=item.party,
            recipients=recipients,
            text=remarks_of(item.event),
            sent=item.received,
            deadlines=deadlines,
            seq=item.seq,
            stale=item.event.stale,
            digest=content_digest(item.event),
            conflict=thread_conflict(item.event) if item.party == HUB else None,
        )
        if self.recorder is not None:
            message.ledger_seq = self.recorder.seq_of.get((item.party, item.uid, item.seq))
        self._save(message)
        if item.party != HUB and recipients and not self._replaying:
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
        """The message a party's reference names, as that party saw it (`SENDER::uid`);
        None when there is none or `party` is not one of its recipients (the same answer
        either way: whether someone else's message exists is not this party's business)."""
        if SEPARATOR not in ref:
            return None
        sender, _, uid = ref.partition(SEPARATOR)
        message = self.find((sender, uid))
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
            message.escalated.add(party)
            escalated.append((message, party))
            with self.hub.transaction():
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
            )
            self.hub.publish_from_hub(event, Category.HOTLINE, [message.sender])

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
        rows = self.hub.store.hotline_page(party, other, before, limit + 1)
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
            rows = self.hub.store.hotline_page(party, None, before, 500)
            out.extend(m for _seq, body in rows if (m := self._read(body)) is not None)
            if len(rows) < 500:
                return out[::-1]
            before = rows[-1][0]


def thread_conflict(event: CotEvent) -> str | None:
    """The conflict a hub thread is about (`<csky_thread conflict=…>`), if any."""
    if "csky_thread" not in event.detail:
        return None
    node = detail_tree(event.detail).find("csky_thread")
    return node.get("conflict") if node is not None else None
