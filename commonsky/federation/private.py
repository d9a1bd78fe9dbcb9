"""Private deconfliction rounds carried over a federation link (issue #18).

The sans-IO rounds are `commonsky/privdeconf`; this module runs them between two hubs over
their mutually authenticated TAK Federation v2 link (docs/private-deconfliction.md). Rules:

- **Only between two CommonSky hubs that both agreed.** A round's messages ride the link as
  `GeoEvent`s of type `t-x-csky-pd` (the bytes in `binary.data`), sent only on a link whose
  `[[federate]]` says `deconflict = "private"` and only to a peer that said it is CommonSky
  (`Identity.description`): a TAK Server peer never sees one. One received on a link
  without private deconfliction is refused (`reason="privdeconf_not_agreed"`).
- **Plans stay home.** On a private link airspace and site items never cross, whatever an
  agreement says (bridge.py): the round replaces them, so neither hub holds the other's
  plans, only the pieces inside the cells that met.
- **Who runs rounds.** The dialing side (`connect`) is the initiator; the accepting side asks
  for a round (a `kick`) when its own plans change. One round at a time per link. A round
  starts when either side's plans changed and every `round_every_s`, never more often than
  `min_interval_s` (our Gate; the peer's Gate refuses a faster peer, with the reason).
- **Commitments first.** Before any round message of ours leaves, our commitment is an
  entry in our own ledger (`pd-commit`) and a signed head covering it goes to the peer
  (federation receipts), so the peer's ledger holds our signed word before the PSI starts.
  When a round ends, its record (the peer's commitment and the evidence of what it sent,
  the figures) is a `pd-round` entry; the secret opening for a later audit is kept in
  `DATA_DIR/privdeconf/` (0600).
- **Bounded.** A message is at most `256·max_cells + 16 MiB` (our terms), in chunks of
  `CHUNK` bytes reassembled in order; anything else — a chunk out of order, a larger
  message, bytes the round cannot decode, a message out of turn — is the peer's fault:
  logged (rate-limited), counted (`commonsky_privdeconf_refused{reason}`), the round ends,
  nothing stored is touched.
- **Results.** Every round's figures are logged, metered, and shown to our own parties (a
  hub item `t-x-csky-pd-round`); the conflicts are diffed by id from round to round into
  raised / updated / cleared and told by the airspace desk to our own parties only
  (conflicts-only: the overlap), with a hotline thread where a hotline agreement exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import msgspec
from prometheus_client.registry import Collector

from commonsky.deconflict.notice import Notice
from commonsky.deconflict.records import Conflict, ConflictChange
from commonsky.desks.deconfliction import canonical_geometry
from commonsky.desks.drawings import screened_shape
from commonsky.errors import RemoteProtocolError
from commonsky.model import HUB, Category, Item, Point, is_deleted
from commonsky.privdeconf import Holding, PrivateRound, RoundRefused, Terms
from commonsky.privdeconf.pieces import Piece
from commonsky.privdeconf.round import Gate
from commonsky.protocol.cot import new_event, quote

from . import federation_pb2 as pb
from .private_metrics import PrivateMetrics
from .private_wire import (
    CHUNK,
    Chunk,
    canonical,
    chunk_message,
    decode_chunk,
    encode,
    max_message_bytes,
)

if TYPE_CHECKING:
    from commonsky.desks.deconfliction import AirspaceDesk

    from .link import Link

log = logging.getLogger("commonsky.privdeconf")

ROUND_TYPE = "t-x-csky-pd-round"  # a round's figures, for our own duty officers
POLL_S = 0.2  # how often (wall seconds) a link checks whether a round is due
ROUND_TIMEOUT_S = 300.0  # wall seconds a round may take before it is abandoned
KIND_COMMIT, KIND_ROUND = "pd-commit", "pd-round"
MAX_NOTICE_BYTES = 256 * 1024  # one relayed notice
MAX_PENDING_NOTICES = 1000  # relayed notices kept per link while it is down
ENDED = ("done", "refused", "failed")


def holding_of(item: Item) -> Holding | None:
    """One of our own stored airspace or site items as the round sees it; None for a TAK
    drawing the conflict desk does not screen either (`drawings.screened_shape`: not declared
    airspace, a shape it cannot hold). The CoT `ce`/`le` (when known) are its uncertainty."""
    shape = screened_shape(item.event)
    if shape is None:
        return None
    ce, le = item.event.point.ce, item.event.point.le
    return Holding(
        party=item.party,
        uid=item.uid,
        item=shape,
        h_uncertainty_m=ce if math.isfinite(ce) and 0 <= ce < 9_999_999 else 0.0,
        v_uncertainty_m=le if math.isfinite(le) and 0 <= le < 9_999_999 else 0.0,
    )


class Federation(Protocol):
    """What the rounds ask of the hub's federation (bridge.Federation; no import of it, so
    the two modules do not depend on each other both ways)."""

    seam: Any  # bridge.HubSeam
    own: frozenset[str]
    links: dict[str, Link]
    behind: dict[str, str]

    def send_head(self, name: str) -> None: ...

    def refuse(self, link: Link, reason: str, detail: str) -> None: ...


class PrivateLink:
    """One link's rounds: its terms, its Gate, the round in progress, the last figures."""

    def __init__(self, desk: PrivateDesk, link: Link, terms: Terms) -> None:
        self.desk = desk
        self.link = link
        self.terms = terms
        self.gate = Gate(terms.min_interval_s)
        self.initiator = link.config.connect is not None
        self.round: PrivateRound | None = None
        self.round_wall = 0.0
        self.committed = False
        self.wanted = True  # our plans changed (or the peer asked) since the last round
        self.last_start: float | None = None  # hub clock
        self.conflicts: dict[str, Conflict] = {}
        self.figures: list[dict[str, Any]] = []  # the latest rounds' figures, newest last
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._parts: list[bytes] = []
        self._parts_round = ""
        self._parts_count = 0
        self._parts_size = 0
        self.rounds: dict[str, int] = {}  # outcome -> count
        self.bytes_sent = 0
        self.bytes_received = 0
        self.polls = 0  # the worker's looks (tests use it as a barrier)
        self.notices: list[tuple[Notice, str]] = []  # for the peer's parties, while down

    @property
    def name(self) -> str:
        return self.link.name

    @property
    def ready(self) -> bool:
        return self.link.up and self.link.peer_is_commonsky

    # ---- in -------------------------------------------------------------------------------

    def received(self, geo: pb.GeoEvent) -> None:
        """One link message: a kick, or a chunk of the peer's next round message."""
        try:
            chunk = decode_chunk(geo.binary.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise RemoteProtocolError("bad_privdeconf", f"not a round chunk: {exc}") from None
        if chunk.notice:
            self.desk.notice_in(self, chunk.notice, chunk.action)
            return
        if chunk.kick:
            if not self.initiator:
                raise RemoteProtocolError("privdeconf_kick", "a kick to the accepting side")
            self.wanted = True
            return
        limit = max_message_bytes(self.terms)
        if not 0 < chunk.count <= limit // CHUNK + 1 or not 0 <= chunk.index < chunk.count:
            self._reset_parts()
            raise RemoteProtocolError(
                "privdeconf_too_large", f"chunk {chunk.index} of {chunk.count} (limit {limit} B)"
            )
        expected = 0 if chunk.index == 0 else len(self._parts)
        if chunk.index != expected or (chunk.index and chunk.round_id != self._parts_round):
            self._reset_parts()
            raise RemoteProtocolError("privdeconf_chunk", "chunk out of order")
        if chunk.index == 0:
            self._reset_parts()
            self._parts_round, self._parts_count = chunk.round_id, chunk.count
        elif chunk.count != self._parts_count:
            self._reset_parts()
            raise RemoteProtocolError("privdeconf_chunk", "chunk count changed")
        self._parts_size += len(chunk.data)
        if self._parts_size > limit or len(chunk.data) > CHUNK:
            self._reset_parts()
            raise RemoteProtocolError(
                "privdeconf_too_large", f"a round message over {limit} bytes (our max_cells)"
            )
        self._parts.append(chunk.data)
        if len(self._parts) == chunk.count:
            data = b"".join(self._parts)
            self._reset_parts()
            self.queue.put_nowait((chunk.round_id, data))

    def _reset_parts(self) -> None:
        self._parts, self._parts_round, self._parts_count, self._parts_size = [], "", 0, 0

    # ---- out ------------------------------------------------------------------------------

    def _send(self, round_id: str, data: bytes) -> None:
        count = max(1, math.ceil(len(data) / CHUNK))
        now = self.desk.clock()
        for i in range(count):
            part = data[i * CHUNK : (i + 1) * CHUNK]
            self.link.send(chunk_message(Chunk(round_id, i, count, part), now))
        self.bytes_sent += len(data)

    def flush_notices(self) -> None:
        while self.ready and self.notices:
            notice, action = self.notices.pop(0)
            data = msgspec.json.encode(notice)
            self.link.send(chunk_message(Chunk("", notice=data, action=action), self.desk.clock()))

    def kick(self) -> None:
        self.link.send(chunk_message(Chunk("", kick=True), self.desk.clock()))

    # ---- rounds ---------------------------------------------------------------------------

    def busy(self) -> bool:
        r = self.round
        if r is None or r.state in ENDED:
            return False
        if time.monotonic() - self.round_wall > ROUND_TIMEOUT_S:
            self._ended(r, "failed", f"no answer within {ROUND_TIMEOUT_S:g} s")
            return False
        return True

    def due(self, now: float) -> bool:
        if not self.ready or self.busy():
            return False
        if self.gate.refuse(now) is not None:
            return False
        every = self.terms.round_every_s
        return self.wanted or self.last_start is None or now - self.last_start >= every

    def _new_round(self, role: Literal["initiator", "responder"], now: float) -> PrivateRound:
        return PrivateRound(
            role=role,
            terms=self.terms,
            holdings=self.desk.holdings(),
            peer=self.name,
            peer_parties=self.link.config.parties,
            secret=self.desk.secret,
            now=now,
            gate=self.gate,
        )

    async def start(self) -> None:
        now = self.desk.clock()
        self.wanted = False
        self.last_start = now
        rnd = self._new_round("initiator", now)
        try:
            data = await asyncio.to_thread(rnd.open)
        except RoundRefused as exc:
            log.warning("private round with %s not started: %s", self.name, exc)
            self._count("refused_by_us")
            return
        self.round, self.round_wall, self.committed = rnd, time.monotonic(), False
        self._commit(rnd)
        self._send(rnd.round_id, data)

    async def message(self, round_id: str, data: bytes) -> None:
        rnd = self.round
        self.bytes_received += len(data)
        self.desk.note_received(self, round_id, data)
        if not self.initiator and (rnd is None or rnd.state in ENDED or rnd.round_id != round_id):
            if rnd is not None and rnd.state not in ENDED:
                self._ended(rnd, "failed", "the peer opened another round")
            rnd = self.round = self._new_round("responder", self.desk.clock())
            self.round_wall, self.committed = time.monotonic(), False
        elif rnd is None or rnd.state in ENDED or rnd.round_id != round_id:
            raise RemoteProtocolError("privdeconf_round", f"no round {round_id[:40]!r} open")
        try:
            out = await asyncio.to_thread(rnd.receive, data)
        except RemoteProtocolError:
            self._ended(rnd, "failed", None)
            raise
        self._commit(rnd)
        for reply in out:
            self._send(rnd.round_id, reply)
        if rnd.state in ENDED:
            self._ended(rnd, rnd.state, None)

    def _commit(self, rnd: PrivateRound) -> None:
        """Our commitment into our ledger, and our signed head to the peer, before any
        message of ours leaves."""
        if self.committed or rnd.record is None:
            return
        self.committed = True
        self.desk.record(KIND_COMMIT, msgspec.to_builtins(rnd.record))
        self.desk.federation.send_head(self.name)

    def _ended(self, rnd: PrivateRound, outcome: str, why: str | None) -> None:
        if rnd.state not in ENDED:
            rnd.state = "failed"
        self._count(outcome)
        figures = msgspec.to_builtins(rnd.figures)
        if why:
            figures["refused"] = figures.get("refused") or why
        figures["outcome"] = outcome
        self.figures = [*self.figures[-19:], figures]
        say = log.info if outcome == "done" else log.warning
        say("private round %s with %s: %s %s", rnd.round_id[:12], self.name, outcome, figures)
        if rnd.result is not None:
            self.desk.record(KIND_ROUND, msgspec.to_builtins(rnd.result.record))
            self.desk.keep_opening(self.name, rnd)
        self.desk.keep_received(self, rnd)
        self.desk.show(self, figures)
        if outcome == "done" and rnd.result is not None:
            self._diff(rnd.result.conflicts)

    def _diff(self, found: list[Conflict]) -> None:
        new = {c.id: c for c in found}
        changes = [
            ConflictChange("raised" if cid not in self.conflicts else "updated", c)
            for cid, c in new.items()
            if self.conflicts.get(cid) != c
        ]
        changes += [ConflictChange("cleared", c) for cid, c in self.conflicts.items()]
        changes = [ch for ch in changes if ch.action != "cleared" or ch.conflict.id not in new]
        self.conflicts = new
        if changes:
            self.desk.airspace.publish(changes, private=True)

    def _count(self, outcome: str) -> None:
        self.rounds[outcome] = self.rounds.get(outcome, 0) + 1

    async def run(self) -> None:
        """The link's worker: the peer's messages in order, and rounds when due."""
        while True:
            try:
                got = await asyncio.wait_for(self.queue.get(), POLL_S)
            except TimeoutError:
                got = None
            self.polls += 1
            self.flush_notices()
            try:
                if got is not None:
                    await self.message(*got)
                elif self.initiator and self.due(self.desk.clock()):
                    await self.start()
                elif not self.initiator and self.wanted and self.ready and not self.busy():
                    self.wanted = False
                    self.kick()
            except RemoteProtocolError as exc:
                self.desk.federation.refuse(self.link, exc.reason, str(exc))
            except Exception:  # our bug: this round is lost, not the link or the hub
                log.exception("private round with %s failed", self.name)
                self._count("internal_error")


class PrivateDesk:
    """Every private link of one hub (built by bridge.build when a federate says so)."""

    def __init__(
        self,
        federation: Federation,
        airspace: AirspaceDesk,
        secret: bytes,
        data_dir: Path | None,
    ) -> None:
        self.federation = federation
        self.airspace = airspace
        self.secret = secret
        self.data_dir = data_dir
        self.clock: Callable[[], float] = federation.seam.clock
        self.links: dict[str, PrivateLink] = {}
        for name, link in federation.links.items():
            if link.config.deconflict is not None:
                self.links[name] = PrivateLink(self, link, link.config.deconflict)
        self._tasks: list[asyncio.Task[None]] = []
        self._received: dict[tuple[str, str], list[Piece]] = {}  # (link, round) -> pieces
        federation.seam.watch(self.observe)

    def observe(self, item: Item, routes: object) -> None:
        """Our own plans changed: every private link owes a round."""
        if item.party in self.federation.own and item.category in (
            Category.AIRSPACE,
            Category.SITE,
        ):
            for plink in self.links.values():
                plink.wanted = True

    def holdings(self) -> list[Holding]:
        """Our own parties' airspace and sites still in force, from the stored picture."""
        now = self.clock()
        out = []
        for rendered in list(self.federation.seam.hub.durable.values()):
            item = rendered.item
            if (
                item.party in self.federation.own
                and item.category in (Category.AIRSPACE, Category.SITE)
                and not is_deleted(item.event)
                and item.event.stale > now
            ):
                try:
                    holding = holding_of(item)
                except Exception as exc:  # a drawing the desk also refuses: not ours to fix
                    log.warning("private rounds leave out %s: %s", item.uid, exc)
                    continue
                if holding is not None:
                    out.append(holding)
        return out

    def received(self, link: Link, geo: pb.GeoEvent) -> None:
        plink = self.links.get(link.name)
        if plink is None:
            raise RemoteProtocolError(
                "privdeconf_not_agreed", "a private round on a link without deconflict"
            )
        plink.received(geo)

    def record(self, kind: str, payload: dict[str, Any]) -> None:
        self.federation.seam.record(kind, sorted(self.federation.own), canonical(payload))

    def keep_opening(self, name: str, rnd: PrivateRound) -> None:
        """The secret that opens our commitment, for a later audit (never sent)."""
        if self.data_dir is None or rnd.result is None:
            return
        from commonsky.hub.datadir import private_dir, write_private

        folder = self.data_dir / "privdeconf" / name
        private_dir(folder)
        write_private(folder / f"{rnd.round_id}.json", msgspec.json.encode(rnd.result.opening))

    def relay(self, notice: Notice, action: str) -> None:
        """A notice our airspace desk made for a party behind a private link: to its hub
        (kept, in order, while the link is down; at most MAX_PENDING_NOTICES, oldest
        dropped with a log line)."""
        link = self.federation.behind.get(notice.recipient)
        plink = self.links.get(link) if link is not None else None
        if plink is None:
            return
        if len(plink.notices) >= MAX_PENDING_NOTICES:
            log.warning(
                "private link %s: notice for %s dropped (queue full)", link, notice.recipient
            )
            plink.notices.pop(0)
        plink.notices.append((notice, action))
        plink.flush_notices()

    def notice_in(self, plink: PrivateLink, data: bytes, action: str) -> None:
        """A notice the peer hub made for one of our parties: checked (one of our parties,
        about a party the link speaks for, a known change, a sane geometry), then told."""
        if len(data) > MAX_NOTICE_BYTES:
            raise RemoteProtocolError("privdeconf_notice", f"a notice of {len(data)} bytes")
        try:
            notice = msgspec.json.decode(data, type=Notice)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise RemoteProtocolError("privdeconf_notice", f"not a notice: {exc}") from None
        if notice.recipient not in self.federation.own:
            raise RemoteProtocolError("privdeconf_notice", "a notice for none of our parties")
        if notice.other_party not in plink.link.config.parties:
            raise RemoteProtocolError(
                "privdeconf_notice", f"about {notice.other_party[:40]!r}, not the link's"
            )
        if action not in ("raised", "updated", "cleared"):
            raise RemoteProtocolError("privdeconf_notice", f"change {action[:20]!r}")
        if notice.geometry is not None and canonical_geometry(notice.geometry) is None:
            raise RemoteProtocolError("privdeconf_notice", "a notice with no usable geometry")
        self.airspace.from_peer(notice, action)

    def note_received(self, plink: PrivateLink, round_id: str, data: bytes) -> None:
        """Keep the peer's geometry messages of the round in progress (pieces only: they
        hold the other side's shapes, clipped to the cells that met; PSI messages are the
        peer's encrypted set and are not kept)."""
        from commonsky.privdeconf.round import Answer, Pieces, _decode

        try:
            message = _decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # (the round refuses it, with the reason)
        if isinstance(message, Answer | Pieces):
            self._received.setdefault((plink.name, round_id), []).extend(message.pieces)

    def keep_received(self, plink: PrivateLink, rnd: PrivateRound) -> None:
        """What the peer sent of its shapes in this round, beside our matched cells:
        `DATA_DIR/privdeconf/LINK/ROUND.received` (msgpack {round_id, matched, pieces}), the
        log an independent check reads (demo/federated.py `received_outside`)."""
        kept = self._received.pop((plink.name, rnd.round_id), [])
        if self.data_dir is None or rnd.result is None:
            return
        from commonsky.hub.datadir import private_dir, write_private

        folder = self.data_dir / "privdeconf" / plink.name
        private_dir(folder)
        body = {"round_id": rnd.round_id, "matched": sorted(rnd.result.matched), "pieces": kept}
        write_private(folder / f"{rnd.round_id}.received", encode(body))

    def show(self, plink: PrivateLink, figures: dict[str, Any]) -> None:
        """A round's figures to our own parties' duty officers (a durable hub item)."""
        now = self.clock()
        text = (
            f"private round with {plink.name}: {figures['outcome']}; "
            f"cells ours {figures['cells_submitted']} (real {figures['cells_real']}), "
            f"theirs {figures['peer_cells']}, in both {figures['intersection']}; "
            f"pieces {figures['pieces_sent']} out, {figures['pieces_received']} in; "
            f"bytes {figures['bytes_sent']} out, {figures['bytes_received']} in; "
            f"conflicts {figures['conflicts']}"
            + (f"; refused: {figures['refused']}" if figures.get("refused") else "")
        )
        body = msgspec.json.encode(figures).decode()
        detail = (
            f'<csky_pd_round link="{quote(plink.name)}">{quote(body)}</csky_pd_round>'
            f"<remarks>{quote(text)}</remarks>"
        )
        event = new_event(
            f"pd-round-{plink.name}-{figures['round_id'][:16] or int(now)}",
            ROUND_TYPE,
            now,
            now + 86400.0,
            Point(0.0, 0.0),
            detail,
        )
        self.federation.seam.hub.publish_from_hub(
            event, Category.CONFLICT, sorted(self.federation.own - {HUB})
        )

    def start(self) -> None:
        for plink in self.links.values():
            self._tasks.append(asyncio.create_task(plink.run(), name=f"privdeconf-{plink.name}"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def collector(self) -> Collector:
        return PrivateMetrics(self)
