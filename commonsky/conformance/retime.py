"""Captured traffic moved to now, as a client replaying it would send it.

`time`, `start` and `stale` of the `<event>` move together by one whole number of seconds,
so their intervals stay exactly as captured and each keeps the form it was written in (its
fraction digits, its `Z` or offset, its quotes). Nothing else in the message changes: times
inside `<detail>` are the sender's content.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from .views import instant_of

# The <event …> start tag, and a time attribute inside it (bytes: the file may be anything).
_EVENT_TAG = re.compile(rb"<event\b[^>]*>", re.DOTALL)
_TIME_ATTR = re.compile(
    rb"(\s)(time|start|stale)(\s*=\s*)([\"'])"
    rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?\4"
)


def event_time(data: bytes) -> float | None:
    """The `time` of the file's `<event>` in seconds since 1970, or None if it has none."""
    tag = _EVENT_TAG.search(data)
    if tag is None:
        return None
    for match in _TIME_ATTR.finditer(tag.group(0)):
        if match.group(2) == b"time":
            text = b"".join(p or b"" for p in match.groups()[4:7]).decode("ascii")
            return float(instant_of(text))
    return None


def offset_to(data: bytes, now: float) -> int:
    """Whole seconds that move the event's `time` to `now` (0 when it has no time)."""
    then = event_time(data)
    return 0 if then is None else round(now - then)


def retime_xml(data: bytes, offset_s: int) -> bytes:
    """The same bytes with the `<event>`'s time, start and stale moved by `offset_s`."""
    tag = _EVENT_TAG.search(data)
    if tag is None or offset_s == 0:
        return data

    def shift(match: re.Match[bytes]) -> bytes:
        space, name, equals, quote, base, fraction, zone = match.groups()
        moved = datetime.strptime(base.decode("ascii"), "%Y-%m-%dT%H:%M:%S")
        moved += timedelta(seconds=offset_s)
        text = moved.strftime("%Y-%m-%dT%H:%M:%S").encode("ascii")
        return space + name + equals + quote + text + (fraction or b"") + (zone or b"") + quote

    start, end = tag.span()
    return data[:start] + _TIME_ATTR.sub(shift, data[start:end]) + data[end:]


def retime_proto(message: Any, now: float) -> int:
    """Move a takproto `TakMessage`'s sendTime, startTime and staleTime (milliseconds) so
    that sendTime is `now`, keeping their intervals; returns the offset in seconds."""
    cot = message.cotEvent
    offset_s = round(now - int(cot.sendTime) / 1000)
    for name in ("sendTime", "startTime", "staleTime"):
        setattr(cot, name, getattr(cot, name) + offset_s * 1000)
    return offset_s
