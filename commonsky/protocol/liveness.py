"""When a TAK connection is closed for silence: a sans-IO timer, `now` passed in.

Two rules, each with its setting:

- **idle** (`timeout_idle_s`): nothing has moved in either direction for that long. Traffic
  the hub writes to the client counts as movement as long as it leaves (the write buffer is
  not pushed back): a stationary ATAK reports every 180 s and pings only after 15 s without
  hearing anything (`commoncommo/core/impl/streamingsocketmanagement.cpp:25-33`), so a
  client that is being sent traffic says nothing for minutes and is alive all the same; TAK
  Server does not drop it either. A dead peer stops draining what it is sent, the write
  buffer fills and pushes back, and then only what the client sends keeps it open.
- **partial** (`timeout_partial_event_s`): a message has begun and not ended for that long.
  The clock starts with the first byte of each unfinished message and restarts whenever a
  message completes, so a client that ends every event with a newline, or sends the next
  event's `<?xml …?>` ahead of it, is never taken for a slow sender.

The adapter reports what happened (`heard`, `sent`), asks `deadline()` how long it may wait
for input, and `expired(now)` whether to close and why (the reason is the metric label).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Liveness:
    idle_s: float
    partial_s: float
    last_heard: float  # when bytes last arrived
    last_sent: float = float("-inf")  # when bytes last left without the socket pushing back
    partial_since: float | None = None  # when the unfinished message began

    @classmethod
    def start(cls, now: float, idle_s: float, partial_s: float) -> Liveness:
        return cls(idle_s=idle_s, partial_s=partial_s, last_heard=now)

    def heard(self, now: float, partial: bool, completed: bool) -> None:
        """Bytes arrived. `partial`: a message is unfinished after them; `completed`: at least
        one message ended in them (so an unfinished one began in them too)."""
        self.last_heard = now
        if not partial:
            self.partial_since = None
        elif self.partial_since is None or completed:
            self.partial_since = now

    def sent(self, now: float) -> None:
        """Bytes were written to a socket that was keeping up."""
        self.last_sent = now

    def deadline(self) -> float:
        """The earliest time at which `expired` may say yes (the adapter waits until then)."""
        idle_at = max(self.last_heard, self.last_sent) + self.idle_s
        if self.partial_since is None:
            return idle_at
        return min(idle_at, self.partial_since + self.partial_s)

    def expired(self, now: float) -> str | None:
        """`"partial_event"` or `"idle"` when the connection should close now, else None."""
        if self.partial_since is not None and now >= self.partial_since + self.partial_s:
            return "partial_event"
        if now >= max(self.last_heard, self.last_sent) + self.idle_s:
            return "idle"
        return None
