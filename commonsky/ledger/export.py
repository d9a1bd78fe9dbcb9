# JSON Lines export of the ledger, and the offline verifier any party can run on it.
#
# Rule: the verifier trusts nothing in the file but the arithmetic.  It recomputes every leaf
# hash, rebuilds the RFC 6962 root, checks the hub's checkpoint signature and each
# originator's signature, and stops at the FIRST line that is wrong, naming it and why.
#
# File format (one JSON object per line, UTF-8, "\n" after each line):
#   entry line     {"seq":N,"leaf":B64,"entry":{...}}
#                  `leaf` is the canonical entry bytes (entry.py) in base64; `entry` is the same
#                  bytes inlined for humans and must be byte-identical to the decoded leaf.
#   redacted line  {"leaf_hash":HEX}
#                  in a party's export, an entry outside that party's audience: only its RFC
#                  6962 leaf hash, so the tree still verifies and nothing else leaks.
#   last line      {"log":"commonsky-ledger-v1","size":N,"root":HEX,"time_us":T,
#                   "signature":B64,"hub_key":B64}
#                  the signed checkpoint (entry.py CHECKPOINT); hub_key is the raw Ed25519 key.
# Line k (1-based) holds seq k-1.  A tamper that keeps every line self-consistent (a leaf and
# its inlined copy rewritten together) is caught by the root, which cannot say which entry
# changed: the verifier then names the checkpoint line.  The verifier itself is verify.py.
from __future__ import annotations

import binascii
from pathlib import Path
from typing import IO, Any

import msgspec

from commonsky.ledger import merkle
from commonsky.ledger.entry import EntryError, b64decode
from commonsky.ledger.log import Ledger
from commonsky.ledger.proofs import SignedCheckpoint
from commonsky.ledger.verify import VerifyResult as VerifyResult  # re-exported
from commonsky.ledger.verify import line_decoder
from commonsky.ledger.verify import verify as verify  # re-exported
from commonsky.ledger.verify import verify_lines as verify_lines  # re-exported

_b2a = binascii.b2a_base64


def _entry_line(seq: int, leaf: bytes) -> bytes:
    return b'{"seq":%d,"leaf":"%s","entry":%s}\n' % (seq, _b2a(leaf, newline=False), leaf)


def _redacted_line(leaf_hash: bytes) -> bytes:
    return b'{"leaf_hash":"%s"}\n' % leaf_hash.hex().encode()


def _checkpoint_line(cp: SignedCheckpoint) -> bytes:
    return msgspec.json.encode(cp.to_json()) + b"\n"


def export(
    ledger: Ledger,
    out: Path | IO[bytes],
    party: str | None = None,
    checkpoint: SignedCheckpoint | None = None,
) -> SignedCheckpoint:
    """Write the log up to `checkpoint` (default: a fresh one).  With `party`, entries outside
    that party's audience are written as their leaf hash only.  Returns the checkpoint."""
    cp = checkpoint if checkpoint is not None else ledger.checkpoint()
    if isinstance(out, Path):
        tmp = out.with_name(out.name + ".tmp")
        with tmp.open("wb") as fh:
            _write(ledger, fh, party, cp)
        tmp.replace(out)
    else:
        _write(ledger, out, party, cp)
    return cp


def _write(ledger: Ledger, fh: IO[bytes], party: str | None, cp: SignedCheckpoint) -> None:
    needle = f",{party},"
    buf: list[bytes] = []
    for seq, leaf, lh, audience in ledger.export_rows(cp.size):
        if party is None or needle in audience:
            # _entry_line, inlined: this loop runs once per entry of the log.
            buf.append(
                b'{"seq":%d,"leaf":"%s","entry":%s}\n' % (seq, _b2a(leaf, newline=False), leaf)
            )
        else:
            buf.append(_redacted_line(lh))
        if len(buf) >= 4096:
            fh.write(b"".join(buf))
            buf.clear()
    buf.append(_checkpoint_line(cp))
    fh.write(b"".join(buf))


def read_leaf_hashes(path: Path) -> tuple[list[bytes], SignedCheckpoint]:
    """Leaf hashes and checkpoint of an export that `verify` accepts (raises ValueError)."""
    result = verify(path)
    if not result.ok or result.checkpoint is None:
        raise ValueError(f"{path}: {result.describe()}")
    hashes: list[bytes] = []
    with Path(path).open("rb") as fh:
        for raw in fh:
            line = line_decoder.decode(raw)
            if line.leaf is not None:
                hashes.append(merkle.leaf_hash(base64_leaf(line.leaf)))
            elif line.leaf_hash is not None:
                hashes.append(bytes.fromhex(line.leaf_hash))
    return hashes, result.checkpoint


def base64_leaf(text: str) -> bytes:
    try:
        return b64decode(text, "leaf")
    except (EntryError, binascii.Error) as exc:
        raise ValueError(str(exc)) from None


def check_consistent(old_path: Path, new_path: Path) -> str | None:
    """Is the log in `old_path` a prefix of the log in `new_path`?  None when it is.

    Works on any two verified exports of the same hub (filtered or not): the newer file holds
    every leaf hash, so the old tree head is recomputed from it directly.
    """
    _, old_cp = read_leaf_hashes(old_path)
    hashes, new_cp = read_leaf_hashes(new_path)
    if old_cp.hub_key != new_cp.hub_key:
        return "the two checkpoints are signed by different hub keys"
    if old_cp.size > new_cp.size:
        return f"old checkpoint has size {old_cp.size}, larger than new size {new_cp.size}"
    tree = merkle.MemoryTree()
    for h in hashes[: old_cp.size]:
        tree.append(h)
    if tree.root() != old_cp.root:
        return (
            f"the first {old_cp.size} entries of the new log do not give the old root: "
            "the log was rewritten"
        )
    return None


def verify_consistency_json(obj: Any, hub_key: bytes | None = None) -> str | None:
    """Check a consistency proof file from `commonsky ledger consistency`; None when valid."""
    if not isinstance(obj, dict) or not {"old", "new", "proof"} <= set(obj):
        raise EntryError("consistency file needs old, new and proof")
    old = SignedCheckpoint.from_json(obj["old"])
    new = SignedCheckpoint.from_json(obj["new"])
    proof = obj["proof"]
    if not isinstance(proof, list) or not all(isinstance(p, str) for p in proof):
        raise EntryError("proof is not a list of hex strings")
    try:
        path = [bytes.fromhex(p) for p in proof]
    except ValueError:
        raise EntryError("proof is not a list of hex strings") from None
    for name, cp in (("old", old), ("new", new)):
        if not cp.verify(hub_key):
            return f"{name} checkpoint signature does not verify"
    if old.hub_key != new.hub_key:
        return "the two checkpoints are signed by different hub keys"
    if not merkle.verify_consistency(old.size, new.size, old.root, new.root, path):
        return f"tree of size {new.size} does not extend tree of size {old.size}"
    return None


def consistency_json(ledger: Ledger, old: int, new: int | None = None) -> dict[str, Any]:
    """Two signed checkpoints and the RFC 6962 consistency proof between them."""
    new_cp = ledger.checkpoint(new)
    old_cp = ledger.checkpoint(old)
    proof = ledger.consistency_proof(old, new_cp.size)
    return {"old": old_cp.to_json(), "new": new_cp.to_json(), "proof": [p.hex() for p in proof]}
