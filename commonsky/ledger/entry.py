# The canonical ledger entry: one byte string per entry, the same in every implementation.
#
# Rule: the bytes hashed into the Merkle tree are the only truth.  Everything here exists so
# that a party holding an export can rebuild those bytes' meaning offline, with nothing but
# SHA-256, Ed25519 and a JSON parser, and get the same answer as the hub.
#
# CANONICAL JSON (used for entries, payload signatures and checkpoints)
#   * UTF-8, no byte-order mark, no whitespace outside strings.
#   * Values: objects, arrays, strings, integers, true, false, null.  No floats: times are
#     integer microseconds, coordinates whatever integer unit the payload documents.
#     Integers are in the signed 64-bit range, written in plain decimal with no leading zeros
#     or plus sign ("-0" is not canonical).
#   * Object keys are strings, unique, sorted by Unicode code point.
#   * Strings escape only what JSON requires: `"` as \", `\` as \\, U+0008/0009/000A/000C/000D
#     as \b \t \n \f \r, any other U+0000-U+001F as \u00XX with lowercase hex.  Every other
#     character, including "/", DEL and non-ASCII, is written as its raw UTF-8.  Lone
#     surrogates are not allowed.
#   * Byte strings are standard base64 with padding (RFC 4648 §4) inside JSON strings.
#   A verifier checks canonical form by parsing and re-serialising: the bytes must not change.
#
# ENTRY (the Merkle leaf; leaf hash = SHA-256(0x00 || entry bytes), RFC 6962)
#   {"audience":[...],"kind":K,"nonce":B64,"originator":P,"payload":{...},"seq":N,
#    "sig":{"key":B64,"party":P,"value":B64},"time_us":T,"v":1}
#   v          format version, always 1.
#   seq        position in the log, 0-based and contiguous.
#   kind       "item" (an accepted durable item), "receipt" (the hub's receipt for one),
#              "ack" (a recipient's acknowledgement), "conflict" (a conflict notice the hub made);
#              other lowercase [a-z][a-z0-9-]* kinds may be added later.
#   time_us    hub acceptance time, integer microseconds since 1970-01-01T00:00:00Z.
#   originator the party the entry came from ("HUB" style ids are parties too).
#   audience   sorted, duplicate-free list of the parties entitled to see the entry (the hub
#              computes it from the agreements).  A party's filtered export shows it an entry
#              exactly when the party is in this list.
#   payload    a JSON object; its shape belongs to `kind` (e.g. "receipt" and "ack" payloads name
#              the acknowledged entry as "of_seq").
#   nonce      16 random bytes, base64, so that a leaf hash shown to a party outside the
#              audience cannot be confirmed by guessing a low-entropy entry.
#   sig        optional: the originating party's Ed25519 signature.  `value` (64 bytes) signs
#              the canonical bytes of `payload` alone, made with the key whose raw 32-byte
#              public key is `key`; `party` names the signer.  The signature is verified before
#              the hub appends, and again by every verifier.
#   Party ids match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}.
#
# CHECKPOINT (a signed tree head)
#   The hub signs, with Ed25519, the canonical JSON
#     {"log":"commonsky-ledger-v1","root":HEX,"size":N,"time_us":T}
#   where root is the lowercase hex RFC 6962 tree hash of the first `size` entries.
from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from commonsky.errors import CommonSkyError

FORMAT_VERSION = 1
CHECKPOINT_LOG_ID = "commonsky-ledger-v1"
NONCE_SIZE = 16
KIND_ITEM = "item"
KIND_RECEIPT = "receipt"
KIND_ACK = "ack"
KIND_CONFLICT = "conflict"
KNOWN_KINDS = frozenset({KIND_ITEM, KIND_RECEIPT, KIND_ACK, KIND_CONFLICT})

_PARTY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_KIND_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")
_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1
_ENTRY_KEYS = frozenset(
    {"audience", "kind", "nonce", "originator", "payload", "seq", "time_us", "v"}
)
_SIG_KEYS = frozenset({"key", "party", "value"})


class EntryError(CommonSkyError, ValueError):
    """Bytes or fields that are not a valid canonical entry; the message says which part.
    (Entries and statements come from parties and files: their fault, HTTP 400.)"""

    http_status = 400
    reason = "bad_entry"


def _no_floats(type_name: str) -> Any:
    raise EntryError(f"non-integer number {type_name} is not canonical")


_strict_decoder = msgspec.json.Decoder(float_hook=_no_floats)


def _check_value(value: Any, path: str) -> None:
    # bool is an int subclass, so test it first.
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise EntryError(f"{path}: integer {value} outside the signed 64-bit range")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise EntryError(f"{path}: object key {key!r} is not a string")
            # Strings and in-range ints (most of every payload) are passed here, without a
            # call and a path string each: every durable item is checked on its way in.
            kind = type(item)
            if kind is str or (kind is int and _INT_MIN <= item <= _INT_MAX):
                continue
            _check_value(item, f"{path}.{key}")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_value(item, f"{path}[{i}]")
        return
    raise EntryError(f"{path}: {type(value).__name__} has no canonical JSON form")


def canonical_json(value: Any) -> bytes:
    """The canonical bytes of a JSON value (rules in this module's opening comment)."""
    _check_value(value, "$")
    try:
        return msgspec.json.encode(value, order="sorted")
    except (UnicodeEncodeError, msgspec.EncodeError) as exc:
        raise EntryError(f"no canonical JSON form: {exc}") from None


def parse_canonical(data: bytes) -> Any:
    """Parse canonical JSON, refusing anything that would not serialise back to `data`."""
    try:
        value = _strict_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise EntryError(f"not JSON: {exc}") from None
    if canonical_json(value) != data:
        raise EntryError("not in canonical form (key order, escapes, spacing or numbers)")
    return value


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, what: str, size: int | None = None) -> bytes:
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise EntryError(f"{what} is not base64") from None
    if size is not None and len(data) != size:
        raise EntryError(f"{what} is {len(data)} bytes, expected {size}")
    if b64encode(data) != text:
        raise EntryError(f"{what} is not canonical base64")
    return data


def check_party(party: object, what: str = "party") -> str:
    if not isinstance(party, str) or not _PARTY_RE.fullmatch(party):
        raise EntryError(f"{what} {party!r} is not a party id")
    return party


def normalise_audience(parties: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({check_party(p, "audience member") for p in parties}))


@dataclass(frozen=True, slots=True)
class Signature:
    """An originator's Ed25519 signature over the canonical bytes of the payload."""

    party: str
    key: bytes  # raw 32-byte Ed25519 public key
    value: bytes  # 64-byte signature


@dataclass(frozen=True, slots=True)
class EntryFields:
    """What the hub supplies for a new entry; the ledger adds seq and nonce."""

    kind: str
    time_us: int
    originator: str
    audience: Sequence[str]
    payload: Mapping[str, Any]
    signature: Signature | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    kind: str
    time_us: int
    originator: str
    audience: tuple[str, ...]
    payload: Mapping[str, Any]
    nonce: bytes
    signature: Signature | None = field(default=None)

    def visible_to(self, party: str) -> bool:
        return party in self.audience

    def payload_bytes(self) -> bytes:
        """The bytes the originator's signature covers."""
        return canonical_json(self.payload)

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "audience": list(self.audience),
            "kind": self.kind,
            "nonce": b64encode(self.nonce),
            "originator": self.originator,
            "payload": self.payload,
            "seq": self.seq,
            "time_us": self.time_us,
            "v": FORMAT_VERSION,
        }
        if self.signature is not None:
            obj["sig"] = {
                "key": b64encode(self.signature.key),
                "party": self.signature.party,
                "value": b64encode(self.signature.value),
            }
        return obj

    def encode(self) -> bytes:
        # Entries are built by make_entry / decode_entry, which have already checked every
        # value, so the canonical walk is not repeated here (appends are the hot path).
        return msgspec.json.encode(self.to_json(), order="sorted")


def _check_int(value: object, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EntryError(f"{what} is not an integer")
    if not minimum <= value <= _INT_MAX:
        raise EntryError(f"{what} {value} is out of range")
    return value


def make_entry(seq: int, fields: EntryFields, nonce: bytes | None = None) -> Entry:
    """Validate hub-supplied fields into an Entry (signatures are checked by the caller)."""
    if not isinstance(fields.kind, str) or not _KIND_RE.fullmatch(fields.kind):
        raise EntryError(f"kind {fields.kind!r} is not a lowercase word")
    if not isinstance(fields.payload, Mapping):
        raise EntryError("payload is not a JSON object")
    payload = dict(fields.payload)
    _check_value(payload, "payload")
    sig = fields.signature
    if sig is not None:
        check_party(sig.party, "signer")
        if len(sig.key) != 32 or len(sig.value) != 64:
            raise EntryError("signature needs a 32-byte key and a 64-byte value")
    if nonce is None:
        nonce = os.urandom(NONCE_SIZE)
    elif len(nonce) != NONCE_SIZE:
        raise EntryError(f"nonce must be {NONCE_SIZE} bytes")
    return Entry(
        seq=_check_int(seq, "seq"),
        kind=fields.kind,
        time_us=_check_int(fields.time_us, "time_us"),
        originator=check_party(fields.originator, "originator"),
        audience=normalise_audience(fields.audience),
        payload=payload,
        nonce=nonce,
        signature=sig,
    )


def entry_from_json(obj: Any) -> Entry:
    """Strict structural check of a parsed entry object (see the ENTRY rules above)."""
    if not isinstance(obj, dict):
        raise EntryError("entry is not a JSON object")
    keys = set(obj)
    extra = keys - _ENTRY_KEYS - {"sig"}
    missing = _ENTRY_KEYS - keys
    if extra or missing:
        raise EntryError(
            f"entry keys wrong (missing {sorted(missing)}, unexpected {sorted(extra)})"
        )
    if obj["v"] != FORMAT_VERSION:
        raise EntryError(f"entry format version {obj['v']!r} is not {FORMAT_VERSION}")
    kind = obj["kind"]
    if not isinstance(kind, str) or not _KIND_RE.fullmatch(kind):
        raise EntryError(f"kind {kind!r} is not a lowercase word")
    audience = obj["audience"]
    if not isinstance(audience, list):
        raise EntryError("audience is not a list")
    norm = normalise_audience(audience)
    if list(norm) != audience:
        raise EntryError("audience is not sorted and duplicate-free")
    if not isinstance(obj["payload"], dict):
        raise EntryError("payload is not a JSON object")
    if not isinstance(obj["nonce"], str):
        raise EntryError("nonce is not a string")
    signature = None
    if "sig" in obj:
        sig = obj["sig"]
        if not isinstance(sig, dict) or set(sig) != _SIG_KEYS:
            raise EntryError("sig must have exactly key, party and value")
        if not isinstance(sig["key"], str) or not isinstance(sig["value"], str):
            raise EntryError("sig key and value must be base64 strings")
        signature = Signature(
            party=check_party(sig["party"], "signer"),
            key=b64decode(sig["key"], "sig.key", 32),
            value=b64decode(sig["value"], "sig.value", 64),
        )
    return Entry(
        seq=_check_int(obj["seq"], "seq"),
        kind=kind,
        time_us=_check_int(obj["time_us"], "time_us"),
        originator=check_party(obj["originator"], "originator"),
        audience=norm,
        payload=obj["payload"],
        nonce=b64decode(obj["nonce"], "nonce", NONCE_SIZE),
        signature=signature,
    )


# Maps every digit to "0" and everything else to " ": a 19-digit run shows as "0" * 19.
DIGITS_MAP = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
LONG_RUN = b"0" * 19


def b64_fixed(text: str, what: str, size: int) -> bytes:
    """Decode canonical base64 of a fixed-size field (nonce, key, signature)."""
    if len(text) != 4 * ((size + 2) // 3):
        raise EntryError(f"{what} is not {size} bytes of base64")
    try:
        data = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise EntryError(f"{what} is not base64") from None
    if len(data) != size or binascii.b2a_base64(data, newline=False) != text.encode():
        raise EntryError(f"{what} is not canonical base64")
    return data


_U63 = Annotated[int, msgspec.Meta(ge=0, le=_INT_MAX)]


class WireSignature(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    key: Annotated[str, msgspec.Meta(min_length=44, max_length=44)]
    party: str
    value: Annotated[str, msgspec.Meta(min_length=88, max_length=88)]


class WireEntry(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """An entry as it sits in the leaf, types checked by msgspec in C (see decode_wire)."""

    audience: list[str]
    kind: str
    nonce: Annotated[str, msgspec.Meta(min_length=24, max_length=24)]
    originator: str
    payload: dict[str, Any]
    seq: _U63
    time_us: _U63
    v: Annotated[int, msgspec.Meta(ge=FORMAT_VERSION, le=FORMAT_VERSION)]
    sig: WireSignature | None = None


wire_decoder = msgspec.json.Decoder(WireEntry, float_hook=_no_floats)
_encode = msgspec.json.encode
# Canonical base64 of exactly NONCE_SIZE (16) bytes: 21 free characters, a last character
# whose 4 unused low bits are zero, and "==".  One regex call instead of decode + re-encode.
NONCE_B64_RE = re.compile(r"[A-Za-z0-9+/]{21}[AQgw]==")

# Kinds, party ids and audiences that already passed their checks.  A log repeats a handful
# of them a million times; a set lookup replaces the regexes.  Bounded so that a hostile
# file of ever-new names cannot grow them without limit (past the bound, names are simply
# checked every time).
_CACHE_MAX = 4096
ok_kinds: set[str] = set()
ok_parties: set[str] = set()
ok_audiences: set[tuple[str, ...]] = set()


def _check_kind_cached(kind: str) -> None:
    if kind not in ok_kinds:
        if not _KIND_RE.fullmatch(kind):
            raise EntryError(f"kind {kind!r} is not a lowercase word")
        if len(ok_kinds) < _CACHE_MAX:
            ok_kinds.add(kind)


def _check_party_cached(party: str, what: str) -> None:
    if party not in ok_parties:
        check_party(party, what)
        if len(ok_parties) < _CACHE_MAX:
            ok_parties.add(party)


def _check_audience(aud: list[str]) -> None:
    key = tuple(aud)
    if key in ok_audiences:
        return
    prev = ""
    for party in aud:
        if party <= prev:
            raise EntryError("audience is not sorted and duplicate-free")
        _check_party_cached(party, "audience member")
        prev = party
    if len(ok_audiences) < _CACHE_MAX:
        ok_audiences.add(key)


def decode_wire(leaf: bytes) -> WireEntry:
    """Check canonical entry bytes (the Merkle leaf) and return their typed fields.

    msgspec checks the envelope's types in C; canonical form is proved by re-encoding; only a
    leaf with a 19-digit run (a possibly out-of-range integer) takes the fully walked path.
    """
    try:
        wire = wire_decoder.decode(leaf)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        entry_from_json(parse_canonical(leaf))  # a more precise message when there is one
        raise EntryError(str(exc)) from None
    if _encode(wire, order="sorted") != leaf:
        raise EntryError("not in canonical form (key order, escapes, spacing or numbers)")
    if LONG_RUN in leaf.translate(DIGITS_MAP):
        _check_value(wire.payload, "payload")
    # Party and kind formats checked here (msgspec's pattern constraint costs 5x more), in
    # the same order as before so that the first complaint is unchanged.
    _check_kind_cached(wire.kind)
    _check_party_cached(wire.originator, "originator")
    if wire.sig is not None:
        _check_party_cached(wire.sig.party, "signer")
    _check_audience(wire.audience)
    return wire


def decode_entry(leaf: bytes) -> Entry:
    """Parse and check canonical entry bytes (the Merkle leaf)."""
    wire = decode_wire(leaf)
    signature = None
    if wire.sig is not None:
        signature = Signature(
            party=wire.sig.party,
            key=b64_fixed(wire.sig.key, "sig.key", 32),
            value=b64_fixed(wire.sig.value, "sig.value", 64),
        )
    return Entry(
        seq=wire.seq,
        kind=wire.kind,
        time_us=wire.time_us,
        originator=wire.originator,
        audience=tuple(wire.audience),
        payload=wire.payload,
        nonce=b64_fixed(wire.nonce, "nonce", NONCE_SIZE),
        signature=signature,
    )


def checkpoint_message(size: int, root: bytes, time_us: int) -> bytes:
    """The exact bytes the hub signs for a tree head."""
    return canonical_json(
        {"log": CHECKPOINT_LOG_ID, "root": root.hex(), "size": size, "time_us": time_us}
    )
