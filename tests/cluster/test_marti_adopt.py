"""A core started on a data folder that still holds one process's enrollment tokens and
Marti files (`enroll.sqlite3`, `files.sqlite3`, `files/objects/`: marti/adopt.py): without
--init it stops with one line; with --init it moves them into the database — every core
then serves them — and nothing in the folder (damaged bytes, a broken database file) is
lost or stops a start."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest

from commonsky.errors import UsageError
from commonsky.marti.files import FileStore, StoredFile
from commonsky.marti.tokens import TokenStore
from commonsky.server import HubServer
from commonsky.settings import Settings
from tests.cluster.marti_core import basic, core, core_config, counts, csr, enroll, marti, rows
from tests.marti.helpers import client_cert, make_ca
from tests.marti.uploads import package, sha


def stored(data: bytes, party: str, name: str) -> StoredFile:
    return StoredFile(sha(data), party, "usa-1", "ANDROID-1", name, "application/x-zip-compressed",
                      len(data), "package", ("file",), float("nan"), float("nan"),
                      time.time() - 3600)  # fmt: skip


def folder_from_before(folder: Path) -> tuple[bytes, bytes, str, str]:
    """What one process left: two packages (one's bytes damaged since, one's gone), tokens
    (one long expired), as tokens.py and files.py keep them."""
    files = FileStore.open(folder, Settings())
    good, damaged, gone = package("MP-OLD"), package("MP-DAMAGED"), package("MP-GONE")
    for data, party in ((good, "USA"), (good, "JPN"), (damaged, "USA"), (gone, "USA")):
        files.put_bytes(data)
        files.add(stored(data, party, f"{party}.zip"))
    path = files.object_path(sha(damaged))
    path.write_bytes(path.read_bytes()[:-1] + b"!")  # (a bit rotted on disk)
    files.object_path(sha(gone)).unlink()
    files.close()
    tokens = TokenStore(folder)
    now = time.time()
    fresh = tokens.issue("KOR", "kor-1", 3600, now)
    spent = tokens.issue("KOR", "kor-2", 3600, now)
    assert tokens.redeem(tokens.check("kor-2", spent, now, True), now)  # type: ignore[arg-type]
    tokens.issue("KOR", "kor-3", 10, now - 30 * 86400)  # (long past keeping)
    tokens.close()
    return good, damaged, fresh, spent


async def test_a_folder_from_before_moves_in_on_init(
    tmp_path: Path, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    ca = make_ca(tmp_path, "127.0.0.1")
    usa = client_cert(ca, "USA", "usa-ops", tmp_path / "usa")
    async with core(core_config(tmp_path / "first", postgres_url, ca), "first", init=True):
        pass  # (the cluster's first core made the hub in the database)
    old = tmp_path / "old"
    good, damaged, fresh, spent = folder_from_before(old)
    with pytest.raises(UsageError) as refused:
        HubServer(core_config(old, postgres_url, ca), writer="old epoch 2")
    [line] = str(refused.value).splitlines()
    assert "2 enrollment tokens and 2 Marti files" in line and "--init" in line
    assert counts(postgres_url)["commonsky_file"] == 0  # (nothing moved without --init)

    caplog.set_level(logging.WARNING, "commonsky.datadir")
    async with core(core_config(old, postgres_url, ca), "old epoch 3", init=True):
        pass
    assert "moved 2 enrollment tokens, 2 Marti files" in caplog.text
    assert f"{sha(damaged)} of USA (its bytes are not" in caplog.text
    assert counts(postgres_url) == {"commonsky_file": 2, "commonsky_file_blob": 1,
                                    "commonsky_file_chunk": 1,
                                    "commonsky_enroll_token": 2}  # fmt: skip
    assert (old / "enroll.sqlite3").exists() and (old / "files.sqlite3").exists()  # (left)
    # Started again on that folder: everything it can move is in; no --init needed.
    async with core(core_config(old, postgres_url, ca), "old epoch 4"):
        pass

    async with core(core_config(tmp_path / "new", postgres_url, ca), "new epoch 5") as new:
        async with marti(new, ca, usa) as client:
            got = await client.get(f"/Marti/sync/content?hash={sha(good)}")
            assert got.status_code == 200 and got.content == good
            left = await client.get(f"/Marti/sync/content?hash={sha(damaged)}")
            assert left.status_code == 404
        async with enroll(new, ca) as client:
            sign = "/Marti/api/tls/signClient/v2"
            ok = await client.post(sign, content=csr("KOR", "kor-1"), headers=basic("kor-1", fresh))
            assert ok.status_code == 200, ok.text
            no = await client.post(sign, content=csr("KOR", "kor-2"), headers=basic("kor-2", spent))
            assert no.status_code == 401 and "already used" in no.text
    # The folder's copy of a token spent since in the database does not revive it.
    async with core(core_config(old, postgres_url, ca), "old epoch 6", init=True):
        pass
    [(used,)] = rows(
        postgres_url, "SELECT used FROM commonsky_enroll_token WHERE username = 'kor-1'"
    )
    assert used is not None


async def test_unreadable_folder_files_do_not_stop_a_start(
    tmp_path: Path, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    ca = make_ca(tmp_path, "127.0.0.1")
    old = tmp_path / "old"
    old.mkdir()
    junk = b"not a database at all " * 100
    (old / "enroll.sqlite3").write_bytes(junk)
    with sqlite3.connect(old / "files.sqlite3") as db:  # (another table than files.py's)
        db.execute("CREATE TABLE something (x)")
    caplog.set_level(logging.WARNING, "commonsky.datadir")
    async with core(core_config(old, postgres_url, ca), "old epoch 1", init=True) as hub:
        assert hub.server.marti is not None
    assert "enroll.sqlite3 (file is not a database)" in caplog.text
    assert "files.sqlite3 (no such table: file)" in caplog.text
    async with core(core_config(old, postgres_url, ca), "old epoch 2"):  # (no --init needed)
        pass
    assert (old / "enroll.sqlite3").read_bytes() == junk  # (left as it was)
