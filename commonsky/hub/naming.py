"""Names delivered items carry: `namespace.py`'s rule applied over the hub's picture.

An item's references are read once (`Rendered.refs`, `Rendered.keys`: whose item each
name means, from the sender's side). Each recipient's names are then a function of those
keys, the item's disclosure to the recipient and — for a name of a third party's item — of
whether the recipient sees that item in full now. An item whose names do not depend on the
recipient (the great majority: no reference at all, or only to its own party's things) is
rendered once per disclosure and shared by every recipient; one that names a third party's
item is rendered once per distinct tuple of names, so two recipients with the same view
share bytes too.

Opaque handles (`A::g-…`) a party writes back are resolved to the item they stand for
while that item is in the picture (an index of handles, built the first time one is asked
for and kept up to date from then on); a handle of an item no longer there stays as written
— to everyone but A, that is the same name resolution would give.

On the way in, `own_names` keeps a party to its own namespace (the uid of an item it
creates, the sender of its GeoChat, the uid of a video feed entry it offers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from msgspec.structs import replace

from commonsky.errors import RemoteProtocolError
from commonsky.model import HUB, CotEvent, Item, Point
from commonsky.namespace import (
    SEPARATOR,
    SHARED,
    Key,
    foreign_uid,
    handle,
    is_handle,
    own_uid,
    read_name,
)
from commonsky.policy import generalize
from commonsky.protocol.refs import (
    NONE,
    References,
    link_target,
    references,
    rewrite,
    uid_form,
    video_uids,
)

from .deletes import DELETE_TYPE

if TYPE_CHECKING:
    from .outbox import Rendered


def own_names(party: str, event: CotEvent, parties: frozenset[str]) -> CotEvent:
    """Refuse (`RemoteProtocolError("uid_spoof")`) an event from `party` that would create an
    item under another party's name (its uid, its GeoChat sender, or a video entry's uid:
    ATAK keeps one entry per uid, so that would replace the other party's); return it with
    `P::x` written by P stored as `x`. A receipt's uid is the message it answers, anybody's
    (namespace.py)."""
    if event.detail and SEPARATOR in event.detail:
        for entry in video_uids(event):  # (its own video entry: delivered as that party's)
            if read_name(party, entry, parties).party not in (party, SHARED):
                raise RemoteProtocolError(
                    "uid_spoof", f"video entry uid {entry[:60]!r} claims another party's namespace"
                )
    form, names = uid_form(event.type, event.uid)
    if form == "plain":
        if SEPARATOR not in event.uid:  # (most uids: no prefix, so the writer's own as is)
            return event
        uid = own_uid(party, event.uid, parties)
        if uid is None:
            raise RemoteProtocolError(
                "uid_spoof", f"uid {event.uid[:60]!r} claims another party's namespace"
            )
        if uid != event.uid:
            event = replace(event, uid=uid)
    elif form == "geochat":
        owner = read_name(party, names[0], parties).party
        if owner not in (party, SHARED):
            raise RemoteProtocolError(
                "uid_spoof", f"GeoChat uid {event.uid[:60]!r} names another party's sender"
            )
    return event


class Naming:
    """Reads references once per item and names them for each recipient.

    `parties` are the declared parties and `HUB`; `lookup(key)` is the picture entry of an
    item (or None); `sees_full(rendered, party)` whether `party` is delivered that entry in
    `full` now.
    """

    def __init__(
        self,
        parties: frozenset[str],
        secret: bytes,
        grid_deg: float,
        lookup: Callable[[Key], Rendered | None],
        keys: Callable[[], list[Key]],
        sees_full: Callable[[Rendered, str], bool],
    ) -> None:
        self.parties = parties
        self.secret = secret
        self.grid = grid_deg
        self.lookup = lookup
        self._keys = keys
        self.sees_full = sees_full
        self._handles: dict[str, Key] | None = None  # full handle -> key, once asked for

    # ---- reading ------------------------------------------------------------------------

    def read(self, rendered: Rendered) -> References:
        """The item's references and whose items they mean (cached on `rendered`)."""
        if rendered.refs is None:
            item = rendered.item
            # The hub's own items are written for their audience; nothing to translate.
            refs = NONE if item.party == HUB else references(item.event)
            if refs.names:  # (most items name nothing: keys () and not per party, as made)
                keys = tuple(read_name(item.party, text, self.parties) for text in refs.names)
                rendered.keys = keys
                rendered.per_party = any(k.party not in (SHARED, item.party) for k in keys)
            rendered.refs = refs
        return rendered.refs

    def entered(self, key: Key) -> None:
        """A key entered the picture: index its handle if handles are being resolved."""
        if self._handles is not None and key.party != HUB:
            self._handles[handle(self.secret, key.party, key.uid)] = key

    def resolve(self, key: Key) -> Key | None:
        """The item an opaque handle `key` stands for, while it is in the picture."""
        if self._handles is None:
            self._handles = {}
            for k in self._keys():
                self.entered(k)
        found = self._handles.get(foreign_uid(key.party, key.uid))
        if found is None or self.lookup(found) is None:
            return None
        return found

    def forget(self, present: Callable[[Key], bool]) -> None:
        """Drop indexed handles of items that left the picture (on prune)."""
        if self._handles is not None:
            self._handles = {h: k for h, k in self._handles.items() if present(k)}

    # ---- naming -------------------------------------------------------------------------

    def names(self, rendered: Rendered, party: str | None) -> tuple[str, ...]:
        """The names of the item's references as delivered in `full` to `party` (None: to
        any recipient, for an item whose names do not depend on who receives it)."""
        refs = self.read(rendered)
        owner = rendered.item.party
        out: list[str] = []
        for text, key in zip(refs.names, rendered.keys, strict=True):
            if key.party == SHARED:
                out.append(text)
                continue
            if is_handle(key.uid) and key.party != owner:
                found = self.resolve(key)
                if found is None:
                    # Dangling: the owner gets its own (dangling) name; others the handle.
                    out.append(key.uid if key.party == party else text_of(key))
                    continue
                key = found
            if key.party == party:
                out.append(key.uid)  # translated back for the owner
            elif key.party == owner:
                out.append(foreign_uid(owner, key.uid))
            else:
                seen = self.lookup(key)
                full = seen is not None and party is not None and self.sees_full(seen, party)
                out.append(
                    foreign_uid(key.party, key.uid)
                    if full
                    else handle(self.secret, key.party, key.uid)
                )
        return tuple(out)

    def event(self, rendered: Rendered, variant: str) -> CotEvent:
        """The event as delivered under `variant` ("own", "full", "gen", "full:PARTY")."""
        item = rendered.item
        uid = self.only_uid(rendered, variant)
        if uid is not None:
            # The forms that differ from the item's event only in their uid are built from
            # `only_uid`, the one place that says which they are: the renderer's fast path
            # (hub/render.py, splicing the uid into XML made once) then writes exactly this.
            return item.event if uid == item.event.uid else replace(item.event, uid=uid)
        if variant == "gen":
            if item.event.type == DELETE_TYPE:
                return self._generalized_delete(item)
            return generalize(item.event, item.party, self.secret, self.grid)
        return self.with_names(rendered, self.names(rendered, variant.partition(":")[2] or None))

    def only_uid(self, rendered: Rendered, variant: str) -> str | None:
        """The uid of `event(rendered, variant)` when that form is the item's event with only
        its uid changed, None otherwise: "own" (the event itself) and "full" when the item
        names nothing (then its names cannot depend on who reads it).

        The one statement of this rule: `event` builds these forms from it, and the
        renderer's fast path (hub/render.py) splices the uid into XML made once.
        tests/hub/test_naming_only_uid.py checks the two give the same bytes."""
        item = rendered.item
        if variant == "own":
            return item.event.uid
        if variant == "full" and self.read(rendered) is NONE:
            return plain_uid(item)
        return None

    def with_names(self, rendered: Rendered, names: tuple[str, ...]) -> CotEvent:
        """The `full` form of the item carrying `names` (from `names`)."""
        item = rendered.item
        refs = self.read(rendered)
        plain = plain_uid(item)
        if refs is NONE:
            return replace(item.event, uid=plain)
        return rewrite(item.event, refs, names, plain)

    def _generalized_delete(self, item: Item) -> CotEvent:
        """A delete as a `generalized` recipient gets it: naming the target by the handle it
        was given, nothing else of the sender's."""
        e = item.event
        target = link_target(e) or ""
        key = read_name(item.party, target, self.parties)
        force = "<__forcedelete/>" if "<__forcedelete" in e.detail else ""
        name = handle(self.secret, key.party, key.uid)
        return CotEvent(
            uid=handle(self.secret, item.party, e.uid),
            type=e.type,
            time=e.time,
            start=e.start,
            stale=e.stale,
            how="h-e",
            point=Point(0.0, 0.0),
            detail=f'<link uid="{name}" relation="none" type="none"/>{force}',
        )


def text_of(key: Key) -> str:
    return foreign_uid(key.party, key.uid)


def plain_uid(item: Item) -> str:
    """The uid `item` is delivered under in `full` (its own uid under its party's prefix,
    namespace.py), unless the uid itself holds names (GeoChat, receipts: `rewrite`)."""
    return foreign_uid(item.party, item.event.uid)
