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

from commonsky.alerts.fusion import FusedEvent
from commonsky.alerts.regions import RegionRegistry

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
    """The regions a fused launch event threatens at `now`.

    Impact: regions touched by the 95 % impact ellipse (Extreme, Likely). Overflight (if
    enabled): regions under the predicted ground track from now until impact, widened by the
    track's 95 % horizontal error plus TRACK_MARGIN_M (Severe, Possible).
    """
    impact = event.impact
    hid = event.event_id
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
    over_at = impact.time + IMPACT_GRACE + timedelta(seconds=3 * impact.sigma_t_s)
    hits = {r.id for r in regions.touched_by(e.polygon())}
    summary = (
        f"Missile launch detected by {len(event.parties)} source(s). Predicted impact near "
        f"{_latlon(e.lat, e.lon)} at {impact.time.strftime('%H:%M:%S %Z')} within an ellipse of "
        f"{e.semi_major_m / 1000:.0f} x {e.semi_minor_m / 1000:.0f} km ({e.confidence:.0%})."
    )
    if now >= over_at:
        where = ", ".join(regions[r].name for r in sorted(hits)) if hits else ""
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
            summary,
            "over",
            now,
            over=True,
            outcome=outcome + f" Impact estimate {_latlon(e.lat, e.lon)}.",
        )
    threatened = [
        Threatened(rid, "impact", "Extreme", "Likely", impact.time) for rid in sorted(hits)
    ]
    if overflight and event.trajectory is not None:
        start = max(now, event.last_seen)
        if start < impact.time:
            path = [
                (t, la, lo, K95 * sig + TRACK_MARGIN_M)
                for t, la, lo, sig in event.trajectory.ground_track(start, impact.time)
            ]
            for region, t in regions.along_path(path):
                if region.id not in hits:
                    threatened.append(Threatened(region.id, "overflight", "Severe", "Possible", t))
    # Revision: ~10 km steps of the impact point, doubling steps of the ellipse, 30 s of time.
    size = round(math.log2(max(e.semi_major_m, 1000.0) / 1000.0))
    revision = (
        f"{round(e.lat * 10)},{round(e.lon * 10)},{size},{round(impact.time.timestamp() / 30)}"
    )
    return Hazard(
        hid,
        "ballistic-missile",
        "Ballistic missile",
        tuple(sorted(threatened, key=lambda t: t.region_id)),
        summary,
        revision,
        over_at,
    )
