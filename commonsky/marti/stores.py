"""Where a hub keeps its enrollment tokens and Marti files: the data folder for one process
(tokens.py, files.py), the database of `store_url` for a cluster's cores (pgtokens.py,
pgfiles.py). The one place that chooses; the rest of marti/ sees `Tokens` and `Files`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from commonsky.errors import UsageError
from commonsky.marti.files import Files, FileStore
from commonsky.marti.tokens import Tokens, TokenStore
from commonsky.settings import Settings

if TYPE_CHECKING:
    from commonsky.config import HubConfig
    from commonsky.store.postgres import PostgresStore


def open_tokens(data_dir: Path, shared_url: str | None) -> Tokens:
    """The hub's tokens: a cluster's in the database of `shared_url` (every core honours
    them), else the data folder's `enroll.sqlite3`."""
    if shared_url:
        from commonsky.marti.pgtokens import PgTokenStore

        return PgTokenStore(shared_url)
    return TokenStore(data_dir)


def config_tokens(config: HubConfig) -> Tokens:
    """The tokens of the hub `config` describes (`commonsky enroll --config`): a cluster's
    need its `store_url` (a core's config); one process's are in its data folder."""
    url = str(config.settings.store_url)
    if config.cluster is not None and not url:
        raise UsageError(
            f"{config.source}: a cluster keeps its enrollment tokens in PostgreSQL, and this "
            "config has no [server] store_url; give a core's config"
        )
    return open_tokens(config.data_dir, url if config.cluster is not None else None)


def open_files(data_dir: Path, settings: Settings, shared: PostgresStore | None) -> Files:
    """The hub's file store: a cluster's in the database of `shared` (the store), else
    the data folder's."""
    if shared is not None:
        from commonsky.marti.pgfiles import PgFileStore

        return PgFileStore.open(shared, data_dir, settings)
    return FileStore.open(data_dir, settings)
