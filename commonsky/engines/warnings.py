"""Launch warnings desk: per-recipient fusion, then public warnings in CAP 1.2.

The invariant, applied to fusion: each party has its own Correlator, fed only the reports
that party may see (its own plus those an agreement releases to it), so the fused event it
receives — launch point, trajectory, impact ellipse — is computed from nothing else.

Public warnings are issued for a region by the party of the region's country (JPN for
prefectures, KOR for provinces, UKR for oblasts, when those parties exist), from *that*
party's fused view and the air-threat tracks it may see. Each warning goes to the public
CAP feed and, as a CoT `b-a-o-csky` item from the issuing party, to the parties its
`alert` agreements name.

CoT forms (documented in the README): a raw report is `b-l-r` with the report's JSON in
`<csky_launch>`; a fused event the hub makes is `b-l-f` with the event's JSON in
`<csky_fused>`, its point at the predicted impact.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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
    report_from_json,
)
from commonsky.alerts.hazard import Corridor, Hazard, LaunchAssessment
from commonsky.alerts.threats import DEFAULT_HORIZON, assess_track
from commonsky.errors import RemoteProtocolError
from commonsky.hub.core import Hub
from commonsky.model import HUB, Category, CotEvent, Disclosure, Item, Point
from commonsky.protocol.cot import detail_tree, new_event, quote

log = logging.getLogger("commonsky.warnings")
COUNTRY_PARTY = {"JP": "JPN", "KR": "KOR", "UA": "UKR"}
REPORT_TYPE = "b-l-r"
FUSED_TYPE = "b-l-f"
ALERT_TYPE = "b-a-o-csky"
THREAT_KINDS = (
    ("a-h-A-W-M-S-B", "ballistic-missile"),
    ("a-h-A-W-M", "cruise-missile"),
    ("a-h-A-M-F-Q", "drone"),
    ("a-h-A-C-F-Q", "drone"),
    ("a-h-A-M", "aircraft"),
)


def report_from_event(event: CotEvent, party: str, now: float) -> LaunchReport:
    """The launch report a `b-l-r` event carries; its party is the sender's, whatever it says."""
    detail = detail_tree(event.detail)
    node = detail.find("csky_launch")
    if node is None or not (node.text or "").strip():
        raise RemoteProtocolError("launch-report-invalid", "$: no <csky_launch> JSON in detail")
    return report_from_raw(msgspec.json.decode((node.text or "").encode()), party, now)


def report_from_raw(raw: Any, party: str, now: float) -> LaunchReport:
    """A launch report from its parsed JSON (CoT detail or API body), checked; its party is
    the sender's, whatever the JSON says."""
    if isinstance(raw, dict):
        raw["party"] = party
    return report_from_json(msgspec.json.encode(raw), datetime.fromtimestamp(now, UTC))


def report_event(report: LaunchReport, now: float) -> CotEvent:
    last = report.points[-1]
    body = quote(msgspec.json.encode(report).decode())
    return CotEvent(
        uid=f"launch-report-{report.report_id}",
        type=REPORT_TYPE,
        time=now,
        start=now,
        stale=now + 3600.0,
        how="m-g",
        point=Point(last.lat, last.lon, last.alt_m),
        detail=f"<csky_launch>{body}</csky_launch>",
    )


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


@dataclass
class _Owed:
    """What one party's view gained since the last `settle` (insertion-ordered sets)."""

    refresh: dict[str, None] = field(default_factory=dict)  # event ids to fuse and send
    retire: dict[str, None] = field(default_factory=dict)  # sent event ids merged away


class LaunchDesk:
    def __init__(self, hub: Hub, regions: RegionRegistry | None = None) -> None:
        self.hub = hub
        self.regions = regions or RegionRegistry.builtin()
        self.correlators: dict[str, Correlator] = defaultdict(Correlator)
        self._state: dict[str, tuple[str, Correlator]] = {}
        self._bodies: dict[tuple[str, tuple[str, ...]], str] = {}
        # (issuing party, event id) -> the estimate's report keys and its assessment.
        self._assessed: dict[tuple[str, str], tuple[tuple[str, ...], LaunchAssessment]] = {}
        # event id -> report keys and the estimate's corridor, shared by the issuing parties.
        self._corridors: dict[str, tuple[tuple[str, ...], Corridor]] = {}
        self._shared: dict[str, tuple[Correlator, str, tuple[str, ...]]] = {}
        self._owed: dict[str, _Owed] = {}  # party -> what the reports since `settle` changed
        self._settle_scheduled = False
        self.views: dict[str, dict[str, FusedEvent]] = defaultdict(dict)  # party -> events
        status = str(hub.settings.alert_status)
        # Each party warns only its own country's regions, from its own view.
        self.engines = {
            party: AlertEngine(
                RegionRegistry([r for r in self.regions if r.country == country]),
                f"commonsky.{party.lower()}",
                status="Actual" if status == "Actual" else "Exercise",
                sender_name=hub.policy.parties[party].name,
            )
            for country, party in COUNTRY_PARTY.items()
            if party in hub.policy.parties
        }
        self.alerts: dict[str, CapAlert] = {}  # identifier -> message, in issue order
        self.first_alert_at: dict[str, float] = {}  # event id -> hub time of first warning
        self._validated: tuple[CotEvent, LaunchReport] | None = None
        hub.validators[Category.LAUNCH] = self.validate
        hub.observers.append(self.observe)

    def validate(self, party: str, event: CotEvent) -> None:
        if event.type.startswith(REPORT_TYPE):
            # Kept for `observe`, which gets this very event next (parsing is not free).
            self._validated = (event, report_from_event(event, party, self.hub.clock()))
        elif event.type.startswith(FUSED_TYPE):
            raise RemoteProtocolError("launch-report-invalid", "$: fused events are the hub's")

    # ---- reports in ---------------------------------------------------------------------

    def observe(self, item: Item, routes: dict[str, Disclosure]) -> None:
        if item.category is not Category.LAUNCH or item.party == HUB:
            return
        if not item.event.type.startswith(REPORT_TYPE):
            return
        validated = self._validated
        if (
            validated is not None
            and validated[0] is item.event
            and validated[1].party == item.party
        ):
            report = validated[1]
        else:
            report = report_from_event(item.event, item.party, item.received)
        for party in sorted({item.party, *routes}):
            self._feed(party, report)
        self._forget_unshared()
        # Each report is correlated at once; what it changes is fused, sent and assessed once
        # the hub's event loop has taken the rest of the burst it came in (`settle`), so a
        # raid's reports arriving together cost one fusion per event and one warnings step,
        # not one per report. Without a loop (tests, tools) that happens right here.
        if self.hub.call_soon is None:
            self.settle()
        elif not self._settle_scheduled:
            self._settle_scheduled = True
            self.hub.call_soon(self._settle_logged)

    def _feed(self, party: str, report: LaunchReport) -> None:
        """Feed `report` to `party`'s view; note the fused events (and retirements) it owes."""
        # Parties fed the same sequence of reports share one correlator and one fusion
        # result (copy-on-write): with many parties under the same agreements, correlation
        # and fusion run once per distinct view, not once per party. Sharing never mixes
        # views: the key is the digest of exactly the reports this party has been given, in
        # order.
        digest, correlator = self._state.get(party, ("", None))
        step_digest = hashlib.sha256(f"{digest}\x00{report.key}".encode()).hexdigest()
        cached = self._shared.get(step_digest)
        if cached is None:
            correlator = correlator.copy() if correlator is not None else Correlator()
            result = correlator.add(report)
            cached = self._shared[step_digest] = (correlator, result.event_id, result.merged)
        correlator, event_id, merged = cached
        self._state[party] = (step_digest, correlator)
        self.correlators[party] = correlator
        owed = self._owed.setdefault(party, _Owed())
        for retired in merged:
            owed.refresh.pop(retired, None)
            self._assessed.pop((party, retired), None)
            if self.views[party].pop(retired, None) is not None:
                owed.retire[retired] = None  # the party holds it: tell it the event merged
        owed.refresh[event_id] = None

    def settle(self) -> list[CapAlert]:
        """Send every party the fused events its new reports changed, then advance the
        warnings of the parties concerned: one commit for all of it."""
        self._settle_scheduled = False
        owed, self._owed = self._owed, {}
        if not owed:
            return []
        fused: list[tuple[CotEvent, str]] = []
        estimates: dict[tuple[str, str], FusedEvent] = {}  # (view digest, event id)
        for party in sorted(owed):
            digest, correlator = self._state[party]
            for retired in owed[party].retire:
                fused.append((self._fused_cot(party, retired, None), party))
            for event_id in owed[party].refresh:
                if event_id not in correlator:  # expired since the report came
                    continue
                event = estimates.get((digest, event_id))
                if event is None:
                    event = estimates[digest, event_id] = correlator.fuse(event_id)
                self.views[party][event_id] = event
                fused.append((self._fused_cot(party, event_id, event), party))
        with self.hub.transaction():
            self.hub.publish_each_from_hub(fused, Category.LAUNCH)
            alerts = self.step(sorted(owed))
        if len(self._bodies) > 1024:
            self._bodies.clear()
        return alerts

    def _settle_logged(self) -> None:
        try:
            self.settle()
        except Exception:  # our bug: log it loudly, keep the hub serving
            log.exception("fusing launch reports failed")

    def _forget_unshared(self) -> None:
        live = {digest for digest, _ in self._state.values()}
        for digest in [d for d in self._shared if d not in live]:
            del self._shared[digest]

    def _fused_cot(self, party: str, event_id: str, event: FusedEvent | None) -> CotEvent:
        now = self.hub.clock()
        uid = f"launch-{event_id}.{party}"
        if event is None:
            return new_event(
                uid, FUSED_TYPE, now, now, Point(0.0, 0.0), '<csky_fused merged="true"/>'
            )
        anchor = event.impact or event.launch
        lat, lon = (anchor.lat, anchor.lon) if anchor is not None else (0.0, 0.0)
        key = (event.event_id, event.report_keys)
        body = self._bodies.get(key)
        if body is None:  # the same event goes to every party sharing the view
            body = self._bodies[key] = quote(msgspec.json.encode(fused_json(event)).decode())
        text = quote(f"Launch event fused from {', '.join(event.parties)}")
        return new_event(
            uid,
            FUSED_TYPE,
            now,
            now + 3600.0,
            Point(lat, lon),
            f"<csky_fused>{body}</csky_fused><remarks>{text}</remarks>",
        )

    # ---- warnings out -------------------------------------------------------------------

    def threats_for(self, party: str) -> list[ThreatTrack]:
        tracks = []
        for rendered, variant in self.hub.visible(party, durable=False):
            item = rendered.item
            if item.category is not Category.TRACK:
                continue
            kind = next(
                (k for prefix, k in THREAT_KINDS if item.event.type.startswith(prefix)), None
            )
            if kind is None:
                continue
            e = self.hub.event_for(item, variant)
            tracks.append(
                ThreatTrack(
                    track_id=e.uid,
                    party=item.party,
                    kind=kind,  # type: ignore[arg-type]
                    time=datetime.fromtimestamp(e.time, UTC),
                    lat=e.point.lat,
                    lon=e.point.lon,
                    alt_m=e.point.hae if e.point.hae < 9999999.0 else 0.0,
                    speed_mps=e.speed or 0.0,
                    course_deg=(e.course or 0.0) % 360.0,
                    sigma_m=max(100.0, e.point.ce if e.point.ce < 9999999.0 else 1000.0),
                )
            )
        return tracks

    def expire(self) -> None:
        """Forget launch events an hour after their last observation (memory stays bounded).

        Correlators shared by parties with identical views expire identically (expiry is a
        function of their content and the time), so sharing stays sound.
        """
        moment = datetime.fromtimestamp(self.hub.clock(), UTC)
        done: set[int] = set()
        for party, (_, correlator) in self._state.items():
            if id(correlator) not in done:
                correlator.expire(moment)
                done.add(id(correlator))
            live = correlator.events()
            for event_id in [e for e in self.views[party] if e not in live]:
                del self.views[party][event_id]
        for key in [k for k in self._assessed if k[1] not in self.views[k[0]]]:
            del self._assessed[key]
        current = {event_id for _party, event_id in self._assessed}
        for event_id in [e for e in self._corridors if e not in current]:
            del self._corridors[event_id]

    def step(self, parties: list[str] | None = None) -> list[CapAlert]:
        """Advance the warning engines of the issuing parties (all, or those named)."""
        now = self.hub.clock()
        issued = []
        for party, engine in self.engines.items():
            if parties is not None and party not in parties:
                continue
            moment = datetime.fromtimestamp(now, UTC)
            hazards = [
                self._assess(event, engine.regions, party, moment)
                for event in self.views[party].values()
            ]
            hazards += [
                assess_track(t, engine.regions, moment, DEFAULT_HORIZON)
                for t in self.threats_for(party)
            ]
            alerts = engine.step(moment, hazards)
            for alert in alerts:
                self._publish_alert(party, alert, now)
            issued += alerts
        return issued

    def _publish_alert(self, party: str, alert: CapAlert, now: float) -> None:
        self.alerts[alert.identifier] = alert
        for event_id in self.views[party]:
            if event_id in alert.identifier and event_id not in self.first_alert_at:
                self.first_alert_at[event_id] = now
        info = alert.info[0] if alert.info else None
        area = info.areas[0] if info and info.areas else None
        lat, lon = 0.0, 0.0
        if area is not None and area.polygons:
            ring = area.polygons[0]
            lat = sum(p[0] for p in ring) / len(ring)
            lon = sum(p[1] for p in ring) / len(ring)
        headline = info.headline if info and info.headline else alert.msg_type
        stale = now + (600.0 if alert.msg_type == "Cancel" else 3600.0)
        detail = (
            f'<csky_cap identifier="{quote(alert.identifier)}" msgType="{alert.msg_type}"'
            f' href="/cap/alerts/{quote(alert.identifier)}.xml"/>'
            f"<remarks>{quote(headline)}</remarks>"
        )
        cot = new_event(f"cap-{alert.identifier}", ALERT_TYPE, now, stale, Point(lat, lon), detail)
        self.hub.submit(
            Item(party=party, user="hub", category=Category.ALERT, event=cot, received=now)
        )

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

    def feed(self) -> list[CapAlert]:
        return list(self.alerts.values())
