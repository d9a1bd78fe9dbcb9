"""A hub certificate authority and the certificates TAK clients and the hub present.

`ca init` makes ca.pem/ca-key.pem plus the hub's own server certificate (server.pem,
server-key.pem, valid for localhost and 127.0.0.1 and any extra names given). `cert issue`
makes a client certificate whose subject O is the party and CN the user, as PEM and as a
PKCS#12 bundle with a truststore `truststore.p12` holding the CA.

PKCS#12 form. By default the *compatible* one: SHA-1 MAC (2,048 iterations) and
PBE-SHA1-3DES for both the key and the certificate bags — what OpenSSL 1.x, Java keytool and
TAK Server's own scripts write, and what ATAK on Android 12 and older TAK tooling import
(users report them rejecting the *modern* form: SHA-256 MAC, PBKDF2 + AES-256-CBC bags,
written only on request). OpenSSL 3 reads both without `-legacy` (3DES is in its default
provider; RC2, which we never write, is not).

Password. ATAK's documented default `atakatak` is public: a bundle under it protects its key
from nobody who gets the file. So each bundle gets its own random password, returned to the
caller to show once and written nowhere; `atakatak` only when asked for by name.
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from commonsky.errors import Refused, UsageError
from commonsky.namespace import party_id_problem

ATAK_DEFAULT_PASSWORD = "atakatak"  # public: only when asked for by name
# No 0/o, 1/l/i: read off a screen and typed on a phone.
_PASSWORD_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


class P12Form(enum.StrEnum):
    COMPATIBLE = "compatible"  # SHA-1 MAC, PBE-SHA1-3DES bags: ATAK on Android <= 12 imports
    MODERN = "modern"  # SHA-256 MAC, PBKDF2 + AES-256-CBC bags


def new_password() -> str:
    """A random bundle password: four groups of four, ~79 bits (`xxxx-xxxx-xxxx-xxxx`)."""
    groups = ("".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(4)) for _ in range(4))
    return "-".join(groups)


def p12_encryption(password: str, form: P12Form) -> serialization.KeySerializationEncryption:
    builder = serialization.PrivateFormat.PKCS12.encryption_builder()
    if form is P12Form.COMPATIBLE:
        builder = (
            builder.kdf_rounds(2048)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())
        )
    else:
        builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC).hmac_hash(
            hashes.SHA256()
        )
    return builder.build(password.encode())


CA_CERT, CA_KEY = "ca.pem", "ca-key.pem"
SERVER_CERT, SERVER_KEY = "server.pem", "server-key.pem"


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(org: str, common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


#: A DNS name a certificate may carry: dot-separated labels of letters, digits and inner
#: hyphens (RFC 1123), the first one possibly `*` (a wildcard).
_DNS_NAME = re.compile(
    r"(?=.{1,253}$)(\*|[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def check_host(flag: str, host: str) -> str:
    """`host` when it is an IP address or a DNS name (what a certificate or a connection
    package can name); UsageError naming `flag` otherwise."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _DNS_NAME.fullmatch(host):
            raise UsageError(f"{flag} {host!r}: not a DNS name or IP address") from None
    return host


def init_ca(
    directory: Path, name: str = "CommonSky hub CA", server_names: Sequence[str] = ()
) -> None:
    for extra in server_names:  # (before anything is written: a CA is made whole or not)
        check_host("--server-name", extra)
    if (directory / CA_CERT).exists():
        raise UsageError(f"{directory / CA_CERT} already exists; refusing to replace a CA")
    key = ec.generate_private_key(ec.SECP256R1())
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    # A name of its own (its key's identifier in it): TLS looks a certificate's issuer up by
    # name, so two hubs' CAs of one name made each refuse the other's certificate (federation).
    subject = _name("CommonSky", f"{name} {ski.digest[:6].hex()}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(directory / CA_KEY, _key_pem(key), private=True)
    _write(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
    names = ["localhost", "127.0.0.1", "::1", *server_names]
    skey, scert = _issue(directory, "CommonSky", "hub", server=True, names=names)
    _write(directory / SERVER_KEY, _key_pem(skey), private=True)
    _write(directory / SERVER_CERT, scert.public_bytes(serialization.Encoding.PEM))


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    except FileNotFoundError as exc:
        raise UsageError(
            f"{exc.filename}: missing; run `commonsky ca init --dir {directory}`"
        ) from None
    except ValueError as exc:
        raise UsageError(f"{directory}: CA files are not valid PEM ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UsageError(f"{directory / CA_KEY}: not an EC private key")
    return cert, key


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key in `directory`; raises UsageError (one line)."""
    return _load_ca(directory)


def _issue(
    directory: Path, org: str, common: str, server: bool, names: Sequence[str] = ()
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    ca_cert, ca_key = _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    # The hub's own certificate is also its client identity when it dials a federation peer
    # (CONTRACT: `ca init` makes it fit for both), so a server certificate says both.
    usages = (
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        if server
        else [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(org, common))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        # (names its issuer's key: an issuer found by name is then checked by key too)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if names:
        alt: list[x509.GeneralName] = []
        for entry in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(entry)))
            except ValueError:
                alt.append(x509.DNSName(entry))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def issue_client(
    ca_dir: Path,
    party: str,
    name: str,
    out: Path,
    form: P12Form = P12Form.COMPATIBLE,
    password: str | None = None,
) -> tuple[list[Path], str]:
    """Client certificate for `name` of `party`: (the files written, the password of the
    PKCS#12 bundle and truststore — a new random one unless `password` is given). The
    password is written nowhere: show it to the user once."""
    if (problem := party_id_problem(party)) is not None:
        raise UsageError(f"--party {party!r}: a party id {problem} (as [[party]] id)")
    if not name or "/" in name or ".." in name:
        raise UsageError(f"--name {name!r}: must be a plain name")
    password = new_password() if password is None else password
    key, cert = _issue(ca_dir, party, name, server=False)
    ca_cert, _ = _load_ca(ca_dir)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    files = {
        out / f"{name}.pem": (pem, False),
        out / f"{name}-key.pem": (_key_pem(key), True),
        out / f"{name}.p12": (
            pkcs12.serialize_key_and_certificates(
                name.encode(), key, cert, [ca_cert], p12_encryption(password, form)
            ),
            True,
        ),
        out / "truststore.p12": (
            pkcs12.serialize_java_truststore(
                [pkcs12.PKCS12Certificate(ca_cert, b"commonsky-ca")],
                p12_encryption(password, form),
            ),
            False,
        ),
        out / "ca.pem": (ca_cert.public_bytes(serialization.Encoding.PEM), False),
    }
    for path, (data, private) in files.items():
        _write(path, data, private)
    record_issued(ca_dir, cert, "cert issue")
    return list(files), password


#: The register of every client certificate the CA signs (revocation.py reads it).
ISSUED = "issued.jsonl"


def record_issued(ca_dir: Path, cert: x509.Certificate, how: str) -> None:
    """Append one line to `issued.jsonl` (O_APPEND: lines from two processes never mix)."""
    subject = cert.subject
    orgs = subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    names = subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    line = json.dumps(
        {
            "serial": format(cert.serial_number, "x"),
            "party": str(orgs[0].value) if orgs else "",
            "name": str(names[0].value) if names else "",
            "not_after": cert.not_valid_after_utc.timestamp(),
            "how": how,
        },
        sort_keys=True,
    )
    fd = os.open(ca_dir / ISSUED, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class CsrRefused(Refused):
    """A certificate signing request the enrollment listener refuses; `status` is the HTTP
    status to answer (400 malformed, 403 asks for another party or user)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message, "csr_refused")


CSR_MAX_BYTES = 16384  # a 4096-bit RSA CSR in PEM is under 2 KiB


def parse_csr(body: bytes) -> x509.CertificateSigningRequest:
    """A PKCS#10 request as TAK clients send it: PEM (pytak), bare base64 (ATAK strips the
    armour) or DER. Raises CsrRefused(400) for anything else, a bad self-signature or a key
    too weak to sign (RSA under 2048 bits; EC curves other than P-256/P-384)."""
    import base64
    import binascii

    if len(body) > CSR_MAX_BYTES:
        raise CsrRefused(400, f"CSR over {CSR_MAX_BYTES} bytes")
    text = body.strip()
    try:
        if text.startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(text)
        elif text[:1] == b"\x30":
            csr = x509.load_der_x509_csr(text)
        else:
            der = base64.b64decode(b"".join(text.split()), validate=True)
            csr = x509.load_der_x509_csr(der)
    except (ValueError, binascii.Error):
        raise CsrRefused(400, "body is not a PKCS#10 certificate signing request") from None
    if not csr.is_signature_valid:
        raise CsrRefused(400, "CSR signature does not verify (not made with its own key)")
    key = csr.public_key()
    from cryptography.hazmat.primitives.asymmetric import rsa

    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise CsrRefused(400, f"CSR key is RSA-{key.key_size}; at least 2048 bits needed")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1"):
            raise CsrRefused(400, f"CSR key curve {key.curve.name} is not P-256 or P-384")
    else:
        raise CsrRefused(400, "CSR key is neither RSA nor EC")
    return csr


def check_csr_subject(csr: x509.CertificateSigningRequest, party: str, user: str) -> None:
    """Refuse (CsrRefused 403) a CSR whose subject names another O or CN than the token's."""
    for oid, wanted, what in (
        (NameOID.ORGANIZATION_NAME, party, "party (O)"),
        (NameOID.COMMON_NAME, user, "user (CN)"),
    ):
        for attribute in csr.subject.get_attributes_for_oid(oid):
            if str(attribute.value).casefold() != wanted.casefold():
                raise CsrRefused(
                    403,
                    f"CSR asks for {what} {str(attribute.value)[:64]!r}; this token enrolls "
                    f"{wanted!r}",
                )


def sign_csr(
    ca_dir: Path, csr: x509.CertificateSigningRequest, party: str, user: str, days: int
) -> x509.Certificate:
    """A client certificate for `user` of `party` over the CSR's key.

    The subject is ours — O = the party, CN = the user the enrollment token names — never
    the CSR's: a CSR naming another O (or another CN) is refused with CsrRefused(403), one
    naming none is signed as ours. Recorded in the CA's index (revocation.py)."""
    check_csr_subject(csr, party, user)
    ca_cert, ca_key = _load_ca(ca_dir)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(party, user))
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    record_issued(ca_dir, cert, "enroll")
    return cert


def issue_signer(ca_dir: Path, party: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The hub's evidence-signing certificate for `party` (C2PA, evidence/sign.py): subject
    O = the party, CN = "<party> evidence (CommonSky hub)", key usage digitalSignature and
    EKU emailProtection — C2PA's trust list admits emailProtection and documentSigning
    leaves, never CA or TLS certificates. Valid two years; not in the client index."""
    ca_cert, ca_key = _load_ca(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(party, f"{party} evidence (CommonSky hub)"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=730))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


class PeerCertificates:
    """Client certificates by their DER bytes, parsed once: a TLS listener's requests hand
    over the peer's DER, and a client sends the same certificate with every request. At most
    `limit` are kept (cleared whole when full: a cache, not a record)."""

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._certs: dict[bytes, x509.Certificate] = {}

    def get(self, der: bytes) -> x509.Certificate:
        """The certificate of `der`. Raises ValueError when `der` is not one."""
        cert = self._certs.get(der)
        if cert is None:
            cert = x509.load_der_x509_certificate(der)
            if len(self._certs) >= self.limit:
                self._certs.clear()
            self._certs[der] = cert
        return cert
