"""Deletes: ATAK's `t-x-d-d`, naming the item to remove in its first `<link uid>` (ATAK
`CotDeleteImporter`; `<__forcedelete/>` or not, the hub removes it the same way).

Only the owner may delete: a delete naming another party's item — whatever name it uses —
is refused (`delete_not_owner`). The item leaves the picture; a durable one leaves a stale
version (`tombstone`) in the store and the ledger, so it is gone after a restart too; the
desks are shown that stale version and treat the item as withdrawn (conflicts cleared,
hotline thread closed). The delete goes to every party the item was delivered to, under
each name that party got it by (`audience`), and is owed to their clients away now
(`Withdrawals.owe`; from the tombstone again after a restart: `Withdrawals.owe_deleted`).
A delete itself is transient: never stored, never replayed; one naming nothing (pytak's
hello) stays inside its party.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from contextlib import AbstractContextManager
from typing import Protocol

from msgspec.structs import replace

from commonsky.errors import RemoteProtocolError
from commonsky.model import DELETED, DURABLE, Category, CotEvent, Disclosure, Item
from commonsky.namespace import SHARED, read_name
from commonsky.protocol.refs import link_target
from commonsky.store import Store

from .connection import Connection
from .connections import Connections
from .desk import Recorder
from .outbox import Pending, Rendered, Variant
from .picture import Picture

DELETE_TYPE = "t-x-d-d"  # ATAK `CotDeleteEventMarshal.COT_TASK_DISPLAY_DELETE_TYPE`


def target_key(
    party: str, event: CotEvent, parties: Container[str], strict: bool = True
) -> tuple[str, str] | None:
    """The key of the item a delete sent by `party` names, or None when it names nothing.
    Raises `RemoteProtocolError("delete_not_owner")` when it names another party's item
    (or, with `strict=False`, returns None)."""
    target = link_target(event)
    if target is None:
        return None
    key = read_name(party, target, parties)
    if key.party not in (party, SHARED):
        if not strict:
            return None
        raise RemoteProtocolError(
            "delete_not_owner",
            f"delete of {target[:60]!r} refused: only {key.party} may delete its items",
        )
    return (party, key.uid)


def tombstone(item: Item, now: float) -> Item:
    """The stale version a delete leaves of `item`: stored (a durable item stays gone after
    a restart), recorded, and shown to the desks, which treat it as the item withdrawn."""
    e = item.event
    event = replace(e, time=now, start=min(e.start, now), stale=now, detail=DELETED)
    return replace(item, event=event, received=now, seq=0, origin="")


def audience(seen: dict[str, set[str]], routes: dict[str, str], owner: str) -> dict[str, set[str]]:
    """The other parties an item reached, with the forms ("full", "gen") each got: those it
    was delivered to while in the picture, and those its latest version is routed to now."""
    forms = {p: set(v) for p, v in seen.items()}
    for party, form in routes.items():
        forms.setdefault(party, set()).add(form)
    forms.pop(owner, None)
    return forms


def form_level(form: str) -> Disclosure:
    """The disclosure of a form an item reached a party in (`audience`): "full" or "gen"."""
    return Disclosure.FULL if form == "full" else Disclosure.GENERALIZED


class Routing(Protocol):
    """What the delete flow asks of routing (`routing.Router`, which imports this module)."""

    def reached(self, rendered: Rendered, now: float) -> dict[str, set[str]]: ...

    def variant(self, rendered: Rendered, party: str, level: Disclosure) -> Variant: ...


class Deletes:
    """One hub's delete flow, over the hub's parts: `accept` a delete (the hub's `accept`
    hands it every `t-x-d-d`), `apply` it (the hub's delivery hands it every delete it
    applies, its own process's and the bus's)."""

    def __init__(
        self,
        *,
        parties: frozenset[str],
        picture: Picture,
        routing: Routing,
        wires: Connections,
        store: Store,
        recorders: list[Recorder],
        transaction: Callable[[], AbstractContextManager[None]],
        render: Callable[[Item], Rendered],
        apply: Callable[[Item], None],
        observe: Callable[[Item, dict[str, Disclosure]], None],
        clock: Callable[[], float],
        owe: Callable[[str, Item, set[str]], None] = lambda party, item, forms: None,
        forget: Callable[[tuple[str, str]], None] = lambda key: None,
    ) -> None:
        self.parties = parties
        self.picture = picture
        self.routing = routing
        self.wires = wires
        self.store = store
        self.recorders = recorders  # (the hub's list: recorders added later are seen)
        self.transaction = transaction
        self.render = render
        self.apply_item = apply
        self.observe = observe
        self.clock = clock
        # What clients away now are told when they connect (`Withdrawals.owe`).
        self.owe = owe
        self.forget = forget  # (a device's last report: `Directory.deleted`)

    def accept(
        self,
        party: str,
        user: str,
        event: CotEvent,
        sender: Connection | None,
        now: float,
        origin: str = "",
    ) -> Item:
        """Take a delete from `party`: raises `RemoteProtocolError("delete_not_owner")` when
        it names another party's item. A durable target's tombstone is stored and recorded
        (with the audience the item had) in the transaction that applies the delete; the
        delete itself is not stored."""
        key = target_key(party, event, self.parties)  # refuses another party's item
        rendered = self.picture.get(key) if key is not None else None
        item = Item(
            party=party,
            user=user,
            category=rendered.item.category if rendered is not None else Category.POSITION,
            event=event,
            received=now,
            origin=sender.id if sender else origin,
        )
        if rendered is None or item.category not in DURABLE:
            self.apply_item(item)  # nothing stored to withdraw
            return item
        with self.transaction():
            (seq,) = self.store.append_many([tombstone(rendered.item, now)])
            gone = replace(tombstone(rendered.item, now), seq=seq)
            parties = {p: Disclosure.FULL for p in self.routing.reached(rendered, now)}
            for recorder in self.recorders:
                recorder.record([(gone, parties)])
            self.apply_item(item)
        return item

    def apply(self, item: Item) -> None:
        """Apply a delete in this process: its target leaves the picture (and every outbox
        it is pending in), the delete goes to every party the target reached under each
        name it got it by, and the desks are shown the target's tombstone."""
        now = self.clock()
        key = target_key(item.party, item.event, self.parties, strict=False)
        old = self.picture.get(key) if key is not None else None
        if key is not None:
            self.forget(key)
        rendered = self.render(item)
        targets: list[tuple[str, Variant]] = [(item.party, "own")]
        if old is not None:
            self.owe(item.party, old.item, {"own"})  # (its other devices, off line now)
            for party, forms in self.routing.reached(old, now).items():
                self.owe(party, old.item, forms)
                for form in sorted(forms):
                    targets.append((party, self.routing.variant(rendered, party, form_level(form))))
            self.picture.remove(old.item.key)
        for party, variant in targets:
            for conn in self.wires.by_party.get(party, ()):
                if old is not None:
                    conn.outbox.discard(old.item.key)  # an update still pending is moot
                if conn.id != item.origin or not item.origin:
                    self.wires.enqueue(conn, Pending(rendered, variant), durable=True)
        if old is not None:
            self.observe(tombstone(old.item, now), {})
