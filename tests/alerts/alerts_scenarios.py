# Shared scenarios for the alerts tests (imported by name: tests/alerts is on sys.path).

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np

from commonsky.alerts.fusion import FusedEvent
from commonsky.alerts.report import LaunchReport
from commonsky.alerts.simulate import Ballistic, radar_report
from commonsky.geo import to_local

T0 = datetime(2022, 10, 4, 7, 22, tzinfo=UTC)
#: From near Pyongyang east-north-east into the Sea of Japan, ~200 km off Akita/Niigata.
SEA_SHOT = Ballistic(39.0, 125.7, T0, 80.0, 1_000_000.0, 500_000.0)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def kor_boost(
    truth: Ballistic, rng: np.random.Generator, sigma: float = 300.0, rid: str = "k1"
) -> LaunchReport:
    """South Korean radar: early flight, 30-150 s after launch, near the launch point."""
    return radar_report(truth, "KOR", rid, 30, 150, 5, sigma, sigma, rng)


def jpn_descent(
    truth: Ballistic, rng: np.random.Generator, sigma: float = 300.0, rid: str = "j1"
) -> LaunchReport:
    """Japanese radar: the last 200-40 s of flight, near impact."""
    end = truth.flight_s
    return radar_report(truth, "JPN", rid, end - 200, end - 40, 5, sigma, sigma, rng)


def impact_mahalanobis(event: FusedEvent, lat: float, lon: float) -> float:
    """Squared distance of (lat, lon) from the impact ellipse centre in ellipse units (<=1 in)."""
    assert event.impact is not None
    e = event.impact.ellipse
    x, y = to_local(e.lon, e.lat, [lon], [lat])
    th = math.radians(e.orientation_deg)
    u = x[0] * math.sin(th) + y[0] * math.cos(th)
    v = x[0] * math.cos(th) - y[0] * math.sin(th)
    return float((u / e.semi_major_m) ** 2 + (v / e.semi_minor_m) ** 2)
