"""The hub side of federation: what leaves on a link, what is accepted from one.

Rules (DESIGN.md §5, issue #17):
- **Out**: only items of this hub's own parties leave (not the hub's own notices, which each
  hub makes from what its parties may see, and never an item that came over a link: no
  relaying, so nothing can loop; provenance and hop count are carried and checked all the
  same for TAK Server meshes). An item leaves on a link only when an agreement entitles a
  party behind that link, in the form that party may see (`full` under its names, or
  `generalized`) — made here, before it leaves. Each distinct form crosses once, addressed
  (`<_csky_fed to=…>`) to the parties it is for; the peer delivers it to exactly those.
- **In**: an item is attributed to a party the link speaks for (`[[federate]] parties`),
  from our envelope (`party=`) or, from a TAK Server (no envelope), the link's one party;
  anything else is refused and logged. It is never forwarded.
- **Durable across outages**: each durable copy carries (sending hub's store seq, part). The
  receiver applies a copy only past its cursor `("fed-in", link)` and moves the cursor in the
  same transaction as the item (exactly once), then acknowledges; the sender moves its
  cursor `("fed-out", link)` on acknowledgements (a TAK Server does not acknowledge: on
  send) and, whenever a session opens, sends every stored durable item past it again, in
  order, before anything new. Live positions are not queued while a link is down; the
  current ones are sent when it returns.

The seam with the hub core is the class `HubSeam` below, and nothing else: one desk that
only observes (`Hub.add_desk`), `accept`, `transaction`, routing and rendering, the store's
cursors.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from commonsky.errors import RemoteProtocolError
from commonsky.model import HUB, Category, CotEvent, Disclosure, Item, is_deleted
from commonsky.protocol.cot import encode_event

from . import federation_pb2 as pb
from .link import Dialer, HubIdentity, Link, Listener
from .mapping import Envelope, absolute_names, ack, delete_event, federated, receive
from .peers import FederateConfig
from .private import PrivateDesk, is_private
from .receipts import KIND_ACK, KIND_RECEIPT, parse_receipt, receipt_json

if TYPE_CHECKING:
    from commonsky.config import HubConfig
    from commonsky.desks.deconfliction import AirspaceDesk
    from commonsky.desks.recorder import LedgerRecorder
    from commonsky.hub.core import Hub

log = logging.getLogger("commonsky.federation")

ORIGIN = "fed:"  # Item.origin of what came over a link: "fed:<link>"
CURSOR_IN, CURSOR_OUT = "fed-in", "fed-out"
ACK_DELAY_S = 0.05  # acknowledgements are batched over this long
PAGE = 256  # stored items read per page while a link catches up
#: What never crosses a link with private deconfliction: the plans the round replaces.
PLANS = (Category.AIRSPACE, Category.SITE)


@dataclass
class _Out:
    """One session's progress: the last durable position given to it, the store sequence
    read up to, and the live picture still to send."""

    position: int = 0
    next_seq: int = 0
    live: list[Item] = field(default_factory=list)


_watchers = itertools.count(1)


@dataclass(frozen=True)
class _Watcher:
    """A desk that only observes (hub/desk.py): what federation needs of every item."""

    name: str
    observer: Callable[[Item, dict[str, Disclosure]], None]
    categories: tuple[Category, ...] = ()

    def check(self, party: str, event: CotEvent) -> None:
        return None

    def observe(
        self, item: Item, routes: dict[str, Disclosure], parsed: object | None = None
    ) -> None:
        self.observer(item, routes)


class HubSeam:
    """Everything federation asks of the hub core, in one place."""

    def __init__(self, hub: Hub, recorder: LedgerRecorder | None = None) -> None:
        self.hub = hub
        self.recorder = recorder  # the hub's ledger (signed receipts), if it keeps one

    def ledger_seq(self, item: Item) -> int | None:
        """The ledger entry of a durable item just accepted (None without a ledger)."""
        if self.recorder is None:
            return None
        return self.recorder.seq_of.get((item.party, item.uid, item.seq))

    def sign_checkpoint(self) -> dict[str, Any] | None:
        if self.recorder is None:
            return None
        return self.recorder.ledger.checkpoint().to_json()

    def consistency(self, old: int, new: int) -> list[str]:
        """RFC 6962 consistency proof of our log from size `old` to `new`, as hex."""
        assert self.recorder is not None
        return [p.hex() for p in self.recorder.ledger.consistency_proof(old, new)]

    def record(self, kind: str, audience: list[str], payload: dict[str, Any]) -> None:
        if self.recorder is not None:
            with self.hub.transaction():
                self.recorder.record_fact(kind, HUB, audience, payload, self.hub.clock())

    def watch(self, observer: Callable[[Item, dict[str, Disclosure]], None]) -> None:
        self.hub.add_desk(_Watcher(f"federation#{next(_watchers)}", observer))

    def accept(
        self, party: str, user: str, event: CotEvent, audience: tuple[str, ...], origin: str
    ) -> Item:
        return self.hub.accept(party, user, event, audience=audience, origin=origin)

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        return self.hub.transaction()

    def route(self, item: Item) -> dict[str, Disclosure]:
        return self.hub.route(item, self.hub.clock())

    def render(self, item: Item, party: str, level: Disclosure) -> CotEvent:
        """`item` as `party` may see it (generalized, or full under its names)."""
        variant = "gen" if level is Disclosure.GENERALIZED else f"full:{party}"
        return self.hub.event_for(item, variant)

    def live_items(self) -> list[Item]:
        now = self.hub.clock()
        return [r.item for r in list(self.hub.live.values()) if r.item.event.stale > now]

    def stored_since(self, seq: int) -> Iterator[Item]:
        return self.hub.store.since(seq)

    def cursor(self, name: str, link: str) -> int:
        return self.hub.store.cursor(name, link)

    def set_cursor(self, name: str, link: str, position: int) -> None:
        with self.hub.transaction():
            self.hub.store.set_cursor(name, link, position)

    def clock(self) -> float:
        return self.hub.clock()

    def parties(self) -> frozenset[str]:
        return frozenset(self.hub.policy.parties) | {HUB}

    def log_limited(self, reason: str, key: str, msg: str, *args: object) -> None:
        self.hub.log_limited(log, reason, key, msg, *args)


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
        self.behind: dict[str, str] = {}  # remote party -> its link
        for config in federates:
            self.links[config.name] = Link(config, self, limit_queue=limit_queue)
            for party in config.parties:
                self.behind[party] = config.name
        self.out: dict[str, _Out] = {}  # link -> what its session has been given
        self.sent_names: dict[tuple[str, str, str], set[str]] = {}  # (link, party, uid)
        self.refused: dict[tuple[str, str], int] = {}  # (link, reason) -> count
        self.acked: dict[str, int] = {}
        self._ack_due: dict[str, int] = {}
        self._receipts: dict[str, list[tuple[int, int]]] = {}  # link -> (position, ledger seq)
        self._signed_size: dict[str, int] = {}  # link -> size of the last head we gave it
        self._peer_head: dict[str, tuple[bytes, int, bytes]] = {}  # link -> key, size, root
        self.forks: dict[str, int] = {}  # link -> receipts refused as a fork
        self._heads_only: set[str] = set()  # links owed a signed head with no new entries
        self._tasks: list[asyncio.Task[None]] = []
        self._delete_ids = itertools.count(1)
        self.listener: Listener | None = None
        self.dialers: list[Dialer] = []
        self.private: PrivateDesk | None = None  # rounds on `deconflict = "private"` links
        seam.watch(self.observe)

    # ---- out ------------------------------------------------------------------------------

    def _forms(
        self, link: Link, item: Item, routes: dict[str, Disclosure]
    ) -> list[tuple[CotEvent, list[str]]]:
        """Each distinct form of `item` owed to parties behind `link`, with its parties."""
        mine = [p for p in sorted(routes) if self.behind.get(p) == link.name]
        if len(mine) == 1:  # (the usual case: nothing to compare)
            return [(self.seam.render(item, mine[0], routes[mine[0]]), mine)]
        forms: dict[bytes, tuple[CotEvent, list[str]]] = {}
        for party in mine:
            event = self.seam.render(item, party, routes[party])
            forms.setdefault(encode_event(event), (event, []))[1].append(party)
        return list(forms.values())

    def _provenance(self) -> tuple[tuple[str, str], ...]:
        name = self.identity.name if self.identity is not None else self.hub_id
        return ((self.hub_id, name),)

    def _messages(
        self, link: Link, item: Item, routes: dict[str, Disclosure]
    ) -> list[pb.FederatedEvent]:
        """What `link` is owed of `item` (nothing if it had it already: by position)."""
        out = self.out[link.name]
        if link.config.deconflict is not None and item.category in PLANS:
            return []  # plans stay home on a private link: the round replaces them
        if is_deleted(item.event):
            return self._deletes(link, item, routes)
        messages = []
        for part, (event, parties) in enumerate(self._forms(link, item, routes)):
            envelope = Envelope(item.seq, part, tuple(parties), item.party)
            if item.seq:
                if envelope.position <= out.position:
                    continue  # sent already
                out.position = envelope.position
            self.sent_names.setdefault((link.name, item.party, item.uid), set()).add(event.uid)
            messages.append(federated(event, envelope, self._provenance(), (-1, 1)))
        return messages

    def _deletes(
        self, link: Link, item: Item, routes: dict[str, Disclosure]
    ) -> list[pb.FederatedEvent]:
        out = self.out[link.name]
        if item.seq:
            if (item.seq << 10) <= out.position:
                return []
            out.position = item.seq << 10
        names = self.sent_names.pop((link.name, item.party, item.uid), set())
        for party, level in routes.items():
            if self.behind.get(party) == link.name:
                names.add(self.seam.render(item, party, level).uid)
        messages = []
        for uid in sorted(names):
            message = pb.FederatedEvent(
                contact=pb.ContactListEntry(operation=pb.DELETE, uid=uid, callsign=item.event.type)
            )
            for server_id, name in self._provenance():
                message.federate_provenance.add(
                    federation_server_id=server_id, federation_server_name=name
                )
            messages.append(message)
        return messages

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
        if item.party not in self.own:
            return  # the hub's own notices, and items of parties behind links: never sent
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
            live=[i for i in self.seam.live_items() if i.party in self.own],
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
                if item.party in self.own and (is_deleted(item.event) or item.event.stale > now):
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
        if any(p.federation_server_id == self.hub_id for p in message.federate_provenance):
            self._refuse(link, "loop", "our own message came back")
            return
        hops = message.federate_hops
        if hops.max_hops > 0 and hops.current_hops > hops.max_hops:
            self._refuse(link, "hops", f"{hops.current_hops} hops of at most {hops.max_hops}")
            return
        try:
            got = receive(message)
            if got.ack is not None:
                self._acknowledged(link, got.ack, got.receipt)
            elif got.delete is not None:
                party = self._party(link, "", got.delete.uid)
                uid = f"{link.name}-delete-{next(self._delete_ids)}"
                event = delete_event(got.delete, uid, self.seam.clock())
                self.seam.accept(party, f"{ORIGIN}{link.name}", event, (), ORIGIN + link.name)
            elif got.event is not None:
                self._accept(link, got.event, got.envelope)
        except RemoteProtocolError as exc:
            self._refuse(link, exc.reason, str(exc))

    def _party(self, link: Link, claimed: str, uid: str) -> str:
        """Whose item this is: the party claimed (it must be one the link speaks for), or
        the party a `P::` uid names, or the link's only party."""
        parties = link.config.parties
        if not claimed:
            prefix, sep, _ = uid.partition("::")
            if sep and prefix in parties:
                claimed = prefix
            elif len(parties) == 1:
                claimed = parties[0]
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

    def _accept(self, link: Link, event: CotEvent, envelope: Envelope) -> None:
        party = self._party(link, envelope.party, event.uid)
        to = tuple(p for p in envelope.to if p in self.own)
        if envelope.to and not to:
            raise RemoteProtocolError(
                "federate_audience", f"addressed to {' '.join(envelope.to)[:80]}, none of ours"
            )
        event = absolute_names(event, party, to[0] if len(to) == 1 else None, self.seam.parties())
        origin = ORIGIN + link.name
        if envelope.seq:
            position = envelope.position
            if position <= self.seam.cursor(CURSOR_IN, link.name):
                self._ack(link, position)  # applied before: say so again
                return
            with self.seam.transaction():
                item = self.seam.accept(party, origin, event, to, origin)
                self.seam.set_cursor(CURSOR_IN, link.name, position)  # (joins the block)
            ledger_seq = self.seam.ledger_seq(item) if item.seq else None
            if ledger_seq is not None:
                self._receipts.setdefault(link.name, []).append((position, ledger_seq))
            self._ack(link, position)
        else:
            self.seam.accept(party, origin, event, to, origin)

    def _ack(self, link: Link, position: int) -> None:
        if not link.peer_is_commonsky:
            return
        first = link.name not in self._ack_due
        self._ack_due[link.name] = max(position, self._ack_due.get(link.name, 0))
        if first:
            with contextlib.suppress(RuntimeError):  # (no loop: tests without I/O)
                asyncio.get_running_loop().call_later(ACK_DELAY_S, self._flush_acks)

    def _flush_acks(self) -> None:
        """Acknowledge what was applied since the last time, each link with a receipt: the
        ledger entries of those items under one checkpoint we sign, recorded here too."""
        due, self._ack_due = self._ack_due, {}
        checkpoint = None
        for name, position in due.items():
            entries = self._receipts.pop(name, [])
            text = ""
            heads_only = name in self._heads_only
            self._heads_only.discard(name)
            if entries or heads_only:
                checkpoint = checkpoint or self.seam.sign_checkpoint()
                if checkpoint is not None:
                    # With a proof that our log still extends the one we signed for this
                    # peer last time: a hub that rewrote its past is caught as it answers.
                    since = self._signed_size.get(name, 0)
                    proof = self.seam.consistency(since, checkpoint["size"]) if since else []
                    self._signed_size[name] = checkpoint["size"]
                    text = receipt_json(entries, checkpoint, since, proof)
                    self.seam.record(
                        KIND_ACK,
                        list(self.links[name].config.parties),
                        {"link": name, "entries": entries, "checkpoint_size": checkpoint["size"]},
                    )
            self.links[name].send(ack(position, self.seam.clock(), text))

    def _acknowledged(self, link: Link, position: int, receipt: str) -> None:
        """The peer applied everything up to `position`: move the cursor; record its
        signed receipt in our ledger once its signature holds."""
        if receipt:
            from commonsky.ledger.entry import EntryError
            from commonsky.ledger.log import SignedCheckpoint

            parsed = parse_receipt(receipt)
            try:
                head = SignedCheckpoint.from_json(parsed.checkpoint) if parsed else None
            except EntryError:
                head = None
            if parsed is None or head is None or not head.verify():
                raise RemoteProtocolError("bad_receipt", "a receipt that does not verify")
            self._check_fork(link, head, parsed.since, parsed.consistency)
            entries, checkpoint = parsed.entries, parsed.checkpoint
            self.seam.record(
                KIND_RECEIPT,
                sorted(self.own),
                {
                    "link": link.name,
                    "entries": [list(e) for e in entries],
                    "checkpoint": checkpoint,
                },
            )
        self.acked[link.name] = position
        self.seam.set_cursor(CURSOR_OUT, link.name, position)

    def _check_fork(self, link: Link, head: Any, since: int, proof: list[bytes]) -> None:
        """The peer's new signed head must extend the last one it gave us (same key)."""
        from commonsky.ledger import merkle

        last = self._peer_head.get(link.name)
        if (
            last is not None
            and last[0] == head.hub_key
            and last[1] == since
            and not merkle.verify_consistency(since, head.size, last[2], head.root, proof)
        ):
            self.forks[link.name] = self.forks.get(link.name, 0) + 1
            log.error(
                "federation link %s: FORK: the peer's log of size %d does not extend the "
                "one of size %d it signed before; its receipts are refused",
                link.name,
                head.size,
                since,
            )
            raise RemoteProtocolError("fork", "the peer's log does not extend its last head")
        self._peer_head[link.name] = (head.hub_key, head.size, head.root)

    # ---- running -------------------------------------------------------------------------

    def send_head(self, name: str) -> None:
        """Our signed head (and consistency proof) to one CommonSky peer now."""
        link = self.links[name]
        if link.up and link.peer_is_commonsky and self.seam.recorder is not None:
            self._ack_due.setdefault(name, self.seam.cursor(CURSOR_IN, name))
            self._receipts.setdefault(name, [])
            self._heads_only.add(name)
            self._flush_acks()

    def exchange_checkpoints(self) -> None:
        """Give every CommonSky peer our signed head (with the consistency proof from the
        last one it got), whether or not durable items flowed: each side's ledger records
        the other's heads, and a fork is caught within one period (`timeout_checkpoint_s`)."""
        for name, link in self.links.items():
            if link.up and link.peer_is_commonsky and name not in self._ack_due:
                self._ack_due[name] = self.seam.cursor(CURSOR_IN, name)
                self._receipts.setdefault(name, [])
                self._heads_only.add(name)
        self._flush_acks()

    async def _exchange(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                self.exchange_checkpoints()
            except Exception:  # our bug: logged, the links and the hub go on
                log.exception("federation: checkpoint exchange failed")

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
            self._tasks.append(asyncio.create_task(self._exchange(checkpoint_s)))
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

    def collector(self) -> Collector:
        return _LinkMetrics(self)


class _LinkMetrics(Collector):
    """`/metrics` per link: state, items in/out, refused, reconnects, lag."""

    def __init__(self, federation: Federation) -> None:
        self.f = federation

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "commonsky_federation_link_up", "1 while the link is up.", labels=["link"]
        )
        inbound = CounterMetricFamily(
            "commonsky_federation_items_in", "Messages received on a link.", labels=["link"]
        )
        outbound = CounterMetricFamily(
            "commonsky_federation_items_out", "Messages queued to a link.", labels=["link"]
        )
        refused = CounterMetricFamily(
            "commonsky_federation_refused",
            "Messages refused from a link, by reason.",
            labels=["link", "reason"],
        )
        reconnects = CounterMetricFamily(
            "commonsky_federation_reconnects",
            "Sessions that replaced an earlier one.",
            labels=["link"],
        )
        pending = GaugeMetricFamily(
            "commonsky_federation_pending",
            "Messages queued to a link, not yet written.",
            labels=["link"],
        )
        lag = GaugeMetricFamily(
            "commonsky_federation_lag_seconds",
            "Seconds since the last message from the peer.",
            labels=["link"],
        )
        unacked = GaugeMetricFamily(
            "commonsky_federation_unacked",
            "Durable copies sent and not yet acknowledged (CommonSky peers).",
            labels=["link"],
        )
        now = time.time()
        for name, link in self.f.links.items():
            up.add_metric([name], 1.0 if link.up else 0.0)
            inbound.add_metric([name], link.items_in)
            outbound.add_metric([name], link.items_out)
            reconnects.add_metric([name], link.reconnects)
            session = link.session
            pending.add_metric([name], session.queue.qsize() if session is not None else 0)
            lag.add_metric([name], now - link.last_in if link.last_in else 0.0)
            given = self.f.out[name].position if name in self.f.out else 0
            sent = given >> 10
            acked = self.f.acked.get(name, given) >> 10
            unacked.add_metric([name], max(0, sent - acked))
        for (name, reason), count in self.f.refused.items():
            refused.add_metric([name, reason], count)
        for name, link in self.f.links.items():
            if link.dropped:
                refused.add_metric([name, "dropped_live_over_limit"], link.dropped)
            if link.internal_errors:
                refused.add_metric([name, "internal_error"], link.internal_errors)
        yield from (up, inbound, outbound, refused, reconnects, pending, lag, unacked)


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
