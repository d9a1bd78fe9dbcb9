"""Times, one way: RFC 3339 text and `datetime` to epoch seconds (UTC), and back.

Rule: a time without a zone is UTC — never the machine's local time (CoT, GeoJSON and the
config all mean UTC; `datetime.timestamp()` of a naive value would read it as local time and
move every such time by the host's offset). Pure functions, no clock.

Callers wrap the `ValueError` in their own error naming the field (CoT: `RemoteProtocolError`
`malformed`; config: `UsageError`; airspace files: `GeometryError`). The conformance harness
keeps its own exact (`Decimal`) reading of xs:dateTime on purpose: it judges our output and
must not share our rounding.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

__all__ = ["epoch_of", "format_time", "parse_time", "utc"]


def parse_time(text: str) -> float:
    """Epoch seconds of an RFC 3339 / xs:dateTime text (`Z`, an offset, or no zone = UTC).

    Raises ValueError when the text is not one (leading or trailing spaces included)."""
    return epoch_of(datetime.fromisoformat(text))


def epoch_of(moment: datetime) -> float:
    """Epoch seconds of a `datetime`; a naive one is UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def utc(epoch: float) -> datetime:
    """The aware UTC `datetime` of epoch seconds."""
    return datetime.fromtimestamp(epoch, UTC)


@functools.lru_cache(maxsize=1024)
def format_time(epoch: float) -> str:
    """RFC 3339 UTC with milliseconds, or microseconds when the time has them (a relay keeps
    the sender's sub-millisecond precision; TAK protobuf's millisecond times cannot)."""
    # Cached: an event's time and start are usually one instant, and the hub renders many
    # events made at the same instant (one fused event per recipient, say).
    moment = datetime.fromtimestamp(epoch, UTC)
    spec = "milliseconds" if moment.microsecond % 1000 == 0 else "microseconds"
    return moment.isoformat(timespec=spec).removesuffix("+00:00") + "Z"
