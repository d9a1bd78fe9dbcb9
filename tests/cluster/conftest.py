"""Cluster tests run against the NATS JetStream server the machine runs (127.0.0.1:4222;
`COMMONSKY_TEST_NATS` names another). Without it they fail, they do not skip: `.ci/run`
starts `nats-server -js` when it is not running. Each test works under its own names (stream,
bucket, subject prefix), removed afterwards, so tests never see each other's state."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from commonsky.bench.cluster import Cluster

# The store tests' fixture (a fresh database per test, dropped afterwards), used here too.
from tests.store.conftest import ADMIN_URL as ADMIN_URL
from tests.store.conftest import postgres_url as postgres_url

NATS_URL = os.environ.get("COMMONSKY_TEST_NATS", "nats://127.0.0.1:4222")


async def connect() -> Client:
    try:
        return await nats.connect(NATS_URL, connect_timeout=3, max_reconnect_attempts=0)
    except Exception as exc:
        pytest.fail(f"these tests need NATS with JetStream at {NATS_URL} (COMMONSKY_TEST_NATS): "
                    f"{type(exc).__name__}: {exc}")  # fmt: skip


@pytest.fixture
def cluster_name() -> str:
    """A cluster name (prefix of streams, buckets, subjects) no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def nc(cluster_name: str) -> AsyncIterator[Client]:
    client = await connect()
    try:
        yield client
    finally:
        js = client.jetstream()
        for info in await js.streams_info():
            if cluster_name in info.config.name:
                await js.delete_stream(info.config.name)
        await client.close()


@pytest.fixture
async def cluster(
    tmp_path: Path, cluster_name: str, postgres_url: str, nc: Client
) -> AsyncIterator[Cluster]:
    """A cluster of this test's name and database; its processes stopped afterwards."""
    running = Cluster(tmp_path, cluster_name, NATS_URL, postgres_url)
    try:
        yield running
    finally:
        running.stop()
