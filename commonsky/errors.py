"""Errors that say whose fault it is.

A peer's bad bytes are a `RemoteProtocolError` (count it, log it, refuse it, maybe close);
an operator's bad file or flag is a `UsageError` (one line, exit status 2); anything else
escaping is our own bug and deserves its traceback.
"""

from __future__ import annotations


class CommonSkyError(Exception):
    """Base for errors this package raises on purpose."""


class UsageError(CommonSkyError):
    """Bad command-line argument, config file or input file: printed as one line, exit 2."""


class RemoteProtocolError(CommonSkyError):
    """The peer sent something we refuse. `reason` is a short metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AlreadyRecorded(CommonSkyError):
    """A resend of an item the hub already holds with the same content (a client's retry):
    nothing is stored or relayed again, and the sender is not refused. `seq` is the store
    sequence of the item it repeats."""

    def __init__(self, seq: int) -> None:
        super().__init__(f"already recorded as #{seq}")
        self.seq = seq


class StoreUnavailable(CommonSkyError):
    """The store cannot take a write now (its server went away). The item is not stored, so
    the hub relays nothing of it; the sender is told (HTTP 503, or its TAK connection is
    closed so the client sends again when it reconnects)."""


class LocalProtocolError(CommonSkyError):
    """We tried to do something the protocol state does not allow (a bug on our side)."""
