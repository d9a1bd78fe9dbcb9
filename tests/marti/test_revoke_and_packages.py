"""`cert revoke` (a CRL the TLS listeners enforce at once), `cert issue --package`, `enroll`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import ssl
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12
from lxml import etree

from commonsky.cli import main
from tests.integration.test_tak_tcp import FULL_TRACKS, track
from tests.marti.helpers import client_cert, https, marti_hub


def cli(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(list(args))
    return out.getvalue()


async def tls_client(
    hub: object, host: str, ca: Path, cert: tuple[Path, Path]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    context = ssl.create_default_context(cafile=str(ca / "ca.pem"))
    context.load_cert_chain(*cert)
    return await asyncio.open_connection(
        host,
        hub.server.port("tak-tls"),
        ssl=context,
        server_hostname=host,  # type: ignore[attr-defined]
    )


async def test_revoked_certificate_is_refused_without_a_restart(tmp_path: Path) -> None:
    async with marti_hub(tmp_path, [FULL_TRACKS]) as (hub, host, ca):
        ops = client_cert(ca, "USA", "usa-ops", tmp_path / "ops")
        lost = client_cert(ca, "USA", "usa-lost", tmp_path / "lost")
        jpn = await hub.connect("JPN")
        lost_reader, lost_writer = await tls_client(hub, host, ca, lost)
        lost_writer.write(track("LOST-1"))
        await jpn.wait_for(lambda e: e["uid"] == "USA::LOST-1")
        async with https(hub, host, ca, "marti", lost) as client:
            assert (await client.get("/Marti/api/version")).status_code == 200
            printed = cli("cert", "revoke", "--ca", str(ca), "--name", "usa-lost")
            assert "revoked USA/usa-lost" in printed
            # Next request on the same keep-alive connection: refused.
            answer = await client.get("/Marti/api/version")
            assert answer.status_code == 403 and "revoked" in answer.text
        # The open TAK session ends within a housekeeping tick ...
        await asyncio.wait_for(_closed(lost_reader), 5)
        # ... and a new one is refused, while another certificate of the party still works.
        _, again = await tls_client(hub, host, ca, lost)
        again.write(track("LOST-2"))
        _, good = await tls_client(hub, host, ca, ops)
        good.write(track("OPS-1"))
        await jpn.wait_for(lambda e: e["uid"] == "USA::OPS-1")  # barrier
        assert not [e for e in jpn.events if e["uid"] == "USA::LOST-2"]
        samples = hub.hub.metrics.registry.get_sample_value(
            "commonsky_refusals_total", {"reason": "certificate_revoked"}
        )
        assert samples and samples >= 2
        good.close()


async def _closed(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


def test_revoke_unknown_name_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from commonsky.pki import init_ca

    init_ca(tmp_path / "ca")
    with pytest.raises(SystemExit) as exit_:
        main(["cert", "revoke", "--ca", str(tmp_path / "ca"), "--name", "nobody"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nobody" in err[0]


def _pref(archive: zipfile.ZipFile) -> dict[str, str]:
    [name] = [n for n in archive.namelist() if n.endswith(".pref")]
    root = etree.fromstring(archive.read(name))
    return {e.get("key"): e.text or "" for e in root.iter("entry")}


def test_cert_issue_package_is_a_tak_connection_package(tmp_path: Path) -> None:
    from commonsky.pki import init_ca

    init_ca(tmp_path / "ca", server_names=["hub.example.org"])
    out = tmp_path / "out"
    printed = cli(
        "cert",
        "issue",
        "--ca",
        str(tmp_path / "ca"),
        "--party",
        "USA",
        "--name",
        "viper",
        "--out",
        str(out),
        "--package",
    )
    password = printed.strip().splitlines()[-1].rsplit(" ", 1)[1]
    with zipfile.ZipFile(out / "viper.zip") as archive:
        names = archive.namelist()
        assert names[0] == "MANIFEST/manifest.xml"
        manifest = etree.fromstring(archive.read("MANIFEST/manifest.xml"))
        assert manifest.tag == "MissionPackageManifest" and manifest.get("version") == "2"
        listed = {c.get("zipEntry") for c in manifest.iter("Content")}
        assert listed == set(names) - {"MANIFEST/manifest.xml"}
        pref = _pref(archive)
        assert pref["connectString0"] == "hub.example.org:8089:ssl"
        assert pref["certificateLocation0"] == "cert/viper.p12"
        assert "enrollForCertificateWithTrust0" not in pref
        client = pkcs12.load_pkcs12(archive.read("certs/viper.p12"), password.encode())
        assert client.key is not None and client.cert is not None
        trust = pkcs12.load_pkcs12(archive.read("certs/truststore-viper.p12"), password.encode())
        assert trust.additional_certs
    with zipfile.ZipFile(out / "viper-enroll.zip") as archive:
        pref = _pref(archive)
        assert pref["enrollForCertificateWithTrust0"] == "true"
        assert pref["useAuth0"] == "true"
        assert "certificateLocation0" not in pref
        assert not [n for n in archive.namelist() if n.endswith("/viper.p12")]


def test_enroll_prints_one_line_and_writes_a_qr_png(tmp_path: Path) -> None:
    from commonsky.pki import init_ca

    init_ca(tmp_path / "ca")
    config = tmp_path / "hub.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "hub"}"\n'
        f'[[listener]]\nkind = "enroll"\nbind = "127.0.0.1:8446"\nca = "{tmp_path / "ca"}"\n'
        f'[[listener]]\nkind = "tak-tls"\nbind = "127.0.0.1:8089"\nca = "{tmp_path / "ca"}"\n'
        '[[party]]\nid = "USA"\n'
    )
    printed = cli(
        "enroll",
        "--config",
        str(config),
        "--party",
        "USA",
        "--user",
        "viper-2",
        "--ttl",
        "120",
        "--qr",
        str(tmp_path / "qr.png"),
    )
    [line] = printed.strip().splitlines()  # (the terminal QR code goes to stderr when piped)
    token_part, url_part = line.split(" ")
    token = token_part.removeprefix("token=")
    assert url_part == (
        f"url=tak://com.atakmap.app/enroll?host=127.0.0.1&username=viper-2&token={token}"
    )
    assert (tmp_path / "qr.png").read_bytes().startswith(b"\x89PNG")
    from commonsky.marti.tokens import TokenStore

    store = TokenStore(tmp_path / "hub")
    found = store.check("viper-2", token, __import__("time").time(), spend=True)
    store.close()
    assert not isinstance(found, str) and found.party == "USA"
    # A party that is not declared: one line, exit 2.
    with pytest.raises(SystemExit) as exit_:
        main(["enroll", "--config", str(config), "--party", "RUS"])
    assert exit_.value.code == 2
