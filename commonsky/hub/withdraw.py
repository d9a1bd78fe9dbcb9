"""Withdrawals: when an agreement stops being in force, what it carried leaves the maps.

A TAK client keeps a marker on its map until the marker's stale time (often hours away) or a
`t-x-d-d` delete naming it. So when an agreement ends (or any change of the agreements in
force narrows who may see an item), new versions stop flowing but the recipients' clients
would keep showing the last one. At each change of the agreements in force (the times
`Policy.next_change` gives; checked by the hub's housekeeping, `Withdrawals.check`), for every
item in the picture the parties its latest version is routed to just before the change and
at it are compared: a party routed before, not routed now, and that was delivered the item
(`Rendered.seen`) gets a delete on each of its connected clients, under each name it got the
item by (the form `Deletes.apply` sends: `PARTY::uid` in full, the opaque handle when
generalized); updates of the item still pending in its outboxes are discarded; it leaves
`seen` (should an agreement let it see the item again, it gets the next version, or a replay).
A party still routed whose best disclosure drops from full to generalized (an agreement giving
`full` ends, one giving `generalized` goes on) is withdrawn the full form only (`stopped`):
`PARTY::uid` with its exact position goes; a generalized form it holds stays, and the next
version comes in that form as usual. A party given more (generalized to full) is withdrawn
nothing: it keeps the handle until the next version (or its stale time).

Parties behind a federation link have no connection here: the watchers (`Withdrawals.watchers`,
federation/bridge.py `Federation.withdrawn`) are told first, and send the peer a contact delete
(as for the owner's `t-x-d-d`) for a form only when every party behind that link that got it
stops getting it at this change: the peer deletes its copy for all the parties it gave it
to, so a party that keeps the form (or got it and stopped at an earlier change) must not be
told. Otherwise, or with the link down, nothing crosses and those forms stay in `seen` (the
peer still shows them until stale); the same rule keeps them from crossing at a later change.

Why only at an agreement's change, and only by the latest version: a withdrawal must depend
only on what the recipient may know. Which agreements are in force, and when they end, is
known to both parties; the latest version of the item was one the recipient was entitled to
(it was routed to it, in the form withdrawn). An item that moves out of an agreement's area
of interest is NOT withdrawn: a delete sent then would tell the recipient where the item is
now (outside its area), which it may not see — interference. Such an item goes stale on the
recipient's map as before. For the same reason the check asks routing at the change's
instant, never at the moment the housekeeping happens to run.

Never withdrawn: hotline messages (GeoChat: their record is signed, countersigned and in
the ledger, and a delivered message stays delivered), conflict notices and everything else
the hub makes for a fixed audience (`Item.audience`: a federation link's items too), and a
directed item only as far as routing (which narrows it by its `<marti><dest>`) says.
Withdrawals are transient like deletes: never stored, never recorded, never replayed. A
client connecting after the change is not owed the item anyway: the replay follows the routes
as they are now (`Picture.replay`). On a cluster the core's hub does the same through its
proxy connections, so the edges' clients get the deletes as they get any other output.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from commonsky.model import HUB, Category, CotEvent, Disclosure, Item, Point
from commonsky.protocol.cot import quote

from .connections import Connections
from .deletes import DELETE_TYPE, form_level
from .outbox import Pending, Rendered
from .picture import Picture
from .routing import Router

log = logging.getLogger("commonsky.hub")

# Categories whose delivered record stands: never withdrawn (see the module's docstring).
NEVER_WITHDRAWN: frozenset[Category] = frozenset({Category.HOTLINE, Category.CONFLICT})
WITHDRAWAL_STALE_S = 60.0  # how long a withdrawal (the delete event) is valid
# (item, its `seen`, {party: forms the change stopped}) -> {party: forms not withdrawn}
Watcher = Callable[[Item, dict[str, set[str]], dict[str, set[str]]], dict[str, set[str]]]


def withdrawal(item: Item, now: float) -> Item:
    """The delete the hub sends for `item` on its owner's behalf: naming only the item (its
    link, translated per recipient like any delete), nowhere (no position of the item)."""
    uid = item.event.uid
    event = CotEvent(
        uid=f"withdrawn.{uid}",
        type=DELETE_TYPE,
        time=now,
        start=now,
        stale=now + WITHDRAWAL_STALE_S,
        how="h-e",
        point=Point(0.0, 0.0),
        detail=f'<link uid="{quote(uid)}" relation="none" type="none"/><__forcedelete/>',
    )
    return Item(party=item.party, user="hub", category=item.category, event=event, received=now)


def stopped(was: Disclosure, now: Disclosure | None, got: set[str]) -> set[str]:
    """The forms of an item a party got (`got`) that a change stops: every one when its
    latest version is no longer routed to the party (`now` None); the full form when that
    version went to it in full before and only generalized now; none otherwise (a party
    given more, or as much, keeps what it has until the next version comes in its form)."""
    if now is None:
        return set(got)
    if was is Disclosure.FULL and now is Disclosure.GENERALIZED:
        return got & {"full"}
    return set()


class Withdrawals:
    """One hub's withdrawals at the agreements' changes (see the module's docstring)."""

    def __init__(
        self,
        picture: Picture,
        router: Router,
        wires: Connections,
        render: Callable[[Item], Rendered],
    ) -> None:
        self.policy = router.policy  # (the router's policy and clock: the hub's)
        self.picture = picture
        self.router = router
        self.wires = wires
        self.render = render
        self.clock = router.clock
        self.at = self.policy.next_change(self.clock())  # the next change not yet handled
        self.sent = 0  # deletes queued (to connections), in all
        # Told of each item's withdrawals before they are made (federation: the parties
        # behind a link, federation/bridge.py): they return the forms that stay in `seen`.
        self.watchers: list[Watcher] = []

    def check(self) -> int:
        """Handle every change of the agreements in force due by now (the housekeeping
        asks once a second; nothing to do between changes). Returns the deletes queued."""
        now = self.clock()
        queued = 0
        while self.at <= now:
            change = self.at
            queued += self.at_change(change, now)
            self.at = self.policy.next_change(change)
        return queued

    def at_change(self, change: float, now: float) -> int:
        """Withdraw, at the change at `change`, every item from each party its latest
        version stopped being routed to. Returns the deletes queued."""
        before = math.nextafter(change, -math.inf)
        queued = 0
        for pool in (self.picture.durable, self.picture.live):
            for rendered in list(pool.values()):
                item = rendered.item
                if (
                    item.party == HUB
                    or item.audience
                    or item.category in NEVER_WITHDRAWN
                    or item.event.stale <= now
                    or not rendered.seen
                ):
                    continue
                was = self.router.route(item, before)
                if not was:
                    continue
                routes = self.router.route(item, change)
                ended: dict[str, set[str]] = {}
                for party in sorted(set(was) & set(rendered.seen)):
                    forms = stopped(was[party], routes.get(party), rendered.seen[party])
                    if forms:
                        ended[party] = forms
                kept: dict[str, set[str]] = {}
                for watcher in self.watchers if ended else ():
                    for party, forms in watcher(item, rendered.seen, ended).items():
                        kept.setdefault(party, set()).update(forms)
                for party, forms in ended.items():
                    queued += self.withdraw(rendered, party, now, forms - kept.get(party, set()))
        if queued:
            log.info("agreements changed at %.0f: %d withdrawals queued", change, queued)
        self.sent += queued
        return queued

    def withdraw(
        self, rendered: Rendered, party: str, now: float, forms: set[str] | None = None
    ) -> int:
        """Take `rendered` off `party`'s clients under `forms` (all it got if None): a delete
        under each, its pending updates discarded; the forms leave the item's `seen` (and
        `party` does when none is left)."""
        got = rendered.seen.get(party, set())
        forms = set(got) if forms is None else forms & got
        got -= forms
        if not got:
            rendered.seen.pop(party, None)
        delete = self.render(withdrawal(rendered.item, now))
        key = rendered.item.key
        conns = self.wires.by_party.get(party, ())
        queued = 0
        for conn in conns:
            conn.outbox.discard(key, forms)  # an update still pending in them is moot
        for form in sorted(forms):
            pending = Pending(delete, self.router.variant(delete, party, form_level(form)))
            for conn in conns:
                self.wires.enqueue(conn, pending, durable=True)
                queued += 1
        return queued
