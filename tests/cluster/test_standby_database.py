"""A core standing by while another serves, given the wrong database — an empty one, one of
another cluster, one of another hub than its folder's — stops at its start with one line
(exit 2), before standing by: it used to stand by and find out only at the takeover it
waited for, perhaps months later (hub/core_state.py `look_at_database`). Nothing is written
to the database it was given."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from commonsky.bench.cluster import Cluster
from commonsky.config import config_from_dict
from commonsky.server import HubServer
from tests.cluster.conftest import ADMIN_URL
from tests.cluster.test_operator_start import WITHIN_S
from tests.cluster.test_shared_state import core_config


@pytest.fixture
def other_database() -> Iterator[str]:
    """A second empty database (the `postgres_url` fixture's is the cluster's)."""
    name = f"commonsky_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def tables(url: str) -> list[str]:
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return sorted(r[0] for r in rows.fetchall())


def standby_config(serving_config: Path, folder: Path, store_url: str | None) -> Path:
    text = re.sub(r'data_dir = "[^"]*"', f'data_dir = "{folder}"', serving_config.read_text())
    if store_url is not None:
        text = re.sub(r'store_url = "[^"]*"', f'store_url = "{store_url}"', text)
    path = folder.parent / f"{folder.name}.toml"
    path.write_text(text)
    return path


async def standby(serving_config: Path, folder: Path, store_url: str | None = None) -> str:
    """A second core of the serving core's config, with its own data folder (and
    `store_url`): its stderr once it exited (status 2, one line, never standing by)."""
    path = standby_config(serving_config, folder, store_url)
    command = [sys.executable, "-m", "commonsky", "serve", "--config", str(path)]
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True,
                                   timeout=WITHIN_S)  # fmt: skip
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("commonsky: error")]
    assert len(errors) == 1, done.stderr
    assert "standing by" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    return errors[0]


async def test_an_empty_database(tmp_path: Path, cluster: Cluster, other_database: str) -> None:
    serving = await cluster.core()
    line = await standby(serving.config, tmp_path / "standby", other_database)
    assert "holds no hub yet (no signing key" in line, line
    assert tables(other_database) == []  # (nothing made there)


async def test_a_database_of_another_cluster(
    tmp_path: Path, cluster: Cluster, other_database: str
) -> None:
    theirs = HubServer(config_from_dict(core_config(tmp_path / "theirs", other_database,
                                                    name="theirs")),
                       init=True, writer="theirs epoch 1")  # fmt: skip
    theirs._release()
    serving = await cluster.core()
    line = await standby(serving.config, tmp_path / "standby", other_database)
    assert "this database is cluster 'theirs''s, not" in line, line
    with psycopg.connect(other_database) as db:  # (its writer never claimed)
        assert db.execute("SELECT writer FROM commonsky_writer").fetchone() == ("theirs epoch 1",)


def write_manifest(folder: Path, hub_id: str) -> None:
    folder.mkdir(mode=0o700)
    (folder / "hub.json").write_text(json.dumps({"hub_id": hub_id}))


async def test_a_folder_of_another_hub(tmp_path: Path, cluster: Cluster) -> None:
    serving = await cluster.core()
    folder = tmp_path / "standby"
    write_manifest(folder, "another-hub-0123")
    line = await standby(serving.config, folder)
    assert "belongs to hub" in line and "this folder to another-hub-0123" in line, line


async def test_the_right_database_stands_by(tmp_path: Path, cluster: Cluster) -> None:
    """The barrier the three above are measured against: the same start with the cluster's
    own database stands by (and would serve)."""
    await cluster.core()
    await cluster.core(wait=False)
