"""Deconfliction desk: keep the conflict engine fed and tell each party what it may know.

Airspace items and sites (from TAK drawings or the API) and live tracks go into the
incremental ConflictEngine, between different parties only. For every change the desk makes
one notice per party involved, built by `notice_for` with the disclosure the *other* side's
agreements grant that party — `full`, `generalized` or `conflicts-only` (only the
intersection). A party with no agreement at all from the other side gets no notice: deny by
default holds for conflicts too. Notices go out as hub-made, durable `conflict` items
(`t-x-csky-conflict` carrying the notice as JSON, plus a `u-d-f` shape of the overlap), so
they are stored, recorded in the ledger and replayed like anything else. When the two
parties have a hotline agreement, a raised conflict also opens a hotline thread both must
acknowledge.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import msgspec
import shapely
import shapely.geometry
from shapely.geometry import shape as shapely_shape

from commonsky.deconflict.engine import Conflict, ConflictChange, ConflictEngine, Side, Track
from commonsky.deconflict.geometry import Line, Volume
from commonsky.deconflict.notice import Notice, notice_for
from commonsky.engines.drawings import airspace_from_cot
from commonsky.engines.hotline import HotlineDesk
from commonsky.hub.core import Hub
from commonsky.model import HUB, Category, CotEvent, Disclosure, Item, Point
from commonsky.protocol.cot import new_event, quote, quote_text

log = logging.getLogger("commonsky.deconflict")
# Deconfliction is about the parties' own forces: a track a party reports as hostile,
# suspect, joker or faker (`a-h`, `a-s`, `a-j`, `a-k`) is an observation of someone else, so
# two parties' tracks of the same enemy missile are not a conflict between them.
# A conflict that lasts is re-announced to TAK clients at most this often (hub seconds);
# notices are durable (stored, recorded), so per-tick updates would flood store and ledger.
UPDATE_EVERY_S = 30.0
OWN_FORCES = frozenset({"a-f", "a-a", "a-n", "a-u", "a-p"})
KNOT = 0.514444
_CATEGORY_OF_KIND = {
    "volume": Category.AIRSPACE,
    "line": Category.AIRSPACE,
    "site": Category.SITE,
    "track": Category.TRACK,
}


class AirspaceDesk:
    def __init__(
        self, hub: Hub, hotline: HotlineDesk | None = None, clock: Callable[[], float] | None = None
    ) -> None:
        self.hub = hub
        self.hotline = hotline
        self.engine = ConflictEngine(minima=self._minima, id_key=hub.secret[:16])
        self.notices: dict[tuple[str, str], Notice] = {}  # (conflict id, party) -> latest
        self.threads: dict[str, str] = {}  # conflict id -> hotline message id
        self._pending_tracks: dict[tuple[str, str], CotEvent] = {}
        self.screen_every_s = hub.settings.get_float("timeout_track_screen_s")
        self._last_screen = -math.inf
        self._round: list[tuple[tuple[str, str], CotEvent]] = []
        self._last_sent: dict[tuple[str, str], float] = {}
        hub.validators[Category.AIRSPACE] = self.validate
        hub.validators[Category.SITE] = self.validate
        hub.observers.append(self.observe)

    def _minima(self, a: str, b: str) -> tuple[float, float]:
        policy = self.hub.policy
        rpz = policy.agreement_option(a, b, "rpz_m") or policy.agreement_option(b, a, "rpz_m")
        hpz = policy.agreement_option(a, b, "hpz_m") or policy.agreement_option(b, a, "hpz_m")
        return (rpz or 9260.0, hpz or 304.8)

    def validate(self, party: str, event: CotEvent) -> None:
        # A deletion by staleness needs no valid geometry; anything `observe` will read does.
        if event.stale > event.time or event.stale > self.hub.clock():
            airspace_from_cot(event)

    # ---- intake -------------------------------------------------------------------------

    def observe(self, item: Item, routes: dict[str, Disclosure]) -> None:
        if item.party == HUB:
            return
        now = self.hub.clock()
        changes: list[ConflictChange]
        if item.category in (Category.AIRSPACE, Category.SITE):
            if item.event.stale <= now:
                changes = self.engine.remove(item.party, item.uid, now)
            else:
                shape = airspace_from_cot(item.event)
                if isinstance(shape, Volume):
                    changes = self.engine.upsert_volume(item.party, item.uid, shape, now)
                elif isinstance(shape, Line):
                    changes = self.engine.upsert_line(item.party, item.uid, shape, now)
                else:
                    changes = self.engine.upsert_site(item.party, item.uid, shape, now)
        elif item.category is Category.TRACK and item.event.type[:3] in OWN_FORCES:
            # Tracks update many times a second; screening every update would put the
            # conflict engine on the relay's hot path. The latest state per track is kept and
            # screened once per tick (1 s), well inside a 300 s look-ahead.
            self._pending_tracks[item.key] = item.event
            return
        else:
            return
        self.publish(changes)

    def tick(self) -> None:
        """Expire what ended (once a second is plenty)."""
        self.publish(self.engine.expire(self.hub.clock()))

    def screen(self, budget_s: float = 0.003) -> int:
        """Screen live tracks in rounds, a slice at a time.

        Every `timeout_track_screen_s` a round takes the latest state of every track that
        moved; each call then screens tracks for at most `budget_s` of CPU, so a round of
        thousands of tracks never stalls the event loop that relays them. Returns how many
        tracks are still waiting in the current round.
        """
        now = self.hub.clock()
        if not self._round and now - self._last_screen >= self.screen_every_s:
            self._last_screen = now
            self._round = list(self._pending_tracks.items())
            self._pending_tracks = {}
        deadline = time.perf_counter() + budget_s
        while self._round and time.perf_counter() < deadline:
            (party, uid), e = self._round.pop()
            hae = e.point.hae if e.point.hae < 9999999.0 else 0.0
            track = Track(
                lat=e.point.lat,
                lon=e.point.lon,
                alt_m=hae,
                gs_mps=max(0.0, e.speed or 0.0),
                trk_deg=(e.course or 0.0) % 360.0,
                vs_mps=0.0,
                time_s=e.time,
            )
            self.publish(self.engine.upsert_track(party, uid, track, now))
        return len(self._round)

    # ---- output -------------------------------------------------------------------------

    def disclosure(
        self, recipient: str, other_party: str, other_item: str, conflict: Conflict
    ) -> Disclosure | None:
        """What the other side's agreements grant `recipient` about the other item."""
        category = _CATEGORY_OF_KIND.get(other_item, Category.AIRSPACE)
        lat, lon = _anchor(conflict)
        levels = self.hub.policy.disclosures(
            other_party, category, Point(lat, lon), self.hub.clock()
        )
        return levels.get(recipient)

    def publish(self, changes: list[ConflictChange]) -> None:
        for change in changes:
            c = across_the_line(change.conflict)
            for own, other in ((c.a, c.b), (c.b, c.a)):
                level = self.disclosure(own.party, other.party, other.item, c)
                if level is None:
                    continue
                notice = notice_for(c, own.party, level.value)
                self._send(notice, change.action, c)
            if change.action == "raised":
                self._open_thread(c)

    def _send(self, notice: Notice, action: str, conflict: Conflict) -> None:
        notice = msgspec.structs.replace(notice, geometry=canonical_geometry(notice.geometry))
        key = (notice.conflict_id, notice.recipient)
        now = self.hub.clock()
        if action == "updated" and now - self._last_sent.get(key, -math.inf) < UPDATE_EVERY_S:
            self.notices[key] = notice  # the API shows the latest; TAK gets a bounded rate
            return
        self._last_sent[key] = now
        if action == "cleared":
            self.notices.pop(key, None)
            self._last_sent.pop(key, None)
        else:
            self.notices[key] = notice
        lat, lon = _anchor(conflict)
        stale = now if action == "cleared" else max(now + 60.0, min(notice.end_s, now + 86400.0))
        body = msgspec.json.encode(notice).decode()
        text = describe(notice)
        uid = f"conflict-{notice.conflict_id}.{notice.recipient}"
        detail = (
            f'<csky_conflict state="{action}">{quote_text(body)}</csky_conflict>'
            f"<remarks>{quote(text)}</remarks>"
        )
        alert = new_event(uid, "t-x-csky-conflict", now, stale, Point(lat, lon), detail)
        self.hub.publish_from_hub(alert, Category.CONFLICT, [notice.recipient])
        ring = _ring(notice.geometry)
        if ring:
            links = "".join(f'<link point="{la},{lo}"/>' for lo, la in ring)
            shape = new_event(
                uid + ".shape",
                "u-d-f",
                now,
                stale,
                Point(lat, lon),
                f'{links}<strokeColor value="-65536"/><fillColor value="1627324416"/>'
                f'<contact callsign="CONFLICT {notice.kind}"/>',
            )
            self.hub.publish_from_hub(shape, Category.CONFLICT, [notice.recipient])

    def _open_thread(self, conflict: Conflict) -> None:
        if self.hotline is None or conflict.id in self.threads:
            return
        a, b = conflict.a.party, conflict.b.party
        now = self.hub.clock()
        policy = self.hub.policy
        linked = any(
            ag.in_force(now)
            and Category.HOTLINE in ag.categories
            and {ag.provider, *ag.recipients} >= {a, b}
            for ag in policy.agreements
        )
        if not linked:
            return
        lat, lon = _anchor(conflict)
        text = (
            f"CONFLICT {conflict.id}: {conflict.kind} between {a} and {b} near "
            f"{lat:.2f},{lon:.2f}, {conflict.floor_m:.0f}-{conflict.ceiling_m:.0f} m. "
            "Both parties acknowledge and deconflict."
        )
        message = self.hotline.open_thread(sorted({a, b}), text, conflict=conflict.id)
        self.threads[conflict.id] = message.id

    def for_party(self, party: str) -> list[dict[str, Any]]:
        out = []
        for (cid, recipient), notice in sorted(self.notices.items()):
            if recipient == party:
                record: dict[str, Any] = msgspec.to_builtins(notice)
                record["thread"] = self.threads.get(cid)
                out.append(record)
        return out


def across_the_line(conflict: Conflict) -> Conflict:
    """A party's own item crossing its own line into the other side concerns the other side.

    The engine reports it between the line and the item (both the same party's); the party
    whose side was entered takes the line's place, so it is told — with what it may know of
    the item — and a hotline thread opens between the two.
    """
    a, b, entered = conflict.a, conflict.b, conflict.entered_party
    if conflict.kind != "line-crossing" or a.party != b.party or not entered or entered == a.party:
        return conflict
    line, mover = (a, b) if a.item == "line" else (b, a)
    return msgspec.structs.replace(conflict, a=mover, b=Side(entered, line.uid, "line"))


def canonical_geometry(geometry: dict[str, Any] | None) -> dict[str, Any] | None:
    """The overlap with only its own corners.

    The engine densifies every edge along the geodesic, so an overlap's outline carries
    vertices spaced along the *other* item's edges — spacing that depends on how long those
    edges are beyond the overlap. Dropping vertices that lie within ~1 m of a straight
    run keeps the shape and removes that trace of what a notice must not reveal.
    """
    if not geometry:
        return geometry
    try:
        shape = shapely_shape(geometry)
    except (ValueError, TypeError, AttributeError):
        return None
    simple = shapely.set_precision(shape.simplify(1e-5, preserve_topology=True), 1e-7)
    return shapely.geometry.mapping(shapely.normalize(simple))  # type: ignore[no-any-return]


def _anchor(conflict: Conflict) -> tuple[float, float]:
    if conflict.geometry:
        try:
            point = shapely_shape(conflict.geometry).representative_point()
            return float(point.y), float(point.x)
        except (ValueError, TypeError, AttributeError):
            pass
    return 0.0, 0.0


def _ring(geometry: dict[str, Any] | None) -> list[tuple[float, float]]:
    if not geometry:
        return []
    # An overlap simplified to nothing is an empty polygon: no ring to draw.
    coordinates = geometry.get("coordinates") or []
    if geometry.get("type") == "MultiPolygon":
        coordinates = coordinates[0] if coordinates else []
    if geometry.get("type") not in ("Polygon", "MultiPolygon") or not coordinates:
        return []
    return [(float(x), float(y)) for x, y, *_ in coordinates[0]]


def describe(notice: Notice) -> str:
    window = ""
    if math.isfinite(notice.start_s) and math.isfinite(notice.end_s):
        window = f", {notice.start_s:.0f}-{notice.end_s:.0f}"
    cpa = ""
    if notice.tcpa_s is not None and notice.dcpa_m is not None:
        cpa = f", CPA in {notice.tcpa_s:.0f} s at {notice.dcpa_m:.0f} m"
    other = f" ({notice.other_uid})" if notice.other_uid else ""
    return (
        f"{notice.kind}: your {notice.own_uid} vs {notice.other_party}{other}, "
        f"{notice.floor_m:.0f}-{notice.ceiling_m:.0f} m{window}{cpa}"
    )
