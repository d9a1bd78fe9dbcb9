"""Persistence behind one small protocol: SQLite by default, PostgreSQL for scale-out."""

from __future__ import annotations

from pathlib import Path

from commonsky.errors import UsageError
from commonsky.store.base import HotlineRow, NestedBlocks, Store, load_rows, redacted

__all__ = ["HotlineRow", "NestedBlocks", "Store", "load_rows", "open_store", "redacted"]


def open_store(url: str, data_dir: Path) -> Store:
    """The store `store_url` names: empty for SQLite in `data_dir`, else PostgreSQL."""
    if url:
        try:
            from commonsky.store.postgres import PostgresStore  # psycopg only when asked for
        except ImportError as exc:
            raise UsageError(
                f"store_url names PostgreSQL, which needs the postgres extra ({exc}): "
                "pip install 'commonsky[postgres]'"
            ) from None
        return PostgresStore(url)
    from commonsky.store.sqlite import SQLiteStore

    return SQLiteStore(data_dir)
