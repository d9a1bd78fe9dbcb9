"""Receipts' consistency proofs: a peer whose new signed head does not extend the last one it
gave us (it rewrote its past) is caught when it answers — a fork — and its receipt refused."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from commonsky.desks.recorder import LedgerRecorder
from commonsky.errors import RemoteProtocolError
from commonsky.federation import federation_pb2 as pb
from commonsky.federation.bridge import Federation
from commonsky.federation.link import Link
from commonsky.federation.peers import FederateConfig
from commonsky.federation.receipts import parse_receipt, receipt_json
from commonsky.ledger.log import Ledger, SignedCheckpoint

from ..ledger._helpers import fields
from .test_non_interference_federated import Net
from .test_relay import deal, event


class _Seam:
    """Only what `_acknowledged` uses."""

    def __init__(self) -> None:
        self.recorded: list[tuple[str, dict[str, Any]]] = []
        self.cursors: dict[tuple[str, str], int] = {}

    def watch(self, observer: Any) -> None: ...

    def watch_withdrawals(self, watcher: Any) -> None: ...

    def record(self, kind: str, audience: list[str], payload: dict[str, Any]) -> None:
        self.recorded.append((kind, payload))

    def set_cursor(self, name: str, link: str, position: int) -> None:
        self.cursors[(name, link)] = position

    def entry_at(self, store_seq: int) -> int | None:
        return None

    def parties_of(self, ledger_seqs: Any) -> set[str]:
        return set()

    def log_limited(self, reason: str, key: str, msg: str, *args: object) -> None: ...

    def cursor(self, name: str, link: str) -> int:
        return self.cursors.get((name, link), 0)


def receipt(ledger: Ledger, since: int, seq: int = 1) -> str:
    head = ledger.checkpoint()
    proof = [p.hex() for p in ledger.consistency_proof(since, head.size)] if since else []
    return receipt_json([(seq << 10, head.size - 1)], head.to_json(), since, proof)


def test_a_rewritten_past_is_a_fork(tmp_path: Path) -> None:
    seam = _Seam()
    federation = Federation(seam, [FederateConfig("peer", ("JPN",))], "us", ["USA"])  # type: ignore[arg-type]
    link: Link = federation.links["peer"]
    link.peer_is_commonsky = True
    for seq in (1, 2, 3):  # the copies the receipts answer for went to this peer
        federation.acks.given(link, seq << 10)
    honest = tmp_path / "honest"
    with Ledger.open(honest) as ledger:
        for i in range(3):
            ledger.append(fields(i))
        first = receipt(ledger, 0)
        federation.acks.acknowledged(link, 1 << 10, first)
        for i in range(3, 5):
            ledger.append(fields(i))
        second = receipt(ledger, 3, seq=2)
        federation.acks.acknowledged(link, 2 << 10, second)  # extends the first: fine
    assert [k for k, _ in seam.recorded] == ["fed-receipt", "fed-receipt"]
    parsed = parse_receipt(second)
    assert parsed is not None and parsed.since == 3
    # The same hub key, a different past: entries 0..4 rewritten, then one more.
    forged = tmp_path / "forged"
    (forged / "keys").mkdir(parents=True)
    shutil.copy(honest / "keys" / "hub-ed25519.pem", forged / "keys" / "hub-ed25519.pem")
    with Ledger.open(forged) as ledger:
        for i in range(6):
            ledger.append(fields(100 + i))
        third = receipt(ledger, 5, seq=3)
        assert SignedCheckpoint.from_json(parse_receipt(third).checkpoint).verify()  # type: ignore[union-attr]
        with pytest.raises(RemoteProtocolError, match="does not extend"):
            federation.acks.acknowledged(link, 3 << 10, third)
    assert federation.acks.forks == {"peer": 1}
    assert len(seam.recorded) == 2  # the forked receipt was not recorded
    assert seam.cursors[("fed-out", "peer")] == 2 << 10


def _recording(net: Net, hub: str, root: Path) -> LedgerRecorder:
    recorder = LedgerRecorder.open(root / f"{hub}-ledger")
    net.hubs[hub].add_recorder(recorder)
    net.feds[hub].seam.recorder = recorder
    return recorder


UsJp = tuple[Net, dict[str, LedgerRecorder]]


@pytest.fixture
def us_jp(tmp_path: Path) -> Iterator[UsJp]:
    """Hub A (USA, and RUS, who shares nothing) linked to hub B (JPN), USA granting JPN; both
    recording their ledgers, the link up."""
    net = Net({"A": ("USA", "RUS"), "B": ("JPN",)}, {frozenset("AB")},
              [deal("us-jp", "USA", "JPN")], tmp_path)  # fmt: skip
    try:
        ledgers = {hub: _recording(net, hub, tmp_path) for hub in ("A", "B")}
        net.pump()
        yield net, ledgers
    finally:
        net.close()


@pytest.mark.parametrize("lost", ["receiver", "sender"])
def test_a_copy_sent_again_after_a_restart_is_answered_with_its_receipt(
    tmp_path: Path, lost: str
) -> None:
    """A hub killed between applying a copy and its answer (`receiver`: the answer never
    left), or after answering but before the sender took the answer in (`sender`): the
    sender sends the copy again, the receiver drops it by its cursor — and answers with the
    receipt of the entry it made the first time, or the sender's ledger never proves it."""
    net = Net({"A": ("USA",), "B": ("JPN",)}, {frozenset("AB")}, [deal("us-jp", "USA", "JPN")],
              tmp_path)  # fmt: skip
    try:
        ledgers = {hub: _recording(net, hub, tmp_path) for hub in ("A", "B")}
        net.pump()
        net.hubs["A"].accept("USA", "d", event("m0"))
        a, b = net.feds["A"].links["to-B"], net.feds["B"].links["to-A"]
        assert a.session is not None and b.session is not None
        sent = a.session.ready()
        for message in sent:
            b.receive(message)
        if lost == "receiver":  # what B held in memory only is gone with it
            net.feds["B"].acks._receipts.clear()
            net.feds["B"].acks._ack_due.clear()
            ledgers["B"].seq_of.clear()
            ledgers["B"].by_store_seq.clear()
        else:  # B answered; A died before reading the answer
            net.feds["B"].acks.flush()
            assert b.session.ready()
        assert not [e for e in ledgers["A"].ledger.entries() if e.kind == "fed-receipt"]
        for message in sent:  # A, started again, sends again from its cursor
            b.receive(message)
        net.feds["B"].acks.flush()
        net.pump()
        (entry,) = [
            seq for seq, e in enumerate(ledgers["B"].ledger.entries())
            if e.kind == "item" and e.payload["uid"] == "m0"
        ]  # fmt: skip
        receipts = [e for e in ledgers["A"].ledger.entries() if e.kind == "fed-receipt"]
        assert [p[1] for r in receipts for p in r.payload["entries"]] == [entry]
        assert [i.uid for i in net.hubs["B"].store.since(0) if i.party == "USA"] == ["m0"]
    finally:
        net.close()


def test_a_receipt_is_seen_only_by_the_parties_of_what_it_proves(us_jp: UsJp) -> None:
    """USA's marker to JPN's hub, acknowledged: the receipt in USA's hub's ledger said to
    every party of that hub (RUS, who shares nothing with anyone, too) when USA's items went
    to JPN — traffic a rival may not see. Now only the parties of the items it covers."""
    net, ledgers = us_jp
    net.hubs["A"].accept("USA", "d", event("m0"))
    net.pump()
    net.feds["B"].acks.flush()
    net.pump()
    (receipt,) = [e for e in ledgers["A"].ledger.entries() if e.kind == "fed-receipt"]
    assert receipt.payload["entries"] and receipt.audience == ("USA",)
    (ack,) = [e for e in ledgers["B"].ledger.entries() if e.kind == "fed-ack"]
    assert set(ack.audience) == {"USA", "JPN"}


def _seq(net: Net, hub: str, uid: str) -> int:
    (seq,) = [i.seq for i in net.hubs[hub].store.since(0) if i.uid == uid]
    return seq


def test_a_peer_answers_only_for_what_was_sent_to_it(us_jp: UsJp) -> None:
    """JPN's hub, linked to USA's and RUS's, signs a receipt for RUS's item — never sent to
    it (no agreement) — beside USA's, and acknowledges far past what it was given: RUS's
    item was recorded as acknowledged, in a receipt RUS saw, and the cursor jumped past
    items never sent (the operator's `unacked` read 0). Now only what was given counts."""
    from commonsky.federation.mapping import ack

    from .test_hostile_peer import send

    net, ledgers = us_jp
    for party, uid in (("USA", "m0"), ("RUS", "r0"), ("USA", "m1")):
        net.hubs["A"].accept(party, "d", event(uid))
    a = net.feds["A"].links["to-B"]
    assert a.session is not None
    sent = a.session.ready()  # (B's honest answers are not carried)
    assert len(sent) == 2
    m0, r0, m1 = (_seq(net, "A", uid) << 10 for uid in ("m0", "r0", "m1"))
    head = ledgers["B"].ledger.checkpoint().to_json()
    forged = receipt_json([(r0, 0), (m0, 0)], head)
    send(net, "A", "to-B", ack(500 << 10, 0.0, forged))
    (entry,) = [e for e in ledgers["A"].ledger.entries() if e.kind == "fed-receipt"]
    assert entry.payload["entries"] == [[m0, 0]] and entry.audience == ("USA",)
    assert net.feds["A"].refused == {("to-B", "ack_not_sent"): 1}
    assert net.hubs["A"].store.cursor("fed-out", "to-B") == m1
    assert net.feds["A"].acks.acked == {"to-B": m1}
    # a receipt for nothing it was given: nothing recorded, counted again
    send(net, "A", "to-B", ack(m1, 0.0, receipt_json([(m1 + (1 << 10), 0)], head)))
    assert len([e for e in ledgers["A"].ledger.entries() if e.kind == "fed-receipt"]) == 1
    assert net.feds["A"].refused == {("to-B", "ack_not_sent"): 2}
    facts = [e for e in ledgers["A"].ledger.entries() if e.kind.startswith("fed-")]
    assert facts and not [e for e in facts if "RUS" in e.audience]


def test_a_head_alone_is_seen_by_no_party_of_ours(us_jp: UsJp) -> None:
    """A signed head with no entries (`timeout_checkpoint_s`, or nothing flowed) was recorded
    for every party of the sender's hub: RUS, whose items never crossed, learnt each
    exchange with JPN's hub. Now it is the link's parties', as the receiver's `fed-ack`."""
    net, ledgers = us_jp
    net.feds["B"].acks.exchange()
    net.pump()
    (entry,) = [e for e in ledgers["A"].ledger.entries() if e.kind == "fed-receipt"]
    assert entry.payload["entries"] == [] and entry.audience == ("JPN",)
    (fed_ack,) = [e for e in ledgers["B"].ledger.entries() if e.kind == "fed-ack"]
    assert set(fed_ack.audience) == {"USA", "RUS"}  # (its link's, as before)


def test_a_head_given_again_is_recorded_once(us_jp: UsJp) -> None:
    """A receipt carrying only a signed head the peer gave before (same key, size and root)
    answers for nothing new: recorded once. Each copy was recorded — a peer repeating its
    receipt grew our ledger by an entry a message."""
    net, ledgers = us_jp
    net.feds["B"].acks.exchange()
    link = net.feds["B"].links["to-A"]
    assert link.session is not None
    sent = [message.SerializeToString() for message in link.session.ready()]
    assert sent
    _, back = net.peer_link("B", link)
    for _ in range(3):
        for data in sent:
            back.receive(pb.FederatedEvent.FromString(data))
    receipts = [e for e in ledgers["A"].ledger.entries() if e.kind == "fed-receipt"]
    assert len(receipts) == 1
    net.feds["B"].acks.exchange()  # a new head (B recorded its fed-ack since): recorded
    net.pump()
    assert len([e for e in ledgers["A"].ledger.entries() if e.kind == "fed-receipt"]) == 2
