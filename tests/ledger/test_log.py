# The SQLite ledger: appends, proofs against the stored tree, restart, crash and rollback.
from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from commonsky.ledger import keys, merkle
from commonsky.ledger.entry import EntryError, EntryFields, Signature
from commonsky.ledger.log import Ledger, LedgerError

from ._helpers import fields


def _db(path: Path) -> contextlib.closing[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None)  # autocommit: each statement lands
    return contextlib.closing(conn)


def test_append_returns_seq_and_leaf_hash(ledger: Ledger) -> None:
    seq, lh = ledger.append(fields(0))
    assert seq == 0
    assert lh == merkle.leaf_hash(ledger.leaf(0))
    got = ledger.append_many([fields(1), fields(2)])
    assert [s for s, _ in got] == [1, 2]
    assert ledger.size == 3
    entry = ledger.entry(2)
    assert entry.payload["uid"] == "u-2"
    assert entry.audience == ("JPN", "USA")
    assert [e.seq for e in ledger.entries(1, 3)] == [1, 2]


def test_stored_tree_matches_reference(ledger: Ledger) -> None:
    for lo in range(0, 77, 10):
        ledger.append_many([fields(i) for i in range(lo, min(lo + 10, 77))])
    hashes = [lh for _, _, lh in ledger.leaves()]
    for size in range(78):
        assert ledger.root(size) == merkle.reference_root(hashes[:size])
        for seq in range(0, size, 5):
            proof = ledger.inclusion_proof(seq, size)
            assert merkle.verify_inclusion(seq, size, hashes[seq], proof, ledger.root(size))
        for old in range(0, size + 1, 7):
            proof = ledger.consistency_proof(old, size)
            assert merkle.verify_consistency(old, size, ledger.root(old), ledger.root(size), proof)
    assert ledger.audit() == ledger.root()


def test_checkpoint_and_receipt(ledger: Ledger) -> None:
    ledger.append_many([fields(i) for i in range(5)])
    cp = ledger.checkpoint()
    assert cp.size == 5
    assert cp.verify()
    assert cp.verify(ledger.hub_public_key)
    assert not cp.verify(b"\x01" * 32)
    assert ledger.latest_checkpoint() == cp
    receipt = ledger.receipt(3)
    assert receipt.checkpoint == cp
    assert receipt.verify() is None
    # A receipt for an entry newer than the last checkpoint gets a fresh one.
    ledger.append(fields(5))
    late = ledger.receipt(5)
    assert late.checkpoint.size == 6
    assert late.verify() is None
    forged = type(late)(4, late.leaf, late.proof, late.checkpoint)
    assert forged.verify() is not None


def test_survives_restart(tmp_path: Path) -> None:
    with Ledger.open(tmp_path) as led:
        led.append_many([fields(i) for i in range(13)])
        root13 = led.root()
        led.checkpoint()
    with Ledger.open(tmp_path) as led:
        assert led.size == 13
        assert led.root() == root13
        led.append_many([fields(i) for i in range(13, 21)])
        hashes = [lh for _, _, lh in led.leaves()]
        assert led.root() == merkle.reference_root(hashes)
        assert merkle.verify_consistency(13, 21, root13, led.root(), led.consistency_proof(13))


def test_failed_batch_leaves_nothing(ledger: Ledger) -> None:
    ledger.append_many([fields(i) for i in range(4)])
    root = ledger.root()
    bad = EntryFields("item", 1, "USA", ["USA"], {"x": 1.5})
    with pytest.raises(EntryError):
        ledger.append_many([fields(4), bad])
    assert ledger.size == 4
    assert ledger.root() == root


def test_interrupted_transaction_rolls_back(tmp_path: Path) -> None:
    # A database error in the middle of a batch's inserts (here a trigger standing in for a
    # full disk or I/O error): nothing of the batch may remain, in memory or on disk.
    with Ledger.open(tmp_path) as led:
        led.append_many([fields(i) for i in range(5)])
        root = led.root()
        with _db(tmp_path / "ledger.sqlite3") as other:
            other.execute(
                "CREATE TRIGGER boom BEFORE INSERT ON ledger_node WHEN NEW.level = 2 "
                "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
            )
        with pytest.raises(sqlite3.DatabaseError, match="disk on fire"):
            led.append_many([fields(i) for i in range(5, 9)])  # completes a level-2 node
        assert led.size == 5
        assert led.root() == root
        with _db(tmp_path / "ledger.sqlite3") as other:
            other.execute("DROP TRIGGER boom")
            (count,) = other.execute("SELECT COUNT(*) FROM ledger_entry").fetchone()
        assert count == 5
        led.append_many([fields(i) for i in range(5, 9)])
        assert led.audit() == led.root()
    with Ledger.open(tmp_path) as led:
        assert led.size == 9


WRITER = """
import sys
from pathlib import Path
from commonsky.ledger.entry import EntryFields
from commonsky.ledger.log import Ledger
led = Ledger.open(Path(sys.argv[1]))
i = led.size
print("ready", flush=True)
while True:
    batch = [EntryFields("item", i + j, "USA", ["USA"], {"n": i + j, "pad": "x" * 200})
             for j in range(50)]
    led.append_many(batch)
    i += 50
"""


def test_kill_mid_batch_leaves_a_consistent_log(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 10
        db = tmp_path / "ledger.sqlite3"
        while time.monotonic() < deadline:
            with _db(db) as conn:
                (n,) = conn.execute("SELECT COUNT(*) FROM ledger_entry").fetchone()
            if n >= 500:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    with Ledger.open(tmp_path) as led:
        assert led.size > 0
        assert led.size % 50 == 0  # whole batches only
        assert led.audit() == led.root()
        before = led.size
        led.append(fields(before))
        assert led.size == before + 1
        assert led.audit() == led.root()


def test_tampered_store_is_refused_on_open(tmp_path: Path) -> None:
    with Ledger.open(tmp_path) as led:
        led.append_many([fields(i) for i in range(6)])
        led.checkpoint()
    with _db(tmp_path / "ledger.sqlite3") as conn:
        conn.execute("UPDATE ledger_node SET hash = zeroblob(32) WHERE level = 2")
    with pytest.raises(LedgerError, match="disagree"):
        Ledger.open(tmp_path)


def test_signed_entries(tmp_path: Path) -> None:
    key_dir = tmp_path / "party"
    private_path, public_path = keys.make_party_key(key_dir, "JPN")
    party_key = keys.load_private_key(private_path)
    payload = {"text": "will not meet over Palmyra"}
    sig = keys.sign_payload(party_key, "JPN", payload)
    assert sig.key == keys.raw_public(keys.load_public_key(public_path))
    with Ledger.open(tmp_path / "hub") as led:
        led.append(EntryFields("item", 1, "JPN", ["JPN", "KOR"], payload, sig))
        assert led.entry(0).signature == sig
        forged = Signature("JPN", sig.key, bytes(64))
        with pytest.raises(EntryError, match="signature"):
            led.append(EntryFields("item", 2, "JPN", ["JPN"], payload, forged))
        assert led.size == 1


def test_bad_requests(ledger: Ledger) -> None:
    ledger.append(fields(0))
    with pytest.raises(LedgerError):
        ledger.inclusion_proof(1)
    with pytest.raises(LedgerError):
        ledger.consistency_proof(2)
    with pytest.raises(LedgerError):
        ledger.checkpoint(5)
    with pytest.raises(LedgerError):
        ledger.leaf(9)
