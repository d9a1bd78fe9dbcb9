# Rule: a launch report is decoded once at the edge and checked before anything fuses it.
# A report that breaks physics, the clock or itself is refused with a `ReportRejected` naming
# the offending field (a remote error: the sender's fault), never silently repaired. Fusion
# downstream may then assume every report it gets passed `validate_report`.

from __future__ import annotations

import math
from datetime import datetime, timedelta

import msgspec

from commonsky.errors import RemoteProtocolError
from commonsky.geo import distance_m
from commonsky.protocol.bounds import XML_IMPOSSIBLE

#: No object we warn about moves faster than this (ICBM burnout ~7 km/s), in m/s.
MAX_SPEED_MPS = 8_000.0
MIN_ALT_M = -500.0
MAX_ALT_M = 2_000_000.0
#: How far report and observation times may be from the hub's `now`.
MAX_CLOCK_SKEW = timedelta(hours=1)
#: Speed gate slack: consecutive points may be this many combined sigmas closer than measured.
SPEED_GATE_SIGMAS = 3.0
MAX_POINTS = 10_000
#: A report's CoT uid is `launch-report-<report_id>`, and uids are at most 256 characters.
MAX_ID_CHARS = 128


class Observation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One observed position. `sigma_h_m` is the 1-sigma error per horizontal axis."""

    time: datetime
    lat: float
    lon: float
    alt_m: float
    sigma_h_m: float
    sigma_v_m: float


class PointEstimate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A reporter's own estimate of the launch or impact point (on the surface by default)."""

    time: datetime
    lat: float
    lon: float
    sigma_h_m: float
    alt_m: float = 0.0
    sigma_v_m: float = 100.0
    sigma_t_s: float = 10.0


class LaunchReport(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    party: str
    report_id: str
    report_time: datetime
    points: tuple[Observation, ...]
    launch: PointEstimate | None = None
    impact: PointEstimate | None = None

    @property
    def key(self) -> str:
        """Unique name of the report across parties: `party/report_id`."""
        return f"{self.party}/{self.report_id}"


class ReportRejected(RemoteProtocolError):
    """A launch report refused; `field` is the path of the offending field (`$.points[2].lat`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__("launch-report-invalid", f"{field}: {message}")
        self.field = field


def _finite(field: str, value: float) -> None:
    if not math.isfinite(value):
        raise ReportRejected(field, f"must be a finite number, got {value!r}")


def _check_time(field: str, t: datetime, now: datetime | None) -> None:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ReportRejected(field, "time must carry a timezone offset")
    if now is not None and abs(t - now) > MAX_CLOCK_SKEW:
        raise ReportRejected(
            field, f"time {t.isoformat()} is more than {MAX_CLOCK_SKEW} away from now"
        )


def _check_position(
    base: str, lat: float, lon: float, alt: float, sigma_h: float, sigma_v: float
) -> None:
    for name, value in (
        ("lat", lat),
        ("lon", lon),
        ("alt_m", alt),
        ("sigma_h_m", sigma_h),
        ("sigma_v_m", sigma_v),
    ):
        _finite(f"{base}.{name}", value)
    if not -90.0 <= lat <= 90.0:
        raise ReportRejected(f"{base}.lat", f"latitude {lat} outside [-90, 90]")
    if not -180.0 <= lon <= 180.0:
        raise ReportRejected(f"{base}.lon", f"longitude {lon} outside [-180, 180]")
    if not MIN_ALT_M <= alt <= MAX_ALT_M:
        raise ReportRejected(
            f"{base}.alt_m", f"altitude {alt} m outside [{MIN_ALT_M}, {MAX_ALT_M}]"
        )
    for name, s in (("sigma_h_m", sigma_h), ("sigma_v_m", sigma_v)):
        if not 0.0 < s <= 1_000_000.0:
            raise ReportRejected(f"{base}.{name}", f"uncertainty {s} m must be in (0, 1e6]")


def _check_speed(
    field: str,
    a: tuple[datetime, float, float, float, float, float],
    b: tuple[datetime, float, float, float, float, float],
) -> None:
    dt = (b[0] - a[0]).total_seconds()
    horiz = distance_m(a[2], a[1], b[2], b[1])
    dist = math.hypot(horiz, b[3] - a[3])
    slack = SPEED_GATE_SIGMAS * math.hypot(
        math.hypot(a[4], b[4]) * math.sqrt(2), math.hypot(a[5], b[5])
    )
    if dt <= 0:
        raise ReportRejected(field, "times must be strictly increasing")
    speed = max(0.0, dist - slack) / dt
    if speed > MAX_SPEED_MPS:
        raise ReportRejected(
            field, f"implies {speed / 1000:.1f} km/s from the previous point (max 8 km/s)"
        )


def validate_report(report: LaunchReport, now: datetime | None = None) -> LaunchReport:
    """Return `report` unchanged if it is acceptable, else raise `ReportRejected`.

    `now` is the hub's clock; times more than an hour away from it are refused. Without it
    only the report's internal consistency is checked.
    """
    for name in ("party", "report_id"):
        value: str = getattr(report, name)
        if not value or not value.strip() or any(c.isspace() or c == "/" for c in value):
            raise ReportRejected(f"$.{name}", "must be a non-empty token without spaces or '/'")
        # The id becomes part of a CoT uid and of XML text (fused events, CAP): the same
        # rules as there (protocol/bounds.py).
        if len(value) > MAX_ID_CHARS:
            raise ReportRejected(f"$.{name}", f"longer than {MAX_ID_CHARS} characters")
        if XML_IMPOSSIBLE.search(value) or "\x7f" in value:
            raise ReportRejected(f"$.{name}", "holds a control character")
    _check_time("$.report_time", report.report_time, now)
    if not report.points:
        raise ReportRejected("$.points", "at least one observed point is required")
    if len(report.points) > MAX_POINTS:
        raise ReportRejected("$.points", f"more than {MAX_POINTS} points")
    prev: tuple[datetime, float, float, float, float, float] | None = None
    for i, p in enumerate(report.points):
        base = f"$.points[{i}]"
        _check_time(f"{base}.time", p.time, now)
        _check_position(base, p.lat, p.lon, p.alt_m, p.sigma_h_m, p.sigma_v_m)
        cur = (p.time, p.lat, p.lon, p.alt_m, p.sigma_h_m, p.sigma_v_m)
        if prev is not None:
            _check_speed(f"{base}.time", prev, cur)
        prev = cur
    first, last = report.points[0], report.points[-1]
    if report.report_time < last.time:
        raise ReportRejected("$.report_time", "report is dated before its last observation")
    for name, est in (("launch", report.launch), ("impact", report.impact)):
        if est is None:
            continue
        base = f"$.{name}"
        _check_time(f"{base}.time", est.time, now)
        _check_position(base, est.lat, est.lon, est.alt_m, est.sigma_h_m, est.sigma_v_m)
        _finite(f"{base}.sigma_t_s", est.sigma_t_s)
        if not 0.0 < est.sigma_t_s <= 3600.0:
            raise ReportRejected(f"{base}.sigma_t_s", "must be in (0, 3600] s")
    if report.launch is not None:
        est = report.launch
        if est.time > first.time:
            raise ReportRejected("$.launch.time", "launch estimated after the first observation")
        if est.time < first.time:
            _check_speed(
                "$.launch",
                (est.time, est.lat, est.lon, est.alt_m, est.sigma_h_m, est.sigma_v_m),
                (first.time, first.lat, first.lon, first.alt_m, first.sigma_h_m, first.sigma_v_m),
            )
    if report.impact is not None:
        est = report.impact
        if est.time < last.time:
            raise ReportRejected("$.impact.time", "impact estimated before the last observation")
        if est.time > last.time:
            _check_speed(
                "$.impact",
                (last.time, last.lat, last.lon, last.alt_m, last.sigma_h_m, last.sigma_v_m),
                (est.time, est.lat, est.lon, est.alt_m, est.sigma_h_m, est.sigma_v_m),
            )
    if (
        report.launch is not None
        and report.impact is not None
        and report.impact.time <= report.launch.time
    ):
        raise ReportRejected("$.impact.time", "impact is not after launch")
    return report


_decoder = msgspec.json.Decoder(LaunchReport)


def report_from_json(data: bytes, now: datetime | None = None) -> LaunchReport:
    """Decode and validate one JSON launch report; errors carry the field path."""
    try:
        report = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        text = str(exc)
        path = text.rsplit(" - at `", 1)[1].rstrip("`") if " - at `" in text else "$"
        raise ReportRejected(path, text.split(" - at `")[0]) from None
    except msgspec.DecodeError as exc:
        raise ReportRejected("$", f"not valid JSON: {exc}") from None
    return validate_report(report, now)


def report_to_json(report: LaunchReport) -> bytes:
    return msgspec.json.encode(report)
