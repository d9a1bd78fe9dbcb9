"""The hub side of federation: what leaves on a link, what is accepted from one.

Rules (DESIGN.md §5, issue #17):
- **Out**: items of this hub's own parties leave (not the hub's own notices, which each hub
  makes from what its parties may see). An item leaves on a link only when an agreement
  entitles a party behind that link, in the form that party may see (`full` under its
  names, or `generalized`) — made here, before it leaves. Each distinct form crosses once,
  addressed (`<_csky_fed to=…>`) to the parties it is for; the peer delivers it to exactly
  those.
- **Relaying** (more than one link): a `[[federate]]` may name, beside the peer's own
  `parties`, the parties of hubs beyond it that it `relay`s for. A form addressed to them
  crosses only together with a party of the peer's own — the peer holds only what its own
  parties may see, so a form only for parties beyond it never leaves (docs/federation.md,
  "Relaying"). The peer delivers the copy to its own addressees and sends it on, as it
  holds it, to each addressee behind another of its links whom its own agreements entitle
  too (never back on the link it came by), under the same rules hop after hop.
- **Nothing loops**: each copy carries TAK's provenance — the server ids of the hubs it
  passed, ours last (kept with a relayed item in the store: `seam.origin_of`) — and its hop
  count; a hub refuses a copy whose provenance holds its own id, never sends an item back
  on the link it came by, and relays nothing that has passed `MAX_RELAY_HOPS` hubs.
- **In**: an item is attributed to a party the link speaks for (`parties` and `relay`),
  from our envelope (`party=`) or, from a TAK Server (no envelope), the link's one party;
  anything else is refused and logged. A copy addressed to none of our own parties is
  refused (`federate_audience`). A TAK Server's items (no addressees) are never relayed.
- **Durable across outages**: each durable copy carries (sending hub's store seq, part). The
  receiver applies a copy only past its cursor `("fed-in", link)` and moves the cursor in the
  same transaction as the item (exactly once), then acknowledges; the sender moves its
  cursor `("fed-out", link)` on acknowledgements (a TAK Server does not acknowledge: on
  send) and, whenever a session opens, sends every stored durable item past it again, in
  order, before anything new. Live positions are not queued while a link is down; the
  current ones are sent when it returns.

The seam with the hub core is `HubSeam` (seam.py), and nothing else. Acknowledgements and
signed receipts are acks.py's; the per-link metrics linkmetrics.py's.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.registry import Collector

from commonsky.errors import RemoteProtocolError
from commonsky.hub.deletes import form_level
from commonsky.model import HUB, Category, CotEvent, Disclosure, Item, is_deleted
from commonsky.protocol.cot import encode_event

from . import federation_pb2 as pb
from .acks import Acks
from .dial import Dialer
from .link import HubIdentity, Link
from .linkmetrics import LinkMetrics
from .listen import Listener
from .mapping import (
    Envelope,
    absolute_names,
    delete_event,
    federated,
    provenance_path,
    receive,
)
from .peers import FederateConfig
from .private import PrivateDesk
from .private_wire import is_private
from .seam import CURSOR_IN, CURSOR_OUT, ORIGIN, HubSeam, came_over, origin_of

if TYPE_CHECKING:
    from commonsky.config import HubConfig
    from commonsky.desks.deconfliction import AirspaceDesk
    from commonsky.desks.recorder import LedgerRecorder
    from commonsky.hub.core import Hub

log = logging.getLogger("commonsky.federation")

PAGE = 256  # stored items read per page while a link catches up
MAX_RELAY_HOPS = 8  # hubs an item may have passed and still be relayed on
#: What never crosses a link with private deconfliction: the plans the round replaces.
PLANS = (Category.AIRSPACE, Category.SITE)
__all__ = ["CURSOR_IN", "CURSOR_OUT", "ORIGIN", "Federation", "HubSeam", "build"]


@dataclass
class _Out:
    """One session's progress: the last durable position given to it, the store sequence
    read up to, and the live picture still to send."""

    position: int = 0
    next_seq: int = 0
    live: list[Item] = field(default_factory=list)


class Federation:
    """Every link of one hub: the listener, the dialers, and the rules in the module header."""

    def __init__(
        self,
        seam: HubSeam,
        federates: Iterable[FederateConfig],
        hub_id: str,
        own_parties: Iterable[str],
        identity: HubIdentity | None = None,
        limit_queue: int = 20000,
    ) -> None:
        self.seam = seam
        self.hub_id = hub_id
        self.identity = identity
        self.own = frozenset(own_parties) - {HUB}
        self.links: dict[str, Link] = {}
        self.behind: dict[str, str] = {}  # remote party -> the link it is reached by
        for config in federates:
            self.links[config.name] = Link(config, self, limit_queue=limit_queue)
            for party in config.speaks_for:
                self.behind[party] = config.name
        self.out: dict[str, _Out] = {}  # link -> what its session has been given
        self.sent_names: dict[tuple[str, str, str], set[str]] = {}  # (link, party, uid)
        self.refused: dict[tuple[str, str], int] = {}  # (link, reason) -> count
        self.acks = Acks(
            seam, self.links, self.own, self._refuse
        )  # acknowledgements, signed receipts
        self._tasks: list[asyncio.Task[None]] = []
        self._delete_ids = itertools.count(1)
        self.listener: Listener | None = None
        self.dialers: list[Dialer] = []
        self.private: PrivateDesk | None = None  # rounds on `deconflict = "private"` links
        self.withdrawals_sent = 0  # contact deletes sent at agreements' changes
        seam.watch(self.observe)
        seam.watch_withdrawals(self.withdrawn)

    # ---- out ------------------------------------------------------------------------------

    def _owed(self, link: Link, item: Item, routes: dict[str, Disclosure]) -> dict[str, Disclosure]:
        """The parties behind `link` owed `item`, with their forms (the module rule):
        for our own parties' items, those our agreements entitle; for an item that came
        over another link, those it was addressed to here (its audience) whom our own
        agreements entitle too — never back towards a hub it passed."""
        came = came_over(item.origin)
        if came is None:
            if item.party not in self.own:
                return {}  # the hub's own notices: each hub makes its own
            return {p: d for p, d in routes.items() if self.behind.get(p) == link.name}
        if came[0] == link.name or len(came[1]) >= MAX_RELAY_HOPS:
            return {}
        if is_deleted(item.event):  # (routes: the parties the deleted item reached)
            return {p: d for p, d in routes.items() if self.behind.get(p) == link.name}
        wanted = [p for p in item.audience if self.behind.get(p) == link.name]
        if not wanted:
            return {}
        entitled = self.seam.route_own(item)
        return {p: entitled[p] for p in wanted if p in entitled}

    def _forms(
        self, link: Link, item: Item, owed: dict[str, Disclosure]
    ) -> list[tuple[CotEvent, list[str]]]:
        """Each distinct form of `item` owed to parties behind `link`, with its parties —
        only forms a party of the peer's own sees: a form only for parties it relays for
        would have the peer hold what none of its parties may see, so it never leaves."""
        mine = sorted(owed)
        if len(mine) == 1:  # (the usual case: nothing to compare)
            forms = [(self.seam.render(item, mine[0], owed[mine[0]]), mine)]
        else:
            by_bytes: dict[bytes, tuple[CotEvent, list[str]]] = {}
            for party in mine:
                event = self.seam.render(item, party, owed[party])
                by_bytes.setdefault(encode_event(event), (event, []))[1].append(party)
            forms = list(by_bytes.values())
        held = set(link.config.parties)
        return [(event, parties) for event, parties in forms if held.intersection(parties)]

    def _provenance(self, item: Item) -> tuple[tuple[str, str], ...]:
        """The hubs `item` passed (from its origin), then us: TAK's provenance."""
        came = came_over(item.origin)
        before = tuple((hub, hub) for hub in came[1]) if came is not None else ()
        name = self.identity.name if self.identity is not None else self.hub_id
        return (*before, (self.hub_id, name))

    def _messages(
        self, link: Link, item: Item, routes: dict[str, Disclosure]
    ) -> list[pb.FederatedEvent]:
        """What `link` is owed of `item` (nothing if it had it already: by position)."""
        out = self.out[link.name]
        if link.config.deconflict is not None and item.category in PLANS:
            return []  # plans stay home on a private link: the round replaces them
        owed = self._owed(link, item, routes)
        if not owed:
            return []
        if is_deleted(item.event):
            return self._deletes(link, item, owed)
        messages = []
        provenance = self._provenance(item)
        for part, (event, parties) in enumerate(self._forms(link, item, owed)):
            envelope = Envelope(item.seq, part, tuple(parties), item.party)
            if item.seq:
                if envelope.position <= out.position:
                    continue  # sent already
                out.position = envelope.position
                self.acks.given(link, out.position)
            self.sent_names.setdefault((link.name, item.party, item.uid), set()).add(event.uid)
            messages.append(federated(event, envelope, provenance, (-1, len(provenance))))
        return messages

    def _deletes(
        self, link: Link, item: Item, owed: dict[str, Disclosure]
    ) -> list[pb.FederatedEvent]:
        out = self.out[link.name]
        if item.seq:
            if (item.seq << 10) <= out.position:
                return []
            out.position = item.seq << 10
            self.acks.given(link, out.position)
        names = self.sent_names.pop((link.name, item.party, item.uid), set())
        for party, level in owed.items():
            names.add(self.seam.render(item, party, level).uid)
        return [self._contact_delete(item, uid) for uid in sorted(names)]

    def _contact_delete(self, item: Item, uid: str) -> pb.FederatedEvent:
        """The contact delete of `item` as the peer names it (`uid`), with its provenance."""
        message = pb.FederatedEvent(
            contact=pb.ContactListEntry(operation=pb.DELETE, uid=uid, callsign=item.event.type)
        )
        for server_id, name in self._provenance(item):
            message.federate_provenance.add(
                federation_server_id=server_id, federation_server_name=name
            )
        return message

    def withdrawn(
        self, item: Item, seen: dict[str, set[str]], stopped: dict[str, set[str]]
    ) -> dict[str, set[str]]:
        """An agreements' change stops forms of our party's `item` (hub/withdraw.py): the
        peer's copy in a form goes (a contact delete, as for the owner's delete) only when
        every party behind the link that got that form stops getting it — the peer deletes
        its copy for all of them, so a party that keeps it, or got it and stopped earlier,
        must not learn of this change. Returns the forms not withdrawn (they stay in `seen`:
        the peer still shows them), also when the link is down."""
        kept: dict[str, set[str]] = {}
        if item.party not in self.own:
            return kept
        for link in self.links.values():
            for form in ("full", "gen"):
                holders = {
                    p for p, f in seen.items() if form in f and self.behind.get(p) == link.name
                }
                crossed = sorted(holders.intersection(link.config.parties))
                if not crossed:
                    continue  # (a form only for parties beyond it never crossed)
                if all(form in stopped.get(p, ()) for p in holders):
                    uid = self.seam.render(item, crossed[0], form_level(form)).uid
                    if link.send(self._contact_delete(item, uid)):
                        self.withdrawals_sent += 1
                        self.sent_names.get((link.name, item.party, item.uid), set()).discard(uid)
                        continue
                for party in holders:
                    if form in stopped.get(party, ()):
                        kept.setdefault(party, set()).add(form)
        return kept

    def _may_leave(self, item: Item) -> bool:
        """Our own parties' items, and what came over a link (relayed under `_owed`)."""
        return item.party in self.own or came_over(item.origin) is not None

    def _handed(self, link: Link) -> None:
        """A TAK Server does not acknowledge: what went into the stream counts."""
        if not link.peer_is_commonsky:
            position = self.out[link.name].position
            if position > self.seam.cursor(CURSOR_OUT, link.name):
                self.seam.set_cursor(CURSOR_OUT, link.name, position)

    def observe(self, item: Item, routes: dict[str, Disclosure]) -> None:
        """Every item the hub delivers (the observer seam): queue what each link is owed.
        Durable items go through the store instead while a link catches up (it reads them
        there, in order) or is over `limit_queue_federation`; live ones are then dropped."""
        if item.party not in self.own and came_over(item.origin) is None:
            return  # the hub's own notices: never sent
        if is_deleted(item.event) and not routes:
            routes = self.seam.route(item)
        for link in self.links.values():
            session = link.session
            if session is None or session.closed:
                continue  # durable items wait in the store; positions are re-sent on return
            if item.seq:
                if session.from_store:
                    continue
                if link.full:
                    session.catch_up()
                    continue
            elif link.full:
                link.dropped += 1
                continue
            messages = self._messages(link, item, routes)
            for message in messages:
                link.send(message)
            if item.seq:
                out = self.out[link.name]
                out.next_seq = max(out.next_seq, item.seq)
                if messages:
                    self._handed(link)

    def opened(self, link: Link) -> None:
        """A session opened: it catches up from the cursor (`refill`), then the picture."""
        start = self.seam.cursor(CURSOR_OUT, link.name)
        self.out[link.name] = _Out(
            position=start,
            next_seq=max(0, (start >> 10) - 1),  # (the last acknowledged may have more parts)
            live=[i for i in self.seam.live_items() if self._may_leave(i)],
        )

    def refill(self, link: Link) -> list[pb.FederatedEvent]:
        """The next page of stored durable items past the cursor, in order, then of the
        live picture; empty once caught up."""
        out = self.out[link.name]
        now = self.seam.clock()
        page: list[pb.FederatedEvent] = []
        while len(page) < PAGE:
            items = list(itertools.islice(self.seam.stored_since(out.next_seq), PAGE))
            if not items:
                break
            for item in items:
                out.next_seq = item.seq
                if self._may_leave(item) and (is_deleted(item.event) or item.event.stale > now):
                    page += self._messages(link, item, self.seam.route(item))
        if page:
            self._handed(link)
        while not page and out.live:
            chunk, out.live = out.live[:PAGE], out.live[PAGE:]
            for item in chunk:
                if item.event.stale > now:
                    page += self._messages(link, item, self.seam.route(item))
        link.items_out += len(page)
        return page

    # ---- in ------------------------------------------------------------------------------

    def refuse(self, link: Link, reason: str, detail: str) -> None:
        """A peer's fault on `link`: logged (rate-limited) and counted by reason."""
        self._refuse(link, reason, detail)

    def _refuse(self, link: Link, reason: str, detail: str) -> None:
        link.refused += 1
        key = (link.name, reason)
        self.refused[key] = self.refused.get(key, 0) + 1
        self.seam.log_limited(
            reason, link.name, "federation link %s: refused (%s): %s", link.name, reason, detail
        )

    def received(self, link: Link, message: pb.FederatedEvent) -> None:
        """One message from a peer (the link's endpoint)."""
        if is_private(message):
            try:
                if self.private is None:
                    raise RemoteProtocolError(
                        "privdeconf_not_agreed", "a private round on a link without deconflict"
                    )
                self.private.received(link, message.event)
            except RemoteProtocolError as exc:
                self._refuse(link, exc.reason, str(exc))
            return
        hops = message.federate_hops
        try:
            path = provenance_path(message, MAX_RELAY_HOPS)
            if self.hub_id in path:
                raise RemoteProtocolError("loop", "our own message came back")
            if hops.max_hops > 0 and hops.current_hops > hops.max_hops:
                raise RemoteProtocolError(
                    "hops", f"{hops.current_hops} hops of at most {hops.max_hops}"
                )
            got = receive(message)
            if got.ack is not None:
                self.acks.acknowledged(link, got.ack, got.receipt)
            elif got.delete is not None:
                party = self._party(link, "", got.delete.uid)
                uid = f"{link.name}-delete-{next(self._delete_ids)}"
                event = delete_event(got.delete, uid, self.seam.clock())
                origin = origin_of(link.name, path)
                self.seam.accept(party, ORIGIN + link.name, event, (), origin)
            elif got.event is not None:
                self._accept(link, got.event, got.envelope, path)
        except RemoteProtocolError as exc:
            self._refuse(link, exc.reason, str(exc))

    def _party(self, link: Link, claimed: str, uid: str) -> str:
        """Whose item this is: the party claimed (it must be one the link speaks for), or
        the party a `P::` uid names, or the link's only party."""
        parties = link.config.speaks_for
        if not claimed:
            prefix, sep, _ = uid.partition("::")
            if sep and prefix in parties:
                claimed = prefix
            elif len(link.config.parties) == 1:
                claimed = link.config.parties[0]
            else:
                raise RemoteProtocolError(
                    "federate_party", f"uid {uid[:60]!r} names no party this link speaks for"
                )
        if claimed not in parties:
            raise RemoteProtocolError(
                "federate_party",
                f"claims party {claimed[:40]!r}; this link speaks for {', '.join(parties)}",
            )
        return claimed

    def _accept(
        self, link: Link, event: CotEvent, envelope: Envelope, path: tuple[str, ...]
    ) -> None:
        """Apply one copy: for our parties it is addressed to, and for those beyond other
        links of ours it may be relayed to — only with one of ours (module rule)."""
        party = self._party(link, envelope.party, event.uid)
        beyond = {p for p, name in self.behind.items() if name != link.name}
        to = tuple(p for p in envelope.to if p in self.own or p in beyond)
        if envelope.to and not self.own.intersection(to):
            raise RemoteProtocolError(
                "federate_audience",
                f"addressed to {' '.join(envelope.to)[:80]}, none of ours (a hub holds "
                "only what its own parties may see)",
            )
        event = absolute_names(event, party, to[0] if len(to) == 1 else None, self.seam.parties())
        user, origin = ORIGIN + link.name, origin_of(link.name, path)
        if envelope.seq:
            position = envelope.position
            if position <= self.seam.cursor(CURSOR_IN, link.name):
                # Applied before: say so again, with the receipt of the entry it made here
                # (the first answer may have been lost with either hub: it is the proof).
                self.acks.applied(link, position, self.seam.held_entry(party, event, link.name))
                return
            with self.seam.transaction():
                item = self.seam.accept(party, user, event, to, origin)
                self.seam.set_cursor(CURSOR_IN, link.name, position)  # (joins the block)
            self.acks.applied(link, position, self.seam.ledger_seq(item) if item.seq else None)
        else:
            self.seam.accept(party, user, event, to, origin)

    # ---- running -------------------------------------------------------------------------

    async def start(
        self,
        host: str,
        port: int,
        health_s: float,
        retry_s: float,
        checkpoint_s: float = 0.0,
    ) -> int:
        """Serve the federation listener and dial every `connect`; the bound port. With
        `checkpoint_s`, signed heads are exchanged that often."""
        assert self.identity is not None
        self.listener = Listener(self.identity, self.links, host, port)
        bound = await self.listener.start()
        for link in self.links.values():
            if link.config.connect is not None:
                dialer = Dialer(self.identity, link, health_s, retry_s)
                dialer.start()
                self.dialers.append(dialer)
        if checkpoint_s > 0 and self.seam.recorder is not None:
            self._tasks.append(asyncio.create_task(self.acks.run(checkpoint_s)))
        if self.private is not None:
            self.private.start()
        return bound

    async def stop(self) -> None:
        """Stop dialing and listening (again: nothing)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.private is not None:
            await self.private.stop()
        dialers, self.dialers = self.dialers, []
        for dialer in dialers:
            await dialer.stop()
        listener, self.listener = self.listener, None
        if listener is not None:
            await listener.stop()

    def send_head(self, name: str) -> None:
        """Our signed head to one CommonSky peer now (private rounds commit with it)."""
        self.acks.send_head(name)

    def collector(self) -> Collector:
        return LinkMetrics(self)


def build(
    hub: Hub,
    config: HubConfig,
    hub_id: str,
    recorder: LedgerRecorder | None = None,
    airspace: AirspaceDesk | None = None,
) -> Federation | None:
    """The hub's federation from its config (None without `[[federate]]`); the one call the
    server makes. Reads the hub certificate from the federation listener's `ca` directory.
    With `airspace` (the hub's desk), links with `deconflict = "private"` run rounds."""
    if not config.federates:
        return None
    listener = next(lc for lc in config.listeners if lc.kind == "federation")
    assert listener.ca is not None
    try:
        identity = HubIdentity.from_ca_dir(listener.ca, hub_id, f"CommonSky {hub_id[:8]}")
    except OSError as exc:
        from commonsky.errors import UsageError

        raise UsageError(
            f"{listener.where}: ca = {str(listener.ca)!r}: {exc.strerror}: {exc.filename} "
            "(run `commonsky ca init --dir DIR`)"
        ) from None
    own = [p.id for p in config.parties if not p.federate]
    federation = Federation(
        HubSeam(hub, recorder),
        config.federates,
        hub_id,
        own,
        identity,
        config.settings.limit_queue_federation,
    )
    hub.metrics.registry.register(federation.collector())
    if airspace is not None and any(f.deconflict is not None for f in config.federates):
        private = federation.private = PrivateDesk(
            federation, airspace, hub.secret, config.data_dir
        )
        airspace.remote = frozenset(federation.behind)
        airspace.relay = private.relay
        hub.metrics.registry.register(private.collector())
    return federation
