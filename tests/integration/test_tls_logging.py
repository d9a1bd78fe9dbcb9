"""An operator can see who tried to connect over TLS and why they were turned away, and who
came and went: refused handshakes are logged with the peer and the reason, every connection
and disconnection at INFO with party and user."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from commonsky.pki import init_ca, issue_client
from tests.conftest import RunningHub, base_config, running_hub
from tests.integration.test_tak_tcp import FULL_TRACKS, track


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki-log")
    init_ca(root / "ca")
    init_ca(root / "rogue")
    issue_client(root / "ca", "USA", "usa-ops", root / "ok")
    issue_client(root / "ca", "ZZZ", "stranger", root / "stranger")
    issue_client(root / "rogue", "USA", "usa-ops", root / "rogue-client")
    expired_client(root / "ca", root / "expired")
    return root


def expired_client(ca: Path, out: Path) -> None:
    """A client certificate from the hub's own CA that expired yesterday."""
    ca_cert = x509.load_pem_x509_certificate((ca / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((ca / "ca-key.pem").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "USA"),
            x509.NameAttribute(NameOID.COMMON_NAME, "usa-old"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out.mkdir(parents=True)
    (out / "usa-old.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "usa-old-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def client_context(pki: Path, folder: str | None = None, name: str = "") -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca" / "ca.pem"))
    if folder is not None:
        context.load_cert_chain(pki / folder / f"{name}.pem", pki / folder / f"{name}-key.pem")
    return context


async def attempt(hub: RunningHub, context: ssl.SSLContext) -> tuple[str, int] | None:
    """Connect and read; the local address the hub saw as the peer (None if refused at once)."""
    port = hub.server.port("tak-tls")
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost"
        )
    except (ssl.SSLError, ConnectionError):
        return None
    local = writer.get_extra_info("sockname")
    try:
        await asyncio.wait_for(reader.read(100), 2)
        await asyncio.wait_for(reader.read(100), 2)
    except (ssl.SSLError, ConnectionError, TimeoutError):
        pass
    writer.close()
    return local[0], local[1]


async def logged(caplog: pytest.LogCaptureFixture, *words: str) -> str:
    """The first log line holding every one of `words` (waits for it to be written)."""
    for _ in range(100):
        for record in caplog.records:
            line = record.getMessage()
            if all(w in line for w in words):
                return line
        await asyncio.sleep(0.05)
    raise AssertionError(f"no log line with {words}: {[r.getMessage() for r in caplog.records]}")


@pytest.mark.parametrize(
    ("folder", "name", "reason"),
    [
        (None, "", "peer did not return a certificate"),
        # Another CA (each `ca init` names its CA after its key): no issuer of ours.
        ("rogue-client", "usa-ops", "unable to get local issuer certificate"),
        ("expired", "usa-old", "certificate has expired"),
    ],
    ids=["no-certificate", "unknown-ca", "expired"],
)
async def test_a_refused_handshake_is_logged_with_peer_and_reason(
    tmp_path: Path,
    pki: Path,
    caplog: pytest.LogCaptureFixture,
    folder: str | None,
    name: str,
    reason: str,
) -> None:
    caplog.set_level(logging.INFO, logger="commonsky.listener")
    async with running_hub(base_config(tmp_path, [FULL_TRACKS], tls_ca=pki / "ca")) as hub:
        await attempt(hub, client_context(pki, folder, name))
        line = await logged(caplog, "TLS handshake from 127.0.0.1:", "refused")
        assert reason in line, line
        assert not hub.hub.connections.get("USA")


async def test_a_certificate_naming_no_party_is_logged(
    tmp_path: Path, pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="commonsky.listener")
    async with running_hub(base_config(tmp_path, [FULL_TRACKS], tls_ca=pki / "ca")) as hub:
        peer = await attempt(hub, client_context(pki, "stranger", "stranger"))
        assert peer is not None
        line = await logged(caplog, f"TLS client 127.0.0.1:{peer[1]} refused")
        assert "O='ZZZ'" in line and "CN='stranger'" in line


async def test_connections_and_disconnections_are_logged_with_party_and_user(
    tmp_path: Path, pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="commonsky.listener")
    async with running_hub(base_config(tmp_path, [FULL_TRACKS], tls_ca=pki / "ca")) as hub:
        tls = await hub.connect_tls(
            pki / "ok" / "usa-ops.pem", pki / "ok" / "usa-ops-key.pem", pki / "ca" / "ca.pem"
        )
        await tls.wait_for(lambda e: e["type"] == "t-x-takp-v")
        await logged(caplog, "USA/usa-ops connected from 127.0.0.1:")
        tcp = await hub.connect("JPN")
        tcp.send(track("J-1"))
        await logged(caplog, "JPN/? connected from 127.0.0.1:")
        await tls.close()
        await logged(caplog, "USA/usa-ops from 127.0.0.1:", "disconnected")
        await tcp.close()
        await logged(caplog, "JPN/J-1 from 127.0.0.1:", "disconnected")
