"""Deconfliction desk: keep the conflict engine fed and tell each party what it may know.

Airspace items and sites (from TAK drawings or the API) and live tracks go into the
incremental ConflictEngine, between different parties only. For every change the desk makes
one notice per party involved, built by `notice_for` with the disclosure the *other* side's
agreements grant that party — `full`, `generalized` or `conflicts-only` (only the
intersection). A party with no agreement at all from the other side gets no notice: deny by
default holds for conflicts too. Notices go out as hub-made, durable `conflict` items
(`t-x-csky-conflict` carrying the notice as JSON, plus a `u-d-f` shape of the overlap), so
they are stored, recorded in the ledger and replayed like anything else. When both parties
are told of a raised conflict and have a hotline agreement, it also opens a hotline thread
both must acknowledge (its text names the conflict, nothing of either item: each party's
notice says what it may know).

After a restart the engine is rebuilt from the picture the hub starts with (`rebuild`): the
notices already sent are read back, the stored volumes, lines and sites are fed to the engine,
and only the difference is published — an update where a conflict changed while the hub was
down, a clearing where it ended. A single hub starts with no live items (never stored), so
its tracks' conflicts are cleared then and raised again at their next report. A cluster core
taking over starts with the live items the dead core held as well (cluster/live_kv.py): its
rebuild waits for them (`rebuild(live_follows=True)`, then `restored`), so a conflict the
dead core told that still holds is told nothing again, one that ended is cleared, and one
between restored items it never told is raised, once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import shapely
import shapely.errors
import shapely.geometry
from lxml import etree
from shapely.geometry import shape as shapely_shape

from commonsky.deconflict.engine import Conflict, ConflictChange, ConflictEngine, Side, Track
from commonsky.deconflict.notice import Notice, notice_for
from commonsky.deconflict.shapes import Item as Shape
from commonsky.deconflict.shapes import Line, Site, Volume
from commonsky.desks.drawings import screened_shape
from commonsky.desks.hotline import HotlineDesk
from commonsky.hub.desk import Routes
from commonsky.hub.desk_view import DeskView
from commonsky.model import HUB, Category, CotEvent, Disclosure, Item, Point, is_deleted
from commonsky.protocol.cot import detail_tree, new_event, quote, quote_text

log = logging.getLogger("commonsky.deconflict")
# Deconfliction is about the parties' own forces: a track a party reports as hostile,
# suspect, joker or faker (`a-h`, `a-s`, `a-j`, `a-k`) is an observation of someone else, so
# two parties' tracks of the same enemy missile are not a conflict between them.
# A conflict that lasts is re-announced to TAK clients at most this often (hub seconds);
# notices are durable (stored, recorded), so per-tick updates would flood store and ledger.
UPDATE_EVERY_S = 30.0
NOTICE_TYPE = "t-x-csky-conflict"
OWN_FORCES = frozenset({"a-f", "a-a", "a-n", "a-u", "a-p"})
# (`observe`, for every item: see model._DRAWING.)
_TRACK, _SHAPED = Category.TRACK, (Category.AIRSPACE, Category.SITE)
KNOT = 0.514444
_CATEGORY_OF_KIND = {
    "volume": Category.AIRSPACE,
    "line": Category.AIRSPACE,
    "site": Category.SITE,
    "track": Category.TRACK,
}


class AirspaceDesk:
    """The deconfliction desk: airspace items and tracks into the conflict engine, its
    changes out as notices (and hotline threads) to each side."""

    name = "airspace"
    categories = (Category.AIRSPACE, Category.SITE)

    def __init__(
        self,
        hub: DeskView,
        hotline: HotlineDesk | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.hub = hub  # the hub as a desk sees it (hub/desk_view.py)
        self.hotline = hotline
        self.engine = ConflictEngine(minima=self._minima, id_key=hub.id_key())
        self.notices: dict[tuple[str, str], Notice] = {}  # (conflict id, party) -> latest
        self.threads: dict[str, str] = {}  # conflict id -> hotline message id
        # Parties behind federation links: told by their own hub, never by this one (a
        # notice here could not reach them; a thread here could not be acknowledged).
        self.remote: frozenset[str] = frozenset()
        # Hands a notice for a party behind a link to that party's hub (private links:
        # federation/private.py); None: such parties are not told here.
        self.relay: Callable[[Notice, str], None] | None = None
        self._pending_tracks: dict[tuple[str, str], CotEvent] = {}
        self.screen_every_s = hub.settings.timeout_track_screen_s
        self._last_screen = -math.inf
        self._round: list[tuple[tuple[str, str], CotEvent]] = []
        self._last_sent: dict[tuple[str, str], float] = {}
        # While rebuilding: the notices sent before the restart, and those found again.
        self._told: dict[tuple[str, str], Notice] | None = None
        self._rebuilt: set[tuple[str, str]] = set()

    def _minima(self, a: str, b: str) -> tuple[float, float]:
        policy = self.hub.policy
        rpz = policy.agreement_option(a, b, "rpz_m") or policy.agreement_option(b, a, "rpz_m")
        hpz = policy.agreement_option(a, b, "hpz_m") or policy.agreement_option(b, a, "hpz_m")
        return (rpz or 9260.0, hpz or 304.8)

    def check(self, party: str, event: CotEvent) -> Shape | None:
        """Refuse geometry the engine cannot hold (GeometryError, a RemoteProtocolError) in
        what its sender declared airspace; the shape read is `observe`'s. A TAK drawing not
        declared airspace whose geometry it cannot hold passes, unscreened
        (`drawings.screened_shape`). A deletion by staleness needs no valid geometry."""
        if event.stale > event.time or event.stale > self.hub.clock():
            shape = screened_shape(event)
            if shape is None:
                log.info(
                    "%s/%s: %s relayed, not screened for conflicts: its geometry is no area"
                    " or route the conflict engine can hold", party, event.uid, event.type,
                )  # fmt: skip
            return shape
        return None

    # ---- intake -------------------------------------------------------------------------

    def observe(self, item: Item, routes: Routes, parsed: object | None = None) -> None:
        if item.party == HUB:
            return
        if is_deleted(item.event):
            # Deleted by its owner (`t-x-d-d`): its conflicts clear and their threads close.
            self._pending_tracks.pop(item.key, None)
            now = self.hub.clock()
            self.publish(self.engine.remove(item.party, item.uid, now), withdrawn=True)
        elif item.category in _SHAPED:
            shape = parsed if isinstance(parsed, Volume | Line | Site) else None
            self.publish(self._upsert(item, self.hub.clock(), shape))
        elif _own_forces_track(item):  # (`_screened`: its party and deletion asked above)
            # Tracks update many times a second; screening every update would put the
            # conflict engine on the relay's hot path. The latest state per track is kept and
            # screened once per tick (1 s), well inside a 300 s look-ahead.
            self._pending_tracks[(item.party, item.event.uid)] = item.event  # (`item.key`)

    def _upsert(self, item: Item, now: float, shape: Shape | None = None) -> list[ConflictChange]:
        if item.event.stale <= now:
            return self.engine.remove(item.party, item.uid, now)
        if shape is None:
            shape = screened_shape(item.event)
        if shape is None:  # (a drawing the engine cannot hold: what it held of it goes)
            return self.engine.remove(item.party, item.uid, now)
        if isinstance(shape, Volume):
            return self.engine.upsert_volume(item.party, item.uid, shape, now)
        if isinstance(shape, Line):
            return self.engine.upsert_line(item.party, item.uid, shape, now)
        return self.engine.upsert_site(item.party, item.uid, shape, now)

    def rebuild(self, live_follows: bool = False) -> None:
        """After a restart: the engine fed again from the stored picture, the notices sent
        before read back, and only what changed meanwhile published. `live_follows`: live
        items restored into the picture come next (`restored`, a cluster core's takeover):
        the notices not found again are cleared only then."""
        now = self.hub.clock()
        told = self._stored_notices(keep=True)
        changes: list[ConflictChange] = []
        for item in self.hub.held_items():
            if item.party != HUB and item.category in (Category.AIRSPACE, Category.SITE):
                try:
                    changes += self._upsert(item, now)
                except Exception as exc:  # never a reason not to start: set aside
                    self.hub.quarantine_item(item, "airspace", f"{type(exc).__name__}: {exc}")
        self.notices = dict(told)
        self._told = told
        try:
            self.publish(changes)
        finally:
            if not live_follows:
                self._end_rebuild()

    def restored(self, items: Iterable[Item]) -> None:
        """Live items a cluster core restored into its picture at a takeover, as the dead
        core held them (cluster/live_kv.py `LiveKeeper.restore`; nothing of them was sent or
        recorded again): its own-forces tracks go into the engine at once (screened now,
        not at the next round), under the rule of a restart's rebuild — what the dead core
        told and still holds is told nothing again (the notices it stored are compared, not
        its memory: a notice in PostgreSQL is one a client may hold), what changed is told
        as an update, a conflict between restored items it never told is raised (once: the
        engine now holds it). Ends the rebuild `rebuild(live_follows=True)` left open,
        clearing what was not found again; without one (a rebuild ended already) the
        notices stored now are compared, and nothing is cleared."""
        held = self._told is not None
        if not held:
            self._told, self._rebuilt = self._stored_notices(keep=False), set()
        now = self.hub.clock()
        changes: list[ConflictChange] = []
        try:
            for item in items:
                if _screened(item):  # (none is pending: a key in the picture is not restored)
                    changes += self._screen_one(item.party, item.uid, item.event, now)
            self.publish(changes)
        finally:
            if held:
                self._end_rebuild()
            else:
                self._told, self._rebuilt = None, set()

    def _end_rebuild(self) -> None:
        told, self._told = self._told or {}, None
        for key, notice in told.items():
            if key not in self._rebuilt:  # its conflict ended while the hub was down
                self._send(notice, "cleared")
        self._rebuilt = set()

    def _stored_notices(self, keep: bool) -> dict[tuple[str, str], Notice]:
        """The notices in the picture as told, by (conflict id, recipient); `keep`: when
        each was sent and its thread are taken back too (a restart)."""
        told: dict[tuple[str, str], Notice] = {}
        for item in self.hub.held_items():
            if item.party == HUB and item.event.type == NOTICE_TYPE:
                notice = stored_notice(item.event)
                if notice is not None:
                    key = (notice.conflict_id, notice.recipient)
                    told[key] = notice
                    if keep:
                        self._last_sent[key] = item.received
                        if notice.thread:
                            self.threads[notice.conflict_id] = notice.thread
        return told

    def tick(self) -> None:
        """Expire what ended (once a second is plenty)."""
        self.publish(self.engine.expire(self.hub.clock()))

    def screen(self, budget_s: float = 0.001) -> int:
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
            self.publish(self._screen_one(party, uid, e, now))
        return len(self._round)

    def _screen_one(self, party: str, uid: str, e: CotEvent, now: float) -> list[ConflictChange]:
        """One track's latest report into the engine; the changes it makes."""
        if not e.point.position_known:
            # Nowhere known: nothing to screen, and its last position no longer holds.
            return self.engine.remove(party, uid, now)
        track = Track(
            lat=e.point.lat,
            lon=e.point.lon,
            # CoT's unknown (9999999 or NaN) stays unknown: screened horizontally alone.
            alt_m=e.point.hae if e.point.hae_known else math.nan,
            gs_mps=max(0.0, e.speed or 0.0),
            trk_deg=(e.course or 0.0) % 360.0,
            vs_mps=0.0,
            time_s=e.time,
        )
        return self.engine.upsert_track(party, uid, track, now)

    # ---- output -------------------------------------------------------------------------

    def disclosure(
        self, recipient: str, other_party: str, other_item: str, conflict: Conflict
    ) -> Disclosure | None:
        """What the other side's agreements grant `recipient` about the other item."""
        category = _CATEGORY_OF_KIND.get(other_item, Category.AIRSPACE)
        lat, lon = _anchor(conflict.geometry)
        levels = self.hub.policy.disclosures(
            other_party, category, Point(lat, lon), self.hub.clock()
        )
        return levels.get(recipient)

    def _handle(self, party: str, uid: str) -> str:
        """The uid under which `party`'s item `uid` reaches a generalized recipient."""
        return self.hub.handle(party, uid)

    def publish(
        self, changes: list[ConflictChange], withdrawn: bool = False, private: bool = False
    ) -> None:
        """Notices for each change; `withdrawn`: an item was deleted, so the hotline threads
        of the conflicts it cleared are closed. `private`: conflicts a private round found
        with a peer hub (federation/private.py) — the other side is an opaque handle and
        only the overlap is known, so every notice is `conflicts-only`."""
        for change in changes:
            try:
                self._publish_one(change, withdrawn or private, private)
            except Exception:  # our bug: this change's notices are lost, not the others'
                self.hub.metrics.internal_error("conflict_notice")
                log.exception("telling the parties of conflict %s failed", change.conflict.id)

    def _publish_one(self, change: ConflictChange, withdrawn: bool, private: bool = False) -> None:
        c = across_the_line(change.conflict)
        entitled = []
        for own, other in ((c.a, c.b), (c.b, c.a)):
            level = self.disclosure(own.party, other.party, other.item, c)
            if level is not None:
                entitled.append((own, Disclosure.CONFLICTS_ONLY if private else level))
        told = [(own, level) for own, level in entitled if own.party not in self.remote]
        thread = self.threads.get(c.id)
        if change.action == "raised" and len(entitled) == 2 and told and thread is None:
            thread = self._open_thread(c)
        for own, level in told:
            notice = notice_for(c, own.party, level.value, self._handle, thread)
            self._send(notice, change.action)
        if self.relay is not None and not private:
            # A conflict between our own items (a plan across our own line) that concerns a
            # party behind a link: its hub tells it, conflicts-only (the overlap).
            for own, _level in entitled:
                if own.party in self.remote:
                    notice = notice_for(c, own.party, Disclosure.CONFLICTS_ONLY.value)
                    self.relay(canonical(notice), change.action)
        if change.action == "cleared" and withdrawn and thread is not None:
            self._close_thread(c.id, thread)

    def from_peer(self, notice: Notice, action: str) -> None:
        """A notice a peer hub made for one of our parties (a conflict between its own
        items that concerns ours): told as ours are, with our own hotline thread for it
        where a hotline agreement links the two parties."""
        thread = self.threads.get(notice.conflict_id)
        if action == "raised" and thread is None and self.hotline is not None:
            ours = Side(notice.recipient, notice.own_uid, notice.own_item)  # type: ignore[arg-type]
            theirs = Side(notice.other_party, "", "volume")
            stub = Conflict(
                id=notice.conflict_id,
                kind=notice.kind,
                a=ours,
                b=theirs,
                geometry=None,
                floor_m=notice.floor_m,
                ceiling_m=notice.ceiling_m,
                start_s=notice.start_s,
                end_s=notice.end_s,
            )
            thread = self._open_thread(stub)
        self._send(msgspec.structs.replace(notice, thread=thread), action)

    def _send(self, notice: Notice, action: str) -> None:
        notice = msgspec.structs.replace(notice, geometry=canonical_geometry(notice.geometry))
        key = (notice.conflict_id, notice.recipient)
        now = self.hub.clock()
        if self._told is not None:  # rebuilding: publish only what differs from what was told
            self._rebuilt.add(key)
            before = self._told.get(key)
            if before is not None and msgspec.json.encode(before) == msgspec.json.encode(notice):
                return
            action = "updated" if before is not None else action
        elif action == "updated" and now - self._last_sent.get(key, -math.inf) < UPDATE_EVERY_S:
            self.notices[key] = notice  # the API shows the latest; TAK gets a bounded rate
            return
        self._last_sent[key] = now
        if action == "cleared":
            self.notices.pop(key, None)
            self._last_sent.pop(key, None)
        else:
            self.notices[key] = notice
        lat, lon = _anchor(notice.geometry)
        stale = now if action == "cleared" else max(now + 60.0, min(notice.end_s, now + 86400.0))
        body = msgspec.json.encode(notice).decode()
        text = describe(notice)
        uid = f"conflict-{notice.conflict_id}.{notice.recipient}"
        detail = (
            f'<csky_conflict state="{action}">{quote_text(body)}</csky_conflict>'
            f"<remarks>{quote(text)}</remarks>"
        )
        alert = new_event(uid, NOTICE_TYPE, now, stale, Point(lat, lon), detail)
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

    def _open_thread(self, conflict: Conflict) -> str | None:
        if self.hotline is None:
            return None
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
            return None
        # One text for both parties: it names the conflict, nothing of either item (each
        # party's notice, linked to this thread, says what that party may know).
        text = (
            f"CONFLICT {conflict.id}: {conflict.kind} between {a} and {b}; see your conflict "
            "notice. Both parties acknowledge and deconflict."
        )
        # A party behind a link is told by its own hub, which opens its own thread for the
        # same conflict id (a private round names it alike on both hubs).
        local = sorted({a, b} - self.remote)
        message = self.hotline.open_thread(local, text, conflict=conflict.id)
        self.threads[conflict.id] = message.id
        return message.id

    def _close_thread(self, conflict_id: str, thread: str) -> None:
        if self.hotline is None:
            return
        message = self.hotline.find((HUB, thread.partition("::")[2]))
        if message is not None:
            reason = f"conflict {conflict_id} cleared: an item was deleted"
            self.hotline.close(message, reason, self.hub.clock())

    def for_party(self, party: str) -> list[dict[str, Any]]:
        out = []
        for (cid, recipient), notice in sorted(self.notices.items()):
            if recipient == party:
                record: dict[str, Any] = msgspec.to_builtins(notice)
                record["thread"] = self.threads.get(cid)
                out.append(record)
        return out


def _screened(item: Item) -> bool:
    """Whether `item` is a track of a party's own forces (screened against the others)."""
    return item.party != HUB and _own_forces_track(item) and not is_deleted(item.event)


def _own_forces_track(item: Item) -> bool:
    """`_screened`'s rule on the item's kind: a track whose type is one of OWN_FORCES."""
    return item.category is _TRACK and item.event.type[:3] in OWN_FORCES


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


def canonical(notice: Notice) -> Notice:
    return msgspec.structs.replace(notice, geometry=canonical_geometry(notice.geometry))


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
        simple = shapely.set_precision(shape.simplify(1e-5, preserve_topology=True), 1e-7)
        return shapely.geometry.mapping(shapely.normalize(simple))  # type: ignore[no-any-return]
    except (ValueError, TypeError, AttributeError, shapely.errors.ShapelyError):
        return None


def stored_notice(event: CotEvent) -> Notice | None:
    """The notice a stored `t-x-csky-conflict` item carries (None once it was cleared)."""
    try:
        node = detail_tree(event.detail).find("csky_conflict")
        if node is None or node.get("state") == "cleared" or not node.text:
            return None
        return msgspec.json.decode(node.text.encode(), type=Notice)
    except (etree.XMLSyntaxError, msgspec.DecodeError):  # (ValidationError is a DecodeError)
        log.warning("stored notice %s cannot be read; not carried over", event.uid)
        return None


def _anchor(geometry: dict[str, Any] | None) -> tuple[float, float]:
    """A point of the overlap for the notice's CoT <point>: a point inside an area, the
    centroid of a path (continuous in its coordinates: float noise cannot flip it to another
    vertex, as `representative_point` of a line may)."""
    if geometry:
        try:
            shape = shapely_shape(geometry)
            polygonal = shape.geom_type in ("Polygon", "MultiPolygon")
            point = shape.representative_point() if polygonal else shape.centroid
            if not point.is_empty:  # (an overlap simplified to nothing has no point)
                return float(point.y), float(point.x)
        except (ValueError, TypeError, AttributeError, shapely.errors.ShapelyError):
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
    band = _band(notice.floor_m, notice.ceiling_m, notice.altitude_unknown)
    return (
        f"{notice.kind}: your {notice.own_uid} vs {notice.other_party}{other}, {band}{window}{cpa}"
    )


def _band(floor_m: float, ceiling_m: float, altitude_unknown: bool) -> str:
    """The altitude band in words; a track of unknown altitude is said to be one."""
    if not altitude_unknown:
        return f"{floor_m:.0f}-{ceiling_m:.0f} m"
    if math.isnan(floor_m):
        return "altitude unknown (screened horizontally)"
    return f"altitude unknown (screened horizontally; {floor_m:.0f}-{ceiling_m:.0f} m)"
