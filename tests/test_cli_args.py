"""Operator arguments the commands once took without a word, or answered with a traceback:
each is now one `commonsky: error:` line, exit status 2, and nothing made or issued."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from commonsky.cli import main
from commonsky.pki import init_ca


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        status = 0
    except SystemExit as exc:
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def one_error(status: int, err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("commonsky: error:")]
    assert status == 2 and len(errors) == 1 and "Traceback" not in err, (status, err)
    return errors[0]


def enroll_config(tmp_path: Path) -> Path:
    init_ca(tmp_path / "ca")
    config = tmp_path / "hub.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "hub"}"\n'
        f'[[listener]]\nkind = "enroll"\nbind = "127.0.0.1:8446"\nca = "{tmp_path / "ca"}"\n'
        '[[party]]\nid = "USA"\n'
    )
    return config


@pytest.mark.parametrize("ttl", ["nan", "inf"])
def test_an_enrollment_token_lives_a_finite_positive_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ttl: str
) -> None:
    """nan was a traceback (after the token line was half made), inf a token that never
    expires."""
    config = enroll_config(tmp_path)
    args = ("enroll", "--config", str(config), "--party", "USA", "--ttl", ttl)
    status, out, err = run(capsys, *args)
    assert f"--ttl {float(ttl)!r}: must be a positive number of seconds" in one_error(status, err)
    assert "token=" not in out


def test_the_qr_code_is_a_png_whatever_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = enroll_config(tmp_path)
    args = ("enroll", "--config", str(config), "--party", "USA", "--qr")
    status, _, err = run(capsys, *args, str(tmp_path / "link.txt"))
    assert status == 0, err
    assert (tmp_path / "link.txt").read_bytes().startswith(b"\x89PNG")
    status, _, err = run(capsys, *args, str(tmp_path))  # a folder: segno's ValueError before
    assert f"--qr {tmp_path}: cannot write" in one_error(status, err)


@pytest.mark.parametrize("timeout", ["nan", "inf"])
def test_conformance_waits_a_finite_positive_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], timeout: str
) -> None:
    """inf was an OverflowError traceback; nan played every file with no wait at all."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (tmp_path / "track.xml").write_text(
        f'<event version="2.0" uid="T-1" type="a-f-G" time="{now}" start="{now}" '
        f'stale="{now}" how="m-g"><point lat="1" lon="1" hae="0" ce="1" le="1"/></event>'
    )
    status, _, err = run(capsys, "conformance", str(tmp_path), "--timeout", timeout)
    assert f"--timeout {float(timeout)!r}: must be a positive number" in one_error(status, err)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--party", "US A/x"], "--party 'US A/x': a party id must be letters, digits, - or _"),
        (["--party", "HUB"], "--party 'HUB': a party id is reserved for the hub itself"),
        (["--party", "USA", "--package", "--port", "70000"], "'--port'"),
        (["--party", "USA", "--package", "--host", "my hub"], "--host 'my hub': not a DNS"),
    ],
)
def test_a_client_certificate_names_what_a_hub_can_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], named: str
) -> None:
    """A party no [[party]] id can be, a port past 65535, a host with a space: refused, and
    no certificate or package written (they were issued before)."""
    init_ca(tmp_path / "ca")
    out = tmp_path / "out"
    status, _, err = run(
        capsys, "cert", "issue", "--ca", str(tmp_path / "ca"), "--name", "a", "--out", str(out),
        *flags,
    )  # fmt: skip
    assert named in one_error(status, err)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("name", ["", "bad name!", "-x.example.org", "a..b"])
def test_a_server_name_that_is_no_host_makes_no_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """It went into the server certificate as a DNS name (an empty one is invalid in X.509)."""
    ca = tmp_path / "ca"
    status, _, err = run(capsys, "ca", "init", "--dir", str(ca), "--server-name", name)
    assert f"--server-name {name!r}: not a DNS name or IP address" in one_error(status, err)
    assert not (ca / "ca.pem").exists()
    status, _, err = run(capsys, "ca", "init", "--dir", str(ca), "--server-name", "hub.example")
    assert status == 0, err


@pytest.mark.parametrize("http", ["127.0.0.1:99999", "nonsense", ":8080"])
def test_a_bad_http_address_is_named_before_the_data_folder_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], http: str
) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(f'[server]\nhttp = "{http}"\ndata_dir = "data"\n')
    status, _, err = run(capsys, "serve", "--config", str(config))
    line = one_error(status, err)
    assert f"{config}: [server]: http = {http!r} is not HOST:PORT" in line
    assert not (tmp_path / "data").exists()
    config.write_text('[server]\ndata_dir = "data"\n')
    status, _, err = run(capsys, "serve", "--config", str(config), "--http", http)
    assert f"--http: http = {http!r} is not HOST:PORT" in one_error(status, err)


def test_evidence_verify_of_a_folder_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, "evidence", "verify", str(tmp_path))
    assert f"{tmp_path}: not a file" in one_error(status, err)  # ("no such file" before)


@pytest.mark.parametrize("where", ["missing/qr.png", "a-file/qr.png", "."])
def test_a_qr_path_that_cannot_be_written_issues_no_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """The token used to be issued (and printed) before the PNG failed to save: a failed
    `enroll --qr` left a live token behind. Now the path is tried first."""
    import sqlite3

    from commonsky.marti.tokens import DB_NAME

    config = enroll_config(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    qr = tmp_path / where
    args = ("enroll", "--config", str(config), "--party", "USA", "--qr", str(qr))
    status, out, err = run(capsys, *args)
    assert f"--qr {qr}: cannot write" in one_error(status, err)
    assert "token=" not in out + err
    db = tmp_path / "hub" / DB_NAME
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM token").fetchone() == (0,)
    assert not list(tmp_path.rglob("*.part"))  # (no half-made PNG left beside it)


def test_the_qr_code_replaces_an_old_one_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = enroll_config(tmp_path)
    qr = tmp_path / "qr.png"
    qr.write_bytes(b"old")
    status, out, err = run(
        capsys, "enroll", "--config", str(config), "--party", "USA", "--qr", str(qr)
    )
    assert status == 0, err
    assert "token=" in out and qr.read_bytes().startswith(b"\x89PNG")
    assert not list(tmp_path.rglob("*.part"))
