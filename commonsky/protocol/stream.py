"""The TAK streaming protocol as a state machine: bytes in, events out, bytes back.

Like h11, this object owns every rule of the wire and never touches a socket or a clock:
the I/O adapter feeds it what arrived (`receive_data`), acts on the events it returns, and
writes `data_to_send()`. It starts in CoT XML mode. The server offers TAK Protocol v1 by
sending `t-x-takp-v`; a client asking `t-x-takp-q` for version 1 gets `t-x-takp-r` (in
XML) and from then on both directions are framed protobuf: 0xbf, varint length, TakMessage.
Pings (`t-x-c-t`) are answered here with pongs (`t-x-c-t-r`) and never reach the hub. A
TakMessage without a `cotEvent` (a `takControl` alone, or empty) is valid and carries no
event: taken off the wire, neither relayed nor refused (`takv1.read_proto`).

Framing errors are survivable in XML mode (skip to the next `</event>`) but fatal in
protobuf mode, where a bad length means the stream has lost its boundaries. Protobuf that
arrives before any negotiation (0xbf where an XML event should start: pytak with
`TAK_PROTO=1` does this) is fatal too, as `proto_not_negotiated`: every byte after it is a
protocol we did not agree to.

Bytes between events — whitespace, NULs, a complete `<?xml …?>` declaration, TAK's
`<auth>` message — are not part of any event: `partial` is true only while an event (or
protobuf frame) has begun and not ended, which is what the adapter's
`timeout_partial_event_s` times. ATAK, WinTAK and iTAK send `<auth><cot username password
uid/></auth>` as their first bytes when the connection has a user name and password (as
after enrollment); identity comes from the connection (listener or certificate), never from
content, so it is skipped unread — never an event, never relayed, never quoted in a log (it
holds a password).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from commonsky.errors import LocalProtocolError, RemoteProtocolError
from commonsky.model import CotEvent
from commonsky.protocol.cot import DEFAULT_LIMITS, XmlLimits, control_event, parse_event
from commonsky.protocol.render import MAGIC as MAGIC
from commonsky.protocol.render import encode_varint as encode_varint
from commonsky.protocol.render import frame_proto as frame_proto
from commonsky.protocol.render import render
from commonsky.protocol.takv1 import read_proto

_END = b"</event>"
#: A TAK protobuf message longer than limit_message_bytes is skipped by its length, up to this
#: many times the limit; a longer length is taken as framing lost (garbage read as a length
#: would otherwise swallow the messages after it), and the connection is closed.
_SKIP_FACTOR = 16
_DECLARATION = b"<?xml"
_DECLARATION_MAX = 256  # longer than any real one; bounds the scan of a hostile buffer
_FILLER = b" \t\r\n\x00"
_AUTH = (b"<auth>", b"<auth ")
_AUTH_END = b"</auth>"
_AUTH_MAX = 1024  # TAK Server's own bound on the auth message; bounds the scan too
PROTOCOL_VERSION = 1


def _filler_end(buffer: bytearray | bytes) -> int:
    """Index of the first byte that belongs to an event: leading whitespace, NULs, complete
    XML declarations and complete `<auth>` messages are what clients put between events."""
    index = 0
    size = len(buffer)
    while index < size:
        if buffer[index] in _FILLER:
            index += 1
        elif buffer.startswith(_DECLARATION, index) and (
            index + len(_DECLARATION) == size or buffer[index + len(_DECLARATION)] in _FILLER
        ):
            close = buffer.find(b"?>", index, index + _DECLARATION_MAX)
            if close < 0:
                return index  # a declaration still arriving: part of the next event
            index = close + 2
        elif buffer.startswith(_AUTH, index):
            close = buffer.find(_AUTH_END, index, index + _AUTH_MAX)
            if close < 0:
                return index  # still arriving (or no auth message: refused as an event)
            index = close + len(_AUTH_END)
        else:
            return index
    return index


class Mode(enum.Enum):
    XML = "xml"
    PROTO = "proto"


@dataclass(frozen=True, slots=True)
class EventReceived:
    event: CotEvent


@dataclass(frozen=True, slots=True)
class MessageRefused:
    reason: str
    message: str
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class ProtocolSwitched:
    mode: Mode


StreamEvent = EventReceived | MessageRefused | ProtocolSwitched


def _decode_varint(buffer: bytearray | bytes, start: int) -> tuple[int, int] | None:
    """(value, index after it), or None when the varint is not complete yet."""
    value = 0
    shift = 0
    index = start
    while index < len(buffer):
        byte = buffer[index]
        value |= (byte & 0x7F) << shift
        index += 1
        if not byte & 0x80:
            return value, index
        shift += 7
        if shift > 63:
            raise RemoteProtocolError("bad_length", "varint length longer than 64 bits")
    return None


def _negotiation(cot_type: str, control: str, now: float) -> CotEvent:
    """A `t-x-takp-*` message: the same carrier, one TakControl child."""
    detail = f"<TakControl>{control}</TakControl>"
    return control_event("protouid", cot_type, now, detail, stale_s=60.0, how="m-g")


def version_offer(now: float) -> CotEvent:
    return _negotiation("t-x-takp-v", f'<TakProtocolSupport version="{PROTOCOL_VERSION}"/>', now)


def version_response(now: float, accepted: bool) -> CotEvent:
    status = "true" if accepted else "false"
    return _negotiation("t-x-takp-r", f'<TakResponse status="{status}"/>', now)


def version_request(now: float) -> CotEvent:
    return _negotiation("t-x-takp-q", f'<TakRequest version="{PROTOCOL_VERSION}"/>', now)


def pong(now: float) -> CotEvent:
    return control_event("takPong", "t-x-c-t-r", now, how="h-g-i-g-o")


class TakStream:
    """One side of a TAK stream. `role` is "server" (answers negotiation) or "client"."""

    def __init__(self, limits: XmlLimits = DEFAULT_LIMITS, role: str = "server") -> None:
        if role not in ("server", "client"):
            raise LocalProtocolError(f"unknown role {role!r}")
        self.limits = limits
        self.role = role
        self.mode = Mode.XML
        self._buffer = bytearray()
        self._skipping = False  # dropping an oversized XML event up to its end tag
        self._skip_bytes = 0  # what is left to drop of an oversized protobuf message
        self._out = bytearray()
        self._closed = False
        self._awaiting_response = False
        self.completed = 0  # messages taken off the wire so far (events, pings, refusals)

    # ---- inbound ------------------------------------------------------------------------

    @property
    def partial(self) -> bool:
        """Whether a message has begun and not ended (bytes between events do not count);
        the adapter times out a sender that stalls in the middle of one."""
        if self.mode is Mode.PROTO or self._skipping:
            return bool(self._buffer or self._skip_bytes)
        return _filler_end(self._buffer) < len(self._buffer)

    def receive_data(self, data: bytes, now: float) -> list[StreamEvent]:
        """Feed what arrived. `now` only stamps the replies we make (pong, negotiation)."""
        if self._closed:
            raise LocalProtocolError("receive_data after a fatal error")
        self._buffer += data
        events: list[StreamEvent] = []
        while not self._closed:
            progressed = (
                self._next_xml(events, now)
                if self.mode is Mode.XML
                else self._next_proto(events, now)
            )
            if not progressed:
                break
        return events

    def _next_xml(self, events: list[StreamEvent], now: float) -> bool:
        buffer = self._buffer
        if not buffer:  # (what follows finds no end tag and holds nothing: issue #19)
            return False
        start = 0
        # (an event starts with `<e`, which is neither filler nor a declaration: the scan
        # for them is skipped)
        if not self._skipping and not buffer.startswith(b"<e"):
            start = _filler_end(buffer)
            if start < len(buffer) and buffer[start] == MAGIC:
                # 0xbf never starts a UTF-8 character, so this is TAK protobuf framing.
                self._fatal(
                    events,
                    "proto_not_negotiated",
                    "TAK protobuf (0xbf) before any t-x-takp-q negotiation; this hub speaks "
                    "CoT XML until the client asks for TAK Protocol v1",
                )
                return False
        end = buffer.find(_END, start)
        if end < 0:
            if len(buffer) > self.limits.message_bytes:
                # Keep only a tail long enough to spot the end tag when it comes.
                del buffer[: len(buffer) - len(_END)]
                if not self._skipping:
                    self._skipping = True
                    events.append(
                        MessageRefused(
                            "oversized",
                            f"event longer than {self.limits.message_bytes} bytes "
                            "(limit_message_bytes); skipped to its end",
                        )
                    )
            return False
        # What precedes the event (whitespace, its XML declarations) is not parsed: the
        # event must be UTF-8 whatever a declaration says, and a client that sends the next
        # event's declaration early must not make it a document with two.
        frame = bytes(buffer[start : end + len(_END)])
        del buffer[: end + len(_END)]
        self.completed += 1
        if self._skipping:
            self._skipping = False
            return True
        try:
            event = parse_event(frame, self.limits)
        except RemoteProtocolError as exc:
            events.append(MessageRefused(exc.reason, str(exc)))
            return True
        self._handle(event, events, now)
        return True

    def _next_proto(self, events: list[StreamEvent], now: float) -> bool:
        buffer = self._buffer
        if not buffer:
            return False
        if self._skip_bytes:  # (the rest of an oversized message, never held)
            dropped = min(self._skip_bytes, len(buffer))
            del buffer[:dropped]
            self._skip_bytes -= dropped
            if self._skip_bytes:
                return False
            self.completed += 1
            return True
        if buffer[0] != MAGIC:
            self._fatal(events, "bad_magic", f"expected 0xbf, got {buffer[0]:#04x}")
            return False
        try:
            decoded = _decode_varint(buffer, 1)
        except RemoteProtocolError as exc:
            self._fatal(events, exc.reason, str(exc))
            return False
        if decoded is None:
            return False
        length, start = decoded
        if length > _SKIP_FACTOR * self.limits.message_bytes:
            self._fatal(
                events,
                "oversized",
                f"TAK protobuf length {length} is no message (over {_SKIP_FACTOR} x "
                "limit_message_bytes): its framing is lost",
            )
            return False
        if length > self.limits.message_bytes:
            # Its length frames it: the message is dropped as it arrives and the next one
            # read (a sender stalling inside it is closed by timeout_partial_event_s).
            del buffer[:start]
            self._skip_bytes = length
            events.append(
                MessageRefused(
                    "oversized",
                    f"TAK protobuf message of {length} bytes exceeds limit_message_bytes "
                    f"({self.limits.message_bytes}); skipped",
                )
            )
            return True
        if len(buffer) < start + length:
            return False
        payload = bytes(buffer[start : start + length])
        del buffer[: start + length]
        self.completed += 1
        try:
            event = read_proto(payload, self.limits)
        except RemoteProtocolError as exc:
            events.append(MessageRefused(exc.reason, str(exc)))
            return True
        if event is not None:  # (None: a valid message with no event, `takv1._decode`)
            self._handle(event, events, now)
        return True

    def _fatal(self, events: list[StreamEvent], reason: str, message: str) -> None:
        self._closed = True
        self._buffer.clear()
        events.append(MessageRefused(reason, message, fatal=True))

    def _handle(self, event: CotEvent, events: list[StreamEvent], now: float) -> None:
        kind = event.type
        if not kind.startswith("t-x-"):  # (an item: none of the types below)
            events.append(EventReceived(event))
        elif kind == "t-x-c-t":
            self._out += self.encode(pong(now))
        elif kind == "t-x-c-t-r":
            pass  # a pong to our own ping: proof of life only
        elif kind == "t-x-takp-q" and self.role == "server":
            accepted = f'version="{PROTOCOL_VERSION}"' in event.detail and self.mode is Mode.XML
            self._out += self.encode(version_response(now, accepted))
            if accepted:
                self.mode = Mode.PROTO
                events.append(ProtocolSwitched(Mode.PROTO))
        elif kind == "t-x-takp-r" and self.role == "client" and self._awaiting_response:
            self._awaiting_response = False
            if 'status="true"' in event.detail:
                self.mode = Mode.PROTO
                events.append(ProtocolSwitched(Mode.PROTO))
        elif kind.startswith("t-x-takp"):
            pass  # offers and stray negotiation messages are not items
        else:
            events.append(EventReceived(event))

    # ---- outbound -----------------------------------------------------------------------

    def encode(self, event: CotEvent) -> bytes:
        """Wire bytes for one event in the current mode (`render.render`)."""
        return render(event, self.mode.value)

    def offer(self, now: float) -> bytes:
        """Server greeting: the TAK protocol versions we speak."""
        return self.encode(version_offer(now))

    def request_protobuf(self, now: float) -> bytes:
        """Client side: ask the server for TAK Protocol v1."""
        self._awaiting_response = True
        return self.encode(version_request(now))

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out
