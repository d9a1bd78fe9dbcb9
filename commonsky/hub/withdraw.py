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
Withdrawals are transient like deletes: never stored, never recorded. A client away at the
change (off line, or its hub down) still shows what it was given, and the replay, which follows
the routes as they are now (`Picture.replay`), does not name it: so each party is owed the
withdrawals of its clients that may have been away (`owed`: every party the latest version
was routed to before a change and not at it, delivered or not, since a client may hold an
older version), until that version's stale time; a client of the party draws them ahead of
its replay when it connects (`replay`), less any form the party is routed now (the replay
brings that form back). A start owes what the changes it missed withdrew (it was down: the
store's meta `withdrawals_checked` says up to when changes were handled), from the stored
picture and the agreements as configured (`catch_up`); what changes handled before it
stopped owed is not kept. A delete for a marker a client never had is a
no-op for TAK clients, so owing more than a client holds costs a few bytes. On a cluster the
core's hub does the same through its proxy connections (the edges' clients get the deletes
as they get any other output, and the owed ones with the part of the replay the core sends).
An owner's delete is owed the same way (`Deletes.apply`); a durable item's delete leaves its
tombstone in the store, so a start owes it again (`owe_deleted`, from `Store.deleted`: to the
owner and to each party the deleted version was routed to when it was deleted), until the
deleted version's stale time — a restart, a kill or a cluster core's takeover loses none.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from commonsky.model import HUB, Category, CotEvent, Disclosure, Item, Point
from commonsky.protocol.cot import quote
from commonsky.store import Store

from .connection import Connection
from .connections import Connections
from .deletes import DELETE_TYPE, form_level
from .outbox import Pending, Rendered
from .picture import Picture
from .routing import VARIANT, Router

log = logging.getLogger("commonsky.hub")

# Categories whose delivered record stands: never withdrawn (see the module's docstring).
NEVER_WITHDRAWN: frozenset[Category] = frozenset({Category.HOTLINE, Category.CONFLICT})
WITHDRAWAL_STALE_S = 60.0  # how long a withdrawal (the delete event) is valid
# An owed withdrawal rendered for one client is given to the party's next ones this long.
REUSE_S = WITHDRAWAL_STALE_S / 2
# The store's meta key for the time up to which the agreements' changes were handled.
CHECKED = "withdrawals_checked"
# Deletes owed to a party's clients that were away, at most (the oldest dropped first): a
# bound on memory, ~10 days of a busy party's deleted markers.
OWED_PER_PARTY = 10_000
# (item, its `seen`, {party: forms the change stopped}) -> {party: forms not withdrawn}
Watcher = Callable[[Item, dict[str, set[str]], dict[str, set[str]]], dict[str, set[str]]]


@dataclass(slots=True)
class Owed:
    """A withdrawal a party's clients that were away are owed (`Withdrawals.owe`)."""

    item: Item  # the latest version withdrawn
    forms: set[str]  # the forms withdrawn ("own", "full", "gen")
    until: float  # the latest stale time of the versions withdrawn: owed until then
    delete: Rendered | None = None  # its delete, rendered for a client: reused (REUSE_S)


def _time(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:  # (a damaged value: as on a first start, nothing to catch up on)
        return None


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
        store: Store,
    ) -> None:
        self.store = store  # its meta CHECKED: the changes handled up to then (`catch_up`)
        self.policy = router.policy  # (the router's policy and clock: the hub's)
        self.picture = picture
        self.router = router
        self.wires = wires
        self.render = render
        self.clock = router.clock
        self.at = self.policy.next_change(self.clock())  # the next change not yet handled
        self.sent = 0  # deletes queued (to connections), in all
        # What each party's clients that were away are owed: party -> item key -> `Owed`.
        self.owed: dict[str, dict[tuple[str, str], Owed]] = {}
        self._prune_at = 0.0
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
            self.store.set_meta(CHECKED, repr(change))
        if now >= self._prune_at:  # (once a minute: what is owed lasts hours, mostly)
            self._prune_at = now + 60.0
            for owed in self.owed.values():
                for key in [k for k, entry in owed.items() if entry.until <= now]:
                    del owed[key]
                for entry in owed.values():  # (a delete no client may be given now: freed)
                    if entry.delete is not None and entry.delete.item.event.time + REUSE_S <= now:
                        entry.delete = None
        return queued

    def _withdrawable(self, item: Item, now: float) -> bool:
        return not (
            item.party == HUB
            or item.audience
            or item.category in NEVER_WITHDRAWN
            or item.event.stale <= now
        )

    def owe(self, party: str, item: Item, forms: set[str]) -> None:
        """Have `party`'s clients told, when they connect, that `item` (its latest version)
        left their maps under `forms` ("own", "full", "gen"; see the module's docstring):
        an agreement's change withdrew it, or its owner deleted it (`Deletes.apply`)."""
        if not forms:
            return
        owed = self.owed.setdefault(party, {})
        held = owed.pop(item.key, None)  # (re-inserted: the newest last)
        if held is None and len(owed) >= OWED_PER_PARTY:
            del owed[next(iter(owed))]  # the party's oldest goes stale on its own
        if held is not None:
            forms = forms | held.forms
        until = max(item.event.stale, held.until if held is not None else -math.inf)
        owed[item.key] = Owed(item, forms, until)  # (a delete rendered before: made anew)

    def _owe_stopped(
        self, item: Item, was: dict[str, Disclosure], routes: dict[str, Disclosure]
    ) -> int:
        """Owe each party `item` was routed to (`was`) the forms a change to `routes` stops
        (`stopped`, of the form it was routed). Returns the withdrawals owed."""
        count = 0
        for party, level in was.items():
            forms = stopped(level, routes.get(party), {VARIANT[level]})
            self.owe(party, item, forms)
            count += len(forms)
        return count

    def replay(self, conn: Connection, replay: Iterator[Pending]) -> Iterator[Pending]:
        """The withdrawals `conn`'s party is owed (drawn lazily, as of when drawn), then
        `replay`: the picture it is owed. A delete rendered for one client is given to the
        party's next ones while fresh (REUSE_S), and made anew once its entry changes."""
        owed = self.owed.get(conn.party, {})
        for key in list(owed):
            now = self.clock()
            entry = owed.get(key)
            if entry is None or entry.until <= now:
                continue
            current = self.picture.get(key)
            sees = current and self.router.variant_for(current, conn.party, now)
            forms = entry.forms
            if sees:  # (the form it sees now, the replay brings back)
                forms = forms - {sees.partition(":")[0]}
            if forms:
                delete = entry.delete
                if delete is None or delete.item.event.time + REUSE_S <= now:
                    delete = entry.delete = self.render(withdrawal(entry.item, now))
                for form in sorted(forms):
                    yield Pending(delete, self._variant(delete, conn.party, form))
        yield from replay

    def _variant(self, delete: Rendered, party: str, form: str) -> str:
        if form == "own":
            return "own"
        return self.router.variant(delete, party, form_level(form))

    def catch_up(self) -> int:
        """At start: owe again what the owners' deletes still owe (`owe_deleted`); owe each
        party what the changes this hub did not handle (it was down) withdrew from it, as
        `at_change` would have, from the stored picture and the agreements as configured
        now; then note that every change up to now is handled. What changes handled before
        it stopped owed is not kept. Returns the withdrawals owed."""
        now = self.clock()
        deleted = self.owe_deleted(now)
        checked = _time(self.store.meta(CHECKED))
        self.store.set_meta(CHECKED, repr(now))
        if checked is None:  # (a first start: no change was handled, none was missed)
            return deleted
        count = 0
        for pool in (self.picture.durable, self.picture.live):
            for rendered in list(pool.values()):
                item = rendered.item
                at = max(item.received, checked)
                if self.policy.next_change(at) > now or not self._withdrawable(item, now):
                    continue  # (most items, most starts: no change was missed)
                was = self.router.route(item, at)
                while (at := self.policy.next_change(at)) <= now:
                    routes = self.router.route(item, at)
                    count += self._owe_stopped(item, was, routes)
                    was = routes
        if count:
            log.info("%d withdrawals owed to clients away at agreements' changes", count)
        return deleted + count

    def owe_deleted(self, now: float) -> int:
        """At start: owe again what the owners' deletes of durable items owed (`Deletes.apply`)
        until the deleted versions' stale times, from the tombstones they stored: to the
        owner's party, and to each party the deleted version was routed to when it was
        deleted, in that form (the agreements as configured now); a stored delete whose
        routes cannot be had is owed to its owner only, with a warning. Returns the
        withdrawals owed."""
        count = 0
        limit = OWED_PER_PARTY * max(1, len(self.router.parties))
        for gone, last in self.store.deleted(now, limit):
            if not math.isfinite(last.event.stale):  # (a damaged row: owed for ever, else)
                log.warning("stored delete #%d (%s/%r) not owed: its stale time is %r",
                            gone.seq, gone.party, gone.uid[:200], last.event.stale)  # fmt: skip
                continue
            self.owe(last.party, last, {"own"})  # (the owner's other devices)
            count += 1
            try:
                routes = self.router.route(last, gone.received)
            except Exception as exc:  # (whatever is stored, the hub starts)
                why = f"{type(exc).__name__}: {exc}"
                log.warning("stored delete #%d (%s/%r) owed to its owner only: %s",
                            gone.seq, gone.party, gone.uid[:200], why)  # fmt: skip
                continue
            for party, level in routes.items():
                self.owe(party, last, {VARIANT[level]})
                count += 1
        if count:
            log.info("%d withdrawals owed again for owners' deletes", count)
        return count

    def at_change(self, change: float, now: float) -> int:
        """Withdraw, at the change at `change`, every item from each party its latest
        version stopped being routed to. Returns the deletes queued."""
        before = math.nextafter(change, -math.inf)
        queued = 0
        for pool in (self.picture.durable, self.picture.live):
            for rendered in list(pool.values()):
                item = rendered.item
                if not self._withdrawable(item, now):
                    continue
                was = self.router.route(item, before)
                if not was:
                    continue
                routes = self.router.route(item, change)
                self._owe_stopped(item, was, routes)  # (delivered or not: see `owe`)
                if not rendered.seen:
                    continue
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
