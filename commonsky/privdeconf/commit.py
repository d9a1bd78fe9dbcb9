# Rule: against probing (a semi-honest PSI lets a cheat ask about cells it never means to
# fly), each hub commits to the exact set it will submit before any PSI message leaves, and
# keeps what it needs to open that commitment later. An audit, given the opening and what the
# OTHER hub recorded of the round, proves what was asked: the revealed set must hash to the
# commitment AND, encrypted again under the round's keys (derived from the revealed seed),
# reproduce byte for byte the PSI messages the other hub received. A hub that submitted a
# set other than the one it committed to cannot pass both: to match the recorded messages it
# must reveal the set it really used, whose hash is not its commitment (SHA-256 second
# preimage), and to match the commitment it must reveal the committed set, which encrypts to
# other messages (a different H(y)^c would need the discrete log).
#
# The commitment is SHA-256 over a domain tag, the round id, the grid terms, a 32-byte random
# nonce (cells are few and guessable: without the nonce the hash could be tested against
# candidate sets) and the sorted tokens, each length-prefixed.

from __future__ import annotations

import hashlib
import random
from typing import Any

import msgspec

from commonsky.privdeconf import psi

DOMAIN = b"commonsky-privdeconf-commit-v1"


def commitment(
    round_id: str, grid: tuple[Any, ...] | list[Any], tokens: list[str], nonce: bytes
) -> str:
    """Hex SHA-256 commitment to `tokens` (any order) for one round."""
    h = hashlib.sha256()
    for part in (DOMAIN, round_id.encode(), repr(tuple(grid)).encode(), nonce):
        h.update(len(part).to_bytes(8, "big") + part)
    for t in sorted(tokens):
        raw = t.encode()
        h.update(len(raw).to_bytes(8, "big") + raw)
    return h.hexdigest()


def request_order(tokens: list[str], seed: bytes) -> list[str]:
    """The order our request encrypts our tokens in: sorted, then shuffled by the seed (so the
    order of the encrypted elements follows nothing about the cells)."""
    order = sorted(tokens)
    random.Random(hashlib.sha256(b"order|" + seed).digest()).shuffle(order)
    return order


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Opening(msgspec.Struct, frozen=True, kw_only=True):
    """What a hub keeps, secret, to open its commitment for one round later: the tokens it
    submitted (dummies included), the nonce and the seed its round keys came from."""

    round_id: str
    grid: list[Any]
    tokens: list[str]
    nonce: bytes
    seed: bytes
    reveal: bool  # the PSI mode the keys were used in (cells: True)


class Evidence(msgspec.Struct, frozen=True, kw_only=True):
    """What a hub records of the peer's side of a round (in its own ledger): the peer's
    commitment and declared set size, the size the peer's setup was made for (our own set
    size), and the SHA-256 of the peer's setup and request messages as received."""

    round_id: str
    grid: list[Any]
    commitment: str
    size: int
    setup_for: int
    setup_sha256: str
    request_sha256: str


class Audit(msgspec.Struct, frozen=True):
    ok: bool
    findings: list[str]


def audit(opening: Opening, evidence: Evidence) -> Audit:
    """Does `opening` open the commitment in `evidence`, and is the revealed set the one the
    peer's recorded PSI messages were made from? `findings` says what failed."""
    findings: list[str] = []
    if opening.round_id != evidence.round_id:
        findings.append(f"the opening is for round {opening.round_id}, not {evidence.round_id}")
    if list(opening.grid) != list(evidence.grid):
        findings.append("the opening names other grid terms than the round")
    if commitment(evidence.round_id, evidence.grid, opening.tokens, opening.nonce) != (
        evidence.commitment
    ):
        findings.append("the revealed set and nonce do not hash to the commitment")
    if len(set(opening.tokens)) != evidence.size:
        findings.append(
            f"the revealed set has {len(set(opening.tokens))} tokens; {evidence.size} were declared"
        )
    order = request_order(list(set(opening.tokens)), opening.seed)
    again = psi.request(psi.derive_key(opening.seed, "client"), opening.reveal, order)
    if digest(again) != evidence.request_sha256:
        findings.append("the revealed set does not reproduce the PSI request that was sent")
    setup = psi.setup(
        psi.derive_key(opening.seed, "server"), opening.reveal, order, evidence.setup_for
    )
    if digest(setup) != evidence.setup_sha256:
        findings.append("the revealed set does not reproduce the PSI setup that was sent")
    return Audit(not findings, findings)
