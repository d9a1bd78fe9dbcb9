"""What cluster cores share in PostgreSQL (issue 19; ../CONTRACT.md "Cluster": each process
may have its own data_dir): the ledger (one chain over every core, one commit with the
store), the hub's signing key, the secret behind generalized handles, the hub_id, hotline
state. A core that is no longer the database's writer cannot append (it fails, the chain
does not fork); a database of another hub, an empty one without --init, or broken rows stop
a core with one line (exit 2). The kill -9 version under load is test_failover.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commonsky.config import HubConfig, config_from_dict
from commonsky.errors import UsageError, WriterFenced
from commonsky.hub.datadir import HUB_PUBLIC, MANIFEST
from commonsky.ledger.log import Ledger
from commonsky.ledger.pgdb import PgLedgerDB
from commonsky.namespace import handle
from commonsky.server import HubServer
from commonsky.store.postgres import PostgresStore
from tests.cluster.conftest import NATS_URL
from tests.conftest import ApiHub, token_of
from tests.ledger._helpers import fields

PARTIES = ("USA", "JPN")


def core_config(folder: Path, store_url: str, name: str = "shared") -> dict[str, Any]:
    return {
        "server": {"data_dir": str(folder), "http": "127.0.0.1:0", "store_url": store_url},
        "party": [{"id": p, "token": token_of(p)} for p in PARTIES],
        "agreement": [{"name": "us-jp", "from": "USA", "to": ["JPN"], "categories": ["hotline"]},
                      {"name": "us-jp-tracks", "from": "USA", "to": ["JPN"],
                       "categories": ["track"], "disclosure": "generalized"}],
        "cluster": {"nats_url": NATS_URL, "role": "core", "name": name},
    }  # fmt: skip


def config(folder: Path, store_url: str) -> HubConfig:
    return config_from_dict(core_config(folder, store_url), "test")


async def send(server: HubServer, texts: list[str]) -> list[str]:
    """Hotline messages USA -> JPN through the core's API; their ids."""
    async with ApiHub(server).client("USA") as usa:
        for text in texts:
            sent = await usa.post("/api/hotline/send", json={"to": "JPN", "text": text})
            assert sent.status_code == 201, sent.text
    got = await history(server)
    return [got[text]["id"] for text in texts]


async def history(server: HubServer) -> dict[str, Any]:
    async with ApiHub(server).client("JPN") as jpn:
        page = await jpn.get("/api/hotline")
        assert page.status_code == 200, page.text
        return {m["text"]: m for m in page.json()}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "commonsky", *args], capture_output=True,
                          text=True, timeout=120)  # fmt: skip


async def test_a_core_with_its_own_empty_data_dir_continues_the_same_hub(
    tmp_path: Path, postgres_url: str
) -> None:
    first = HubServer(config(tmp_path / "a", postgres_url), init=True, writer="a epoch 1")
    try:
        ids = await send(first, ["before 1", "before 2"])
        async with ApiHub(first).client("JPN") as jpn:
            acked = await jpn.post(f"/api/hotline/{ids[0]}/ack")
            assert acked.status_code == 200, acked.text
        secret, hub_id = first.hub.secret, first.hub_id
        ledger = first.services.recorder.ledger  # type: ignore[union-attr]
        before = ledger.size
        ledger.checkpoint()
        before_msgs = await history(first)
    finally:
        first._release()
    assert (tmp_path / "a" / HUB_PUBLIC).exists()
    assert not (tmp_path / "a" / "keys" / "hub-secret").exists()  # (in the database)
    assert not (tmp_path / "a" / "ledger.sqlite3").exists()

    second = HubServer(config(tmp_path / "b", postgres_url), writer="b epoch 2")  # no --init
    try:
        assert (second.hub_id, second.hub.secret) == (hub_id, secret)
        assert handle(second.hub.secret, "USA", "t1") == handle(secret, "USA", "t1")
        ledger = second.services.recorder.ledger  # type: ignore[union-attr]
        assert ledger.size == before
        assert await history(second) == before_msgs  # acknowledged, open: as they were
        more = await send(second, ["after 1"])
        async with ApiHub(second).client("JPN") as jpn:  # the other message, acked here
            assert (await jpn.post(f"/api/hotline/{ids[1]}/ack")).status_code == 200
        assert more and ledger.size > before
        assert ledger.audit() == ledger.root()
    finally:
        second._release()
    manifests = [json.loads((tmp_path / d / MANIFEST).read_text()) for d in ("a", "b")]
    assert manifests[0]["hub_id"] == manifests[1]["hub_id"] == hub_id
    assert (tmp_path / "a" / HUB_PUBLIC).read_bytes() == (tmp_path / "b" / HUB_PUBLIC).read_bytes()

    # The CONTRACT form on the second core's folder, and --config; verified against the key
    # the first core's folder holds: entries of both cores, one chain.
    out = tmp_path / "ledger.jsonl"
    made = cli("ledger", "export", "--data-dir", str(tmp_path / "b"), "--out", str(out))
    assert made.returncode == 0, made.stdout + made.stderr
    checked = cli("ledger", "verify", str(out), "--hub-key", str(tmp_path / "a" / HUB_PUBLIC))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = out.read_text().splitlines()
    assert json.loads(lines[-1])["size"] > before
    toml = tmp_path / "core.toml"
    toml.write_text(_toml(core_config(tmp_path / "a", postgres_url)))
    again = cli("ledger", "export", "--config", str(toml), "--party", "JPN",
                "--out", str(tmp_path / "jpn.jsonl"))  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr


def _toml(data: dict[str, Any]) -> str:
    server, cluster = data["server"], data["cluster"]
    lines = ["[server]", *(f'{k} = "{v}"' for k, v in server.items()), "[cluster]",
             *(f'{k} = "{v}"' for k, v in cluster.items())]  # fmt: skip
    for party in data["party"]:
        lines += ["[[party]]", f'id = "{party["id"]}"']
    return "\n".join(lines) + "\n"


def test_a_stale_core_cannot_append_and_the_chain_does_not_fork(postgres_url: str) -> None:
    old, new = PostgresStore(postgres_url), PostgresStore(postgres_url)
    try:
        old.claim("old epoch 1", 30)
        old_ledger = Ledger(PgLedgerDB(old))
        old_ledger.append_many([fields(0), fields(1)])
        # The successor claims while the old core is inside a transaction: the claim waits
        # for that commit (the row it holds FOR SHARE), so nothing the old core commits can
        # land after the successor loaded the ledger.
        claimed = threading.Event()
        pid = new.connection().info.backend_pid
        with old.transaction():
            old_ledger.append(fields(2))
            waiter = threading.Thread(target=lambda: (new.claim("new epoch 2", 30),
                                                      claimed.set()))  # fmt: skip
            waiter.start()
            _until_waiting_on_a_lock(postgres_url, pid)
            assert not claimed.is_set()
        waiter.join(10)
        assert claimed.is_set()
        new_ledger = Ledger(PgLedgerDB(new))
        assert new_ledger.size == 3  # the old core's last commit included
        items = old.count()
        with pytest.raises(WriterFenced, match="new epoch 2 is the database's writer"):
            old_ledger.append(fields(99))
        with pytest.raises(WriterFenced), old.transaction():
            old_ledger.append(fields(98))
        assert old.count() == items
        new_ledger.append_many([fields(3), fields(4)])
        assert new_ledger.size == 5
        assert [e.payload["uid"] for e in new_ledger.entries()] == [f"u-{i}" for i in range(5)]
        assert new_ledger.audit() == new_ledger.root()
    finally:
        old.close()
        new.close()


def _until_waiting_on_a_lock(url: str, pid: int) -> None:
    """Barrier: PostgreSQL reports backend `pid` waiting for a lock."""
    deadline = time.monotonic() + 10
    with psycopg.connect(url, autocommit=True) as db:
        while time.monotonic() < deadline:
            row = db.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            if row is not None and row[0] == "Lock":
                return
            time.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited for the writer row")


def test_claim_waits_only_so_long_for_a_writer_hung_in_a_transaction(postgres_url: str) -> None:
    """A core stopped (not killed) inside a transaction holds the writer row; PostgreSQL
    ends its session after the idle-in-transaction timeout, and the claim goes through."""
    hung, new = PostgresStore(postgres_url), PostgresStore(postgres_url)
    try:
        hung.claim("hung epoch 1", 1.0)
        hung.write_conn()  # a transaction opened, then nothing (the process is stopped)
        started = time.monotonic()
        assert new.claim("new epoch 2", 30) == "hung epoch 1"
        assert 0.5 < time.monotonic() - started < 20
    finally:
        new.close()
        hung.close()


def _serve(
    folder: Path, store_url: str, *flags: str, name: str = ""
) -> subprocess.CompletedProcess[str]:
    # (a name of its own: its lease is not another test's; the database remembers it)
    data = core_config(folder, store_url, name=name or f"t{uuid.uuid4().hex[:10]}")
    path = folder.with_suffix(".toml")
    path.write_text(_toml(data))
    return cli("serve", "--config", str(path), *flags)


def _one_line(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr, done.stderr
    assert all(w in lines[-1] for w in words), lines


def test_an_empty_database_without_init_stops_in_one_line(
    tmp_path: Path, postgres_url: str
) -> None:
    _one_line(_serve(tmp_path / "a", postgres_url), "holds no hub yet", "--init")
    with psycopg.connect(postgres_url) as db:  # nothing was made in it (said before standing by)
        assert db.execute("SELECT to_regclass('commonsky_hub_state')").fetchone() == (None,)


async def test_a_database_of_another_hub_stops_in_one_line(
    tmp_path: Path, postgres_url: str
) -> None:
    ours = HubServer(config(tmp_path / "a", postgres_url), init=True)
    ours_id = ours.hub_id
    ours._release()
    manifest = tmp_path / "a" / MANIFEST
    data = json.loads(manifest.read_text())
    data["hub_id"] = "0" * 32  # this folder's hub is another one than the database's
    manifest.write_text(json.dumps(data))
    name = f"t{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url) as db:
        writer = db.execute("SELECT writer FROM commonsky_writer").fetchall()
    _one_line(_serve(tmp_path / "a", postgres_url, name=name), f"belongs to hub {ours_id}",
              "0" * 32)  # fmt: skip
    with psycopg.connect(postgres_url) as db:  # refused before it claimed the writer
        assert db.execute("SELECT writer FROM commonsky_writer").fetchall() == writer
    with pytest.raises(UsageError, match="belongs to hub"):
        HubServer(config_from_dict(core_config(tmp_path / "a", postgres_url, name=name)))


@pytest.mark.parametrize(
    ("row", "value", "words"),
    [
        ("hub-ed25519.pem", b"-----BEGIN PRIVATE KEY-----\nnot a key\n", "not a PEM private key"),
        ("hub-ed25519.pem", None, "but not hub-ed25519.pem"),
        ("hub-secret", b"short", "is 5 bytes, not 32"),
        ("hub-secret", None, "but not hub-secret"),
    ],
)
async def test_broken_or_missing_rows_stop_a_core_in_one_line(
    tmp_path: Path, postgres_url: str, row: str, value: bytes | None, words: str
) -> None:
    HubServer(config(tmp_path / "a", postgres_url), init=True)._release()
    with psycopg.connect(postgres_url) as db:
        if value is None:
            db.execute("DELETE FROM commonsky_hub_state WHERE name = %s", (row,))
        else:
            db.execute("UPDATE commonsky_hub_state SET value = %s WHERE name = %s", (value, row))
    with pytest.raises(UsageError, match=words):
        HubServer(config(tmp_path / "b", postgres_url))
    if value is None:  # the operator says so: made afresh
        HubServer(config(tmp_path / "b", postgres_url), init=True)._release()


async def test_ledger_rows_altered_by_hand_stop_a_core_in_one_line(
    tmp_path: Path, postgres_url: str
) -> None:
    first = HubServer(config(tmp_path / "a", postgres_url), init=True)
    await send(first, ["one", "two"])
    first.services.recorder.ledger.checkpoint()  # type: ignore[union-attr]
    first._release()
    with psycopg.connect(postgres_url) as db:
        # Every stored hash (whichever of them the root of the signed size is made of).
        db.execute("UPDATE commonsky_ledger_node SET hash = '\\x00'")
        db.execute("UPDATE commonsky_ledger_entry SET leaf_hash = '\\x00'")
    with pytest.raises(UsageError, match="disagree with signed checkpoint"):
        HubServer(config(tmp_path / "b", postgres_url))


async def test_a_second_core_on_the_same_data_dir_is_refused_at_its_start(
    tmp_path: Path, postgres_url: str
) -> None:
    from commonsky.hub.datadir import DataDir

    held = DataDir(tmp_path / "a", postgres_url, shared=True)
    held.open()
    try:
        _one_line(_serve(tmp_path / "a", postgres_url, "--init"), "in use by another hub")
    finally:
        held.close()


async def test_the_callsign_directory_is_shared(tmp_path: Path, postgres_url: str) -> None:
    first = HubServer(config(tmp_path / "a", postgres_url), init=True)
    first.hub.directory.report("JPN", "ANDROID-1", "FALCON")
    first.services.tick()
    first._release()
    second = HubServer(config(tmp_path / "b", postgres_url))
    try:
        assert second.hub.directory.callsign("JPN", "ANDROID-1") == "FALCON"
        assert not (tmp_path / "b" / "directory.json").exists()
    finally:
        second._release()


async def test_party_keys_put_in_one_cores_folder_are_every_cores(
    tmp_path: Path, postgres_url: str
) -> None:
    from commonsky.ledger.keys import load_public_key, make_party_key, raw_public

    _, public = make_party_key(tmp_path / "made", "USA")
    parties = tmp_path / "a" / "keys" / "parties"
    parties.mkdir(parents=True)
    (parties / "USA.pub.pem").write_bytes(public.read_bytes())
    HubServer(config(tmp_path / "a", postgres_url), init=True)._release()
    second = HubServer(config(tmp_path / "b", postgres_url))
    try:
        keys = second.services.party_keys
        assert keys is not None and keys.parties() == ["USA"]
        assert keys.raw("USA") == raw_public(load_public_key(public))
        assert keys.raw("JPN") is None
    finally:
        second._release()


async def test_a_cluster_from_before_moves_its_folder_into_the_database_with_init(
    tmp_path: Path, postgres_url: str
) -> None:
    """Its cores shared one folder holding the ledger (SQLite) and keys, items in
    PostgreSQL: the layout of one process with store_url, made here that way."""
    alone = core_config(tmp_path / "a", postgres_url)
    del alone["cluster"]
    before = HubServer(config_from_dict(alone, "test"))
    try:
        await send(before, ["old 1", "old 2"])
        hub_id, secret = before.hub_id, before.hub.secret
        size = before.services.recorder.ledger.size  # type: ignore[union-attr]
    finally:
        before._release()
    with pytest.raises(UsageError, match="start this core once with --init to move them in"):
        HubServer(config(tmp_path / "a", postgres_url))
    moved = HubServer(config(tmp_path / "a", postgres_url), init=True)
    try:
        assert (moved.hub_id, moved.hub.secret) == (hub_id, secret)
        assert moved.services.recorder.ledger.size == size  # type: ignore[union-attr]
        assert set(await history(moved)) == {"old 1", "old 2"}
    finally:
        moved._release()
    nxt = HubServer(config(tmp_path / "b", postgres_url))  # an empty folder, no --init
    try:
        await send(nxt, ["new 1"])
        assert nxt.hub_id == hub_id
    finally:
        nxt._release()
    out = tmp_path / "all.jsonl"
    made = cli("ledger", "export", "--data-dir", str(tmp_path / "b"), "--out", str(out))
    assert made.returncode == 0, made.stdout + made.stderr
    key = tmp_path / "a" / "keys" / "hub-ed25519.pem"  # the key the old folder signed with
    checked = cli("ledger", "verify", str(out), "--hub-key", str(key))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(out.read_text().splitlines()[-1])["size"] > size


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["append", "claim"]), st.integers(0, 1), st.integers(1, 3)),
        max_size=12,
    )
)
def test_any_interleaving_of_two_cores_keeps_one_chain(
    postgres_url: str, steps: list[tuple[str, int, int]]
) -> None:
    """Invariant: whatever two cores do in turn, an append by the core that is not the
    database's writer fails (WriterFenced) and stores nothing; the ledger is exactly the
    writers' appends, in order, one chain (every hash recomputed)."""
    with psycopg.connect(postgres_url, autocommit=True) as db:
        for table in ("commonsky_ledger_entry", "commonsky_ledger_node", "commonsky_writer"):
            db.execute(f"DROP TABLE IF EXISTS {table}")
    stores = [PostgresStore(postgres_url), PostgresStore(postgres_url)]
    try:
        ledgers = [Ledger(PgLedgerDB(s)) for s in stores]
        writer: int | None = None
        expected: list[str] = []
        for n, (what, who, count) in enumerate(steps):
            if what == "claim":
                stores[who].claim(f"core {who} step {n}", 30)
                writer = who
                continue
            batch = [fields(1000 * n + i) for i in range(count)]
            if stores[who].writer is not None and writer != who:
                with pytest.raises(WriterFenced):
                    ledgers[who].append_many(batch)
                continue
            ledgers[who].append_many(batch)
            expected += [f"u-{1000 * n + i}" for i in range(count)]
        reader = Ledger(PgLedgerDB(stores[0]))
        assert [e.payload["uid"] for e in reader.entries()] == expected
        assert reader.audit() == reader.root()
    finally:
        for store in stores:
            store.close()
