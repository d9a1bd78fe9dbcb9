"""Who told whom what, across sovereign ledgers: signed receipts for durable items.

For the durable items it applies from a link, the receiving hub answers (with its batched
acknowledgement) a receipt: for each copy, its position on the link and the sequence of the
item's entry in the receiver's ledger, with a checkpoint the receiver signed covering them.
Both ledgers record it: the receiver a `fed-ack` entry, the sender — after checking the
signature — a `fed-receipt` entry carrying the receiver's signed checkpoint.

Offline, `commonsky ledger verify A.jsonl --peer B.jsonl` (`cross_check`) then proves from
the two hubs' exports alone that hub A sent item X (A's `item` entry whose `store_seq` is the
position's) and hub B acknowledged it at time T: B's checkpoint in A's ledger is signed by
B's key (the key of B's export), is the root of B's exported log at that size, and B's entry
at the acknowledged sequence is the same item (originator, uid, type, times). Neither side
can later deny it or rewrite it without the other's ledger showing the difference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KIND_ACK = "fed-ack"
KIND_RECEIPT = "fed-receipt"
MAX_RECEIPT_BYTES = 65536  # what one acknowledgement's receipt may carry


def receipt_json(
    entries: list[tuple[int, int]],
    checkpoint: dict[str, Any],
    since: int = 0,
    consistency: list[str] | None = None,
) -> str:
    """The text a receipt crosses the link as: [[position, ledger seq], …], the signed
    checkpoint (`SignedCheckpoint.to_json()`) and, from the second on, the consistency proof
    (hex) of the log from the size of the last checkpoint given to this peer (`since`)."""
    body: dict[str, Any] = {"entries": entries, "checkpoint": checkpoint}
    if since:
        body["since"] = since
        body["consistency"] = consistency or []
    return json.dumps(body, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class ParsedReceipt:
    entries: list[tuple[int, int]]
    checkpoint: dict[str, Any]
    since: int = 0
    consistency: list[bytes] = field(default_factory=list)


def parse_receipt(text: str) -> ParsedReceipt | None:
    """A receipt's parts; None when it is not one."""
    if not text or len(text) > MAX_RECEIPT_BYTES:
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("checkpoint"), dict):
        return None
    entries = obj.get("entries")
    if not isinstance(entries, list) or not all(
        isinstance(e, list)
        and len(e) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in e)
        for e in entries
    ):
        return None
    since, proof = obj.get("since", 0), obj.get("consistency", [])
    if isinstance(since, bool) or not isinstance(since, int) or since < 0:
        return None
    if not isinstance(proof, list) or not all(isinstance(p, str) for p in proof):
        return None
    try:
        hashes = [bytes.fromhex(p) for p in proof]
    except ValueError:
        return None
    return ParsedReceipt([(int(p), int(s)) for p, s in entries], obj["checkpoint"], since, hashes)


@dataclass(frozen=True, slots=True)
class Proven:
    """One durable item proven sent by A and acknowledged by B."""

    sender_seq: int  # A's ledger entry of the item
    receiver_seq: int  # B's ledger entry of the item
    uid: str
    acknowledged_us: int  # B's checkpoint time


def _entries(path: Path) -> tuple[dict[int, Any], list[bytes], Any]:
    """(entries by ledger seq, leaf hashes, checkpoint) of an export `verify` accepts."""
    from commonsky.ledger.entry import decode_entry
    from commonsky.ledger.export import base64_leaf, read_leaf_hashes

    hashes, checkpoint = read_leaf_hashes(path)
    entries: dict[int, Any] = {}
    with path.open("rb") as fh:
        for raw in fh:
            line = json.loads(raw)
            if "leaf" in line and "seq" in line:
                entries[int(line["seq"])] = decode_entry(base64_leaf(line["leaf"]))
    return entries, hashes, checkpoint


def cross_check(sender: Path, receiver: Path) -> tuple[list[Proven], list[str]]:
    """Every `fed-receipt` in the sender's export whose checkpoint was signed by the
    receiver's hub key, checked against the receiver's export (module rule). Returns what is
    proven and the problems (empty: everything holds). Raises ValueError for an export that
    does not verify by itself."""
    from commonsky.ledger import merkle
    from commonsky.ledger.log import SignedCheckpoint

    a_entries, _, _ = _entries(sender)
    b_entries, b_hashes, b_checkpoint = _entries(receiver)
    by_store_seq: dict[int, Any] = {}
    for entry in a_entries.values():
        store_seq = entry.payload.get("store_seq")
        if entry.kind == "item" and isinstance(store_seq, int):
            by_store_seq[store_seq] = entry
    proven: list[Proven] = []
    problems: list[str] = []
    receipts = matched = 0
    for seq, entry in sorted(a_entries.items()):
        if entry.kind != KIND_RECEIPT:
            continue
        receipts += 1
        try:
            cp = SignedCheckpoint.from_json(entry.payload.get("checkpoint"))
        except Exception as exc:
            problems.append(f"sender #{seq}: receipt checkpoint unreadable ({exc})")
            continue
        if cp.hub_key != b_checkpoint.hub_key:
            continue  # a receipt from another peer
        matched += 1
        if not cp.verify(b_checkpoint.hub_key):
            problems.append(f"sender #{seq}: receipt checkpoint not signed by the receiver")
            continue
        if cp.size > len(b_hashes):
            continue  # signed after the receiver's export was made: not checkable with it
        if merkle.root_of_leaf_hashes(b_hashes[: cp.size]).hex() != cp.root_hex:
            problems.append(
                f"sender #{seq}: the receiver's log of size {cp.size} is not the one it signed"
            )
            continue
        for position, b_seq in entry.payload.get("entries", []):
            sent = by_store_seq.get(position >> 10)
            got = b_entries.get(b_seq)
            if sent is None:
                problems.append(f"sender #{seq}: no item entry with store_seq {position >> 10}")
            elif got is None or b_seq >= cp.size:
                problems.append(f"sender #{seq}: receiver entry #{b_seq} missing or not covered")
            elif not _same_item(sent, got):
                problems.append(
                    f"sender #{seq}: receiver entry #{b_seq} is not the item of sender #{sent.seq}"
                )
            else:
                proven.append(Proven(sent.seq, b_seq, str(sent.payload.get("uid")), cp.time_us))
    if receipts and not matched:
        problems.append(f"none of the sender's {receipts} receipts is signed by the receiver's key")
    return proven, problems


def _same_item(sent: Any, got: Any) -> bool:
    """The receiver's entry records the sender's item: same originator, uid and type, the
    same times to the millisecond (what a GeoEvent carries)."""

    def ms(entry: Any, key: str) -> int | None:
        value = entry.payload.get(key)
        return round(value / 1000) if isinstance(value, int) else None

    def uid(entry: Any) -> Any:
        # `P::x` written by P is P's x (namespace.py); a receipt's uid is a reference,
        # kept as the receiver was given it (under the originator's prefix).
        value = entry.payload.get("uid")
        own = f"{entry.originator}::"
        return value[len(own) :] if isinstance(value, str) and value.startswith(own) else value

    return (
        got.kind == "item"
        and sent.originator == got.originator
        and uid(sent) == uid(got)
        and sent.payload.get("type") == got.payload.get("type")
        and all(ms(sent, k) == ms(got, k) for k in ("time_us", "stale_us"))
    )
