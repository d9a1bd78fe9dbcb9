"""A cluster's name on a NATS server belongs to one hub (cluster/identity.py): a core whose
database is another hub's, or an empty one, is refused before it stands by for the lease of a
name that another hub's cluster uses — it would otherwise take that cluster's lease when its
core dies and apply that cluster's stream (other parties' items) into its own database."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from nats.aio.client import Client

from commonsky.bench.cluster import Cluster
from commonsky.cluster.identity import bind_name, bound_hub, check_name
from commonsky.cluster.wire import Names
from commonsky.errors import UsageError
from commonsky.store.postgres import probe
from tests.store.conftest import ADMIN_URL


@pytest.fixture
def second_database() -> Iterator[str]:
    """Another new, empty database (the `postgres_url` fixture gives one per test)."""
    name = f"commonsky_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def hub_of(url: str) -> str:
    with psycopg.connect(url) as db:
        row = db.execute("SELECT value FROM commonsky_meta WHERE key = 'hub_id'").fetchone()
    assert row is not None
    return str(row[0])


async def test_the_serving_core_binds_the_name_and_another_hubs_core_is_refused_at_start(
    tmp_path: Path, cluster: Cluster, nc: Client, second_database: str
) -> None:
    serving = await cluster.core()
    names = Names(cluster.name)
    ours = hub_of(cluster.store_url)
    assert await bound_hub(nc.jetstream(), names) == ours
    kv = await nc.jetstream().key_value(names.lease)
    holder = (await kv.get("core")).value
    text = serving.config.read_text()
    other = text.replace(cluster.store_url, second_database)
    other = re.sub(r'data_dir = "[^"]*"', f'data_dir = "{tmp_path / "intruder"}"', other)
    assert second_database in other and cluster.store_url not in other
    (tmp_path / "intruder.toml").write_text(other)
    command = [sys.executable, "-m", "commonsky", "serve", "--init", "--config",
               str(tmp_path / "intruder.toml")]  # fmt: skip
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True,
                                   timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("commonsky: error")]
    assert len(errors) == 1, done.stderr
    assert f"belongs to hub {ours}" in errors[0] and "an empty database" in errors[0], errors
    assert "standing by" not in done.stderr  # (refused before the lease)
    assert (await kv.get("core")).value == holder  # the serving core still holds it
    with psycopg.connect(second_database) as db:  # and nothing was made in the other database
        row = db.execute("SELECT to_regclass('commonsky_meta')").fetchone()
    assert row == (None,)
    assert serving.proc is not None and serving.proc.poll() is None


async def test_bind_and_check(cluster_name: str, nc: Client) -> None:
    js, names = nc.jetstream(), Names(cluster_name)
    await check_name(js, names, None)  # unbound: a new cluster may start on an empty database
    await check_name(js, names, "hub-a")
    await bind_name(js, names, "hub-a")
    assert await bound_hub(js, names) == "hub-a"
    await check_name(js, names, "hub-a")
    await bind_name(js, names, "hub-a")  # (every takeover binds again: the same hub passes)
    for hub_id in ("hub-b", None):
        with pytest.raises(UsageError, match=f"{cluster_name}' on this NATS server belongs to"):
            await check_name(js, names, hub_id)
    with pytest.raises(UsageError, match="belongs to hub hub-a, and store_url holds hub hub-b"):
        await bind_name(js, names, "hub-b")
    assert await bound_hub(js, names) == "hub-a"


async def test_two_first_cores_racing_bind_one_hub(cluster_name: str, nc: Client) -> None:
    js, names = nc.jetstream(), Names(cluster_name)
    results = await asyncio.gather(*(bind_name(js, names, f"hub-{n}") for n in range(8)),
                                   return_exceptions=True)  # fmt: skip
    won = [n for n, result in enumerate(results) if result is None]
    assert len(won) == 1, results
    assert all(isinstance(r, UsageError) for r in results if r is not None), results
    assert await bound_hub(js, names) == f"hub-{won[0]}"


def test_probe_reads_the_hub_id_and_creates_nothing(postgres_url: str) -> None:
    assert probe(postgres_url) is None
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT to_regclass('commonsky_meta')").fetchone() == (None,)
        db.execute("CREATE TABLE commonsky_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO commonsky_meta VALUES ('hub_id', 'h-123')")
    assert probe(postgres_url) == "h-123"
