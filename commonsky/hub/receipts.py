"""GeoChat receipts held for the sender's device, and what they prove: `Receipts`.

ATAK answers a one-to-one GeoChat with a delivered (`b-t-f-d`) and a read (`b-t-f-r`)
receipt naming the message id (`refs.answered_id`); the sender's client turns them into
"delivered" / "read" beside the message (ATAK `ChatLine.Status`). A receipt is a message
about a message: relayed, never in the picture (model.py `TRANSIENT_TYPES`). Relayed only,
it was lost whenever the sender's device was offline when it came — recorded by the
hotline desk and the ledger, never seen by the duty officer's client. So a receipt that
answers a GeoChat in the picture, and that routing lets reach the message's party (the
receipt's own party, or the message's when the message was sent to the receipt's party:
`Router.route`, the non-interference rule), is also *held*:

- for the message's sender device (its GeoChat uid's sender field; a message without one is
  held for any device of its party), while the message is in the picture and the receipt
  is not stale (`prune`), at most `PER_PARTY` per message and answering party (a newer
  receipt of the same kind from the same device replaces the older: ATAK sends one of each);
- given to a connection of that party when the device reports itself on it (`owed`), unless
  that connection had it already — live, when it came, or from here: never twice in one
  session. A new session gets it again: nothing acknowledges a receipt, and ATAK applies one
  as a status (an idempotent update of the message's row), so a replay is the safe side.

A receipt also proves that the device that sent it (its `<link uid>`, in its own party) has
the message. An addressed message is replayed to a device each time it reports itself on a
new connection (`owed`): the hub cannot know whether the bytes it wrote last time were
read. Once the device's own receipt says it has the message, it is not replayed to that
device again (`proved`). ATAK would not show a replay twice (`ChatDatabase.addChat` updates
the row of a known message id), but it is traffic again on every reconnect, and a client
that answers each arrival with a receipt sends that again too. Without a receipt a replay
stays the safe choice. The proof is only the answering party's word about its own device,
bounded per party (`PROVED_PER_PARTY`): it can only stop what that party's own devices are
given (a party's devices share everything; another party's receipt names no device of this
party, `read_name`), and one party's flood crowds out none of another's.

The hotline desk's own notices to one party (hub items of category hotline, of a receipt's
type, for one party: "JPN acknowledged …", "… delivered to JPN", the hub's receipt of a
message; desks/hotline.py) are messages too, and were lost the same way. One that reached
no connection of its device (`<dest uid>`, in its party's names; a notice for the party, to
none of its connections) is *held* for it (`notice`) and given, once, to the connection on
which that device (for a party's notice, any of its devices) next reports itself — routing
asked again then (`variant_for`: stale, or no longer routed to that party, it goes to
nobody) — and then forgotten: a notice given live, or given here, is never given again.
Bounded: at most `NOTICES_PER_PARTY` per party (the oldest go first, counted in
`notices_dropped`), each until it goes stale (a day: `chat_event`). For a restart, the store
keeps one meta row per device that ever had notices held (`hub_notices_owed <party>
<device>`: the store sequence of the first one held since it was last given any, "0" once
given): the stored notices from there on are held again (`load`), the ones before it were
given. A notice queued to a connection the hub still believes open (a half-open socket, an
edge's client the core has not yet heard closing) counts as given: it is not held, and not
held again when that connection then dies. The TAK protocol has no read acknowledgement
(a CoT stream is one way: nothing answers a receipt, and TCP's own acknowledgements say the
peer's kernel took the bytes, not that a client read them), so the hub cannot know which
notices a dead connection's client read. The one sound rule — a notice still in the
connection's outbox when it closed was never written, so hold it again — is not taken: in a
cluster that outbox is the edge's (the core's proxy outbox is emptied to the edge at each
flush), and the core, which holds notices, would need the edge's Detach to name them and a
way to find a given notice again by its key; the single process alone would then hold again
what a cluster does not. It would cover only notices stuck behind a full socket (a too-slow
or half-open reader), not those in the socket's buffers.

All state is in memory, rebuilt from the store at a start (`load`: the latest stored
receipt per uid — a read receipt carries the uid of the delivered one before it; routing
decides when a receipt is given, as always — and the notices still owed). Runs on the hub's
event loop.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from commonsky.errors import StoreUnavailable
from commonsky.model import DURABLE, HUB, Category, Item
from commonsky.namespace import SHARED, read_name
from commonsky.protocol.refs import RECEIPT_TYPES, answered_id, link_target, uid_form
from commonsky.store import Store

from .connection import Connection, reaches, reaches_device
from .outbox import Pending, Rendered, Variant
from .picture import Picture

log = logging.getLogger("commonsky.hub")

#: Receipts held per message and answering party (its devices × delivered/read): a group
#: message to a party's team gets one of each from every member; more than this is a flood,
#: and only the answering party's own receipts are crowded out by it.
PER_PARTY = 16
#: Devices a message is proved delivered to, per message and party (past it: replayed, the
#: safe side; per party, so that one party's flood changes nothing another party is given).
PROVED_PER_PARTY = 64
#: Hub notices held per party for its devices that were offline (a party's own business:
#: however many messages it sends, it crowds out only its own notices, the oldest first).
NOTICES_PER_PARTY = 256

Key = tuple[str, str]
Ident = tuple[str, str, str]  # (answering party, its device's uid or "", receipt type)
Target = tuple[str, str]  # (party, its device's uid, or "" for any device of the party)
VariantFor = Callable[[Rendered, str, float], Variant | None]
OWED = "hub_notices_owed"  # store meta key prefix: `owed_key`


def owed_key(target: Target) -> str:
    """The store meta key of the notices held for `target` (module header)."""
    return f"{OWED} {target[0]} {target[1]}"


def remembering(
    store: Store, transaction: Callable[[], AbstractContextManager[None]]
) -> Callable[[str, str], None]:
    """`Receipts`' `remember` over a hub's store: the meta key written in `transaction` (the
    hub's). The store unreachable, it is logged: the notice is given all the same, and may
    be given again after a restart."""

    def remember(key: str, value: str) -> None:
        try:
            with transaction():
                store.set_meta(key, value)
        except StoreUnavailable as exc:
            log.warning("could not note %s in the store: %s", key, exc)

    return remember


@dataclass(eq=False)
class _Held:
    rendered: Rendered
    # The connections it was queued to (this session): never given to one twice.
    given: weakref.WeakSet[Connection] = field(default_factory=weakref.WeakSet)


class Receipts:
    """The receipts held for senders' devices and the deliveries they prove (module header).

    `connections`: party -> its connections now (the hub's `Connections.by_party`);
    `variant_for`: the router's (a receipt is given only in a form routing allows now);
    `recall` / `remember`: read and write a store meta key (the notices owed, for a restart:
    `remember` writes in the hub's transaction)."""

    def __init__(
        self,
        picture: Picture,
        parties: frozenset[str],
        variant_for: VariantFor,
        connections: Mapping[str, Iterable[Connection]],
        recall: Callable[[str], str | None] = lambda key: None,
        remember: Callable[[str, str], None] = lambda key, value: None,
    ) -> None:
        self._picture = picture
        self._parties = parties
        self._variant_for = variant_for
        self._connections = connections
        self._held: dict[Key, dict[Ident, _Held]] = {}  # message key -> its receipts
        self._for: dict[Key, set[Key]] = {}  # (party, sender device or "") -> message keys
        # message key -> party -> its devices that said they have the message
        self._proved: dict[Key, dict[str, set[str]]] = {}
        self.dropped = 0  # receipts not held: past PER_PARTY for their message and party
        # Hub notices held: party -> store seq -> (its device or "", the notice), oldest first.
        self._notices: dict[str, dict[int, tuple[str, Rendered]]] = {}
        self._recall, self._remember = recall, remember
        self._owed_from: dict[Target, int] = {}  # read at a start (`load`), then let go
        self.notices_dropped = 0  # notices let go past NOTICES_PER_PARTY

    # ---- taking receipts in -------------------------------------------------------------

    def relayed(self, rendered: Rendered, routes: Mapping[str, object]) -> None:
        """A receipt the hub just relayed (`routes`: the parties it went to): held for its
        message's sender device if routing let it reach the message's party (or it is that
        party's own), noted as given to the connections it was queued to."""
        item = rendered.item
        if item.party == HUB:
            target = self._target(item)
            if target is not None and not self._given_notice(item, target):
                self._hold_notice(rendered, target, persist=True)
            return
        message = self._message_of(item)
        if message is None:
            return
        self._prove(item, message[0])
        party = message[0][0]
        if party == item.party or party in routes:  # (else: never sent it; kept nowhere)
            self._hold(rendered, message, self._given_live(item, party))

    def load(self, rendered: Rendered) -> None:
        """A stored receipt, at a start (given to nobody yet). The hub reads its store before
        it knows its devices' callsigns (which addressed messages' routes depend on), so
        routing decides when the receipt is given (`owed`), as it always does. A hub notice
        is held again if it is owed still (module header)."""
        item = rendered.item
        if item.party == HUB:
            target = self._target(item)
            if target is not None and 0 < self._owed_since(target) <= item.seq:
                self._hold_notice(rendered, target, persist=False)
            return
        message = self._message_of(rendered.item)
        if message is not None:
            self._prove(rendered.item, message[0])
            self._hold(rendered, message, ())

    def _message_of(self, item: Item) -> tuple[Key, Rendered] | None:
        """The GeoChat in the picture `item` answers (`refs.answered_id`), if any."""
        if item.event.type not in RECEIPT_TYPES or item.party == HUB:
            return None
        name = read_name(item.party, answered_id(item.event), self._parties)
        if name.party == SHARED:
            return None
        key = self._picture.chat_key(name)
        message = self._picture.get(key) if key is not None else None
        return None if key is None or message is None else (key, message)

    def _prove(self, item: Item, key: Key) -> None:
        """Note the device that sent receipt `item` as having message `key`: the word of its
        party about its own device (so, bounded per party), whether or not it crossed."""
        device = self._device(item)
        if device is not None:
            proved = self._proved.setdefault(key, {}).setdefault(item.party, set())
            if len(proved) < PROVED_PER_PARTY:
                proved.add(device)

    def _given_live(self, item: Item, party: str) -> list[Connection]:
        """The connections of `party` the fan-out queued `item` to (hub/core.py `_fan_out`:
        those its addressing reaches, not the one it came from)."""
        return [
            c
            for c in self._connections.get(party, ())
            if c.id != item.origin and reaches(item, c, self._parties)
        ]

    def _hold(
        self, rendered: Rendered, message: tuple[Key, Rendered], given: Iterable[Connection]
    ) -> None:
        item = rendered.item
        key, held_message = message
        entries = self._held.setdefault(key, {})
        ident = (item.party, self._device(item) or "", item.event.type)
        if ident not in entries and sum(i[0] == item.party for i in entries) >= PER_PARTY:
            self.dropped += 1
            return
        entries.pop(ident, None)  # (a newer one goes last: given in the order they came)
        entry = entries[ident] = _Held(rendered)
        entry.given.update(given)
        self._for.setdefault((key[0], self._sender(held_message.item)), set()).add(key)

    def _sender(self, message: Item) -> str:
        """The device that sent a GeoChat, as its party names it (its uid's sender field,
        `refs.uid_form`), or "" when the uid names none of that party's devices."""
        form, names = uid_form(message.event.type, message.event.uid)
        if form != "geochat":
            return ""
        name = read_name(message.party, names[0], self._parties)
        return name.uid if name.party == message.party else ""

    def _device(self, item: Item) -> str | None:
        """The device that sent a receipt, as its party names it (its first `<link uid>`,
        ATAK's own device), or None when that names no device of the receipt's party."""
        text = link_target(item.event)
        if not text:
            return None
        name = read_name(item.party, text, self._parties)
        return name.uid if name.party == item.party else None

    # ---- the hub's notices --------------------------------------------------------------

    def _target(self, item: Item) -> Target | None:
        """Whom a hub item is a notice for: (its one party, the device its `<dest uid>` names
        in that party's names, or "" when it is for the party); None when it is no notice
        (module header) or its addressing names no device of that party."""
        e = item.event
        if item.category is not Category.HOTLINE or e.type not in RECEIPT_TYPES:
            return None
        if len(item.audience) != 1 or item.audience[0] == HUB or e.dest_callsigns:
            return None
        party = item.audience[0]
        if not e.dest_uids:
            return (party, "") if party in e.dest_parties else None
        name = read_name(party, e.dest_uids[0], self._parties)
        return (party, name.uid) if name.party == party and len(e.dest_uids) == 1 else None

    def _given_notice(self, item: Item, target: Target) -> bool:
        """Whether the fan-out queued notice `item` to a connection of its device (for a
        party's notice, to any connection of the party)."""
        party, device = target
        conns = self._connections.get(party, ())
        if device:
            return any(device in c.devices for c in conns)
        return any(reaches(item, c, self._parties) for c in conns)

    def _hold_notice(self, rendered: Rendered, target: Target, persist: bool) -> None:
        party, device = target
        held = self._notices.setdefault(party, {})
        if persist and all(d != device for d, _ in held.values()):
            self._remember(owed_key(target), str(rendered.item.seq))  # (a new run held)
        held[rendered.item.seq] = (device, rendered)
        while len(held) > NOTICES_PER_PARTY:
            del held[next(iter(held))]
            self.notices_dropped += 1

    def _owed_since(self, target: Target) -> int:
        """The store seq from which notices for `target` are owed (0: none), read once."""
        since = self._owed_from.get(target)
        if since is None:
            text = self._recall(owed_key(target))
            since = self._owed_from[target] = int(text) if text and text.isdigit() else 0
        return since

    def loaded(self) -> None:
        """The start's `load`s are done: what they read of the store is let go."""
        self._owed_from.clear()

    def _notices_for(self, conn: Connection, devices: Iterable[str], now: float) -> list[Pending]:
        """The notices held for `devices` of `conn`'s party (and for the party), taken: given
        to `conn` in the form routing allows now, or to nobody (never again either way)."""
        held = self._notices.get(conn.party)
        if not held:
            return []
        mine = {*devices, ""}
        taken = [(seq, d, r) for seq, (d, r) in held.items() if d in mine]
        out = []
        for seq, _device, rendered in taken:
            del held[seq]
            variant = self._variant_for(rendered, conn.party, now)
            if variant is not None and reaches(rendered.item, conn, self._parties):
                out.append(Pending(rendered, variant))
        if not held:
            del self._notices[conn.party]
        for device in sorted({d for _seq, d, _r in taken}):
            self._remember(owed_key((conn.party, device)), "0")
        return out

    # ---- giving -------------------------------------------------------------------------

    def proved(self, key: Key, party: str, uid: str) -> bool:
        """Whether device `uid` of `party` said (by a receipt) that it has message `key`."""
        return uid in self._proved.get(key, {}).get(party, ())

    def owed(
        self, conn: Connection, new: Mapping[str, str], before: Mapping[str, str], now: float
    ) -> Iterator[tuple[Pending, bool]]:
        """What `conn` is owed now that devices `new` (uid -> callsign) reported themselves
        on it, its devices having been `before`: each with whether it is durable.

        The items addressed to those devices that it did not reach before (as a party, or
        through the devices it had: given at attach, at their reports or live since) and
        that no device among them proved it has; then the receipts held for them that this
        connection was not given yet; then the hub's notices held for them (once)."""
        party, parties = conn.party, self._parties
        for rendered in self._picture.addressed():
            item = rendered.item
            if reaches(item, conn, parties, devices=False) or any(
                reaches_device(item, party, u, c, parties) for u, c in before.items()
            ):
                continue  # (it had it: exactly once in a session)
            to = [u for u, c in new.items() if reaches_device(item, party, u, c, parties)]
            if not to or all(self.proved(item.key, party, u) for u in to):
                continue
            variant = self._variant_for(rendered, party, now)
            if variant is not None:
                yield Pending(rendered, variant), item.category in DURABLE
        for pending in self._receipts_for(conn, [*new, ""], now):
            yield pending, True
        for pending in self._notices_for(conn, new, now):
            yield pending, True

    def _receipts_for(self, conn: Connection, devices: list[str], now: float) -> Iterator[Pending]:
        for device in devices:
            for key in list(self._for.get((conn.party, device), ())):
                if self._picture.get(key) is None:
                    self._forget(key)
                    continue
                for entry in list(self._held.get(key, {}).values()):
                    if conn in entry.given:
                        continue
                    variant = self._variant_for(entry.rendered, conn.party, now)
                    if variant is not None:  # (None: stale, or no longer routed there)
                        entry.given.add(conn)
                        yield Pending(entry.rendered, variant)

    # ---- forgetting ---------------------------------------------------------------------

    def _forget(self, key: Key) -> None:
        self._held.pop(key, None)
        self._proved.pop(key, None)
        for keys in self._for.values():
            keys.discard(key)

    def prune(self, now: float) -> int:
        """Forget what answers messages no longer in the picture, stale receipts and stale
        notices; returns how many receipts and notices went."""
        gone = 0
        for party, held in list(self._notices.items()):
            for seq in [s for s, (_d, r) in held.items() if r.item.event.stale <= now]:
                del held[seq]
                gone += 1
            if not held:
                del self._notices[party]
        for key in list(self._held):
            entries = self._held[key]
            if self._picture.get(key) is None:
                gone += len(entries)
                self._forget(key)
                continue
            for ident in [i for i, e in entries.items() if e.rendered.item.event.stale <= now]:
                del entries[ident]
                gone += 1
            if not entries:
                del self._held[key]
        for key in [k for k in self._proved if self._picture.get(k) is None]:
            del self._proved[key]
        self._for = {d: ks for d, ks in self._for.items() if ks}
        return gone

    def __len__(self) -> int:
        """How many receipts are held."""
        return sum(len(entries) for entries in self._held.values())

    def notices(self) -> int:
        """How many hub notices are held."""
        return sum(len(held) for held in self._notices.values())
