"""Per-recipient correlation, fusion and warning assessment, with no hub, clock or I/O.

Reports go in (a `Batch`: each report with the parties that may see it); fused events and
CAP messages come out (`run` returns an `Outcome`), which the warnings desk publishes.

The invariant, applied to fusion: each party has its own correlator, fed only the reports
that party may see (its own plus those an agreement releases to it), so the fused event it
receives — launch point, trajectory, impact ellipse — is computed from nothing else.
Parties fed the same sequence of reports share one correlator and one fusion result
(copy-on-write): with many parties under the same agreements, correlation and fusion run
once per distinct view, not once per party. Sharing never mixes views: the key is the
digest of exactly the reports the party has been given, in order.

Each issuing party (the party of a region's country) warns only its own country's regions,
from its own view and the air-threat tracks it may see.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
import numpy as np
import shapely

from commonsky.alerts import (
    AlertEngine,
    CapAlert,
    Correlator,
    FusedEvent,
    LaunchReport,
    RegionRegistry,
    ThreatTrack,
)
from commonsky.alerts.hazard import Corridor, Hazard, LaunchAssessment
from commonsky.alerts.threats import DEFAULT_HORIZON, assess_track
from commonsky.protocol.cot import quote_text

COUNTRY_PARTY = {"JP": "JPN", "KR": "KOR", "UA": "UKR"}  # built-in issuers (see issuers_of)


def fused_json(event: FusedEvent) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(event)
    for name in ("launch", "impact"):
        fix = getattr(event, name)
        if fix is not None:
            # 1e-5 degrees (about a metre) is all a map needs, and it halves the bytes every
            # recipient's copy costs to store, record and send.
            ring = shapely.get_coordinates(fix.ellipse.polygon(36))
            out[name]["polygon"] = np.round(ring, 5).tolist()
    return out


class Issuer(msgspec.Struct, frozen=True):
    """A party that issues public warnings for its country's regions."""

    party: str
    country: str
    name: str


class Batch(msgspec.Struct):
    """One round of work: reports with the parties that may see each, in arrival order,
    then (if `tick`) expiry and a warnings step for every issuer. Threat tracks are the
    ones each issuer may see, taken from the hub's picture when the batch was made."""

    now: float
    reports: list[tuple[LaunchReport, tuple[str, ...]]] = []
    threats: dict[str, list[ThreatTrack]] = {}
    tick: bool = False


class Fused(msgspec.Struct, frozen=True):
    """A fused event owed to one party (`event` None: it merged into another), with the
    escaped JSON body its CoT carries (the same string object for every party sharing it)."""

    party: str
    event_id: str
    event: FusedEvent | None
    body: str


class Outcome(msgspec.Struct):
    """What one round produced: fused events owed, CAP messages issued (with their issuer)."""

    fused: list[Fused] = []
    alerts: list[tuple[str, CapAlert]] = []
    reports: int = 0  # reports this outcome settles


@dataclass
class _Owed:
    """What one party's view gained since the last `run` (insertion-ordered sets)."""

    refresh: dict[str, None] = field(default_factory=dict)  # event ids to fuse and send
    retire: dict[str, None] = field(default_factory=dict)  # sent event ids merged away


class LaunchCore:
    def __init__(
        self,
        regions: RegionRegistry,
        issuers: Sequence[Issuer],
        status: Literal["Actual", "Exercise"] = "Exercise",
    ) -> None:
        self._state: dict[str, tuple[str, Correlator]] = {}
        self._shared: dict[str, tuple[Correlator, str, tuple[str, ...]]] = {}
        self._owed: dict[str, _Owed] = {}  # party -> what the reports since `run` changed
        self._bodies: dict[tuple[str, tuple[str, ...]], str] = {}
        # (issuing party, event id) -> the estimate's report keys and its assessment.
        self._assessed: dict[tuple[str, str], tuple[tuple[str, ...], LaunchAssessment]] = {}
        # event id -> report keys and the estimate's corridor, shared by the issuing parties.
        self._corridors: dict[str, tuple[tuple[str, ...], Corridor]] = {}
        self.views: dict[str, dict[str, FusedEvent]] = defaultdict(dict)  # party -> events
        # issuing party -> the second of its last step and the hazards of that step's tracks.
        self._track_hazards: dict[str, tuple[datetime, dict[ThreatTrack, Hazard]]] = {}
        self.engines = {
            i.party: AlertEngine(
                RegionRegistry([r for r in regions if r.country == i.country]),
                f"commonsky.{i.party.lower()}",
                status=status,
                sender_name=i.name,
            )
            for i in issuers
        }

    def run(self, batch: Batch) -> Outcome:
        """Feed the batch's reports, then send what they changed and assess the warnings of
        the parties concerned (and, on a tick, expire old events and step every issuer)."""
        parties: set[str] = set()
        for report, audience in batch.reports:
            for party in audience:
                self.feed(party, report)
            parties.update(audience)
        self._forget_unshared()
        outcome = Outcome(reports=len(batch.reports))
        outcome.fused = self._settle()
        if batch.tick:
            self.expire(batch.now)
        if batch.tick or parties:
            step = None if batch.tick else sorted(parties)
            outcome.alerts = self.step(batch.now, step, batch.threats)
        return outcome

    # ---- fusion ---------------------------------------------------------------------------

    def feed(self, party: str, report: LaunchReport) -> None:
        """Correlate `report` into `party`'s view; note the fused events it now owes."""
        digest, correlator = self._state.get(party, ("", None))
        step_digest = hashlib.sha256(f"{digest}\x00{report.key}".encode()).hexdigest()
        cached = self._shared.get(step_digest)
        if cached is None:
            correlator = correlator.copy() if correlator is not None else Correlator()
            result = correlator.add(report)
            cached = self._shared[step_digest] = (correlator, result.event_id, result.merged)
        correlator, event_id, merged = cached
        self._state[party] = (step_digest, correlator)
        owed = self._owed.setdefault(party, _Owed())
        for retired in merged:
            owed.refresh.pop(retired, None)
            self._assessed.pop((party, retired), None)
            if self.views[party].pop(retired, None) is not None:
                owed.retire[retired] = None  # the party holds it: tell it the event merged
        owed.refresh[event_id] = None

    def _settle(self) -> list[Fused]:
        """The fused events owed since the last call, each estimate fused once per view."""
        owed, self._owed = self._owed, {}
        out: list[Fused] = []
        estimates: dict[tuple[str, str], FusedEvent] = {}  # (view digest, event id)
        for party in sorted(owed):
            digest, correlator = self._state[party]
            for retired in owed[party].retire:
                out.append(Fused(party, retired, None, ""))
            for event_id in owed[party].refresh:
                if event_id not in correlator:  # expired since the report came
                    continue
                event = estimates.get((digest, event_id))
                if event is None:
                    event = estimates[digest, event_id] = correlator.fuse(event_id)
                self.views[party][event_id] = event
                out.append(Fused(party, event_id, event, self._body(event)))
        if len(self._bodies) > 1024:
            self._bodies.clear()
        return out

    def _body(self, event: FusedEvent) -> str:
        key = (event.event_id, event.report_keys)
        body = self._bodies.get(key)
        if body is None:  # the same event goes to every party sharing the view
            body = self._bodies[key] = quote_text(msgspec.json.encode(fused_json(event)).decode())
        return body

    def _forget_unshared(self) -> None:
        live = {digest for digest, _ in self._state.values()}
        for digest in [d for d in self._shared if d not in live]:
            del self._shared[digest]

    def expire(self, now: float) -> None:
        """Forget launch events an hour after their last observation (memory stays bounded).

        Correlators shared by parties with identical views expire identically (expiry is a
        function of their content and the time), so sharing stays sound.
        """
        moment = datetime.fromtimestamp(now, UTC)
        done: set[int] = set()
        for party, (_, correlator) in self._state.items():
            if id(correlator) not in done:
                correlator.expire(moment)
                done.add(id(correlator))
            for event_id in [e for e in self.views[party] if e not in correlator]:
                del self.views[party][event_id]
        for key in [k for k in self._assessed if k[1] not in self.views[k[0]]]:
            del self._assessed[key]
        current = {event_id for _party, event_id in self._assessed}
        for event_id in [e for e in self._corridors if e not in current]:
            del self._corridors[event_id]

    # ---- warnings -------------------------------------------------------------------------

    def step(
        self, now: float, parties: list[str] | None, threats: Mapping[str, list[ThreatTrack]]
    ) -> list[tuple[str, CapAlert]]:
        """Advance the warning engines of the issuing parties (all, or those named)."""
        moment = datetime.fromtimestamp(now, UTC)
        issued = []
        for party, engine in self.engines.items():
            if parties is not None and party not in parties:
                continue
            hazards = [
                self._assess(event, engine.regions, party, moment)
                for event in self.views[party].values()
            ]
            hazards += self._assess_tracks(party, threats.get(party, ()), engine.regions, moment)
            issued += [(party, alert) for alert in engine.step(moment, hazards)]
        return issued

    def _assess_tracks(
        self,
        party: str,
        tracks: Sequence[ThreatTrack],
        regions: RegionRegistry,
        moment: datetime,
    ) -> list[Hazard]:
        """The hazards of air-threat tracks, each worked out once per track report and
        second: in a raid every round steps the issuer's warnings, and the tracks have not
        moved since the round before unless a new report of them came."""
        second = moment.replace(microsecond=0)
        last_second, last = self._track_hazards.get(party, (None, {}))
        known = last if last_second == second else {}
        fresh: dict[ThreatTrack, Hazard] = {}
        for track in tracks:
            fresh[track] = known.get(track) or assess_track(track, regions, second, DEFAULT_HORIZON)
        self._track_hazards[party] = (second, fresh)  # only this step's tracks: bounded
        return list(fresh.values())

    def _assess(
        self, event: FusedEvent, regions: RegionRegistry, party: str, moment: datetime
    ) -> Hazard:
        """The hazard of `event` at `moment`, its geometry worked out once per estimate."""
        key = (party, event.event_id)
        known = self._assessed.get(key)
        if known is None or known[0] != event.report_keys:
            corridor = self._corridors.get(event.event_id)
            if corridor is None or corridor[0] != event.report_keys:
                corridor = self._corridors[event.event_id] = (event.report_keys, Corridor.of(event))
            assessment = LaunchAssessment(event, regions, corridor=corridor[1])
            known = self._assessed[key] = (event.report_keys, assessment)
        return known[1].at(moment)
