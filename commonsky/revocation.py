"""Which client certificates a hub CA issued, which it revoked, and the CRL listeners enforce.

Rules:

- Every client certificate the CA signs (`cert issue`, enrollment) is appended to
  `CA_DIR/issued.jsonl`: serial, party (O), name (CN), expiry, how it was made. That index is
  how `cert revoke --name` finds the serials of a name; it holds no key.
- `cert revoke` adds the serials to the CA's CRL, `CA_DIR/crl.pem` (X.509 v2 CRL, RFC 5280,
  signed by the CA key, written whole: temporary file, then renamed). The CRL is the only
  record of revocation: revoking again re-signs it with the old entries kept.
- The TLS listeners (`tak-tls`, `marti`) hold a `Revocations` for their CA folder. It looks
  at the file's (mtime, size) on every new connection or request, and reads it again when
  they change — so a revocation takes effect without a restart. A CRL that is unreadable or
  not signed by the CA stops the hub at start (one line naming the file); one that turns bad
  while serving is ignored with a log line and the last good one stays in force.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from commonsky.errors import UsageError
from commonsky.pki import ISSUED, load_ca

log = logging.getLogger("commonsky.pki")

CRL = "crl.pem"
# The CRL is re-read when it changes, not when it "expires": its nextUpdate is set far out so
# that strict readers elsewhere (openssl verify -crl_check) still accept it.
_CRL_DAYS = 3650


@dataclass(frozen=True, slots=True)
class Issued:
    serial: int
    party: str
    name: str
    not_after: float  # epoch seconds
    how: str  # "cert issue" | "enroll"


def issued(ca_dir: Path) -> list[Issued]:
    """Every certificate in the index (a damaged line is skipped with a log line)."""
    path = ca_dir / ISSUED
    if not path.exists():
        return []
    out: list[Issued] = []
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            obj = json.loads(raw)
            out.append(
                Issued(
                    int(obj["serial"], 16),
                    str(obj["party"]),
                    str(obj["name"]),
                    float(obj["not_after"]),
                    str(obj.get("how", "")),
                )
            )
        except (ValueError, KeyError, TypeError):
            log.warning("%s line %d: not an issued-certificate record; skipped", path, number)
    return out


def _ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    return load_ca(ca_dir)


def read_crl(ca_dir: Path, ca_cert: x509.Certificate) -> x509.CertificateRevocationList | None:
    """The CA's CRL, or None when it has revoked nothing yet. Raises UsageError (one line)
    when the file is not a CRL signed by this CA."""
    path = ca_dir / CRL
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the CRL ({exc.strerror})") from None
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError:
        raise UsageError(f"{path}: not a PEM certificate revocation list") from None
    public = ca_cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(public):
        raise UsageError(f"{path}: not signed by the CA in {ca_dir / 'ca.pem'}")
    return crl


def revoke(ca_dir: Path, name: str, party: str | None = None) -> list[Issued]:
    """Revoke every unexpired certificate issued to `name` (and `party`, when given); returns
    them. Raises UsageError when there is none."""
    ca_cert, ca_key = _ca(ca_dir)
    now = dt.datetime.now(dt.UTC)
    matches = [
        i
        for i in issued(ca_dir)
        if i.name == name and (party is None or i.party == party) and i.not_after > now.timestamp()
    ]
    if not matches:
        which = f"{party}/{name}" if party else name
        raise UsageError(
            f"--name {which}: no unexpired certificate issued by {ca_dir} has that name "
            f"(see {ca_dir / ISSUED})"
        )
    old = read_crl(ca_dir, ca_cert)
    entries: dict[int, dt.datetime] = {}
    if old is not None:
        for revoked in old:
            entries[revoked.serial_number] = revoked.revocation_date_utc
    for item in matches:
        entries.setdefault(item.serial, now)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=_CRL_DAYS))
    )
    for serial, when in sorted(entries.items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    path = ca_dir / CRL
    tmp = path.with_name(f".{CRL}.{os.getpid()}.tmp")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return matches


class Revocations:
    """The serials a CA has revoked, re-read whenever `CA_DIR/crl.pem` changes.

    `revoked(serial)` costs a stat(2) and a set lookup. Raises UsageError at construction
    (hub start) for a bad CRL; later a bad file keeps the last good list and logs an error."""

    def __init__(self, ca_dir: Path) -> None:
        self.ca_dir = Path(ca_dir)
        self.path = self.ca_dir / CRL
        # Only the CA certificate: a listener's CA folder need not hold the CA's key.
        ca_pem = self.ca_dir / "ca.pem"
        try:
            self._ca_cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
        except (OSError, ValueError) as exc:
            raise UsageError(f"{ca_pem}: not a readable CA certificate ({exc})") from None
        self._seen: tuple[int, int] | None = None
        self._serials: frozenset[int] = frozenset()
        self._load(strict=True)

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _load(self, strict: bool) -> None:
        stamp = self._stamp()
        if stamp == self._seen:
            return
        try:
            crl = read_crl(self.ca_dir, self._ca_cert)
        except UsageError as exc:
            if strict:
                raise
            log.error("%s; the revocations read before stay in force", exc)
            self._seen = stamp  # (logged once per change of the file)
            return
        self._serials = frozenset(r.serial_number for r in crl) if crl is not None else frozenset()
        if self._seen is not None:
            log.info("%s: %d revoked certificates in force", self.path, len(self._serials))
        self._seen = stamp

    def revoked(self, serial: int) -> bool:
        self._load(strict=False)
        return serial in self._serials

    def revoked_der(self, der: bytes | None) -> bool:
        """Whether the DER certificate a peer presented is revoked (False when there is none:
        the TLS layer has already required one)."""
        if not der:
            return False
        return self.revoked(x509.load_der_x509_certificate(der).serial_number)

    @property
    def count(self) -> int:
        self._load(strict=False)
        return len(self._serials)
