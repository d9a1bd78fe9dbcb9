# Rule: synthetic launches for tests and demos follow the SAME documented ballistic model that
# `fusion` fits (drag-free arc, constant gravity, ground track along the launch geodesic), with
# Gaussian sensor noise from an explicit seeded Generator — never the global RNG — so every
# scenario replays bit for bit.

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from commonsky.alerts.fusion import G
from commonsky.alerts.report import LaunchReport, Observation, PointEstimate
from commonsky.geo import destination


@dataclass(frozen=True)
class Ballistic:
    """A true arc: launch point/time, azimuth, ground range and apogee (all ground truth)."""

    lat: float
    lon: float
    launch_time: datetime
    azimuth_deg: float
    range_m: float
    apogee_m: float

    @property
    def vz(self) -> float:
        return math.sqrt(2.0 * G * self.apogee_m)

    @property
    def flight_s(self) -> float:
        return 2.0 * self.vz / G

    @property
    def vh(self) -> float:
        return self.range_m / self.flight_s

    @property
    def impact_time(self) -> datetime:
        return self.launch_time + timedelta(seconds=self.flight_s)

    def at(self, s: float) -> tuple[float, float, float]:
        """(lat, lon, alt_m) `s` seconds after launch."""
        lon, lat = destination(self.lon, self.lat, self.azimuth_deg, self.vh * s)
        return lat, lon, self.vz * s - 0.5 * G * s * s

    @property
    def impact(self) -> tuple[float, float]:
        lat, lon, _alt = self.at(self.flight_s)
        return lat, lon


def radar_report(
    truth: Ballistic,
    party: str,
    report_id: str,
    start_s: float,
    end_s: float,
    step_s: float,
    sigma_h_m: float,
    sigma_v_m: float,
    rng: np.random.Generator,
    launch: PointEstimate | None = None,
    impact: PointEstimate | None = None,
) -> LaunchReport:
    """A sensor's report: noisy points of `truth` from start_s to end_s after launch."""
    n = math.floor((end_s - start_s) / step_s + 1e-9) + 1
    points = []
    for i in range(n):
        s = start_s + i * step_s
        lat, lon, alt = truth.at(s)
        east, north = rng.normal(0.0, sigma_h_m, 2)
        d = math.hypot(east, north)
        if d > 0:
            lon, lat = destination(lon, lat, math.degrees(math.atan2(east, north)), d)
        alt += float(rng.normal(0.0, sigma_v_m))
        points.append(
            Observation(
                time=truth.launch_time + timedelta(seconds=s),
                lat=lat,
                lon=lon,
                alt_m=alt,
                sigma_h_m=sigma_h_m,
                sigma_v_m=sigma_v_m,
            )
        )
    return LaunchReport(
        party=party,
        report_id=report_id,
        report_time=points[-1].time + timedelta(seconds=1),
        points=tuple(points),
        launch=launch,
        impact=impact,
    )
