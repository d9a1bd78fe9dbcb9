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
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from commonsky.errors import UsageError

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


def init_ca(
    directory: Path, name: str = "CommonSky hub CA", server_names: Sequence[str] = ()
) -> None:
    if (directory / CA_CERT).exists():
        raise UsageError(f"{directory / CA_CERT} already exists; refusing to replace a CA")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name("CommonSky", name)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
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


def _issue(
    directory: Path, org: str, common: str, server: bool, names: Sequence[str] = ()
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    ca_cert, ca_key = _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(org, common))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
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
    if not party or not name or "/" in name or ".." in name:
        raise UsageError(f"--party {party!r} / --name {name!r}: both must be plain names")
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
    return list(files), password
