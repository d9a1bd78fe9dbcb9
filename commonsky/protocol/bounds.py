"""What every output can carry: the one rule for the values of an accepted item.

An accepted item is written out as CoT XML, as TAK Protocol v1 protobuf, as JSON (the API
and the WebSocket) and as a ledger entry (canonical JSON in integer units). A value that one
of them cannot carry must be refused at the edge, on every path (TAK or API) — otherwise it is
stored, then fails to render for every recipient, and again on every start. The bounds:

- Text: XML 1.0 characters only (https://www.w3.org/TR/xml/#charsets): no U+0000-U+0008,
  U+000B, U+000C, U+000E-U+001F, no surrogates (canonical JSON refuses them too), no U+FFFE
  or U+FFFF. An XML parser can never produce these, but the API builds events from JSON.
- Times: 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z. TAK protobuf carries times as
  unsigned milliseconds since 1970 (`sendTime`, `startTime`, `staleTime` are uint64), so
  nothing earlier; CoT times are written with four-digit years (xs:dateTime as TAK clients
  write it, and Python's `datetime` stops at year 9999), so nothing later *in UTC*:
  `9999-12-31T23:59:59-23:59` is in year 10000.
- `hae`: -12,000 m (below the deepest ocean floor) to 1e8 m (past geostationary orbit);
  `ce`, `le`: 0 to 1e8 m. CoT's "unknown", 9999999, lies inside both; NaN (the unknown as
  ATAK writes it, in `<point>` only) is carried as written, and the ledger leaves it out.
- `speed`: at most 20,000 m/s either way (2.5 times orbital velocity; a negative value is
  read as none); `course`: -360 to 360 degrees.

With these, every ledger integer (microseconds, millimetres, 1e-7 degrees) fits in 64 bits
with room to spare, so an accepted durable item can always be recorded. Refusals are
`RemoteProtocolError` with reason `bad_value` (or `bad_time`), naming the field.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from commonsky.errors import RemoteProtocolError
from commonsky.model import CotEvent, CotText, is_server_only

MIN_TIME_S = 0.0
MAX_TIME_S = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC).timestamp()
HAE_RANGE_M = (-12_000.0, 1e8)
ERROR_RANGE_M = (0.0, 1e8)
MAX_SPEED_MPS = 20_000.0
COURSE_RANGE_DEG = (-360.0, 360.0)

# Characters XML 1.0 cannot carry (in any escape), plus surrogates and the two non-characters.
XML_IMPOSSIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def check_text(value: str, field: str) -> None:
    """Refuse text holding a character XML cannot carry (RemoteProtocolError `bad_value`)."""
    found = XML_IMPOSSIBLE.search(value)
    if found is not None:
        raise RemoteProtocolError(
            "bad_value",
            f"{field}: character U+{ord(found.group()):04X} at {found.start()} cannot be "
            "carried in XML",
        )


def check_time(value: float, field: str) -> None:
    """Refuse an epoch time outside 1970-01-01T00:00:00Z..9999-12-31T23:59:59.999Z."""
    if not MIN_TIME_S <= value <= MAX_TIME_S:
        raise RemoteProtocolError(
            "bad_time",
            f"{field}: {value!r} s is outside 1970-01-01T00:00:00Z..9999-12-31T23:59:59.999Z "
            "(what CoT XML and TAK protobuf can both carry)",
        )


def check_range(value: float, low: float, high: float, field: str, nan: bool = False) -> None:
    """Refuse a number outside [low, high] (NaN too, unless `nan`: CoT's unknown as ATAK
    writes it, which every output carries as written and the ledger leaves out)."""
    if not (low <= value <= high or (nan and math.isnan(value))):
        raise RemoteProtocolError("bad_value", f"{field}: {value!r} is outside [{low}, {high}]")


def check_event(event: CotEvent) -> None:
    """Refuse an event with a value some output cannot carry (rules in the module comment).

    Every accepted event is checked: first at once (`_plainly_within`: plain comparisons, one
    search over all its text), and only an event that may break a rule rule by rule, in the
    order below, so that the refusal names the first rule broken."""
    if not _plainly_within(event):
        _check_each(event)


def _plainly_within(event: CotEvent) -> bool:
    """True when `event` keeps every rule of `check_event` (a NaN, allowed in `<point>`, and
    an empty attribute name are left to the rule-by-rule check)."""
    p = event.point
    if not (
        MIN_TIME_S <= event.time <= MAX_TIME_S
        and MIN_TIME_S <= event.start <= MAX_TIME_S
        and MIN_TIME_S <= event.stale <= MAX_TIME_S
        and -90.0 <= p.lat <= 90.0
        and -180.0 <= p.lon <= 180.0
        and HAE_RANGE_M[0] <= p.hae <= HAE_RANGE_M[1]
        and ERROR_RANGE_M[0] <= p.ce <= ERROR_RANGE_M[1]
        and ERROR_RANGE_M[0] <= p.le <= ERROR_RANGE_M[1]
    ):
        return False
    speed, course = event.speed, event.course
    if speed is not None and not -MAX_SPEED_MPS <= speed <= MAX_SPEED_MPS:
        return False
    if course is not None and not COURSE_RANGE_DEG[0] <= course <= COURSE_RANGE_DEG[1]:
        return False
    texts = [event.uid, event.type, event.callsign, event.detail, *event.dest_callsigns,
             *event.dest_parties, *event.dest_uids]  # fmt: skip
    for value in (event.how, event.access, event.qos, event.opex):
        if value is not None:
            texts.append(value)
    text = event.text
    if text is not None:
        names = []
        for name, value in (*text.event, *text.point):
            if not name:
                return False
            names.append(name)
            texts.append(value)
        joined = "".join(names)
        if not joined.isalnum() and _NOT_A_NAME.search(joined) is not None:
            return False
    # (Each forbidden character is one code point: none is made by joining two texts.) Text
    # that is all printable holds none of them — each is a control character, a surrogate or
    # a non-character, none printable; nor is any of a name's alphanumeric — and asking
    # that is about twice as fast as the search, which only the rest needs (newlines, say).
    joined = "".join(texts)
    return joined.isprintable() or XML_IMPOSSIBLE.search(joined) is None


def _check_each(event: CotEvent) -> None:
    check_time(event.time, "time")
    check_time(event.start, "start")
    check_time(event.stale, "stale")
    p = event.point
    check_range(p.lat, -90.0, 90.0, "point.lat", nan=True)
    check_range(p.lon, -180.0, 180.0, "point.lon", nan=True)
    check_range(p.hae, *HAE_RANGE_M, "point.hae", nan=True)
    check_range(p.ce, *ERROR_RANGE_M, "point.ce", nan=True)
    check_range(p.le, *ERROR_RANGE_M, "point.le", nan=True)
    if event.speed is not None:
        check_range(event.speed, -MAX_SPEED_MPS, MAX_SPEED_MPS, "detail.track.speed")
    if event.course is not None:
        check_range(event.course, *COURSE_RANGE_DEG, "detail.track.course")
    for name in ("uid", "type", "how", "access", "qos", "opex", "callsign", "detail"):
        value = getattr(event, name)
        if value is not None:  # (`how`, `access`… absent when the sender wrote none)
            check_text(value, name)
    for dest in (*event.dest_callsigns, *event.dest_parties, *event.dest_uids):
        check_text(dest, "detail.marti.dest")
    if event.text is not None:
        check_written(event.text)


def check_acceptable(event: CotEvent) -> None:
    """The refusals that need only the event, the same wherever it is taken in (a hub, a
    cluster's edge): `check_event`, and a TAK server's notices about its own missions (this
    hub keeps none). Raises RemoteProtocolError ("bad_value", "bad_text", "mission_notice")."""
    check_event(event)
    if is_server_only(event.type):
        raise RemoteProtocolError(
            "mission_notice",
            f"{event.type[:40]} is a TAK server's notice about its own missions; this hub "
            "keeps no missions, so a client's is neither accepted nor relayed",
        )


# What can never be in an attribute name (it would end the name or the tag), and what XML
# cannot carry at all.
_NOT_A_NAME = re.compile("[\\s<>&\"'=/{}\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def check_written(text: CotText) -> None:
    """Refuse sender's text (`CotText`) that CoT XML cannot carry: an attribute name that
    would break the tag, a character XML cannot hold. Text our parser read always passes;
    this keeps a stored item that was altered from failing to render on every start.
    (One search for the names and one for the values, joined: this runs for every
    accepted event.)"""
    attrs = (*text.event, *text.point)
    names = [name for name, _ in attrs]
    if _NOT_A_NAME.search("".join(names)) is not None or not all(names):
        bad = next(n for n in names if not n or _NOT_A_NAME.search(n) is not None)
        raise RemoteProtocolError("bad_value", f"<event>: attribute {bad[:40]!r} is not a name")
    check_text("".join(value for _, value in attrs), "<event> or <point> attributes")
