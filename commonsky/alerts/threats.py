# Rule: an air-threat track (cruise missile, Shahed-type drone, ...) threatens the regions its
# predicted path can reach within the look-ahead horizon — and only those. The prediction is
# dead reckoning along the current course at the current speed; because such threats turn at
# waypoints, the corridor widens with distance (a cone of +-HEADING_SPREAD_DEG around the
# course) on top of the track's own position error. Pure: time comes in as `now`.

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Literal

import msgspec

from commonsky.alerts.hazard import Hazard, Threatened
from commonsky.alerts.regions import RegionRegistry
from commonsky.geo import destination

ThreatKind = Literal["cruise-missile", "drone", "ballistic-missile", "aircraft", "unknown"]

#: Half-angle of the cone of possible courses (waypoint turns), degrees.
HEADING_SPREAD_DEG = 15.0
DEFAULT_HORIZON = timedelta(minutes=15)
#: A track not updated for this long is treated as lost (its warnings are cancelled).
TRACK_STALE = timedelta(minutes=5)

_EVENT = {
    "cruise-missile": "Cruise missile",
    "drone": "Attack drone",
    "ballistic-missile": "Ballistic missile",
    "aircraft": "Hostile aircraft",
    "unknown": "Air threat",
}


class ThreatTrack(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    track_id: str
    party: str
    kind: ThreatKind
    time: datetime
    lat: float
    lon: float
    alt_m: float
    speed_mps: float
    course_deg: float
    sigma_m: float = 1_000.0
    #: Set when the threat is known to be over (shot down, impacted); closes its warnings.
    ended: str | None = None

    @property
    def key(self) -> str:
        return f"{self.party}/{self.track_id}"


def predicted_path(
    track: ThreatTrack, now: datetime, horizon: timedelta = DEFAULT_HORIZON, step_s: float = 60.0
) -> list[tuple[datetime, float, float, float]]:
    """(time, lat, lon, corridor half-width m) from `now` to `now + horizon`."""
    spread = math.tan(math.radians(HEADING_SPREAD_DEG))
    elapsed = max(0.0, (now - track.time).total_seconds())
    total = horizon.total_seconds()
    n = max(2, math.ceil(total / step_s) + 1)
    out = []
    for i in range(n):
        s = total * i / (n - 1)
        dist = track.speed_mps * (elapsed + s)
        lon, lat = destination(track.lon, track.lat, track.course_deg, dist)
        out.append((now + timedelta(seconds=s), lat, lon, 2.0 * track.sigma_m + dist * spread))
    return out


def assess_track(
    track: ThreatTrack,
    regions: RegionRegistry,
    now: datetime,
    horizon: timedelta = DEFAULT_HORIZON,
) -> Hazard:
    """The regions `track` may reach within `horizon` of `now` (Severe; Likely if < 5 min)."""
    hid = "T" + "".join(c if c.isalnum() or c in "-_." else "_" for c in track.key)
    event = _EVENT[track.kind]
    if track.ended is not None or now - track.time > TRACK_STALE:
        outcome = track.ended or "The threat is no longer tracked."
        return Hazard(hid, track.kind, event, (), outcome, "over", now, over=True, outcome=outcome)
    threatened = []
    for region, t in regions.along_path(predicted_path(track, now, horizon)):
        soon = t - now <= timedelta(minutes=5)
        threatened.append(
            Threatened(region.id, "approach", "Severe", "Likely" if soon else "Possible", t)
        )
    summary = (
        f"{event} tracked at {track.lat:.2f}, {track.lon:.2f} heading {track.course_deg:.0f}° "
        f"at {track.speed_mps * 3.6:.0f} km/h."
    )
    # Revision: 20° course steps and 100 km/h speed steps (position changes alone do not).
    revision = f"{round(track.course_deg / 20) % 18},{round(track.speed_mps * 3.6 / 100)}"
    return Hazard(
        hid,
        track.kind,
        event,
        tuple(threatened),
        summary,
        revision,
        now + horizon,
    )
