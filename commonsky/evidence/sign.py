"""C2PA manifests: the hub signs each published image for the party that published it.

Each party has its own signing certificate from the hub CA (`pki.issue_signer`: O = the
party, EKU emailProtection), made on first need and kept with its key in
`DATA_DIR/keys/evidence/` (0600). The manifest (C2PA 2.x, via c2pa-python) opens the upload
as its parent ingredient (`c2pa.opened`) — so an image that already carried a manifest keeps
it, verified, inside ours — and carries one assertion, `org.commonsky.evidence`:

    {"party", "user", "published", "captured", "captured_from", "position", "footprint",
     "located_from", "source_sha256", "source_name", "prior_manifest"}

(times RFC 3339 UTC; footprint a GeoJSON Polygon; position {"lat", "lon"}). C2PA's data hash
covers every byte of the image outside the manifest, so one changed pixel fails it.

Nothing is fetched, ever: remote manifests and OCSP are off, and no time-stamp authority
is asked (the hub's own time is in the assertion and in the ledger, which it signs).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from commonsky import __version__
from commonsky.pki import issue_signer, load_ca

ASSERTION = "org.commonsky.evidence"
OFFLINE: dict[str, Any] = {
    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
    "builder": {"thumbnail": {"enabled": False}},
}


def context(trust_pem: str | None = None) -> c2pa.Context:
    """A c2pa context that reads offline (and trusts `trust_pem`'s CAs, if given)."""
    settings = json.loads(json.dumps(OFFLINE))
    if trust_pem:
        settings["trust"] = {"trust_anchors": trust_pem}
    return c2pa.Context(c2pa.Settings.from_json(json.dumps(settings)))


def rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return (
        dt.datetime.fromtimestamp(epoch, dt.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


@dataclass
class ManifestReport:
    """What a C2PA manifest in an image says, and whether it holds."""

    state: str  # Valid | Trusted | Invalid
    failures: list[str] = field(default_factory=list)  # validation codes
    issuer: str = ""  # signer certificate O
    signer: str = ""  # signer certificate CN
    assertion: dict[str, Any] | None = None  # ours, when present
    title: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "failures": self.failures,
            "issuer": self.issuer,
            "signer": self.signer,
        }


def read_manifest(data: bytes, mime: str, trust_pem: str | None = None) -> ManifestReport | None:
    """The active manifest of an image, validated offline; None when it carries none."""
    try:
        with c2pa.Reader(mime, io.BytesIO(data), context=context(trust_pem)) as reader:
            state = reader.get_validation_state() or ""
            results = reader.get_validation_results() or {}
            active = reader.get_active_manifest() or {}
    except c2pa.C2paError as exc:
        if "ManifestNotFound" in type(exc).__name__ or "JUMBF" in str(exc):
            return None
        return ManifestReport("Invalid", [f"unreadable: {str(exc)[:200]}"])
    failures = [
        str(entry.get("code", "?"))
        for entry in (results.get("activeManifest") or {}).get("failure", [])
    ]
    info = active.get("signature_info") or {}
    ours = next(
        (a.get("data") for a in active.get("assertions", []) if a.get("label") == ASSERTION),
        None,
    )
    return ManifestReport(
        state,
        failures,
        str(info.get("issuer", "")),
        str(info.get("common_name", "")),
        ours if isinstance(ours, dict) else None,
        str(active.get("title", "")),
    )


class EvidenceSigner:
    """Signs images for parties with their certificates from the hub CA (`ca_dir`)."""

    def __init__(self, data_dir: Path, ca_dir: Path) -> None:
        self.folder = Path(data_dir) / "keys" / "evidence"
        self.ca_dir = Path(ca_dir)
        self._signers: dict[str, tuple[c2pa.Signer, str]] = {}
        self._lock = threading.Lock()  # one signing at a time (c2pa objects are not shared)

    def ca_pem(self) -> str:
        cert = load_ca(self.ca_dir)[0]
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    def _signer(self, party: str) -> tuple[c2pa.Signer, str]:
        found = self._signers.get(party)
        if found is not None:
            return found
        from commonsky.hub.datadir import private_dir, write_private

        key_path = self.folder / f"{party}-key.pem"
        chain_path = self.folder / f"{party}.pem"
        if not key_path.exists() or not chain_path.exists():
            private_dir(self.folder)
            key, cert = issue_signer(self.ca_dir, party)
            ca_cert = load_ca(self.ca_dir)[0]
            chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(
                serialization.Encoding.PEM
            )
            write_private(
                key_path,
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
            chain_path.write_bytes(chain)
        chain = chain_path.read_bytes()
        leaf = x509.load_pem_x509_certificate(chain)
        serial = format(leaf.serial_number, "x")
        signer = c2pa.Signer.from_info(
            c2pa.C2paSignerInfo(b"es256", chain, key_path.read_bytes(), None)
        )
        self._signers[party] = (signer, serial)
        return signer, serial

    def serial(self, party: str) -> str:
        """The serial number (hex) of `party`'s signing certificate, as the ledger names it."""
        with self._lock:
            return self._signer(party)[1]

    def sign(self, party: str, data: bytes, mime: str, title: str, claim: dict[str, Any]) -> bytes:
        """`data` with a new active manifest signed for `party` carrying `claim` as our
        assertion. Raises c2pa.C2paError when the image cannot be signed."""
        manifest = {
            "claim_generator_info": [{"name": "CommonSky hub", "version": __version__}],
            "title": title[:200] or "image",
            "assertions": [{"label": ASSERTION, "data": claim}],
        }
        with self._lock:
            signer, _ = self._signer(party)
            with c2pa.Builder(manifest, context=context()) as builder:
                builder.set_intent(c2pa.C2paBuilderIntent.EDIT)
                out = io.BytesIO()
                builder.sign(signer, mime, io.BytesIO(data), out)
        return out.getvalue()
