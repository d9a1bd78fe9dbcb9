"""Start-up as an operator meets it: `commonsky serve` in a subprocess. Every mistake is one
line naming what to fix and exit status 2 — never a traceback, never a half-started hub."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from commonsky.config import config_from_dict
from commonsky.errors import UsageError
from commonsky.pki import init_ca
from commonsky.server import HubServer
from tests.conftest import base_config, running_hub, token_of

TOKENED = """
[[party]]
id = "USA"
token = "usa-token-0123456789abcdef"

[[party]]
id = "JPN"
token = "jpn-token-0123456789abcdef"
"""


#: The `commonsky` command as installed beside this interpreter.
COMMONSKY = str(Path(sys.executable).parent / "commonsky")


def serve(config: Path, *flags: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMONSKY, "serve", "--config", str(config), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single `commonsky: error:` line of a run that must have failed with status 2."""
    assert "Traceback" not in result.stderr, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("commonsky: error:")]
    assert result.returncode == 2 and len(errors) == 1, (result.returncode, result.stderr)
    return errors[0]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@contextlib.contextmanager
def occupied() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@contextlib.contextmanager
def serving(config: Path, port: int, cwd: Path) -> Iterator[subprocess.Popen[str]]:
    hub = subprocess.Popen(
        [COMMONSKY, "serve", "--config", str(config), "--http", f"127.0.0.1:{port}"],
        cwd=cwd, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            assert hub.poll() is None, hub.communicate()[1]
            time.sleep(0.1)
        yield hub
    finally:
        hub.send_signal(signal.SIGTERM)
        hub.communicate(timeout=30)


def test_a_busy_http_port_is_one_line_naming_it(
    tmp_path: Path, held_port: Callable[[], int]
) -> None:
    with occupied() as port:
        config = write(tmp_path / "hub.toml", f'[server]\nhttp = "127.0.0.1:{port}"\n{TOKENED}')
        line = one_error_line(serve(config))
    assert f"port {port} is already in use" in line and "hub.toml" in line
    # Nothing was left behind holding the data folder: the same config starts once the port
    # is free again (it would say "in use by another hub" otherwise).
    with serving(config, held_port(), tmp_path) as hub:
        assert hub.poll() is None


def test_a_busy_tak_port_names_its_listener(tmp_path: Path) -> None:
    with occupied() as port:
        config = write(
            tmp_path / "hub.toml",
            f"""[server]
http = "127.0.0.1:0"
[[listener]]
kind = "tak-tcp"
bind = "127.0.0.1:0"
party = "USA"
[[listener]]
kind = "tak-tcp"
bind = "127.0.0.1:{port}"
party = "JPN"
{TOKENED}""",
        )
        line = one_error_line(serve(config))
    assert "[[listener]] #2" in line and f"port {port} is already in use" in line


async def test_a_port_two_entries_share_names_the_second(
    tmp_path: Path, held_port: Callable[[], int]
) -> None:
    """[server] http and a listener on one port: the HTTP socket was only bound, so the
    listener bound beside it and uvicorn then failed with a traceback (EBADF)."""
    port = held_port()
    data = {
        "server": {"http": f"127.0.0.1:{port}", "data_dir": str(tmp_path / "hub")},
        "listener": [{"kind": "tak-tcp", "bind": f"127.0.0.1:{port}", "party": "USA"}],
        "party": [{"id": "USA"}],
    }
    server = HubServer(config_from_dict(data, "hub.toml"))
    with pytest.raises(UsageError) as refused:
        await server.start()
    assert str(refused.value) == (
        f"hub.toml: [[listener]] #1 bind = '127.0.0.1:{port}': port {port} is already in use "
        "(another hub or program); stop it or pick another"
    )


async def test_a_busy_federation_port_names_its_listener(tmp_path: Path) -> None:
    """gRPC raises (RuntimeError) where it once returned port 0: it was a traceback."""
    init_ca(tmp_path / "ca")
    with occupied() as port:
        data = {
            "server": {"http": "127.0.0.1:0", "data_dir": str(tmp_path / "hub")},
            "listener": [
                {"kind": "federation", "bind": f"127.0.0.1:{port}", "ca": str(tmp_path / "ca")}
            ],
            "party": [{"id": "USA"}, {"id": "JPN", "federate": "peer"}],
            "federate": [
                {"name": "peer", "parties": ["JPN"], "fingerprint": "sha256:" + "ab" * 32}
            ],
        }
        server = HubServer(config_from_dict(data, "hub.toml"))
        with pytest.raises(UsageError) as refused:
            await server.start()
    assert str(refused.value).startswith(f"hub.toml: [[listener]] #1: bind = 127.0.0.1:{port}: ")
    assert "the port is in use" in str(refused.value)


@pytest.mark.parametrize(
    ("kind", "spoil", "named"),
    [
        ("marti", "server.pem", "server.pem is missing"),
        ("enroll", "server.pem", "server.pem is missing"),
        ("marti", "crl.pem", "crl.pem: not a PEM certificate revocation list"),
        ("tak-tls", "crl.pem", "crl.pem: not a PEM certificate revocation list"),
    ],
)
def test_a_listeners_certificates_are_checked_before_the_data_folder(
    tmp_path: Path, kind: str, spoil: str, named: str
) -> None:
    """The enroll and marti listeners' files and the CRL were read once the data folder was
    made (a new hub in it), and a CRL's error did not name its listener."""
    init_ca(tmp_path / "ca")
    if spoil == "crl.pem":
        (tmp_path / "ca" / spoil).write_text("not a CRL")
    else:
        (tmp_path / "ca" / spoil).unlink()
    data = {
        "server": {"http": "127.0.0.1:0", "data_dir": str(tmp_path / "hub")},
        "listener": [{"kind": kind, "bind": "127.0.0.1:0", "ca": str(tmp_path / "ca")}],
    }
    with pytest.raises(UsageError) as refused:
        HubServer(config_from_dict(data, "hub.toml"))
    assert str(refused.value).startswith(f"hub.toml: [[listener]] #1 ({kind}): ")
    assert named in str(refused.value)
    assert not (tmp_path / "hub").exists()


async def test_a_federation_listener_without_peers_says_it_does_not_listen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It was left out without a word: the operator's port simply refused every peer."""
    init_ca(tmp_path / "ca")
    data = {
        "server": {"http": "127.0.0.1:0", "data_dir": str(tmp_path / "hub")},
        "listener": [{"kind": "federation", "bind": "127.0.0.1:9001", "ca": str(tmp_path / "ca")}],
    }
    with caplog.at_level(logging.WARNING, logger="commonsky.server"):
        async with running_hub(config_from_dict(data, "hub.toml")):
            pass
    assert (
        "hub.toml: [[listener]] #1: no [[federate]] is declared, so nothing listens on "
        "127.0.0.1:9001" in caplog.text
    )


def test_missing_certificates_name_the_file_the_listener_and_the_fix(tmp_path: Path) -> None:
    config = write(
        tmp_path / "conf" / "hub.toml",
        f"""[server]
http = "127.0.0.1:0"
[[listener]]
kind = "tak-tls"
bind = "127.0.0.1:0"
ca = "pki"
{TOKENED}""",
    )
    line = one_error_line(serve(config, cwd=tmp_path))
    ca = tmp_path / "conf" / "pki"  # relative to the config file, not to where we ran it
    assert "[[listener]] #1" in line and str(ca / "server.pem") in line
    assert f"commonsky ca init --dir {ca}" in line
    # Certificate trouble stops the hub before it touches its data folder.
    assert not (tmp_path / "conf" / "var").exists()


def test_a_certificate_file_that_is_not_one_is_named(tmp_path: Path) -> None:
    from commonsky.cli import main

    main(["ca", "init", "--dir", str(tmp_path / "pki")])
    (tmp_path / "pki" / "server.pem").write_text("not a certificate\n")
    config = write(
        tmp_path / "hub.toml",
        f"""[server]
http = "127.0.0.1:0"
[[listener]]
kind = "tak-tls"
bind = "127.0.0.1:0"
ca = "pki"
{TOKENED}""",
    )
    line = one_error_line(serve(config))
    assert "[[listener]] #1" in line and "server.pem" in line and "not a certificate" in line


def test_a_data_dir_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where the folder should be")
    config = write(
        tmp_path / "hub.toml",
        f'[server]\nhttp = "127.0.0.1:0"\ndata_dir = "blocked/hub"\n{TOKENED}',
    )
    line = one_error_line(serve(config))
    assert str(tmp_path / "blocked" / "hub") in line


@pytest.mark.parametrize("name", ["hub.sqlite3", "ledger.sqlite3"])
def test_a_database_that_is_not_one_is_named(
    tmp_path: Path, name: str, held_port: Callable[[], int]
) -> None:
    config = write(tmp_path / "hub.toml", TOKENED)
    with serving(config, held_port(), tmp_path):
        pass
    data = tmp_path / "var" / "hub"
    for path in data.glob(f"{name}*"):
        path.unlink()
    (data / name).write_bytes(b"this is not a SQLite database, just bytes " * 50)
    line = one_error_line(serve(config, "--http", "127.0.0.1:0"))
    assert str(data / name) in line and "not a database" in line


@pytest.mark.parametrize("name", ["hub.sqlite3", "ledger.sqlite3"])
def test_an_empty_database_beside_a_manifest_is_one_line_and_left_empty(
    tmp_path: Path, name: str, held_port: Callable[[], int]
) -> None:
    config = write(tmp_path / "hub.toml", TOKENED)
    with serving(config, held_port(), tmp_path):
        pass
    data = tmp_path / "var" / "hub"
    for path in data.glob(f"{name}*"):
        path.unlink()
    (data / name).touch(mode=0o600)
    line = one_error_line(serve(config, "--http", "127.0.0.1:0"))
    assert f"{name} is empty (0 bytes)" in line and "--init" in line, line
    assert (data / name).stat().st_size == 0 and not (data / f"{name}-wal").exists()


def damage_pages(database: Path) -> None:
    """Fold the write-ahead log into `database`, then overwrite every page after the first
    (the schema) with bytes no page holds: damage that opening the file does not see."""
    with contextlib.closing(sqlite3.connect(database)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (size,) = conn.execute("PRAGMA page_size").fetchone()
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
    with database.open("r+b") as raw:
        raw.seek(size)
        raw.write(b"\xff" * size * (pages - 1))


@pytest.mark.parametrize("name", ["hub.sqlite3", "ledger.sqlite3"])
def test_a_damaged_page_names_its_database(
    tmp_path: Path, name: str, held_port: Callable[[], int]
) -> None:
    """Tables' pages read at start after the file opened fine: one line naming the damaged
    file (it was a traceback for the store, and blamed the ledger for some)."""
    config = write(tmp_path / "hub.toml", TOKENED)
    with serving(config, held_port(), tmp_path):
        pass
    data = tmp_path / "var" / "hub"
    damage_pages(data / name)
    line = one_error_line(serve(config, "--http", "127.0.0.1:0"))
    assert f"{data / name}: damaged" in line and "restore it from a backup" in line


def test_paths_are_relative_to_the_config_file(
    tmp_path: Path, held_port: Callable[[], int]
) -> None:
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = write(site / "hub.toml", f'[server]\ndata_dir = "state"\n{TOKENED}')
    with serving(config, held_port(), elsewhere) as hub:
        assert (site / "state" / "hub.json").is_file()
    _, log = hub.communicate()
    assert not any(elsewhere.iterdir())
    assert f"data folder {site / 'state'}" in log  # the absolute path, logged at start


def test_a_second_hub_on_the_same_data_dir_is_refused(
    tmp_path: Path, held_port: Callable[[], int]
) -> None:
    config = write(tmp_path / "hub.toml", TOKENED)
    with serving(config, held_port(), tmp_path) as first:
        line = one_error_line(serve(config, "--http", "127.0.0.1:0"))
        assert f"in use by another hub (pid {first.pid}" in line
        assert first.poll() is None  # the first one serves on


async def test_the_lock_holds_within_one_process_too(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    async with running_hub(config):
        with pytest.raises(UsageError, match="in use by another hub"):
            HubServer(config)
    # Released when the first one stopped.
    async with running_hub(config):
        pass


def test_no_party_with_a_token_warns(tmp_path: Path) -> None:
    with occupied() as port:  # stop it right after the checks that precede binding
        config = write(
            tmp_path / "hub.toml",
            f'[server]\nhttp = "127.0.0.1:{port}"\n[[party]]\nid = "USA"\n',
        )
        result = serve(config)
    assert "no [[party]] has a token, so nobody can sign in" in result.stderr


async def test_a_failed_start_leaves_nothing_open(tmp_path: Path) -> None:
    """HubServer.start failing (busy port) closes the store and ledger and releases the lock."""
    with occupied() as port:
        config = base_config(tmp_path, server={"http": f"127.0.0.1:{port}"})
        server = HubServer(config)
        with pytest.raises(UsageError, match=f"port {port}"):
            await server.start()
    async with running_hub(base_config(tmp_path)) as hub:
        async with httpx.AsyncClient(base_url=hub.http) as http:
            me = await http.get("/api/me", headers={"Authorization": f"Bearer {token_of('USA')}"})
        assert me.status_code == 200


def test_flags_and_variables_are_relative_to_the_current_folder(tmp_path: Path) -> None:
    from commonsky.config import load_config

    config = write(tmp_path / "conf" / "hub.toml", TOKENED)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        by_flag = load_config(config, {"data_dir": "from-flag"})
        assert by_flag.data_dir == tmp_path / "from-flag"
        by_file = load_config(config)
        assert by_file.data_dir == tmp_path / "conf" / "var" / "hub"  # the default, too
    finally:
        os.chdir(cwd)
