"""Log lines with a rate limit, per reason and per connection (or address, or party).

A hostile peer must not be able to fill the disk or drown the operator's log: 200,000
refused messages or one locked-out client retrying must not become 200,000 lines. Each
(reason, key) may write `per_key` lines per `window_s`, and each reason `per_reason` lines
per window over all keys; what goes over is counted, and said in one line — "… (N more
like this suppressed in the last 60 s)" — when that reason or key next writes, or when
`flush` runs (the hub's housekeeping calls it), so nothing is hidden, only summarised.
Counters (the metrics) still count every event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_KEYS = 10_000  # (reason, key) windows kept; the oldest go first (with their summary)


@dataclass(slots=True)
class _Window:
    logger: logging.Logger
    level: int
    started: float
    lines: int = 0
    suppressed: int = 0


class RateLimitedLog:
    def __init__(
        self,
        per_key: int = 5,
        per_reason: int = 50,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_key = per_key
        self.per_reason = per_reason
        self.window_s = window_s
        self.clock = clock
        self._keys: dict[tuple[str, str], _Window] = {}
        self._reasons: dict[str, _Window] = {}

    def log(
        self,
        logger: logging.Logger,
        level: int,
        reason: str,
        key: str,
        msg: str,
        *args: object,
        exc_info: bool = False,
    ) -> bool:
        """Write the line unless its reason or key is over its rate; True if written.
        `exc_info`: with the traceback of the exception being handled (our own bug: the
        first lines of a window show where; the rest are counted, not repeated)."""
        if not logger.isEnabledFor(level):
            return False
        now = self.clock()
        by_reason = self._window(self._reasons, reason, logger, level, now, f"{reason}")
        by_key = self._window(self._keys, (reason, key), logger, level, now, f"{reason} {key}")
        if by_key.lines >= self.per_key or by_reason.lines >= self.per_reason:
            by_key.suppressed += 1
            by_reason.suppressed += 1
            return False
        by_key.lines += 1
        by_reason.lines += 1
        logger.log(level, msg, *args, exc_info=exc_info)
        if len(self._keys) > MAX_KEYS:
            oldest = next(iter(self._keys))
            self._summary(self._keys.pop(oldest), f"{oldest[0]} {oldest[1]}")
        return True

    def _window(
        self,
        table: dict[Any, _Window],
        key: Any,
        logger: logging.Logger,
        level: int,
        now: float,
        label: str,
    ) -> _Window:
        window = table.get(key)
        if window is not None and now - window.started < self.window_s:
            return window
        if window is not None:
            self._summary(window, label)
            del table[key]  # re-inserted last: the dict stays in order of windows opened
        window = table[key] = _Window(logger, level, now)
        return window

    def _summary(self, window: _Window, label: str) -> None:
        if window.suppressed:
            window.logger.log(
                window.level,
                "(%d more %s lines suppressed in the last %.0f s)",
                window.suppressed,
                label,
                self.window_s,
            )

    def flush(self) -> None:
        """Close every window that has ended, saying what each suppressed."""
        now = self.clock()
        tables: tuple[dict[Any, _Window], ...] = (self._reasons, self._keys)
        for table in tables:
            ended = [k for k, w in table.items() if now - w.started >= self.window_s]
            for key in ended:
                label = key if isinstance(key, str) else f"{key[0]} {key[1]}"
                self._summary(table.pop(key), label)
