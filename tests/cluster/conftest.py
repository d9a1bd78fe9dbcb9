"""Cluster tests run against the NATS JetStream server the machine runs (127.0.0.1:4222;
`COMMONSKY_TEST_NATS` names another). Without it they fail, they do not skip: `.ci/run`
starts `nats-server -js` when it is not running. Each test works under its own names (stream,
bucket, subject prefix), removed afterwards, so tests never see each other's state."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client

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


ADMIN_URL = os.environ.get(
    "COMMONSKY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty database for one test, dropped afterwards (fails without PostgreSQL)."""
    import psycopg

    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"these tests need PostgreSQL at {ADMIN_URL} (COMMONSKY_TEST_POSTGRES): {exc}")
    name = f"commonsky_cluster_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()
