"""WAL checkpoints off the writer's path.

By default SQLite checkpoints inside whichever commit pushes the write-ahead log past 1,000
pages: that commit copies the log into the database and syncs it, tens of milliseconds on the
hub's event loop, every few seconds under load — the worst latencies the hub had. Writers here
turn that off (`PRAGMA wal_autocheckpoint=0`) and this thread checkpoints instead, on its own
connection, in PASSIVE mode: it copies what no reader still needs and never blocks a writer.
Once a checkpoint has caught up, the next writer starts the log over from its beginning, so
the log stays bounded as long as this thread runs.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("commonsky.store")


def without_auto_checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_autocheckpoint=0")


class WalCheckpointer:
    """Checkpoints the WAL database at `path` every `interval_s` seconds until closed."""

    def __init__(self, path: Path, interval_s: float = 0.5) -> None:
        self.path = path
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"checkpoint {path.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=1000")
            while not self._stop.wait(self.interval_s):
                self.checkpoint(conn)
            self.checkpoint(conn)
        finally:
            conn.close()

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # a busy or closing database: try again next time
            log.warning("checkpoint of %s failed: %s", self.path, exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
