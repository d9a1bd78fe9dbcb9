# Ed25519 keys for the ledger: the hub's checkpoint key and the parties' public keys.
#
# Rule: private keys are created with mode 0600 from the first byte (never chmod-ed after the
# fact), and a party's key file is found only by a validated party id, so a hostile id can
# never name a path outside DATA_DIR/keys/parties.  Layout:
#   DATA_DIR/keys/hub-ed25519.pem            hub private key (PKCS#8 PEM, created on first use)
#   DATA_DIR/keys/parties/<PARTY>.pub.pem    party public keys (SubjectPublicKeyInfo PEM)
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from commonsky.errors import CommonSkyError
from commonsky.ledger.entry import Entry, EntryError, Signature, canonical_json, check_party

HUB_KEY_NAME = "hub-ed25519.pem"


class KeyFileError(CommonSkyError):
    """A key file that is missing, unreadable or not an Ed25519 key; the message names it."""

    reason = "key_file"


def keys_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "keys"


def _write_private(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: two processes racing to create the key must not both win.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())


def _write_public(path: Path, key: Ed25519PublicKey) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(public_pem(key))
    os.replace(tmp, path)


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def raw_public(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_from_raw(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key: Any = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key ({exc.strerror})") from None
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key ({exc.strerror})") from None
    key: Any
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        # A private key file pins its public half just as well.
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{path}: not a PEM Ed25519 key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 public key")
    return key


def load_or_create_hub_key(data_dir: Path) -> Ed25519PrivateKey:
    """The hub's checkpoint-signing key, created (mode 0600) the first time it is asked for."""
    directory = keys_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / HUB_KEY_NAME
    if not path.exists():
        # FileExistsError: another process made it first; use theirs.
        with contextlib.suppress(FileExistsError):
            _write_private(path, Ed25519PrivateKey.generate())
    return load_private_key(path)


def hub_public_key(data_dir: Path) -> Ed25519PublicKey:
    return load_private_key(keys_dir(data_dir) / HUB_KEY_NAME).public_key()


def sign(key: Ed25519PrivateKey, message: bytes) -> bytes:
    return key.sign(message)


def verify(public_key: bytes | Ed25519PublicKey, message: bytes, signature: bytes) -> bool:
    try:
        pub = public_from_raw(public_key) if isinstance(public_key, bytes) else public_key
        pub.verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def sign_payload(key: Ed25519PrivateKey, party: str, payload: dict[str, Any]) -> Signature:
    """What a party's client does: sign the canonical payload bytes."""
    return Signature(party=party, key=raw_public(key), value=key.sign(canonical_json(payload)))


def verify_entry_signature(entry: Entry) -> bool:
    """True when the entry is unsigned or its signature matches its payload and key."""
    sig = entry.signature
    return sig is None or verify(sig.key, entry.payload_bytes(), sig.value)


class PartyKeys:
    """Registry of party public keys in DATA_DIR/keys/parties, read on demand and cached."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = keys_dir(data_dir) / "parties"
        self._cache: dict[str, bytes] = {}

    def path(self, party: str) -> Path:
        try:
            check_party(party)
        except EntryError as exc:
            raise KeyFileError(str(exc)) from None
        return self.directory / f"{party}.pub.pem"

    def add(self, party: str, key: Ed25519PublicKey | bytes) -> Path:
        """Register (or replace) a party's public key: an Ed25519 key or its PEM bytes."""
        path = self.path(party)
        if isinstance(key, bytes):
            loaded: Any = serialization.load_pem_public_key(key)
            if not isinstance(loaded, Ed25519PublicKey):
                raise KeyFileError(f"key offered for {party} is not an Ed25519 public key")
            key = loaded
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_public(path, key)
        self._cache.pop(party, None)
        return path

    def raw(self, party: str) -> bytes | None:
        """The party's raw 32-byte public key, or None when it has none registered."""
        if party in self._cache:
            return self._cache[party]
        path = self.path(party)
        if not path.exists():
            return None
        raw = raw_public(load_public_key(path))
        self._cache[party] = raw
        return raw

    def get(self, party: str) -> Ed25519PublicKey | None:
        raw = self.raw(party)
        return None if raw is None else public_from_raw(raw)

    def parties(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.name[: -len(".pub.pem")] for p in self.directory.glob("*.pub.pem"))

    def as_mapping(self) -> dict[str, bytes]:
        return {party: raw for party in self.parties() if (raw := self.raw(party)) is not None}


def make_party_key(out_dir: Path, party: str) -> tuple[Path, Path]:
    """Write <PARTY>-ed25519.pem (private, 0600) and <PARTY>.pub.pem into out_dir.

    Returns (private_path, public_path).  Refuses to overwrite an existing private key.
    """
    try:
        check_party(party)
    except EntryError as exc:
        raise KeyFileError(str(exc)) from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private_path = out / f"{party}-ed25519.pem"
    public_path = out / f"{party}.pub.pem"
    key = Ed25519PrivateKey.generate()
    try:
        _write_private(private_path, key)
    except FileExistsError:
        raise KeyFileError(
            f"{private_path} already exists; not overwriting a private key"
        ) from None
    _write_public(public_path, key.public_key())
    return private_path, public_path
