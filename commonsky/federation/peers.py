"""`[[federate]]`: one peer hub, how we know it, and the parties it may speak for.

No gRPC here, so the config parser can use it without loading the transport.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class FederateConfig:
    """One `[[federate]]` (CONTRACT.md "Interfaces being added": name, connect, ca,
    fingerprint, parties; `deconflict` and its terms belong to private deconfliction)."""

    name: str
    parties: tuple[str, ...]
    connect: tuple[str, int] | None = None  # dial out to HOST:PORT; None: only accept
    ca: Path | None = None  # the peer's CA certificate (PEM)
    fingerprint: str | None = None  # "sha256:" + 64 lowercase hex digits of its DER cert
    where: str = "[[federate]]"
    deconflict: Any = None  # privdeconf.Terms when `deconflict = "private"`
    #: Parties of hubs beyond this peer that it relays for (`relay = [...]`, bridge.py's
    #: relaying rule): reached through it, and it may speak for them as their relay.
    relay: tuple[str, ...] = ()

    @property
    def speaks_for(self) -> tuple[str, ...]:
        """Every party an item arriving on this link may be attributed to."""
        return self.parties + self.relay


def fingerprint(pem_or_der: bytes) -> str:
    """`sha256:<hex>` of a certificate's DER bytes (given as PEM or DER)."""
    der = pem_or_der
    if pem_or_der.lstrip().startswith(b"-----BEGIN"):
        der = ssl.PEM_cert_to_DER_cert(pem_or_der.decode("ascii"))
    return "sha256:" + hashlib.sha256(der).hexdigest()


def normalize_fingerprint(text: str) -> str | None:
    """`sha256:AB:CD…` or `sha256:abcd…` -> `sha256:abcd…`; None when it is not one."""
    prefix, sep, digits = text.partition(":")
    digits = digits.replace(":", "").lower()
    if prefix.lower() != "sha256" or not sep or len(digits) != 64:
        return None
    if any(c not in "0123456789abcdef" for c in digits):
        return None
    return f"sha256:{digits}"
