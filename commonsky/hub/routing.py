"""Routing: which other parties receive an item, and in which form (`Router`, held by the hub).

Decided against the compiled policy (`Policy.entitled`), then narrowed: a federation link's
`audience` is delivered to exactly those parties; a receipt goes back only to the party whose
message it answers; an addressed item (`<marti><dest …/>`) only to the parties it names. An
item's routes are computed once and kept with it (`cached_route`) until the policy's next
change or a change of the directory of callsigns; replays, deletes and the ledger reuse them.
"""

from __future__ import annotations

from collections.abc import Callable

from commonsky.model import Category, CotEvent, Disclosure, Item, category_of_event
from commonsky.namespace import SHARED, read_name
from commonsky.policy import Policy
from commonsky.protocol.refs import RECEIPT_TYPES, answered_id

from .deletes import DELETE_TYPE, audience, target_key
from .directory import Directory
from .naming import Naming
from .outbox import Rendered, Variant
from .picture import Picture

# The form ("full" / "gen") a party receives an item in, by its disclosure level.
VARIANT: dict[Disclosure, Variant] = {Disclosure.FULL: "full", Disclosure.GENERALIZED: "gen"}
_GENERALIZED = Disclosure.GENERALIZED  # (`variant`, per recipient: see model._DRAWING)

# An item's routes, computed once: (routes, valid until, the directory epoch they assumed).
Routed = tuple[dict[str, Disclosure], float, int]


class Router:
    """Routes items for one hub. Reads the picture (a receipt's message, a delete's target)
    and the naming (whether an item's full form is per party), given by `bind` once the hub
    has made them: they are built on the router's `variant_for` and `sees_full`."""

    picture: Picture
    naming: Naming

    def __init__(
        self,
        policy: Policy,
        parties: frozenset[str],
        directory: Directory,
        clock: Callable[[], float],
    ) -> None:
        self.policy = policy
        self.parties = parties
        self.directory = directory
        self.clock = clock

    def bind(self, picture: Picture, naming: Naming) -> None:
        self.picture = picture
        self.naming = naming

    def route(self, item: Item, now: float) -> dict[str, Disclosure]:
        """The other parties that receive `item` now, and in which form."""
        if item.audience:
            return {p: Disclosure.FULL for p in item.audience if p != item.party}
        e = item.event
        routes = self.policy.entitled(item, now)
        if e.type in RECEIPT_TYPES:
            named = read_name(item.party, answered_id(e), self.parties)
            if named.party in (item.party, SHARED):
                # A receipt answers one message (`answered_id`), and is for the party that
                # sent it: the id as the receipt's party writes it names its own message
                # (or, a shared name, nobody's): it stays in the party.
                return {}
            # A receipt answering another party's message goes to that party only, and
            # only if that message was sent to the receipt's party: a name in the
            # recipient's own namespace never arrives from anybody else otherwise.
            held = self.picture.chat_key(named)
            message = self.picture.get(held) if held is not None else None
            if message is None or item.party not in self.cached_route(message, now):
                return {}
            routes = {p: d for p, d in routes.items() if p == named.party}
        if e.dest_parties or e.dest_callsigns or e.dest_uids:
            # Addressed: to the parties named, the parties whose own devices use one of the
            # callsigns, the parties owning the uids. Whether a party qualifies depends only
            # on that party's own traffic, so another party claiming the same callsign
            # cannot divert or block it.
            wanted = set(e.dest_parties)
            for callsign in e.dest_callsigns:
                wanted |= self.directory.parties(callsign)
            for text in e.dest_uids:
                wanted.add(read_name(item.party, text, self.parties).party)
            routes = {p: d for p, d in routes.items() if p in wanted}
        return routes

    def cached_route(self, rendered: Rendered, now: float) -> dict[str, Disclosure]:
        """`route` for a picture item, computed once until the policy or directory changes."""
        if (
            rendered.routes is None
            or now >= rendered.routes_until
            or rendered.routes_epoch != self.directory.epoch
        ):
            rendered.routes = self.route(rendered.item, now)
            rendered.routes_until = self.policy.next_change(now)
            rendered.routes_epoch = self.directory.epoch
        return rendered.routes

    def routed(self, item: Item, now: float) -> Routed:
        """`item`'s routes now, with how long they hold (to keep with it: `cached_route`)."""
        return (self.route(item, now), self.policy.next_change(now), self.directory.epoch)

    def variant(self, rendered: Rendered, party: str, level: Disclosure) -> Variant:
        """The output `party` gets of `rendered` at disclosure `level`."""
        if level is _GENERALIZED:
            return "gen"
        self.naming.read(rendered)
        return f"full:{party}" if rendered.per_party else "full"

    def variant_for(self, rendered: Rendered, party: str, now: float) -> Variant | None:
        """The output `party` gets of a picture item now, or None if it may not see it."""
        item = rendered.item
        if item.event.stale <= now:
            return None
        if item.party == party:
            return "own"
        level = self.cached_route(rendered, now).get(party)
        return None if level is None else self.variant(rendered, party, level)

    def sees_full(self, rendered: Rendered, party: str) -> bool:
        variant = self.variant_for(rendered, party, self.clock())
        return variant is not None and variant.startswith("full")

    def reached(self, rendered: Rendered, now: float) -> dict[str, set[str]]:
        """`deletes.audience`: the other parties a picture item reached, with their forms."""
        routes = {p: VARIANT[level] for p, level in self.cached_route(rendered, now).items()}
        return audience(rendered.seen, routes, rendered.item.party)

    def receivers(self, party: str, event: CotEvent) -> set[str]:
        """The parties `event` would reach if `party` sent it now (its own included): what
        a delete would reach, or what routing gives. Changes nothing."""
        now = self.clock()
        if event.type == DELETE_TYPE:
            key = target_key(party, event, self.parties, strict=False)
            rendered = self.picture.get(key) if key is not None else None
            return {party, *(self.reached(rendered, now) if rendered else ())}
        category: Category | None = category_of_event(event)
        if category is None:
            return {party}  # types that never leave the party
        item = Item(party=party, user="", category=category, event=event, received=now)
        return {party, *self.route(item, now)}
