"""One TAK connection's protocol state, sans-IO: bytes and a clock in, events and bytes out.

Everything that decides what happens on a TAK connection apart from the hub's verdict on an
item lives here (h11's habit: "everything that affects the state machine must live in this
file"): the stream's framing, negotiation and ping/pong (`stream.py`), the idle and
partial-event timers (`liveness.py`), and the refusal count that ends a connection
(`limit_refusals_before_close`: bad input, not the hub's verdicts). It never touches a
socket, a task or a clock: every call takes `now` (monotonic seconds, the timers' clock)
and, where a reply is stamped, `cot_time` (the hub's clock, epoch seconds), so timeout
tests run on a fake clock.

The adapter (`hub/listeners.py`) does only this:

    write(session.start(cot_time))                # the TAK v1 offer
    while session.expired(now) is None:
        data = read(timeout=session.deadline() - now)
        for event in session.receive_data(data, now, cot_time):
            EventReceived   -> hub.accept(...); on RemoteProtocolError: session.refuse(...)
            MessageRefused  -> session.refused(event) -> close reason or None
        write(session.data_to_send())
    … and after each write that left without push-back: session.sent(now)
"""

from __future__ import annotations

from dataclasses import dataclass

from commonsky.errors import VERDICTS, LocalProtocolError
from commonsky.protocol.cot import DEFAULT_LIMITS, XmlLimits
from commonsky.protocol.liveness import Liveness
from commonsky.protocol.stream import (
    EventReceived,
    MessageRefused,
    Mode,
    StreamEvent,
    TakStream,
)

__all__ = [
    "TIMEOUT_SETTING",
    "EventReceived",
    "MessageRefused",
    "Mode",
    "SessionLimits",
    "TakSession",
]

# What the operator reads when a timer closes a connection: the setting that decided it.
TIMEOUT_SETTING = {
    "partial_event": "timeout_partial_event_s",
    "idle": "timeout_idle_s: nothing received or sent",
}


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """The settings a session enforces (`settings_fields.py` names each)."""

    idle_s: float  # timeout_idle_s
    partial_s: float  # timeout_partial_event_s
    refusals: int  # limit_refusals_before_close


class TakSession:
    """The server side of one TAK stream (`role="client"` for our own clients)."""

    def __init__(
        self,
        limits: SessionLimits,
        now: float,
        xml: XmlLimits = DEFAULT_LIMITS,
        role: str = "server",
    ) -> None:
        self.limits = limits
        self.stream = TakStream(xml, role)
        self.liveness = Liveness.start(now, limits.idle_s, limits.partial_s)
        self.refusals = 0
        self._started = False

    @property
    def mode(self) -> Mode:
        """The wire form both directions speak now (XML until TAK v1 is negotiated)."""
        return self.stream.mode

    def start(self, cot_time: float) -> bytes:
        """The server's greeting (the TAK protocol versions it speaks); call once, first."""
        if self._started:
            raise LocalProtocolError("session started twice")
        self._started = True
        return self.stream.offer(cot_time)

    def receive_data(self, data: bytes, now: float, cot_time: float) -> list[StreamEvent]:
        """Feed what arrived at `now`. Replies the session owes (pong, negotiation) wait in
        `data_to_send`; refusals come back as `MessageRefused` for `refused` to count."""
        completed = self.stream.completed
        events = self.stream.receive_data(data, cot_time)
        self.liveness.heard(now, self.stream.partial, self.stream.completed > completed)
        return events

    def data_to_send(self) -> bytes:
        return self.stream.data_to_send()

    def sent(self, now: float) -> None:
        """Bytes left for the peer at `now` without the socket pushing back (idle rule)."""
        self.liveness.sent(now)

    def deadline(self) -> float:
        """The earliest `now` at which `expired` may say yes: how long the adapter may wait."""
        return self.liveness.deadline()

    def expired(self, now: float) -> str | None:
        """`"partial_event"` or `"idle"` when a timer closes the connection at `now`."""
        return self.liveness.expired(now)

    def refused(self, refusal: MessageRefused) -> str | None:
        """Count one refused message (the stream's or the hub's). Returns the reason to
        close with — the refusal's own when it is fatal, `"refusals"` once
        `limit_refusals_before_close` is reached — or None to go on. The hub's verdicts on
        well-formed messages (`errors.VERDICTS`: another party's item, a quota) never close."""
        if refusal.fatal:
            return refusal.reason
        if refusal.reason in VERDICTS:
            return None
        self.refusals += 1
        if self.refusals >= self.limits.refusals:
            return "refusals"
        return None
