"""Launch warnings desk: per-recipient fusion, then public warnings in CAP 1.2.

The hub's side (this module) parses and routes reports and publishes what the launch core
(`launch_core.py`: correlation, fusion, warning assessment, no I/O — the invariant is
stated there) makes of them.

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

import functools
import logging
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from commonsky.alerts import (
    CapAlert,
    FusedEvent,
    LaunchReport,
    RegionRegistry,
    ThreatTrack,
    report_from_json,
)
from commonsky.desks.launch_core import (
    COUNTRY_PARTY,
    Batch,
    Fused,
    Issuer,
    LaunchCore,
    Outcome,
    fused_json,
)
from commonsky.errors import RemoteProtocolError
from commonsky.hub.desk import Routes
from commonsky.hub.desk_view import DeskView
from commonsky.model import HUB, Category, CotEvent, Item, Point, is_deleted, known
from commonsky.policy import Party
from commonsky.protocol.cot import detail_tree, new_event, quote, quote_text

__all__ = ["LaunchDesk", "fused_json", "report_event", "report_from_event", "report_from_raw"]

log = logging.getLogger("commonsky.warnings")
_TRACK = Category.TRACK  # (`observe`, for every track: see model._DRAWING)
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
    try:
        raw = msgspec.json.decode((node.text or "").encode())
    except msgspec.DecodeError as exc:
        raise RemoteProtocolError("launch-report-invalid", f"$: not valid JSON: {exc}") from None
    except RecursionError:
        raise RemoteProtocolError("launch-report-invalid", "$: JSON nested too deeply") from None
    return report_from_raw(raw, party, now)


def report_from_raw(raw: Any, party: str, now: float) -> LaunchReport:
    """A launch report from its parsed JSON (CoT detail or API body), checked; its party is
    the sender's, whatever the JSON says."""
    if isinstance(raw, dict):
        raw["party"] = party
    return report_from_json(msgspec.json.encode(raw), datetime.fromtimestamp(now, UTC))


def report_event(report: LaunchReport, now: float) -> CotEvent:
    last = report.points[-1]
    body = quote_text(msgspec.json.encode(report).decode())
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


def issuers_of(parties: Mapping[str, Party]) -> list[Issuer]:
    """Who warns which country's regions: the party whose config names the country, else by
    the built-in pairs (JPN for JP, KOR for KR, UKR for UA) when that party exists and names
    no country of its own. One issuer per country, in country order."""
    chosen = {p.country: p.id for p in parties.values() if p.country}
    for country, pid in COUNTRY_PARTY.items():
        if pid in parties and not parties[pid].country and country not in chosen:
            chosen[country] = pid
    return [Issuer(pid, country, parties[pid].name) for country, pid in sorted(chosen.items())]


def _threat_kind(item: Item) -> str | None:
    if item.category is not _TRACK:
        return None
    return _threat_kind_of_type(item.event.type)


@functools.lru_cache(maxsize=4096)  # (asked for every track; a few types make most)
def _threat_kind_of_type(cot_type: str) -> str | None:
    return next((k for prefix, k in THREAT_KINDS if cot_type.startswith(prefix)), None)


class LaunchDesk:
    """The hub's side of launch warnings: parses and routes reports, hands them to the
    launch core, and publishes what comes back — fused events to their parties, warnings
    to the CAP feed and to the issuers' alert partners — in one commit per round.

    Rounds: reports are handed over when the hub's event loop has taken the rest of the
    burst they came in, so a raid's reports arriving together cost one fusion per event and
    one warnings step, not one per report (a hub that falls behind catches up instead of
    queueing). Without an event loop (tests, tools) each report is settled as it comes.
    """

    name = "launch"
    categories = (Category.LAUNCH,)

    def __init__(self, hub: DeskView, regions: RegionRegistry | None = None) -> None:
        self.hub = hub  # the hub as a desk sees it (hub/desk_view.py)
        path = str(hub.settings.regions_file)
        if regions is None:
            regions = RegionRegistry.load(path) if path else RegionRegistry.builtin()
        self.regions = regions
        status: Literal["Actual", "Exercise"] = (
            "Actual" if str(hub.settings.alert_status) == "Actual" else "Exercise"
        )
        issuers = issuers_of(hub.policy.parties)
        unwarned = sorted({r.country for r in regions} - {i.country for i in issuers})
        if path and unwarned:  # an operator's own file: say which of its regions go unwarned
            log.warning(
                "%s: no party warns the regions of %s (give that party `country = ...`)",
                path,
                ", ".join(unwarned),
            )
        self.issuers = [i.party for i in issuers]
        self.core = LaunchCore(self.regions, issuers, status)
        self.alerts: dict[str, CapAlert] = {}  # identifier -> message, in issue order
        self.first_alert_at: dict[str, float] = {}  # event id -> hub time of first warning
        self.reports_settled = 0  # reports whose fused events and warnings are out
        self._reports: list[tuple[LaunchReport, tuple[str, ...]]] = []  # not yet handed over
        self._tick_due = False
        self._settle_scheduled = False
        self._threats: dict[tuple[str, str], None] = {}  # keys of live threat tracks

    @property
    def views(self) -> dict[str, dict[str, FusedEvent]]:
        """party -> the fused events it holds, by event id."""
        return self.core.views

    def rebuild(self) -> None:
        """After a restart: every party's fused view rebuilt from the stored reports it may
        see (so `/api/launch/events` and later fusion carry on), and the issuers' warning
        streams brought to the present silently — no warning goes out twice; the CAP feed
        holds the current warnings again."""
        now = self.hub.clock()
        reports: list[tuple[LaunchReport, tuple[str, ...]]] = []
        stored = sorted(self.hub.held_items(), key=lambda item: item.seq)
        for item in stored:
            if item.category is not Category.LAUNCH or item.party == HUB:
                continue
            if not item.event.type.startswith(REPORT_TYPE):
                continue
            try:
                report = report_from_event(item.event, item.party, item.received)
            except Exception as exc:  # never a reason not to start: set aside
                self.hub.quarantine_item(item, "launch", f"{type(exc).__name__}: {exc}")
                continue
            reports.append((report, tuple(sorted({item.party, *self.hub.route(item, now)}))))
        if not reports:
            return
        threats = {party: self.threats_for(party) for party in self.issuers}
        try:
            outcome = self.core.run(Batch(now, reports, threats, False))
        except Exception:  # our bug: the hub must start all the same
            log.exception("rebuilding launch events from %d stored reports failed", len(reports))
            return
        for _party, alert in outcome.alerts:  # already told before the restart
            self.alerts[alert.identifier] = alert
        self.reports_settled += outcome.reports

    def restored(self, items: Iterable[Item]) -> None:
        """Live items a cluster core restored into its picture at a takeover, as the dead
        core held them (cluster/live_kv.py): its threat tracks are indexed, as their report
        would have indexed them, and the issuers' warnings brought to the present with them
        silently, as `rebuild` does — the dead core stepped its warnings every second with
        these tracks (the CAP streams' identifiers are made from names only: a warning issued
        again would be the same message twice), so the CAP feed holds them again and what
        follows (an update, the all-clear) is told from there."""
        found = False
        for item in items:
            if not is_deleted(item.event):
                self._index_threat(item)
                found = found or item.key in self._threats
        if not found or not self.issuers:
            return
        threats = {party: self.threats_for(party) for party in self.issuers}
        try:
            alerts = self.core.step(self.hub.clock(), None, threats)
        except Exception:  # our bug: the core serves all the same
            log.exception("bringing the warnings to the restored threat tracks failed")
            return
        for _party, alert in alerts:  # (told before the takeover)
            self.alerts[alert.identifier] = alert

    def check(self, party: str, event: CotEvent) -> LaunchReport | None:
        """A report that does not read is refused; the report read is `observe`'s (the hub
        hands it back with this very event: parsing is not free). Fused events are the
        hub's, never a party's."""
        if event.type.startswith(REPORT_TYPE):
            return report_from_event(event, party, self.hub.clock())
        if event.type.startswith(FUSED_TYPE):
            raise RemoteProtocolError("launch-report-invalid", "$: fused events are the hub's")
        return None

    # ---- reports in ---------------------------------------------------------------------

    def observe(self, item: Item, routes: Routes, parsed: object | None = None) -> None:
        if is_deleted(item.event):  # withdrawn by its owner: no report, no threat
            self._threats.pop(item.key, None)
            return
        if item.category is _TRACK or item.key in self._threats:
            self._index_threat(item)
            return
        if item.category is not Category.LAUNCH or item.party == HUB:
            return
        if not item.event.type.startswith(REPORT_TYPE):
            return
        if isinstance(parsed, LaunchReport) and parsed.party == item.party:
            report = parsed
        else:  # not checked here (a replay, another process's item): read it now
            report = report_from_event(item.event, item.party, item.received)
        self._reports.append((report, tuple(sorted({item.party, *routes}))))
        if not self._settle_scheduled:
            # A burst's reports are settled together once the loop has taken it (or each
            # now, without a loop).
            self._settle_scheduled = self.hub.defer(self._settle_logged)
            if not self._settle_scheduled:
                self.settle()

    def _index_threat(self, item: Item) -> None:
        """Keep the keys of live tracks of threat types (missiles, drones), so a warnings
        step looks at those, not at every track in the picture. A key whose item went stale
        or left the picture is skipped when asked for and dropped on the next prune."""
        if _threat_kind(item) is None:
            self._threats.pop(item.key, None)
        else:
            self._threats[item.key] = None

    def prune(self) -> None:
        """Forget indexed threat tracks the hub's picture no longer holds."""
        for key in [k for k in self._threats if not self.hub.is_live(k)]:
            del self._threats[key]

    def settle(self) -> None:
        """Hand the reports taken since the last round to the core; publish the outcome."""
        self._settle_scheduled = False
        if not (self._reports or self._tick_due):
            return
        began = time.perf_counter()
        threats = {party: self.threats_for(party) for party in self.issuers}
        batch = Batch(self.hub.clock(), self._reports, threats, self._tick_due)
        self._reports, self._tick_due = [], False
        self._apply(self.core.run(batch))
        if batch.reports:  # a tick with no reports is not a round of them
            metrics = self.hub.metrics
            metrics.launch_round.observe(time.perf_counter() - began)
            metrics.launch_round_reports.observe(len(batch.reports))

    def tick(self) -> None:
        """Once a second: expire old events and step every issuer's warnings."""
        self._tick_due = True
        self.settle()

    def _settle_logged(self) -> None:
        try:
            self.settle()
        except Exception:  # our bug: log it loudly, keep the hub serving
            log.exception("fusing launch reports failed")

    def _apply(self, outcome: Outcome) -> None:
        """Publish a round's fused events and warnings, in one commit."""
        fused = [(self._fused_cot(f), f.party) for f in outcome.fused]
        with self.hub.transaction():
            self.hub.publish_each_from_hub(fused, Category.LAUNCH)
            now = self.hub.clock()
            for party, alert in outcome.alerts:
                self._publish_alert(party, alert, now)
        self.reports_settled += outcome.reports

    def feed(self) -> list[CapAlert]:
        return list(self.alerts.values())

    def _fused_cot(self, fused: Fused) -> CotEvent:
        now = self.hub.clock()
        uid = f"launch-{fused.event_id}.{fused.party}"
        event = fused.event
        if event is None:
            return new_event(
                uid, FUSED_TYPE, now, now, Point(0.0, 0.0), '<csky_fused merged="true"/>'
            )
        anchor = event.impact or event.launch
        lat, lon = (anchor.lat, anchor.lon) if anchor is not None else (0.0, 0.0)
        text = quote(f"Launch event fused from {', '.join(event.parties)}")
        return new_event(
            uid,
            FUSED_TYPE,
            now,
            now + 3600.0,
            Point(lat, lon),
            f"<csky_fused>{fused.body}</csky_fused><remarks>{text}</remarks>",
        )

    # ---- warnings out -------------------------------------------------------------------

    def threats_for(self, party: str) -> list[ThreatTrack]:
        """The air-threat tracks `party` may see now, as it sees them."""
        tracks = []
        for item, variant in self.hub.visible_live(party, list(self._threats)):
            kind = _threat_kind(item)  # of the item as it is now, whatever the index says
            if kind is None:
                continue
            e = self.hub.event_for(item, variant)
            if not e.point.position_known:
                continue  # nowhere known: threatens no region we could name
            tracks.append(
                ThreatTrack(
                    track_id=e.uid,
                    party=item.party,
                    kind=kind,  # type: ignore[arg-type]
                    time=datetime.fromtimestamp(e.time, UTC),
                    lat=e.point.lat,
                    lon=e.point.lon,
                    alt_m=e.point.hae if e.point.hae_known else 0.0,
                    speed_mps=e.speed or 0.0,
                    course_deg=(e.course or 0.0) % 360.0,
                    sigma_m=max(100.0, e.point.ce if known(e.point.ce) else 1000.0),
                )
            )
        return tracks

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
        # The warned areas ride along as GeoJSON (the map page draws them from the item's
        # JSON, hub/pagejson.py); the CAP document itself stays at `href`.
        areas = area_geojson(alert)
        detail = (
            f'<csky_cap identifier="{quote(alert.identifier)}" msgType="{alert.msg_type}"'
            f' href="/cap/alerts/{quote(alert.identifier)}.xml">'
            f"{quote_text(msgspec.json.encode(areas).decode()) if areas else ''}</csky_cap>"
            f"<remarks>{quote(headline)}</remarks>"
        )
        cot = new_event(f"cap-{alert.identifier}", ALERT_TYPE, now, stale, Point(lat, lon), detail)
        self.hub.submit(
            Item(party=party, user="hub", category=Category.ALERT, event=cot, received=now)
        )


def area_geojson(alert: CapAlert) -> dict[str, Any] | None:
    """Every polygon of the alert's areas (CAP's (lat, lon) rings) as one GeoJSON
    MultiPolygon ([lon, lat]); None when it has none."""
    rings = [
        [[[lon, lat] for lat, lon in ring]]
        for info in alert.info
        for area in info.areas
        for ring in area.polygons
    ]
    return {"type": "MultiPolygon", "coordinates": rings} if rings else None
