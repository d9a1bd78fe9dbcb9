"""The hub's data folder (issue 13, classes 8 and 13): private from the first byte, and
whole — a hub that has run before never silently makes a fresh ledger, store or key beside
what it had; `--init` is the operator saying so."""

from __future__ import annotations

import json
import logging
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from commonsky.errors import UsageError
from commonsky.hub.datadir import MANIFEST
from commonsky.ledger.export import export, verify
from commonsky.ledger.log import Ledger
from commonsky.server import HubServer
from tests.conftest import base_config, running_hub, token_of
from tests.store.conftest import postgres_url  # noqa: F401 (fixture)

HOTLINE = [
    {"name": "us-jp", "from": "USA", "to": ["JPN"], "categories": ["hotline"]},
]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def run_once(
    tmp_path: Path, messages: int = 0, init: bool = False, server: dict[str, Any] | None = None
) -> Path:
    """Start a hub on tmp_path/hub, send `messages` hotline messages, stop; the data folder."""
    async with running_hub(base_config(tmp_path, HOTLINE, server=server), init=init) as hub:
        async with httpx.AsyncClient(base_url=hub.http) as http:
            for i in range(messages):
                sent = await http.post(
                    "/api/hotline/send",
                    json={"to": "JPN", "text": f"message {i}"},
                    headers={"Authorization": f"Bearer {token_of('USA')}"},
                )
                assert sent.status_code == 201, sent.text
    return tmp_path / "hub"


async def test_everything_private_from_the_first_start(tmp_path: Path) -> None:
    data = await run_once(tmp_path, messages=2)
    assert mode(data) == 0o700 and mode(data / "keys") == 0o700
    files = [p for p in data.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"hub.sqlite3", "ledger.sqlite3", "hub-ed25519.pem", "hub-secret", MANIFEST} <= names
    assert {p.name: oct(mode(p)) for p in files if mode(p) != 0o600} == {}


async def test_a_folder_found_open_to_others_is_tightened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = await run_once(tmp_path)
    data.chmod(0o755)
    (data / "keys").chmod(0o755)
    (data / "hub.sqlite3").chmod(0o644)
    (data / "ledger.sqlite3").chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="commonsky.datadir"):
        await run_once(tmp_path)
    assert mode(data) == 0o700 and mode(data / "keys") == 0o700
    assert mode(data / "hub.sqlite3") == 0o600 and mode(data / "ledger.sqlite3") == 0o600
    assert f"{data} was mode 755; made 700" in caplog.text


@pytest.mark.parametrize(
    "lost", ["ledger.sqlite3", "hub.sqlite3", "keys/hub-ed25519.pem", "keys/hub-secret"]
)
async def test_a_missing_file_stops_a_hub_that_has_run(tmp_path: Path, lost: str) -> None:
    data = await run_once(tmp_path, messages=3)
    for path in data.glob(f"{lost}*"):  # with its -wal and -shm
        path.unlink()
    config = base_config(tmp_path, HOTLINE)
    with pytest.raises(UsageError) as refused:
        HubServer(config)
    message = str(refused.value)
    assert f"{lost} is missing" in message and "--init" in message and str(data) in message
    assert not (data / lost).exists()  # nothing was made in its place
    # The operator says so: the missing file is made afresh, and the hub serves on.
    async with running_hub(config, init=True):
        pass
    assert (data / lost).exists()
    async with running_hub(config):  # and from then on it starts as usual
        pass


@pytest.mark.parametrize("damage", [b"", b'{\n  "format": 1,\n  "hub_id": "9fe8', b"[1, 2]\n"])
async def test_a_damaged_manifest_names_the_way_out_and_init_writes_it_again(
    tmp_path: Path, damage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """hub.json only names what the store, ledger and key hold: one left unreadable (a copy
    cut short, a disk error) stopped every start with no way out but a hand-written one."""
    data = await run_once(tmp_path, messages=2)
    manifest = json.loads((data / MANIFEST).read_text())
    (data / MANIFEST).write_bytes(damage)
    with pytest.raises(UsageError) as refused:
        HubServer(base_config(tmp_path, HOTLINE))
    assert "--init" in str(refused.value) and str(data / MANIFEST) in str(refused.value)
    assert (data / MANIFEST).read_bytes() == damage  # refused: nothing touched
    with caplog.at_level(logging.WARNING, logger="commonsky.datadir"):
        await run_once(tmp_path, init=True)
    assert json.loads((data / MANIFEST).read_text()) == manifest
    [aside] = data.glob(f"{MANIFEST}.damaged-*")
    assert aside.read_bytes() == damage and aside.name in caplog.text
    await run_once(tmp_path)  # and from then on it starts as usual


@pytest.mark.parametrize("store", ["postgresql", "killed"])
async def test_a_first_start_that_stored_nothing_leaves_a_new_folder(
    tmp_path: Path, store: str, held_port: Callable[[], int]
) -> None:
    """A first start whose PostgreSQL is not there yet (or that was killed before its first
    write) leaves empty database files: the next start is a first one, not a refusal."""
    data = tmp_path / "hub"
    if store == "postgresql":
        down = f"postgresql://127.0.0.1:{held_port()}/commonsky"
        with pytest.raises(UsageError, match="cannot use PostgreSQL"):
            HubServer(base_config(tmp_path, HOTLINE, server={"store_url": down}))
        assert (data / "ledger.sqlite3").stat().st_size == 0  # what that start left
    else:
        (data / "keys").mkdir(parents=True)
        for name in ("ledger.sqlite3", "hub.sqlite3", "ledger.sqlite3-wal"):
            (data / name).touch()
    await run_once(tmp_path, messages=1)
    assert json.loads((data / MANIFEST).read_text())["hub_id"]


async def test_a_fresh_ledger_never_verifies_beside_stored_messages(tmp_path: Path) -> None:
    """The fault of issue 13: a deleted ledger came back as a fresh 2-entry log that
    "verified intact" beside every stored message. Now the hub refuses to start."""
    data = await run_once(tmp_path, messages=5)
    with Ledger.open(data) as ledger:
        assert ledger.size >= 5
    for path in data.glob("ledger.sqlite3*"):
        path.unlink()
    with pytest.raises(UsageError, match=r"ledger\.sqlite3 is missing"):
        HubServer(base_config(tmp_path, HOTLINE))
    assert not (data / "ledger.sqlite3").exists()


async def test_another_hubs_ledger_is_refused(tmp_path: Path) -> None:
    ours = await run_once(tmp_path / "a", messages=1)
    theirs = await run_once(tmp_path / "b", messages=1)
    for path in ours.glob("ledger.sqlite3*"):
        path.unlink()
    for path in theirs.glob("ledger.sqlite3*"):
        shutil.copy(path, ours / path.name)
    with pytest.raises(UsageError, match=r"ledger\.sqlite3 belongs to hub"):
        HubServer(base_config(tmp_path / "a", HOTLINE))


async def test_another_key_is_refused(tmp_path: Path) -> None:
    ours = await run_once(tmp_path / "a", messages=1)
    theirs = await run_once(tmp_path / "b")
    shutil.copy(theirs / "keys" / "hub-ed25519.pem", ours / "keys" / "hub-ed25519.pem")
    with pytest.raises(UsageError, match=r"hub-ed25519\.pem is not the key"):
        HubServer(base_config(tmp_path / "a", HOTLINE))


async def test_init_binds_what_is_there_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ours = await run_once(tmp_path / "a", messages=1)
    theirs = await run_once(tmp_path / "b")
    shutil.copy(theirs / "keys" / "hub-ed25519.pem", ours / "keys" / "hub-ed25519.pem")
    with caplog.at_level(logging.WARNING, logger="commonsky.datadir"):
        await run_once(tmp_path / "a", init=True)
    assert "--init" in caplog.text and "hub-ed25519.pem is not the key" in caplog.text
    manifest = json.loads((ours / MANIFEST).read_text())
    await run_once(tmp_path / "a")  # bound: it starts without --init from now on
    assert json.loads((ours / MANIFEST).read_text()) == manifest


async def test_a_folder_from_before_manifests_is_adopted_whole(tmp_path: Path) -> None:
    data = await run_once(tmp_path, messages=2)
    (data / MANIFEST).unlink()
    await run_once(tmp_path)  # all four files are there and agree: adopted
    assert (data / MANIFEST).is_file()
    # …but a manifest-less folder with a file missing has run before all the same.
    (data / MANIFEST).unlink()
    (data / "keys" / "hub-secret").unlink()
    with pytest.raises(UsageError, match=r"has run before \(.* are there\)"):
        HubServer(base_config(tmp_path, HOTLINE))


async def test_the_ledger_still_verifies_after_restarts(tmp_path: Path) -> None:
    data = await run_once(tmp_path, messages=2)
    await run_once(tmp_path, messages=2)
    with Ledger.open(data) as ledger:
        export(ledger, tmp_path / "all.jsonl")
    assert verify(tmp_path / "all.jsonl").ok


async def test_a_fresh_postgresql_database_is_a_missing_store(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    await run_once(tmp_path, messages=1, server={"store_url": postgres_url})
    config = base_config(tmp_path, HOTLINE, server={"store_url": postgres_url})
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP TABLE commonsky_items, commonsky_cursors, commonsky_meta")
    with pytest.raises(UsageError, match="is not the one this hub made"):
        HubServer(config)


async def test_an_empty_store_beside_a_manifest_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """A hub.sqlite3 cut to zero bytes (a restore that copied nothing, a full disk) beside
    the manifest of a hub that has run: refused as missing is, and left as it was found —
    not given an empty schema first."""
    data = await run_once(tmp_path, messages=2)
    for path in data.glob("hub.sqlite3*"):
        path.unlink()
    (data / "hub.sqlite3").touch(mode=0o600)
    config = base_config(tmp_path, HOTLINE)
    with pytest.raises(UsageError) as refused:
        HubServer(config)
    message = str(refused.value)
    assert "\n" not in message and str(data) in message, message
    assert "hub.sqlite3 is empty (0 bytes)" in message and "--init" in message, message
    assert (data / "hub.sqlite3").stat().st_size == 0
    assert not (data / "hub.sqlite3-wal").exists()
    async with running_hub(config, init=True):  # the operator says so: made afresh
        pass
    async with running_hub(config):  # and from then on it starts as usual
        pass
