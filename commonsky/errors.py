"""Errors that say whose fault it is, and what to do about it — one tree.

A peer's bad bytes or request are a `RemoteProtocolError` (count it, log it, refuse it, maybe
close); an operator's bad file or flag is a `UsageError` (one line, exit status 2); a store
that cannot take a write is `StoreUnavailable`; our own misuse of a protocol state is a
`LocalProtocolError`; anything else escaping is our own bug and deserves its traceback.

Every error here carries its hints, as h11's do, so the TAK listener and the HTTP API read
them instead of each deciding again: `http_status` (how an API request that raised it is
answered), `close` (whether the TAK connection it was raised on is closed, rather than only
the message refused), `reason` (the short metric and log label), `counted` (whether it
counts as a refusal in the metrics) and `public()` (the text the peer is told).
"""

from __future__ import annotations

import math
from typing import Any


class CommonSkyError(Exception):
    """Base for errors this package raises on purpose."""

    http_status: int = 500
    close: bool = False
    reason: str = "internal"
    counted: bool = False

    def public(self) -> str:
        """What the peer is told: the message, unless the fault is ours (5xx, not 503)."""
        return str(self) if self.http_status < 500 else "internal error (logged)"


class UsageError(CommonSkyError):
    """Bad command-line argument, config file or input file: printed as one line, exit 2."""

    reason = "usage"


def positive_seconds(flag: str, value: float) -> float:
    """`value`, given as `flag`, when it is a finite number of seconds over 0; UsageError
    otherwise (nan and inf too: a comparison with nan is always false, and inf is never)."""
    if not 0 < value < float("inf"):
        raise UsageError(f"{flag} {value!r}: must be a positive number of seconds")
    return value


def check_finite(name: str, raw: Any, where: str, at: str = "") -> None:
    """UsageError unless `raw` (a number, or text read as one) is finite: no setting of
    CommonSky means anything at inf (TOML's `inf`, a variable's `inf` or `1e999`) or nan,
    so every float setting, wherever it is given, is checked here first. Text that is no
    number at all is left to the type check."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return
    try:
        value = float(raw)
    except ValueError:
        return
    except OverflowError:  # (an integer past every float)
        value = math.inf
    if not math.isfinite(value):
        suffix = f" ({at})" if at else ""
        raise UsageError(f"{where}: {name} = {raw!r}: must be a finite number{suffix}")


def finite_flags(**values: float) -> None:
    """UsageError naming the first of these float flags (`rate=` is `--rate`) given inf or
    nan: a bench at a rate of nan or for inf seconds runs forever or not at all, and every
    `<= 0` check lets nan through."""
    for name, value in values.items():
        if not math.isfinite(value):
            raise UsageError(f"--{name.replace('_', '-')} {value!r}: must be a finite number")


class RemoteProtocolError(CommonSkyError):
    """The peer sent something we refuse. `reason` is a short metric label; the message is
    refused (HTTP 400 unless `http_status` says otherwise) and its connection kept."""

    http_status = 400
    counted = True

    def __init__(self, reason: str, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        if http_status is not None:
            self.http_status = http_status


# Refusals that are the hub's verdict on a well-formed message, not bad input: what an
# ordinary TAK client sends in the course of its user's work and the sender's party may not
# do — delete or edit (resend under the uid it was given) another party's marker, send past
# its quota, rewrite a recorded chat, draw a shape the airspace rules refuse. Each is refused
# and counted like any refusal, but never counts towards `limit_refusals_before_close`
# (`TakSession.refused`): that limit is for bytes that are not a valid message at all, and a
# user tidying a shared map must not lose the connection (and be sent the picture again).
# Reasons only, so that a cluster edge, told a refusal's reason by its core, decides alike.
VERDICTS = frozenset(
    {"delete_not_owner", "uid_spoof", "quota", "hotline_immutable", "bad_airspace"}
)


class Refused(RemoteProtocolError):
    """A request refused with its HTTP status (401 no or unknown token, 403 not entitled,
    404 nothing there for this party, 413 too large, …): answered, not counted as a
    protocol refusal. `status` is `http_status`."""

    counted = False

    def __init__(self, status: int, message: str, reason: str = "refused") -> None:
        super().__init__(reason, message, http_status=status)

    @property
    def status(self) -> int:
        return self.http_status


class AlreadyRecorded(CommonSkyError):
    """A resend of an item the hub already holds with the same content (a client's retry):
    nothing is stored or relayed again, and the sender is not refused. `seq` is the store
    sequence of the item it repeats. (Caught where an item is accepted; never escapes.)"""

    def __init__(self, seq: int) -> None:
        super().__init__(f"already recorded as #{seq}")
        self.seq = seq


class StoreUnavailable(CommonSkyError):
    """The store cannot take a write now (its server went away). The item is not stored, so
    the hub relays nothing of it; the sender is told (HTTP 503, or its TAK connection is
    closed so the client sends again when it reconnects)."""

    http_status = 503
    close = True
    reason = "store_unavailable"

    def public(self) -> str:
        return f"not stored, try again: {self}"


class WriterFenced(StoreUnavailable):
    """A cluster core that is no longer its database's one writer tried to write: another
    core took over (store/postgres.py `claim`). Nothing of the write is kept; the core stops
    (cluster/core.py: a StoreUnavailable is fail-stop there)."""

    reason = "writer_fenced"


class LocalProtocolError(CommonSkyError):
    """We tried to do something the protocol state does not allow (a bug on our side): the
    connection's state is no longer trustworthy, so it is closed."""

    close = True
    reason = "local_error"
