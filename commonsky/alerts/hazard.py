# Rule: a hazard is what the warning engine needs to know about one threat at one instant —
# which regions it threatens, why, how badly, and whether it is over — and nothing else. Launch
# events (here) and air-threat tracks (`threats.py`) are both reduced to a `Hazard`, so one
# engine turns either into CAP Alert -> Update -> Cancel sequences. A region is listed only if
# the predicted impact area or the predicted path corridor actually reaches it.

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt

from commonsky.alerts.fusion import FusedEvent
from commonsky.alerts.regions import RegionRegistry
from commonsky.geo import corridor_pieces

#: Extra corridor half-width around a predicted ballistic ground track: covers model error and
#: debris scatter that the fit's own covariance does not (documented, not derived).
TRACK_MARGIN_M = 5_000.0
#: 95 % radius factor for a circular 2-D Gaussian, applied to the largest 1-sigma axis.
K95 = math.sqrt(-2.0 * math.log(0.05))
#: A ballistic threat is over this long after its predicted impact (plus 3 sigma of its time).
IMPACT_GRACE = timedelta(seconds=60)

Reason = Literal["impact", "overflight", "approach"]


class Threatened(msgspec.Struct, frozen=True):
    region_id: str
    reason: Reason
    severity: Literal["Extreme", "Severe", "Moderate", "Minor"]
    certainty: Literal["Observed", "Likely", "Possible", "Unlikely"]
    eta: datetime | None = None


class Hazard(msgspec.Struct, frozen=True):
    hazard_id: str
    kind: str  # ballistic-missile | cruise-missile | drone | ...
    event: str  # CAP <event>, e.g. "Ballistic missile"
    threatened: tuple[Threatened, ...]
    summary: str  # the current estimate in words (CAP description)
    #: Coarse fingerprint of the estimate; a change means an Update is due.
    revision: str
    expires: datetime
    over: bool = False
    outcome: str = ""  # why it is over, for the Cancel ("fell into the sea ...")


def _latlon(lat: float, lon: float) -> str:
    return f"{abs(lat):.2f}°{'N' if lat >= 0 else 'S'} {abs(lon):.2f}°{'E' if lon >= 0 else 'W'}"


def assess_launch(
    event: FusedEvent,
    regions: RegionRegistry,
    now: datetime,
    *,
    overflight: bool = True,
) -> Hazard:
    """The regions a fused launch event threatens at `now` (see `LaunchAssessment`)."""
    return LaunchAssessment(event, regions, overflight=overflight).at(now)


class Corridor:
    """The predicted ground track of a launch from its last observation to impact, as 20 s
    pieces widened by the track's 95 % horizontal error plus TRACK_MARGIN_M. It depends on the
    estimate alone, so every issuing party's assessment of one estimate can share it."""

    def __init__(self, times: list[datetime], pieces: npt.NDArray[np.object_]) -> None:
        self.times = times  # piece i spans times[i] to times[i + 1]
        self.pieces = pieces

    @classmethod
    def of(cls, event: FusedEvent) -> Corridor:
        impact, trajectory = event.impact, event.trajectory
        if impact is None or trajectory is None or event.last_seen >= impact.time:
            return cls([], np.array([], dtype=object))
        path = trajectory.ground_track(event.last_seen, impact.time)
        widths = [K95 * sig + TRACK_MARGIN_M for _t, _la, _lo, sig in path]
        pieces = corridor_pieces([p[2] for p in path], [p[1] for p in path], widths)
        return cls([p[0] for p in path], pieces)


class LaunchAssessment:
    """What one fused launch estimate threatens, worked out once; `at(now)` is then cheap.

    Impact: regions touched by the 95 % impact ellipse (Extreme, Likely). Overflight (if
    enabled): regions under the predicted ground track from the last observation until impact,
    in 20 s pieces widened by the track's 95 % horizontal error plus TRACK_MARGIN_M (Severe,
    Possible); at `now` a region stays threatened while a piece that reaches it still lies
    ahead (ends after `now`), so a region the missile has passed drops off the warning.

    The geometry depends only on the estimate, not on the clock: the warning desk keeps one
    assessment per estimate and asks it for the hazard every second at no geometric cost.
    """

    def __init__(
        self,
        event: FusedEvent,
        regions: RegionRegistry,
        *,
        overflight: bool = True,
        corridor: Corridor | None = None,
    ) -> None:
        self.event = event
        self.regions = regions
        self._last: tuple[datetime, Hazard] | None = None
        impact = event.impact
        self._hits: list[str] = []
        #: (region id, first reach, end of the last piece reaching it), regions not hit.
        self._overflown: list[tuple[str, datetime, datetime]] = []
        if impact is None:
            return
        e = impact.ellipse
        self._over_at = impact.time + IMPACT_GRACE + timedelta(seconds=3 * impact.sigma_t_s)
        self._hits = [r.id for r in regions.touched_by(e.polygon())]
        self._summary = (
            f"Missile launch detected by {len(event.parties)} source(s). Predicted impact near "
            f"{_latlon(e.lat, e.lon)} at {impact.time.strftime('%H:%M:%S %Z')} within an "
            f"ellipse of {e.semi_major_m / 1000:.0f} x {e.semi_minor_m / 1000:.0f} km "
            f"({e.confidence:.0%})."
        )
        # Revision: ~10 km steps of the impact point, doubling steps of the ellipse, 30 s.
        size = round(math.log2(max(e.semi_major_m, 1000.0) / 1000.0))
        self._revision = (
            f"{round(e.lat * 10)},{round(e.lon * 10)},{size},{round(impact.time.timestamp() / 30)}"
        )
        if overflight:
            corridor = corridor or Corridor.of(event)
            times = corridor.times
            for index, first, last in regions.reached_by(corridor.pieces):
                region = regions.region_at(index)
                if region.id not in self._hits:
                    end = times[min(last + 1, len(times) - 1)]
                    self._overflown.append((region.id, times[first], end))

    def at(self, now: datetime) -> Hazard:
        """The hazard at `now`, taken to the whole second: the warning desk asks for every
        open event after every report, and within one second the answer is reused."""
        second = now.replace(microsecond=0)
        if self._last is not None and self._last[0] == second:
            return self._last[1]
        hazard = self._at(second)
        self._last = (second, hazard)
        return hazard

    def _at(self, now: datetime) -> Hazard:
        impact, hid = self.event.impact, self.event.event_id
        if impact is None:
            return Hazard(
                hid,
                "ballistic-missile",
                "Ballistic missile",
                (),
                "Missile launch reported; impact area not yet estimated.",
                "no-impact",
                now + timedelta(minutes=30),
            )
        e = impact.ellipse
        if now >= self._over_at:
            where = ", ".join(self.regions[r].name for r in self._hits)
            outcome = (
                f"The missile is assessed to have fallen in or near {where}."
                if where
                else "The missile is assessed to have fallen into the sea."
            )
            return Hazard(
                hid,
                "ballistic-missile",
                "Ballistic missile",
                (),
                self._summary,
                "over",
                now,
                over=True,
                outcome=outcome + f" Impact estimate {_latlon(e.lat, e.lon)}.",
            )
        threatened = [
            Threatened(rid, "impact", "Extreme", "Likely", impact.time) for rid in self._hits
        ]
        threatened += [
            Threatened(rid, "overflight", "Severe", "Possible", max(first, now))
            for rid, first, end in self._overflown
            if end > now and now < impact.time
        ]
        return Hazard(
            hid,
            "ballistic-missile",
            "Ballistic missile",
            tuple(sorted(threatened, key=lambda t: t.region_id)),
            self._summary,
            self._revision,
            self._over_at,
        )
