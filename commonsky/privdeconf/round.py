# Rule: one private-deconfliction round between two hubs is a sans-IO state machine per side:
# bytes in, bytes out, no sockets, no clock (the time is passed in), no randomness that is not
# drawn from the round's seed. Everything a side learns arrives in `receive`; everything it
# reveals leaves as the bytes `open`/`receive` return.
#
#   initiator                                        responder
#   open()        ── Open{commitment, size, at_s, grid, reveal, geometry} ──►
#                 ◄─ Accept{commitment, size, setup_R, request_R} ─────────  (or Refuse)
#   receive()     ── Exchange{response to request_R, setup_I, request_I} ─►
#                 ◄─ Answer{response to request_I, pieces_R} ─────────────  receive(): learns
#   receive(): learns; ── Pieces{pieces_I} ──────────────────────────────►  receive(): done
#
# The PSI runs in both directions (each side is server once and client once), so each side
# learns which of ITS OWN tokens the other holds — the same intersection, named in its own
# cells — or, with reveal = "count", only how many; and each learns the size of the other's
# submitted set (pad to max_cells to hide it). Both commitments are exchanged before any
# PSI message. Policy refusals (rate, cap, grid, clock skew) answer with Refuse and end the
# round; malformed or inconsistent bytes raise RemoteProtocolError (the adapter closes).

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection
from typing import Any, Literal

import msgspec

from commonsky.deconflict.records import Conflict
from commonsky.errors import CommonSkyError, LocalProtocolError, RemoteProtocolError
from commonsky.privdeconf import psi
from commonsky.privdeconf.cells import CellsError, CellSet, Holding
from commonsky.privdeconf.commit import Evidence, Opening, commitment, digest, request_order
from commonsky.privdeconf.pieces import Piece, check_pieces, make_pieces, private_conflicts
from commonsky.privdeconf.terms import Agreed, Terms, agree

VERSION = 1
MAX_SKEW_S = 120.0  # the responder's clock vs the round time the initiator proposes
Role = Literal["initiator", "responder"]


class Open(msgspec.Struct, frozen=True, tag="open"):
    version: int
    round_id: str
    at_s: float
    grid: list[Any]
    reveal: str
    geometry: bool
    size: int
    commitment: str


class Accept(msgspec.Struct, frozen=True, tag="accept"):
    round_id: str
    reveal: str
    geometry: bool
    size: int
    commitment: str
    setup: bytes
    request: bytes


class Exchange(msgspec.Struct, frozen=True, tag="exchange"):
    round_id: str
    response: bytes
    setup: bytes
    request: bytes


class Answer(msgspec.Struct, frozen=True, tag="answer"):
    round_id: str
    response: bytes
    pieces: list[Piece]


class Pieces(msgspec.Struct, frozen=True, tag="pieces"):
    round_id: str
    pieces: list[Piece]


class Refuse(msgspec.Struct, frozen=True, tag="refuse"):
    round_id: str
    reason: str


Message = Open | Accept | Exchange | Answer | Pieces | Refuse
_decode = msgspec.msgpack.Decoder(Message).decode
_encode = msgspec.msgpack.Encoder().encode


class RoundRefused(CommonSkyError):
    """Our own side will not start this round now (rate, or our cells pass our cap)."""


class Figures(msgspec.Struct, kw_only=True):
    """A round's figures, for the log, the metrics and both duty officers."""

    round_id: str
    role: Role
    peer: str
    at_s: float
    reveal: str = ""
    geometry: bool = False
    cells_submitted: int = 0  # our set as submitted (dummies included)
    cells_real: int = 0  # of which real cells
    peer_cells: int = 0  # the peer's set as it declared it
    intersection: int = 0  # our tokens the peer also holds (count mode: the count)
    pieces_sent: int = 0
    pieces_received: int = 0
    geometry_bytes_sent: int = 0
    geometry_bytes_received: int = 0
    psi_bytes_sent: int = 0
    psi_bytes_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    outside_m2: float = 0.0  # area of the peer's pieces outside our matched cells (a breach)
    conflicts: int = 0
    refused: str | None = None


class Record(msgspec.Struct, kw_only=True):
    """What a hub writes in its own ledger about a round: its own commitment (before any PSI
    message leaves), then the peer's, the evidence of what the peer sent, and the figures."""

    round_id: str
    peer: str
    role: Role
    at_s: float
    grid: list[Any]
    commitment: str
    size: int
    evidence: Evidence | None = None
    figures: Figures | None = None


class Result(msgspec.Struct, kw_only=True):
    figures: Figures
    matched: frozenset[str]  # our real tokens the peer also holds (empty under "count")
    conflicts: list[Conflict]
    record: Record
    opening: Opening  # secret: keep it to open the commitment in an audit


class Gate:
    """How often rounds with one peer may start (our `min_interval_s`); times are passed in."""

    def __init__(self, min_interval_s: float) -> None:
        self.min_interval_s = min_interval_s
        self.last: float | None = None

    def refuse(self, now: float) -> str | None:
        if self.last is not None and now - self.last < self.min_interval_s:
            return (
                f"rate: the last round began {now - self.last:.0f} s ago; "
                f"min_interval_s = {self.min_interval_s:g}"
            )
        return None

    def mark(self, now: float) -> None:
        self.last = now


class PrivateRound:
    """One side of one round. `holdings` are our own items; `peer_parties` the parties the
    peer hub speaks for; `secret` our hub's secret (item handles); `now` our clock (epoch s).
    `seed` (32 bytes) makes the round reproducible; by default a fresh random one. `cells`,
    when given, are used instead of building them from `holdings` at the round time."""

    def __init__(
        self,
        *,
        role: Role,
        terms: Terms,
        holdings: Collection[Holding],
        peer: str,
        peer_parties: Collection[str],
        secret: bytes,
        now: float,
        gate: Gate | None = None,
        seed: bytes | None = None,
        cells: CellSet | None = None,
    ) -> None:
        self.role = role
        self.terms = terms
        self.holdings = list(holdings)
        self.peer = peer
        self.peer_parties = frozenset(peer_parties)
        self.secret = secret
        self.now = now
        self.gate = gate
        self.seed = seed if seed is not None else os.urandom(32)
        self.nonce = hashlib.sha256(b"nonce|" + self.seed).digest()
        self.round_id = ""
        self.state = "idle"
        self.at_s = now
        self.figures = Figures(round_id="", role=role, peer=peer, at_s=now)
        self.result: Result | None = None
        self.record: Record | None = None
        self._agreed = Agreed("count", False)
        self._cells: CellSet | None = None
        self._order: list[str] = []
        self._peer_setup = b""
        self._peer_size = 0
        self._matched: frozenset[str] = frozenset()
        self._given_cells = cells
        self._evidence: dict[str, Any] = {}

    # -- the two entry points ---------------------------------------------------------------

    def open(self) -> bytes:
        """The initiator's first message. RoundRefused if our gate or cap says no."""
        if self.role != "initiator" or self.state != "idle":
            raise LocalProtocolError(f"open() on a {self.role} in state {self.state}")
        reason = self.gate.refuse(self.now) if self.gate is not None else None
        if reason is not None:
            raise RoundRefused(reason)
        self.round_id = hashlib.sha256(b"round|" + self.seed).hexdigest()[:32]
        try:
            self._prepare(self.now)
        except CellsError as exc:
            raise RoundRefused(str(exc)) from None
        if self.gate is not None:
            self.gate.mark(self.now)
        t = self.terms
        self.state = "opened"
        return self._send(
            Open(
                VERSION,
                self.round_id,
                self.at_s,
                list(t.grid()),
                t.reveal,
                t.geometry,
                len(self._order),
                self._commitment(),
            )
        )

    def receive(self, data: bytes) -> list[bytes]:
        """A message from the peer; returns the messages to send back (maybe none)."""
        if self.state in ("done", "refused", "failed"):
            raise LocalProtocolError(f"receive() after the round ended ({self.state})")
        self.figures.bytes_received += len(data)
        limit = 256 * self.terms.max_cells + 64 * 2**20
        if len(data) > limit:
            self.state = "failed"
            raise RemoteProtocolError("privdeconf_too_large", f"{len(data)} bytes > {limit}")
        try:
            msg = _decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.state = "failed"
            raise RemoteProtocolError("bad_privdeconf", f"not a round message: {exc}") from None
        try:
            return self._dispatch(msg)
        except RemoteProtocolError:
            self.state = "failed"
            raise

    # -- steps ------------------------------------------------------------------------------

    def _dispatch(self, msg: Message) -> list[bytes]:
        if isinstance(msg, Refuse):
            self._check_id(msg.round_id)
            self._end_refused(f"the peer refused: {msg.reason}")
            return []
        turn = (self.role, self.state)
        if turn == ("responder", "idle") and isinstance(msg, Open):
            return self._on_open(msg)
        if turn == ("initiator", "opened") and isinstance(msg, Accept):
            return self._on_accept(msg)
        if turn == ("responder", "accepted") and isinstance(msg, Exchange):
            return self._on_exchange(msg)
        if turn == ("initiator", "exchanged") and isinstance(msg, Answer):
            return self._on_answer(msg)
        if turn == ("responder", "answered") and isinstance(msg, Pieces):
            return self._on_pieces(msg)
        raise RemoteProtocolError(
            "privdeconf_out_of_order", f"{type(msg).__name__} to a {self.role} in {self.state}"
        )

    def _on_open(self, m: Open) -> list[bytes]:
        self.round_id = m.round_id
        self.figures.round_id = m.round_id
        if m.version != VERSION:
            return self._refuse(f"version {m.version}; we speak {VERSION}")
        reason = self.gate.refuse(self.now) if self.gate is not None else None
        if reason is not None:
            return self._refuse(reason)
        if abs(m.at_s - self.now) > MAX_SKEW_S:
            return self._refuse(
                f"round time {m.at_s:.0f} is {m.at_s - self.now:+.0f} s off our clock"
            )
        agreed = agree(self.terms, tuple(m.grid), m.reveal, m.geometry)
        if isinstance(agreed, str):
            return self._refuse(agreed)
        if not 0 < m.size <= self.terms.max_cells:
            return self._refuse(
                f"the initiator's {m.size} cells; our max_cells = {self.terms.max_cells}"
            )
        self._agreed = agreed
        self._peer_size = m.size
        self._evidence = {"commitment": m.commitment, "size": m.size}
        try:
            self._prepare(m.at_s)
        except CellsError as exc:
            self.figures.refused = str(exc)  # ours to fix: said to our operator, not the peer
            return self._refuse("the responder's cells pass its own cap")
        if self.gate is not None:
            self.gate.mark(self.now)
        flag = agreed.reveal == "cells"
        setup = psi.setup(self._key("server"), flag, self._order, m.size)
        request = psi.request(self._key("client"), flag, self._order)
        self.figures.psi_bytes_sent += len(setup) + len(request)
        self.state = "accepted"
        return [
            self._send(
                Accept(
                    self.round_id,
                    agreed.reveal,
                    agreed.geometry,
                    len(self._order),
                    self._commitment(),
                    setup,
                    request,
                )
            )
        ]

    def _on_accept(self, m: Accept) -> list[bytes]:
        self._check_id(m.round_id)
        agreed = agree(self.terms, self.terms.grid(), m.reveal, m.geometry)
        assert not isinstance(agreed, str)
        self._agreed = agreed
        if not 0 < m.size <= self.terms.max_cells:
            return self._refuse(
                f"the responder's {m.size} cells; our max_cells = {self.terms.max_cells}"
            )
        self._count(m.request, "request", m.size)
        self._peer_size = m.size
        self._peer_setup = m.setup
        self.figures.psi_bytes_received += len(m.setup) + len(m.request)
        self._evidence = {
            "commitment": m.commitment,
            "size": m.size,
            "setup_sha256": digest(m.setup),
            "request_sha256": digest(m.request),
        }
        flag = agreed.reveal == "cells"
        response = psi.respond(self._key("server"), flag, m.request)
        setup = psi.setup(self._key("server"), flag, self._order, m.size)
        request = psi.request(self._key("client"), flag, self._order)
        self.figures.psi_bytes_sent += len(response) + len(setup) + len(request)
        self.state = "exchanged"
        return [self._send(Exchange(self.round_id, response, setup, request))]

    def _on_exchange(self, m: Exchange) -> list[bytes]:
        self._check_id(m.round_id)
        self._count(m.request, "request", self._peer_size)
        self._count(m.response, "response", len(self._order))
        self.figures.psi_bytes_received += len(m.response) + len(m.setup) + len(m.request)
        self._evidence.update(setup_sha256=digest(m.setup), request_sha256=digest(m.request))
        flag = self._agreed.reveal == "cells"
        self._learn(psi.intersect(self._key("client"), flag, m.setup, m.response))
        response = psi.respond(self._key("server"), flag, m.request)
        self.figures.psi_bytes_sent += len(response)
        pieces = self._own_pieces()
        self.state = "answered" if self._agreed.geometry else "done"
        out = [self._send(Answer(self.round_id, response, pieces))]
        if self.state == "done":
            self._finish([])
        return out

    def _on_answer(self, m: Answer) -> list[bytes]:
        self._check_id(m.round_id)
        self._count(m.response, "response", len(self._order))
        self.figures.psi_bytes_received += len(m.response)
        flag = self._agreed.reveal == "cells"
        self._learn(psi.intersect(self._key("client"), flag, self._peer_setup, m.response))
        if not self._agreed.geometry:
            if m.pieces:
                raise RemoteProtocolError(
                    "privdeconf_pieces", "pieces where no geometry step was agreed"
                )
            self._finish([])
            return []
        conflicts = self._their_pieces(m.pieces)
        out = [self._send(Pieces(self.round_id, self._own_pieces()))]
        self._finish(conflicts)
        return out

    def _on_pieces(self, m: Pieces) -> list[bytes]:
        self._check_id(m.round_id)
        self._finish(self._their_pieces(m.pieces))
        return []

    # -- helpers ----------------------------------------------------------------------------

    def _key(self, label: str) -> bytes:
        return psi.derive_key(self.seed, label)

    def _prepare(self, at_s: float) -> None:
        """Our cells at the round time, padded if our terms say so, and their order."""
        self.at_s = at_s
        self.figures.at_s = at_s
        self.figures.round_id = self.round_id
        self._cells = self._given_cells or CellSet.build(
            self.holdings, self.terms, at_s, self.peer_parties
        )
        tokens = sorted(self._cells.tokens)
        self.figures.cells_real = len(tokens)
        if self.terms.pad:
            for i in range(self.terms.max_cells - len(tokens)):
                tag = hashlib.sha256(b"pad|" + self.seed + i.to_bytes(8, "big")).hexdigest()[:24]
                tokens.append(f"d:{tag}")
        if not tokens:  # nothing of ours in the air: one dummy, so the round still says so
            tokens.append("d:" + hashlib.sha256(b"pad|" + self.seed).hexdigest()[:24])
        self._order = request_order(tokens, self.seed)
        self.figures.cells_submitted = len(self._order)
        self.record = Record(
            round_id=self.round_id,
            peer=self.peer,
            role=self.role,
            at_s=at_s,
            grid=list(self.terms.grid()),
            commitment=self._commitment(),
            size=len(self._order),
        )

    def _commitment(self) -> str:
        return commitment(self.round_id, self.terms.grid(), self._order, self.nonce)

    def _count(self, message: bytes, kind: str, expected: int) -> None:
        got = psi.count_elements(message, kind)
        if got != expected:
            raise RemoteProtocolError(
                "privdeconf_size", f"the peer's PSI {kind} holds {got} elements, not {expected}"
            )

    def _learn(self, found: list[int] | int) -> None:
        self.figures.reveal = self._agreed.reveal
        self.figures.geometry = self._agreed.geometry
        self.figures.peer_cells = self._peer_size
        if isinstance(found, int):
            self.figures.intersection = found
            return
        self._matched = frozenset(
            t for t in (self._order[i] for i in found) if not t.startswith("d:")
        )
        self.figures.intersection = len(self._matched)

    def _own_pieces(self) -> list[Piece]:
        if not self._agreed.geometry:
            return []
        assert self._cells is not None
        pieces = make_pieces(
            self._cells, self._matched, self.terms, self.at_s, self.secret, self.peer
        )
        self.figures.pieces_sent = len(pieces)
        self.figures.geometry_bytes_sent = len(_encode(pieces))
        return pieces

    def _their_pieces(self, pieces: list[Piece]) -> list[Conflict]:
        self.figures.pieces_received = len(pieces)
        self.figures.geometry_bytes_received = len(_encode(pieces))
        checked, outside = check_pieces(pieces, self._matched, self.peer_parties)
        self.figures.outside_m2 = outside
        assert self._cells is not None
        return private_conflicts(
            self._cells, checked, self.terms, self.at_s, self.secret, self.peer
        )

    def _finish(self, conflicts: list[Conflict]) -> None:
        self.state = "done"
        self.figures.conflicts = len(conflicts)
        assert self.record is not None
        e = self._evidence
        self.record.evidence = Evidence(
            round_id=self.round_id,
            grid=list(self.terms.grid()),
            commitment=e["commitment"],
            size=e["size"],
            setup_for=len(self._order),
            setup_sha256=e["setup_sha256"],
            request_sha256=e["request_sha256"],
        )
        self.record.figures = self.figures
        self.result = Result(
            figures=self.figures,
            matched=self._matched,
            conflicts=conflicts,
            record=self.record,
            opening=self.opening(),
        )

    def opening(self) -> Opening:
        """What opens our commitment for this round (keep it secret until an audit)."""
        return Opening(
            round_id=self.round_id,
            grid=list(self.terms.grid()),
            tokens=sorted(self._order),
            nonce=self.nonce,
            seed=self.seed,
            reveal=self._agreed.reveal == "cells",
        )

    def _check_id(self, round_id: str) -> None:
        if round_id != self.round_id:
            raise RemoteProtocolError("privdeconf_round", f"message for round {round_id!r}")

    def _refuse(self, reason: str) -> list[bytes]:
        out = [self._send(Refuse(self.round_id, reason))]
        self._end_refused(reason)
        return out

    def _end_refused(self, reason: str) -> None:
        self.state = "refused"
        self.figures.refused = self.figures.refused or reason

    def _send(self, msg: Message) -> bytes:
        data = _encode(msg)
        self.figures.bytes_sent += len(data)
        return data


def run_in_memory(initiator: PrivateRound, responder: PrivateRound) -> None:
    """Carry a round's bytes between two sides in one process (tests, benchmarks) until both
    have ended; each side's result (or refusal) is then on it."""
    inbox = [initiator.open()]
    towards_responder = True
    while inbox:
        side = responder if towards_responder else initiator
        out: list[bytes] = []
        for data in inbox:
            out += side.receive(data)
        inbox = out
        towards_responder = not towards_responder
