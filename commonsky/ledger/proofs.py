"""The ledger's two portable documents: a signed tree head (`SignedCheckpoint`) and an
entry's inclusion receipt (`Receipt`), each written and read as JSON (`to_json` /
`from_json`, which raises EntryError naming the bad field) and checkable with no hub at hand:
only the hub's public key, pinned or carried."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from commonsky.ledger import keys, merkle
from commonsky.ledger.entry import (
    CHECKPOINT_LOG_ID,
    Entry,
    EntryError,
    b64decode,
    b64encode,
    checkpoint_message,
    decode_entry,
)


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A tree head signed by the hub: `signature` covers entry.checkpoint_message(...)."""

    size: int
    root_hex: str
    time_us: int
    signature: bytes
    hub_key: bytes  # raw 32-byte Ed25519 public key of the signer

    @property
    def root(self) -> bytes:
        return bytes.fromhex(self.root_hex)

    def message(self) -> bytes:
        return checkpoint_message(self.size, self.root, self.time_us)

    def verify(self, pinned_key: bytes | None = None) -> bool:
        if pinned_key is not None and pinned_key != self.hub_key:
            return False
        return keys.verify(self.hub_key, self.message(), self.signature)

    def to_json(self) -> dict[str, Any]:
        return {
            "log": CHECKPOINT_LOG_ID,
            "size": self.size,
            "root": self.root_hex,
            "time_us": self.time_us,
            "signature": b64encode(self.signature),
            "hub_key": b64encode(self.hub_key),
        }

    @classmethod
    def from_json(cls, obj: Any) -> SignedCheckpoint:
        if not isinstance(obj, dict):
            raise EntryError("checkpoint is not a JSON object")
        missing = {"size", "root", "time_us", "signature", "hub_key"} - set(obj)
        if missing:
            raise EntryError(f"checkpoint lacks {', '.join(sorted(missing))}")
        size, root_hex, time_us = obj["size"], obj["root"], obj["time_us"]
        if obj.get("log", CHECKPOINT_LOG_ID) != CHECKPOINT_LOG_ID:
            raise EntryError(f"checkpoint is for log {obj['log']!r}")
        for name, value in (("size", size), ("time_us", time_us)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise EntryError(f"checkpoint {name} is not a non-negative integer")
        if (
            not isinstance(root_hex, str)
            or len(root_hex) != 64
            or root_hex.strip("0123456789abcdef")
        ):
            raise EntryError("checkpoint root is not 64 lowercase hex digits")
        if not isinstance(obj["signature"], str) or not isinstance(obj["hub_key"], str):
            raise EntryError("checkpoint signature and hub_key must be base64 strings")
        return cls(
            size=size,
            root_hex=root_hex,
            time_us=time_us,
            signature=b64decode(obj["signature"], "checkpoint signature", 64),
            hub_key=b64decode(obj["hub_key"], "checkpoint hub_key", 32),
        )


@dataclass(frozen=True, slots=True)
class Receipt:
    """An entry with its audit path to a signed tree head: checkable with no hub at hand."""

    seq: int
    leaf: bytes
    proof: list[bytes]
    checkpoint: SignedCheckpoint

    @property
    def entry(self) -> Entry:
        return decode_entry(self.leaf)

    def verify(self, pinned_key: bytes | None = None) -> str | None:
        """None when the receipt holds; otherwise why not."""
        try:
            entry = decode_entry(self.leaf)
        except EntryError as exc:
            return f"entry is malformed: {exc}"
        if entry.seq != self.seq:
            return f"entry says seq {entry.seq}, receipt says {self.seq}"
        if not keys.verify_entry_signature(entry):
            return "the originator's signature does not match the payload"
        if not self.checkpoint.verify(pinned_key):
            return "checkpoint signature does not verify" + (
                " with the pinned hub key" if pinned_key is not None else ""
            )
        if not merkle.verify_inclusion(
            self.seq, self.checkpoint.size, merkle.leaf_hash(self.leaf), self.proof,
            self.checkpoint.root,
        ):  # fmt: skip
            return f"inclusion proof does not lead to the root of size {self.checkpoint.size}"
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "leaf": b64encode(self.leaf),
            "leaf_hash": merkle.leaf_hash(self.leaf).hex(),
            "proof": [p.hex() for p in self.proof],
            "checkpoint": self.checkpoint.to_json(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> Receipt:
        if not isinstance(obj, dict) or not {"seq", "leaf", "proof", "checkpoint"} <= set(obj):
            raise EntryError("proof file needs seq, leaf, proof and checkpoint")
        seq, proof = obj["seq"], obj["proof"]
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise EntryError("seq is not a non-negative integer")
        if not isinstance(proof, list) or not all(isinstance(p, str) for p in proof):
            raise EntryError("proof is not a list of hex strings")
        if not isinstance(obj["leaf"], str):
            raise EntryError("leaf is not a base64 string")
        try:
            path = [bytes.fromhex(p) for p in proof]
        except ValueError:
            raise EntryError("proof is not a list of hex strings") from None
        return cls(
            seq=seq,
            leaf=b64decode(obj["leaf"], "leaf"),
            proof=path,
            checkpoint=SignedCheckpoint.from_json(obj["checkpoint"]),
        )
