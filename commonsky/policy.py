"""Who may see what: agreements compiled into a routing table, deny by default.

The table maps (provider, category) to the grants that could apply; per item only those
few grants are checked for area and validity. Inside one party everything is shared. Across
parties an item flows only under an agreement in force for its category, its position
(the agreement's area of interest) and the current time. Several grants to one recipient
combine to the most generous disclosure among those in force.

Uids are namespaced per party: a party's own clients see its items under their own uids,
every other party sees `PARTY::uid` (or an opaque `PARTY::g-…` when generalized), and names
are translated both ways — the rule is in `commonsky/namespace.py`.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import shapely
from shapely.geometry import Polygon
from shapely.prepared import PreparedGeometry, prep

from commonsky.model import UNKNOWN, Category, CotEvent, Disclosure, Item, Point, known
from commonsky.namespace import handle

_RANK = {Disclosure.CONFLICTS_ONLY: 0, Disclosure.GENERALIZED: 1, Disclosure.FULL: 2}


@dataclass(frozen=True, slots=True)
class Party:
    id: str
    name: str = ""
    token: str = ""  # bearer token for the HTTP API and the web page ("" = none)
    country: str = ""  # ISO 3166-1 alpha-2 code of the country whose regions it warns
    federate: str = ""  # the [[federate]] (peer hub) it is behind; "" for the hub's own


@dataclass(frozen=True)
class Agreement:
    name: str
    provider: str
    recipients: tuple[str, ...]
    categories: frozenset[Category]
    disclosure: Disclosure
    area: tuple[tuple[float, float], ...] | None = None  # closed ring of (lon, lat)
    valid_from: float | None = None
    valid_until: float | None = None
    options: dict[str, float] = field(default_factory=dict)  # per-agreement tunables

    def in_force(self, now: float) -> bool:
        if self.valid_from is not None and now < self.valid_from:
            return False
        return not (self.valid_until is not None and now >= self.valid_until)


@dataclass(frozen=True, slots=True)
class Grant:
    agreement: Agreement
    recipient: str
    area: PreparedGeometry | None

    def applies(self, point: Point, now: float) -> bool:
        if not self.agreement.in_force(now):
            return False
        return self.area is None or self.area.contains(shapely.Point(point.lon, point.lat))


class Policy:
    """Compiled agreements. Immutable; a config change builds a new one."""

    def __init__(self, parties: Iterable[Party], agreements: Sequence[Agreement]) -> None:
        self.parties = {p.id: p for p in parties}
        self.agreements = tuple(agreements)
        table: dict[tuple[str, Category], list[Grant]] = defaultdict(list)
        for agreement in self.agreements:
            area = prep(Polygon(agreement.area)) if agreement.area else None
            for recipient in agreement.recipients:
                if recipient == agreement.provider:
                    continue
                for category in agreement.categories:
                    table[(agreement.provider, category)].append(Grant(agreement, recipient, area))
        self._table = dict(table)
        # recipient -> every provider some agreement (in force or not) grants it anything of.
        providers: dict[str, set[str]] = defaultdict(set)
        for (provider, _), grants in self._table.items():
            for grant in grants:
                providers[grant.recipient].add(provider)
        self._providers = {r: frozenset(p) for r, p in providers.items()}
        # Every time an agreement starts or ends, in order (`next_change`: asked per item).
        self._changes = sorted(
            {t for a in self.agreements for t in (a.valid_from, a.valid_until) if t is not None}
        )
        # (provider, category) pairs some grant of which has an area: their items' routes
        # depend on where each is. Every other pair's depend only on which agreements are in
        # force, the same between two consecutive `_changes` (its "era", `bisect_right`):
        # kept per pair as (era, parties entitled), asked for every item (`entitled`).
        self._placed = {key for key, grants in self._table.items() if any(g.area for g in grants)}
        self._by_era: dict[tuple[str, Category], tuple[int, dict[str, Disclosure]]] = {}

    def providers_to(self, recipient: str) -> frozenset[str]:
        """The other parties whose items can ever reach `recipient`: those some agreement,
        in force or not, grants it anything of (for a store's query to leave out the rest:
        the Marti search)."""
        return self._providers.get(recipient, frozenset())

    def next_change(self, now: float) -> float:
        """When the set of agreements in force next changes (inf if never): the first start
        or end of an agreement after `now`."""
        at = bisect_right(self._changes, now)
        return self._changes[at] if at < len(self._changes) else math.inf

    def disclosures(
        self, provider: str, category: Category, point: Point, now: float
    ) -> dict[str, Disclosure]:
        """Every other party entitled to something of this item, with its best disclosure."""
        out: dict[str, Disclosure] = {}
        for grant in self._table.get((provider, category), ()):
            if grant.applies(point, now):
                best = out.get(grant.recipient)
                level = grant.agreement.disclosure
                if best is None or _RANK[level] > _RANK[best]:
                    out[grant.recipient] = level
        return out

    def entitled(self, item: Item, now: float) -> dict[str, Disclosure]:
        """Parties (other than the originator) the agreements let receive the item, and in
        which form, before any addressing narrows them."""
        key = (item.party, item.category)
        if key in self._placed:
            entitled = self.disclosures(item.party, item.category, item.event.point, now)
            return {p: d for p, d in entitled.items() if _relayed(d)}
        era = bisect_right(self._changes, now)
        kept = self._by_era.get(key)
        if kept is None or kept[0] != era:
            entitled = self.disclosures(item.party, item.category, item.event.point, now)
            kept = self._by_era[key] = (era, {p: d for p, d in entitled.items() if _relayed(d)})
        return dict(kept[1])  # (a copy: the caller's to keep or narrow)

    def route(self, item: Item, now: float) -> dict[str, Disclosure]:
        """Parties (other than the originator) that receive the item, and in which form."""
        routed = self.entitled(item, now)
        if item.event.dest_parties:
            # A directed message (marti/dest party=…) narrows, never widens, the audience.
            wanted = set(item.event.dest_parties)
            routed = {p: d for p, d in routed.items() if p in wanted}
        return routed

    def delivers(
        self, provider: str, recipient: str, category: Category, point: Point, now: float
    ) -> bool:
        """Whether an item of `provider` in `category` at `point`, directed to `recipient`,
        would reach it now (asked before accepting a hotline message over the API)."""
        level = self.disclosures(provider, category, point, now).get(recipient)
        return level is not None and _relayed(level)

    def agreement_option(self, provider: str, recipient: str, name: str) -> float | None:
        """A per-agreement tunable (e.g. `ack_deadline_s`) for this pair, if any sets it."""
        for agreement in self.agreements:
            if (
                agreement.provider == provider
                and recipient in agreement.recipients
                and name in agreement.options
            ):
                return agreement.options[name]
        return None


def _relayed(level: Disclosure) -> bool:
    # `conflicts-only` grants no copy of the item: only conflict notices about it.
    return level is not Disclosure.CONFLICTS_ONLY


def snap(value: float, grid: float) -> float:
    """Centre of the grid cell holding `value`."""
    return round((math.floor(value / grid) + 0.5) * grid, 6)


def generalize(event: CotEvent, party: str, secret: bytes, grid_deg: float) -> CotEvent:
    """What `generalized` disclosure delivers.

    Position snapped to the centre of a `grid_deg` cell (0.1° ≈ 11 km by default), height
    to the nearest 500 m, ce/le widened to cover the cell; an atom's type (`a-…`) cut to its
    first three atoms (e.g. `a-h-A`: affiliation and battle dimension — enough for a map
    symbol), other types kept (they name the category); uid replaced
    by an opaque stable handle; times kept; every detail dropped (callsign, speed, course,
    remarks, links, device info) except an evidence photo's footprint, itself coarsened to
    whole grid cells.
    """
    p = event.point
    # What is unknown (CoT's 9999999, or NaN) stays unknown: nothing to snap or round.
    point = Point(
        lat=max(-90.0, min(90.0, snap(p.lat, grid_deg))) if p.position_known else p.lat,
        lon=max(-180.0, min(180.0, snap(p.lon, grid_deg))) if p.position_known else p.lon,
        hae=round(p.hae / 500.0) * 500.0 if p.hae_known else p.hae,
        ce=max(p.ce if known(p.ce) else 0.0, grid_deg * 111_320.0),
        le=500.0 if p.hae_known else UNKNOWN,
    )
    # Only an atom's type (`a-…`) is coarsened: its later atoms are the MIL-STD-2525
    # function. Any other type names the kind of thing it is — its category — and cut short
    # it would be another category (`b-r-f-h-c` a `b-r-f`, `u-d-f-m` a `u-d-f`).
    cot_type = "-".join(event.type.split("-")[:3]) if event.type.startswith("a-") else event.type
    detail = ""
    if "<csky_footprint" in event.detail:
        # An evidence photo's footprint, coarsened like the position (evidence/marker.py).
        from commonsky.evidence.marker import generalized_footprint

        detail = generalized_footprint(event.detail, grid_deg)
    return CotEvent(
        uid=handle(secret, party, event.uid),
        type=cot_type,
        time=event.time,
        start=event.start,
        stale=event.stale,
        how="h-e",
        point=point,
        detail=detail,
    )
