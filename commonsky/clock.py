"""A compressed clock: `--speed` for a whole hub, and for several hubs in step.

Staleness, acknowledgement deadlines, validity windows, ballistic flight times and warning
expiry all follow the hub's clock. A demo runs it `rate` times faster than the wall clock
between two moments and at real speed outside them, and the clock is continuous: it never
jumps. Several processes given the same (`rate`, `origin`, `until`) read the same time at
the same instant, which is how the hubs of `commonsky demo --federated` — each its own
process — share one scenario clock (settings `clock_rate`, `clock_origin`, `clock_until`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class ScenarioClock:
    """Epoch seconds (float) that run at real speed until the wall clock reads `origin`,
    then `rate` times faster until they read `until` (epoch seconds on this clock; None:
    never), then at real speed again."""

    scenario = True  # the hub says so to the map page (/api/me "clock")

    def __init__(
        self, rate: float, origin: float | None = None, until: float | None = None
    ) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"clock rate {rate!r}: must be a positive number")
        self._rate = rate
        self._wall0 = time.time() if origin is None else origin
        self._virtual0 = self._wall0
        self._until = math.inf if until is None else max(until, self._wall0)

    @property
    def origin(self) -> float:
        """Wall-clock epoch seconds at which the compressed span starts."""
        return self._wall0

    @property
    def until(self) -> float | None:
        """The reading at which the clock goes back to real speed (None: never)."""
        return None if math.isinf(self._until) else self._until

    @property
    def rate(self) -> float:
        """How fast the clock runs now (1.0 outside the compressed span)."""
        wall = time.time()
        return self._rate if self._wall0 <= wall < self._wall_of(self._until) else 1.0

    def _wall_of(self, virtual: float) -> float:
        return self._wall0 + (virtual - self._virtual0) / self._rate

    def _at(self, wall: float) -> float:
        if wall < self._wall0:
            return self._virtual0 - (self._wall0 - wall)
        virtual = self._virtual0 + (wall - self._wall0) * self._rate
        if virtual <= self._until:
            return virtual
        return self._until + (wall - self._wall_of(self._until))

    def __call__(self) -> float:
        return self._at(time.time())

    def relax(self) -> None:
        """Run at real speed from now on (after the scenarios, while the map is served)."""
        now = self()
        self._wall0, self._virtual0, self._rate = time.time(), now, 1.0
        self._until = math.inf

    def wall_delay(self, until: float) -> float:
        """Real seconds until the clock reads `until` (0 if it already has)."""
        wall = time.time()
        now = self._at(wall)
        if until <= now:
            return 0.0
        if wall < self._wall0:
            if until <= self._virtual0:
                return until - now
            return (self._wall0 - wall) + self._delay_from(self._virtual0, until)
        return self._delay_from(now, until)

    def _delay_from(self, now: float, until: float) -> float:
        """Real seconds from the moment the (running) clock reads `now` to `until`."""
        if now >= self._until:
            return until - now
        if until <= self._until:
            return (until - now) / self._rate
        return (self._until - now) / self._rate + (until - self._until)


def hub_clock(rate: float, origin: float, until: float) -> Callable[[], float]:
    """The clock a hub runs on, from its settings: `time.time` unless `rate` is not 1;
    `origin` 0 is the moment the hub starts, `until` 0 is never."""
    if rate == 1.0:
        return time.time
    return ScenarioClock(rate, origin or None, until or None)
