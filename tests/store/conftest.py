"""Stores under test: SQLite in a temporary folder, and PostgreSQL in a fresh database on the
server the machine runs (`COMMONSKY_TEST_POSTGRES` names another). These tests need that
server: without it they fail, they do not skip (`.ci/run` starts it)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from commonsky.store import Store
from commonsky.store.postgres import PostgresStore
from commonsky.store.sqlite import SQLiteStore

ADMIN_URL = os.environ.get(
    "COMMONSKY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty database for one test, dropped afterwards."""
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"these tests need PostgreSQL at {ADMIN_URL} (COMMONSKY_TEST_POSTGRES): {exc}")
    name = f"commonsky_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens the store under test (again, for restarts); closes what it opened."""
    opened: list[Store] = []
    if request.param == "sqlite":
        make: Callable[[], Store] = lambda: SQLiteStore(tmp_path)  # noqa: E731
    else:
        url = request.getfixturevalue("postgres_url")
        make = lambda: PostgresStore(url)  # noqa: E731

    def opener() -> Store:
        store = make()
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()
