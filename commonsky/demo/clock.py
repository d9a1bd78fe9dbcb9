"""The scenario clock: the whole hub runs on it, so `--speed` compresses every kind of time.

Staleness, acknowledgement deadlines, validity windows, ballistic flight times and warning
expiry all follow the same clock, which runs `rate` times faster than the wall clock and is
continuous: `relax()` drops it back to real time (after the scenarios, while the map is
served) without a jump.
"""

from __future__ import annotations

import time


class ScenarioClock:
    scenario = True  # the hub says so to the map page (/api/me "clock")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._wall0 = time.time()
        self._virtual0 = self._wall0

    def __call__(self) -> float:
        return self._virtual0 + (time.time() - self._wall0) * self.rate

    def relax(self) -> None:
        now = self()
        self._wall0, self._virtual0, self.rate = time.time(), now, 1.0

    def wall_delay(self, until: float) -> float:
        """Real seconds until the clock reads `until` (0 if it already has)."""
        return max(0.0, (until - self()) / self.rate)
