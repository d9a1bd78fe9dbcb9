"""TAK over TLS with client certificates from the hub CA (made by the real CLI)."""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import io
import ssl
import subprocess
from pathlib import Path

import pytak
import pytest

from commonsky.cli import main
from tests.conftest import RunningHub, TakClient, base_config, running_hub
from tests.integration.test_tak_tcp import FULL_TRACKS, track


def cli(*args: str) -> None:
    main(list(args))  # success returns normally; a failure would raise SystemExit


async def tls_client(hub: RunningHub, pki: Path, party: str, ca: str = "ca") -> TakClient:
    """A TAK client of `party` with the certificate `cert issue` made for its ops user under
    `ca`, trusting the hub's CA."""
    user = f"{pki / ca}/clients/{party}/{party.lower()}-ops"
    client = await hub.connect_tls(Path(f"{user}.pem"), Path(f"{user}-key.pem"), pki / "ca/ca.pem")
    client.party = party
    return client


async def test_pytak_tls_client_delivers_across_parties(tmp_path: Path, pki: Path) -> None:
    config = base_config(tmp_path, [FULL_TRACKS], tls_ca=pki / "ca")
    async with running_hub(config) as hub:
        jpn = await tls_client(hub, pki, "JPN")
        await jpn.wait_for(lambda e: e["type"] == "t-x-takp-v")
        section = configparser.ConfigParser()
        section["pytak"] = {
            "COT_URL": f"tls://127.0.0.1:{hub.server.port('tak-tls')}",
            "PYTAK_TLS_CLIENT_CERT": str(pki / "ca/clients/USA/usa-ops.pem"),
            "PYTAK_TLS_CLIENT_KEY": str(pki / "ca/clients/USA/usa-ops-key.pem"),
            "PYTAK_TLS_CLIENT_CAFILE": str(pki / "ca/ca.pem"),
            "PYTAK_TLS_DONT_CHECK_HOSTNAME": "1",
        }
        _, writer = await pytak.protocol_factory(section["pytak"])
        writer.write(track("TLS-1", callsign="OVER-TLS"))
        await writer.drain()
        got = await jpn.wait_for(lambda e: e["uid"] == "USA::TLS-1")
        assert got["callsign"] == "OVER-TLS"
        # Identity came from the certificate: the hub knows the user by its CN.
        conns = hub.hub.connections["USA"]
        assert {c.user for c in conns} == {"usa-ops"}
        writer.close()


async def test_certificate_from_another_ca_is_refused(tmp_path: Path, pki: Path) -> None:
    config = base_config(tmp_path, [FULL_TRACKS], tls_ca=pki / "ca")
    async with running_hub(config) as hub:
        jpn = await tls_client(hub, pki, "JPN")
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            rogue = await tls_client(hub, pki, "USA", ca="rogue-ca")
            rogue.send(track("ROGUE"))
            await rogue.collect(0.5)
        assert all(e["uid"] != "USA::ROGUE" for e in await hub.received_before_barrier(jpn))
        assert not hub.hub.connections["USA"]


async def test_without_client_certificate_is_refused(tmp_path: Path, pki: Path) -> None:
    config = base_config(tmp_path, [FULL_TRACKS], tls_ca=pki / "ca")
    async with running_hub(config) as hub:
        context = ssl.create_default_context(cafile=str(pki / "ca/ca.pem"))
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", hub.server.port("tak-tls"), ssl=context, server_hostname="localhost"
            )
            writer.write(track("NOCERT"))
            await writer.drain()
            data = await asyncio.wait_for(reader.read(100), 2)
            if not data:
                raise ConnectionError("closed")


async def test_certificate_of_undeclared_party_is_closed(tmp_path: Path, pki: Path) -> None:
    config = base_config(tmp_path, [FULL_TRACKS], tls_ca=pki / "ca")
    async with running_hub(config) as hub:
        stranger = await tls_client(hub, pki, "ZZZ")
        with pytest.raises(ConnectionError):
            await stranger.collect(1.0)


def _two_org_certificate(pki: Path, out: Path) -> tuple[Path, Path]:
    """A client certificate from the hub's own CA whose subject carries O=RUS and O=USA."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from commonsky.pki import _load_ca

    ca_cert, ca_key = _load_ca(pki / "ca")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "RUS"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "USA"),
            x509.NameAttribute(NameOID.COMMON_NAME, "two-hats"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = out / "two.pem", out / "two-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_a_certificate_with_two_organisations_is_refused(tmp_path: Path, pki: Path) -> None:
    from tests.integration.test_tak_tcp import metric

    config = base_config(tmp_path, [FULL_TRACKS], tls_ca=pki / "ca")
    async with running_hub(config) as hub:
        cert, key = _two_org_certificate(pki, tmp_path)
        two = await hub.connect_tls(cert, key, pki / "ca/ca.pem")
        with pytest.raises(ConnectionError):
            await two.collect(2.0)  # closed by the hub, never a party
        assert not hub.hub.connections["USA"] and not hub.hub.connections["RUS"]
        assert await metric(hub, "commonsky_refusals_total", reason="certificate_subject") == 1
        # and the close is the hub's, with its reason (every close is counted)
        closed = "commonsky_connections_closed_total"
        assert await metric(hub, closed, reason="certificate_subject") == 1


async def test_unauthenticated_handshakes_are_limited_per_address(
    tmp_path: Path, pki: Path
) -> None:
    server = {"limit_handshakes_per_address": 2}
    config = base_config(tmp_path, [FULL_TRACKS], tls_ca=pki / "ca", server=server)
    async with running_hub(config) as hub:
        port = hub.server.port("tak-tls")
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        # A third connection from this address that has not shaken hands: closed at once.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(100), 5) == b""
        writer.close()
        for _, w in idle:  # once those go, a real client gets through
            w.close()
        for _ in range(100):
            if not hub.hub.handshaking:
                break
            await asyncio.sleep(0.02)
        jpn = await tls_client(hub, pki, "JPN")
        await jpn.wait_for(lambda e: e["type"] == "t-x-takp-v")


def test_cert_issue_writes_pkcs12_under_a_password_shown_once_and_stored_nowhere(
    pki: Path,
) -> None:
    """issue #13 class 13: `atakatak` is public, so it is no longer the default."""
    from cryptography.hazmat.primitives.serialization import pkcs12

    out = pki / "ca/clients/USA"
    password = PASSWORDS["ca", "USA"]
    assert password != "atakatak" and len(password) >= 16
    bundle = pkcs12.load_pkcs12((out / "usa-ops.p12").read_bytes(), password.encode())
    assert bundle.cert is not None and bundle.key is not None
    subject = bundle.cert.certificate.subject.rfc4514_string()
    assert "O=USA" in subject and "CN=usa-ops" in subject
    with pytest.raises(ValueError, match="Invalid password"):
        pkcs12.load_pkcs12((out / "usa-ops.p12").read_bytes(), b"atakatak")
    for name in ("usa-ops.p12", "usa-ops-key.pem"):
        assert (out / name).stat().st_mode & 0o077 == 0
    # Written nowhere: not in any file the command made, nor in the CA folder.
    for path in (pki / "ca").rglob("*"):
        assert not path.is_file() or password.encode() not in path.read_bytes(), path
    assert len(set(PASSWORDS.values())) == len(PASSWORDS)  # one per bundle


def openssl_info(path: Path, password: str) -> str:
    """What `openssl pkcs12 -info` says of a bundle (OpenSSL 3, no `-legacy`)."""
    done = subprocess.run(
        ["openssl", "pkcs12", "-info", "-noout", "-in", str(path), "-passin", f"pass:{password}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_the_default_pkcs12_is_the_form_atak_on_android_12_imports(pki: Path) -> None:
    """SHA-1 MAC and 3DES bags; OpenSSL 3 and cryptography both open it."""
    out, password = pki / "ca/clients/USA", PASSWORDS["ca", "USA"]
    for name in ("usa-ops.p12", "truststore.p12"):
        info = openssl_info(out / name, password)
        assert "MAC: sha1" in info and "pbeWithSHA1And3-KeyTripleDES-CBC" in info, info
        assert "AES" not in info and "sha256" not in info.lower()
    assert "Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC" in openssl_info(
        out / "usa-ops.p12", password
    )


def test_the_modern_form_and_the_atak_password_only_on_request(
    tmp_path: Path, pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives.serialization import pkcs12

    out = tmp_path / "modern"
    cli("cert", "issue", "--ca", str(pki / "ca"), "--party", "USA", "--name", "m1",
        "--out", str(out), "--p12", "modern", "--atak-default-password")  # fmt: skip
    printed = capsys.readouterr().out
    assert "PKCS#12 form: modern" in printed and "atakatak" in printed
    info = openssl_info(out / "m1.p12", "atakatak")
    assert "MAC: sha256" in info and "AES-256-CBC" in info
    assert pkcs12.load_pkcs12((out / "m1.p12").read_bytes(), b"atakatak").key is not None


def test_an_unknown_pkcs12_form_is_one_clear_line(
    tmp_path: Path, pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli("cert", "issue", "--ca", str(pki / "ca"), "--party", "USA", "--name", "x",
            "--out", str(tmp_path), "--p12", "rc4")  # fmt: skip
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--p12" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())


PASSWORDS: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    for ca, parties in (("ca", ("USA", "JPN", "ZZZ")), ("rogue-ca", ("USA",))):
        cli("ca", "init", "--dir", str(root / ca))
        for party in parties:
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                cli(
                    "cert",
                    "issue",
                    "--ca",
                    str(root / ca),
                    "--party",
                    party,
                    "--name",
                    f"{party.lower()}-ops",
                    "--out",
                    str(root / ca / "clients" / party),
                )
            (line,) = [ln for ln in printed.getvalue().splitlines() if "password" in ln]
            PASSWORDS[ca, party] = line.rsplit(" ", 1)[1]
    return root
