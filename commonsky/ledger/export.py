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
# changed: the verifier then names the checkpoint line.
from __future__ import annotations

import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgspec

from commonsky.ledger import keys, merkle
from commonsky.ledger.entry import (
    NONCE_SIZE,
    EntryError,
    b64_fixed,
    b64decode,
    b64encode,
    decode_entry,
    decode_wire,
)
from commonsky.ledger.log import Ledger, SignedCheckpoint


class _Line(msgspec.Struct, forbid_unknown_fields=True):
    seq: int | None = None
    leaf: str | None = None
    entry: msgspec.Raw = msgspec.Raw(b"")
    leaf_hash: str | None = None
    log: Any = None
    size: Any = None
    root: Any = None
    time_us: Any = None
    signature: Any = None
    hub_key: Any = None


_line_decoder = msgspec.json.Decoder(_Line)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    entries: int = 0  # entry and redacted lines read
    redacted: int = 0
    signed: int = 0  # entries whose originator signature was checked
    checkpoint: SignedCheckpoint | None = None
    line: int | None = None  # first bad line (1-based)
    seq: int | None = None  # seq of that line, when it is an entry
    reason: str = ""

    def describe(self) -> str:
        if self.ok:
            assert self.checkpoint is not None
            return (
                f"intact: {self.entries} entries ({self.redacted} redacted, {self.signed} "
                f"originator signatures checked), root {self.checkpoint.root_hex}"
            )
        where = f"line {self.line}" if self.line is not None else "file"
        if self.seq is not None:
            where += f" (seq {self.seq})"
        return f"{where}: {self.reason}"


class _Bad(Exception):
    def __init__(self, reason: str, seq: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.seq = seq


def _entry_line(seq: int, leaf: bytes) -> bytes:
    return b'{"seq":%d,"leaf":"%s","entry":%s}\n' % (seq, b64encode(leaf).encode(), leaf)


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
            buf.append(_entry_line(seq, leaf))
        else:
            buf.append(_redacted_line(lh))
        if len(buf) >= 4096:
            fh.write(b"".join(buf))
            buf.clear()
    buf.append(_checkpoint_line(cp))
    fh.write(b"".join(buf))


def _check_entry_line(
    line: _Line, seq: int, party_keys: Mapping[str, bytes] | None
) -> tuple[bytes, bool]:
    if line.seq is None:
        raise _Bad("entry line has no seq", seq)
    if line.seq != seq:
        raise _Bad(f"seq {line.seq} where seq {seq} was expected (missing or reordered)", seq)
    assert line.leaf is not None
    # `entry` must be the leaf bytes inlined; encoding it back is cheaper than decoding `leaf`
    # and equally exact (canonical base64 is unique).
    leaf = bytes(line.entry)
    if binascii.b2a_base64(leaf, newline=False) != line.leaf.encode():
        try:
            b64decode(line.leaf, "leaf")
        except EntryError as exc:
            raise _Bad(str(exc), seq) from None
        raise _Bad("decoded entry fields differ from the leaf bytes", seq)
    try:
        wire = decode_wire(leaf)
    except EntryError as exc:
        raise _Bad(f"leaf is not a valid entry: {exc}", seq) from None
    if wire.seq != seq:
        raise _Bad(f"leaf says seq {wire.seq}", seq)
    if wire.sig is None:
        try:
            b64_fixed(wire.nonce, "nonce", NONCE_SIZE)
        except EntryError as exc:
            raise _Bad(f"leaf is not a valid entry: {exc}", seq) from None
        return merkle.leaf_hash(leaf), False
    entry = decode_entry(leaf)
    sig = entry.signature
    assert sig is not None
    if party_keys is not None:
        pinned = party_keys.get(sig.party)
        if pinned is None:
            raise _Bad(f"signer {sig.party} has no pinned public key", seq)
        if pinned != sig.key:
            raise _Bad(f"signer {sig.party} used a key other than the pinned one", seq)
    if not keys.verify_entry_signature(entry):
        raise _Bad(f"signature by {sig.party} does not match the payload", seq)
    return merkle.leaf_hash(leaf), True


def _checkpoint_from(line: _Line) -> SignedCheckpoint:
    obj = {
        k: getattr(line, k)
        for k in ("log", "size", "root", "time_us", "signature", "hub_key")
        if getattr(line, k) is not None
    }
    try:
        return SignedCheckpoint.from_json(obj)
    except EntryError as exc:
        raise _Bad(f"bad checkpoint: {exc}") from None


def verify_lines(
    lines: Iterable[bytes],
    hub_key: bytes | None = None,
    party_keys: Mapping[str, bytes] | None = None,
) -> VerifyResult:
    """Verify an export given as lines; `hub_key` (raw) and `party_keys` pin signers."""
    hashes: list[bytes] = []
    append = hashes.append
    cp: SignedCheckpoint | None = None
    lineno = 0
    redacted = signed = 0
    try:
        for lineno, raw in enumerate(lines, 1):  # noqa: B007 - lineno is read after the loop
            seq = len(hashes)
            if cp is not None:
                raise _Bad("text after the checkpoint line")
            try:
                line = _line_decoder.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise _Bad(f"not a valid export line ({exc})", seq) from None
            if line.leaf is not None:
                lh, was_signed = _check_entry_line(line, seq, party_keys)
                signed += was_signed
                append(lh)
            elif line.leaf_hash is not None:
                if line.seq is not None or line.entry or line.root is not None:
                    raise _Bad("a redacted line carries only leaf_hash", seq)
                try:
                    lh = bytes.fromhex(line.leaf_hash)
                except ValueError:
                    lh = b""
                if len(lh) != merkle.HASH_SIZE or lh.hex() != line.leaf_hash:
                    raise _Bad("leaf_hash is not 64 lowercase hex digits", seq)
                append(lh)
                redacted += 1
            elif line.root is not None:
                cp = _checkpoint_from(line)
            else:
                raise _Bad("line is neither an entry, a redacted entry nor a checkpoint", seq)
        if cp is None:
            raise _Bad("no checkpoint line at the end (file truncated?)")
        if cp.size != len(hashes):
            if cp.size > len(hashes):
                raise _Bad(
                    f"checkpoint covers {cp.size} entries but the file holds {len(hashes)}",
                    len(hashes),
                )
            raise _Bad(f"checkpoint covers {cp.size} entries but the file holds more")
        root = merkle.root_of_leaf_hashes(hashes)
        if root != cp.root:
            raise _Bad(
                f"recomputed root {root.hex()} differs from the checkpoint root "
                "(an entry was altered)"
            )
        if hub_key is not None and hub_key != cp.hub_key:
            raise _Bad("checkpoint is signed by a key other than the pinned hub key")
        if not cp.verify():
            raise _Bad("checkpoint signature does not verify with its hub key")
    except _Bad as bad:
        return VerifyResult(
            ok=False,
            entries=len(hashes),
            redacted=redacted,
            signed=signed,
            checkpoint=cp,
            line=lineno if lineno else None,
            seq=bad.seq,
            reason=bad.reason,
        )
    return VerifyResult(True, len(hashes), redacted, signed, cp)


def verify(
    path: Path,
    hub_key: bytes | None = None,
    party_keys: Mapping[str, bytes] | None = None,
) -> VerifyResult:
    """Verify an export file.  Raises OSError only when the file cannot be read at all."""
    with Path(path).open("rb") as fh:
        return verify_lines(fh, hub_key, party_keys)


def read_leaf_hashes(path: Path) -> tuple[list[bytes], SignedCheckpoint]:
    """Leaf hashes and checkpoint of an export that `verify` accepts (raises ValueError)."""
    result = verify(path)
    if not result.ok or result.checkpoint is None:
        raise ValueError(f"{path}: {result.describe()}")
    hashes: list[bytes] = []
    with Path(path).open("rb") as fh:
        for raw in fh:
            line = _line_decoder.decode(raw)
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
