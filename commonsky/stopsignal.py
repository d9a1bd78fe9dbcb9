"""Ctrl-C and SIGTERM for the long-running commands (`serve`, `demo`): a request to stop,
from the command's first line to its last.

Python's own SIGINT handling raises KeyboardInterrupt wherever the main thread happens to be,
and SIGTERM's default kills the process outright. During a hub's start neither is a clean
stop: the interrupt can land in an import (a traceback) or in a finalizer or callback, where
Python reports it as "Exception ignored" and carries on — the hub then serves as if the
operator had never asked it to stop (seen: Ctrl-C 0.3 s after `commonsky serve`). So the
signal is only noted here, never raised into the running code: before the event loop runs,
the command checks `requested` and leaves; once it runs, the loop's `stop` event is set (at
once, if the signal came earlier), and the hub stops as it does for any stop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _handled() -> tuple[signal.Signals, ...]:
    """`SIGNALS` but one the process was started ignoring: a job a shell started in the
    background (`&`) ignores SIGINT, and keeps ignoring it here as it did before (POSIX
    shells' rule, which `nohup` relies on too)."""
    return tuple(sig for sig in SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN)


log = logging.getLogger("commonsky.server")


class StopRequest:
    """SIGINT and SIGTERM noted from `install()` on; handed to a loop's event by `attach`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._signals: tuple[signal.Signals, ...] = _handled()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def install(self) -> None:
        """Note SIGINT and SIGTERM from now on (main thread only, as `signal` requires)."""
        self._signals = _handled()
        for sig in self._signals:
            signal.signal(sig, self._noted)

    def stopped_early(self) -> bool:
        """True (and logged) when a signal came before the command opened anything."""
        if self.signum is None:
            return False
        log.info("%s before the start: stopped", signal.Signals(self.signum).name)
        return True

    def _noted(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def _stopping(self, signum: int) -> None:
        """(In the loop, where logging is safe: the operator sees the stop begin, before
        connections are given timeout_shutdown_s to flush.)"""
        if self._stop is not None and not self._stop.is_set():
            log.info("%s: stopping", signal.Signals(signum).name)
        self._noted(signum, None)

    def attach(self, stop: asyncio.Event) -> None:
        """From now on a signal sets `stop` (in the running loop); one that came before
        sets it at once."""
        self._loop = asyncio.get_running_loop()
        self._stop = stop
        for sig in self._signals:
            self._loop.add_signal_handler(sig, self._stopping, sig)
        if self.requested:
            stop.set()
