"""Deletes: ATAK's `t-x-d-d`, naming the item to remove in its first `<link uid>` (ATAK
`CotDeleteImporter`; `<__forcedelete/>` or not, the hub removes it the same way).

Only the owner may delete: a delete naming another party's item — whatever name it uses —
is refused (`delete_not_owner`). The item leaves the picture; a durable one leaves a stale
version (`tombstone`) in the store and the ledger, so it is gone after a restart too; the
desks are shown that stale version and treat the item as withdrawn (conflicts cleared,
hotline thread closed). The delete goes to every party the item was delivered to, under
each name that party got it by (`audience`). A delete itself is transient: never stored,
never replayed; one naming nothing (pytak's hello) stays inside its party.
"""

from __future__ import annotations

from collections.abc import Container

from msgspec.structs import replace

from commonsky.errors import RemoteProtocolError
from commonsky.model import DELETED, CotEvent, Item
from commonsky.namespace import SHARED, read_name
from commonsky.protocol.refs import link_target

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
