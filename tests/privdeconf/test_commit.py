"""Against probing: a hub commits to its cells before any PSI message; an audit of the round
with the other hub's evidence proves what was asked, and catches a hub that lied."""

from __future__ import annotations

import msgspec
import pytest

from commonsky.privdeconf import Gate, PrivateRound, RoundRefused, Terms, audit
from commonsky.privdeconf.commit import Opening, commitment, request_order
from commonsky.privdeconf.round import Open, _decode
from tests.privdeconf.helpers import A_PARTIES, B_PARTIES, T0, TERMS, circle_volume

A = [circle_volume("A1", "a", (38.3, 34.6))]
B = [circle_volume("B1", "b", (38.4, 34.6), floor_m=5000, ceiling_m=12000, end_s=T0 + 7200)]


def _sides(
    gate_a: Gate | None = None, gate_b: Gate | None = None
) -> tuple[PrivateRound, PrivateRound]:
    ini = PrivateRound(
        role="initiator",
        terms=TERMS,
        holdings=A,
        peer="hub-b",
        peer_parties=B_PARTIES,
        secret=b"a" * 32,
        now=T0,
        gate=gate_a,
    )
    res = PrivateRound(
        role="responder",
        terms=TERMS,
        holdings=B,
        peer="hub-a",
        peer_parties=A_PARTIES,
        secret=b"b" * 32,
        now=T0,
        gate=gate_b,
    )
    return ini, res


def _run(ini: PrivateRound, res: PrivateRound, first: bytes) -> None:
    inbox, to_res = [first], True
    while inbox:
        side = res if to_res else ini
        inbox = [out for data in inbox for out in side.receive(data)]
        to_res = not to_res


def test_an_honest_round_passes_the_audit_both_ways() -> None:
    ini, res = _sides()
    _run(ini, res, ini.open())
    assert ini.result is not None and res.result is not None
    # A hub's evidence is about its PEER: the initiator's opening against the responder's
    # record, and the other way round.
    for opener, recorder in ((ini, res), (res, ini)):
        evidence = recorder.result.record.evidence  # type: ignore[union-attr]
        assert evidence is not None
        assert evidence.commitment == opener.result.record.commitment  # type: ignore[union-attr]
        verdict = audit(opener.result.opening, evidence)  # type: ignore[union-attr]
        assert verdict.ok, verdict.findings


def test_the_commitment_is_sent_before_any_psi_message_and_is_what_the_record_says() -> None:
    ini, _res = _sides()
    first = _decode(ini.open())
    assert isinstance(first, Open)
    assert ini.record is not None and first.commitment == ini.record.commitment
    # The commitment binds the set: another nonce or one token more changes it.
    opening = ini.opening()
    again = commitment(opening.round_id, opening.grid, opening.tokens, opening.nonce)
    assert again == first.commitment
    assert commitment(opening.round_id, opening.grid, opening.tokens, b"x" * 32) != again
    assert (
        commitment(opening.round_id, opening.grid, [*opening.tokens, "v:x:0:0"], opening.nonce)
        != again
    )


def _probing_round() -> tuple[PrivateRound, PrivateRound, list[str]]:
    """The initiator commits to its real cells, then submits them plus cells it never means
    to fly (probes: the responder's own cells, guessed), to learn where the responder is."""
    ini, res = _sides()
    first = ini.open()
    from commonsky.privdeconf.cells import CellSet

    probes = sorted(CellSet.build(B, TERMS, T0, A_PARTIES).tokens - set(ini._order))[:50]
    assert probes
    ini._order = request_order([*ini._order, *probes], ini.seed)  # after the commitment: the lie
    # It must still declare its size as sent, or the responder refuses the request outright.
    msg = _decode(first)
    assert isinstance(msg, Open)
    lied = msgspec.msgpack.encode(msgspec.structs.replace(msg, size=len(ini._order)))
    _run(ini, res, lied)
    assert ini.result is not None and res.result is not None
    return ini, res, probes


def test_a_hub_that_probes_beyond_its_commitment_is_caught() -> None:
    ini, res, probes = _probing_round()
    # The probe worked, in the round: the cheat learnt the responder's cells it asked about.
    assert set(probes) <= ini.result.matched  # type: ignore[union-attr]
    evidence = res.result.record.evidence  # type: ignore[union-attr]
    assert evidence is not None
    # Opening with the committed (honest) set: the commitment matches, the PSI messages the
    # responder recorded do not.
    committed = [t for t in ini._order if t not in probes]
    honest = Opening(**{**msgspec.structs.asdict(ini.opening()), "tokens": committed})
    verdict = audit(honest, evidence)
    assert not verdict.ok
    assert any("PSI request" in f for f in verdict.findings)
    assert not any("commitment" in f for f in verdict.findings)
    # Opening with the set really used: the messages match, the commitment does not.
    verdict = audit(ini.opening(), evidence)
    assert not verdict.ok
    assert [f for f in verdict.findings if "commitment" in f]
    assert not any("PSI request" in f for f in verdict.findings)


def test_an_opening_for_another_round_or_with_another_nonce_fails() -> None:
    ini, res = _sides()
    _run(ini, res, ini.open())
    evidence = res.result.record.evidence  # type: ignore[union-attr]
    assert evidence is not None
    opening = ini.opening()
    other_nonce = Opening(**{**msgspec.structs.asdict(opening), "nonce": b"\x00" * 32})
    assert not audit(other_nonce, evidence).ok
    other_round = Opening(**{**msgspec.structs.asdict(opening), "round_id": "0" * 32})
    findings = audit(other_round, evidence).findings
    assert any("round" in f for f in findings)


def test_rounds_are_rate_limited_on_both_sides() -> None:
    gate_a, gate_b = Gate(60.0), Gate(60.0)
    ini, res = _sides(gate_a, gate_b)
    _run(ini, res, ini.open())
    assert ini.state == res.state == "done"
    # Our own side will not start another one within min_interval_s...
    again, _ = _sides(gate_a, Gate(60.0))
    with pytest.raises(RoundRefused, match="min_interval_s"):
        again.open()
    # ...and a peer that opens one anyway (its own gate elsewhere) is refused.
    eager, res2 = _sides(Gate(0.0), gate_b)
    out = res2.receive(eager.open())
    assert res2.state == "refused" and "rate" in (res2.figures.refused or "")
    eager.receive(out[0])
    assert eager.state == "refused" and "rate" in (eager.figures.refused or "")


def test_terms_written_as_integers_or_floats_commit_alike() -> None:
    # The grid terms are hashed into each commitment; 4000 and 4000.0 are the same term.
    as_ints = Terms(grid_level=5, time_slot_s=3600, altitude_band_m=4000, max_cells=40_000)
    ini = PrivateRound(
        role="initiator",
        terms=as_ints,
        holdings=A,
        peer="hub-b",
        peer_parties=B_PARTIES,
        secret=b"a" * 32,
        now=T0,
    )
    res = PrivateRound(
        role="responder",
        terms=TERMS,
        holdings=B,
        peer="hub-a",
        peer_parties=A_PARTIES,
        secret=b"b" * 32,
        now=T0,
    )
    _run(ini, res, ini.open())
    assert ini.result is not None and res.result is not None
    evidence = res.result.record.evidence
    assert evidence is not None
    assert audit(ini.result.opening, evidence).ok
