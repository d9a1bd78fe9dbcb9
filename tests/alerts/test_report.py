from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest
from alerts_scenarios import T0

from commonsky.alerts.report import (
    LaunchReport,
    Observation,
    PointEstimate,
    ReportRejected,
    report_from_json,
    report_to_json,
    validate_report,
)
from commonsky.errors import RemoteProtocolError


def _pt(s: float, lat: float = 39.0, lon: float = 125.7, alt: float = 10_000.0) -> Observation:
    return Observation(T0 + timedelta(seconds=s), lat, lon, alt, 200.0, 200.0)


def _report(*points: Observation, **kw: object) -> LaunchReport:
    base: dict[str, object] = {
        "party": "KOR",
        "report_id": "r1",
        "report_time": T0 + timedelta(seconds=120),
        "points": points,
    }
    base.update(kw)
    return LaunchReport(**base)  # type: ignore[arg-type]


def _rejected(report: LaunchReport, field: str, now: object = None) -> ReportRejected:
    with pytest.raises(ReportRejected) as info:
        validate_report(report, now)  # type: ignore[arg-type]
    assert info.value.field == field, str(info.value)
    assert isinstance(info.value, RemoteProtocolError)
    return info.value


def test_good_report_round_trips_through_json() -> None:
    r = _report(_pt(0), _pt(10, lon=125.75, alt=30_000))
    assert validate_report(r, T0) is r
    assert report_from_json(report_to_json(r), now=T0) == r


def test_too_fast_between_points() -> None:
    # 1 degree of longitude (~86 km) in 5 s is 17 km/s.
    err = _rejected(_report(_pt(0), _pt(5, lon=126.7)), "$.points[1].time")
    assert "km/s" in str(err)


def test_speed_gate_allows_for_measurement_noise() -> None:
    # 20 km in 2 s is 10 km/s measured, but with 5 km sigmas it is within noise.
    a = Observation(T0, 39.0, 125.7, 10_000.0, 5_000.0, 5_000.0)
    b = Observation(T0 + timedelta(seconds=2), 39.0, 125.93, 10_000.0, 5_000.0, 5_000.0)
    validate_report(_report(a, b))


@pytest.mark.parametrize(
    ("point", "field"),
    [
        (_pt(0, alt=-600.0), "$.points[0].alt_m"),
        (_pt(0, alt=2_100_000.0), "$.points[0].alt_m"),
        (_pt(0, lat=91.0), "$.points[0].lat"),
        (_pt(0, lon=-181.0), "$.points[0].lon"),
        (_pt(0, lat=float("nan")), "$.points[0].lat"),
        (Observation(T0, 39.0, 125.7, 0.0, 0.0, 10.0), "$.points[0].sigma_h_m"),
        (Observation(T0, 39.0, 125.7, 0.0, 10.0, float("inf")), "$.points[0].sigma_v_m"),
    ],
)
def test_impossible_values_name_the_field(point: Observation, field: str) -> None:
    _rejected(_report(point), field)


def test_unordered_and_duplicate_times() -> None:
    _rejected(_report(_pt(10), _pt(0)), "$.points[1].time")
    _rejected(_report(_pt(10), _pt(10)), "$.points[1].time")


def test_times_far_from_now() -> None:
    _rejected(_report(_pt(0)), "$.report_time", now=T0 + timedelta(hours=2))
    late = _report(_pt(0), report_time=T0 + timedelta(minutes=50))
    _rejected(late, "$.points[0].time", now=T0 + timedelta(minutes=61, seconds=1))
    future = _report(_pt(0), report_time=T0)
    _rejected(future, "$.report_time", now=T0 - timedelta(hours=1, seconds=1))


def test_naive_time_refused() -> None:
    _rejected(_report(_pt(0), report_time=T0.replace(tzinfo=None)), "$.report_time")


def test_contradictory_fields() -> None:
    _rejected(_report(_pt(0), _pt(10), report_time=T0 + timedelta(seconds=5)), "$.report_time")
    launch_after = PointEstimate(T0 + timedelta(seconds=5), 39.0, 125.7, 500.0)
    _rejected(_report(_pt(0), launch=launch_after), "$.launch.time")
    impact_before = PointEstimate(T0 - timedelta(seconds=5), 39.0, 125.7, 500.0)
    _rejected(_report(_pt(0), impact=impact_before), "$.impact.time")
    impact_far = PointEstimate(T0 + timedelta(seconds=10), 10.0, 125.7, 500.0)
    _rejected(_report(_pt(0), impact=impact_far), "$.impact")
    _rejected(_report(), "$.points")
    _rejected(_report(_pt(0), party=""), "$.party")
    _rejected(_report(_pt(0), report_id="a b"), "$.report_id")


def test_json_errors_carry_the_path() -> None:
    good = msgspec.json.decode(report_to_json(_report(_pt(0))))
    good["points"][0]["lat"] = "north"
    with pytest.raises(ReportRejected) as info:
        report_from_json(msgspec.json.encode(good))
    assert info.value.field == "$.points[0].lat"
    del good["points"][0]["lat"]
    with pytest.raises(ReportRejected) as info:
        report_from_json(msgspec.json.encode(good))
    assert "lat" in str(info.value)
    good["points"][0]["lat"] = 39.0
    good["extra"] = 1
    with pytest.raises(ReportRejected):
        report_from_json(msgspec.json.encode(good))
    with pytest.raises(ReportRejected) as info:
        report_from_json(b"{not json")
    assert info.value.field == "$"
