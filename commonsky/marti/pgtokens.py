"""A cluster's enrolment tokens in PostgreSQL (issue 19): the rules of tokens.py, the rows in
`commonsky_enroll_token` of the database of `store_url`, so a token `commonsky enroll
--config` makes is honoured by whichever core serves, before or after a failover.

- Its own connection (autocommit): the command line writes here with no core running, and
  a core's `check`/`redeem` are single statements that need no writer (tokens are not the
  ledger's: the one writer guards what must not fork, a token is spent by its own row).
- One-time across cores: `redeem` is one conditional UPDATE (`used IS NULL AND expires >
  now`), so two cores, or two requests, racing with one token get one certificate between
  them — PostgreSQL's row lock orders them and the second finds `used` set.
- A lost connection is tried again at the next call (`StoreUnavailable` meanwhile: 503).
"""

from __future__ import annotations

import secrets
from typing import Any

import psycopg

from commonsky.errors import StoreUnavailable, UsageError
from commonsky.marti.tokens import KEEP_EXPIRED_S, Refusal, Token, check_issue, digest, judge
from commonsky.store.base import redacted

SCHEMA = """
CREATE TABLE IF NOT EXISTS commonsky_enroll_token (
    digest TEXT PRIMARY KEY,
    party TEXT NOT NULL,
    username TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    used DOUBLE PRECISION,
    serial TEXT
);
"""

#: A token row as tokens.py's SQLite table holds it (the move of adopt.py).
Row = tuple[str, str, str, float, float, float | None, str | None]


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PgTokenStore:
    """tokens.TokenStore's calls on the rows of `commonsky_enroll_token`."""

    def __init__(self, url: str, connect_timeout_s: float = 5.0) -> None:
        self.url = url
        self.where = f"store_url {redacted(url)}"
        self._timeout = max(1, round(connect_timeout_s))
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=self._timeout)
            with self._db.transaction():
                self._db.execute(SCHEMA)
        except psycopg.Error as exc:
            raise UsageError(f"{self.where}: cannot open the enrolment tokens: "
                             f"{first_line(exc)}") from None  # fmt: skip

    def close(self) -> None:
        self._db.close()

    def _run(self, sql: str, args: tuple[Any, ...]) -> psycopg.Cursor[Any]:
        if self._db.broken:
            try:
                self._db = psycopg.connect(self.url, autocommit=True, connect_timeout=self._timeout)
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"PostgreSQL unreachable: {first_line(exc)}") from None
        try:
            return self._db.execute(sql, args)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL: {first_line(exc)}") from None

    def issue(self, party: str, user: str, ttl_s: float, now: float) -> str:
        """A new token for `user` of `party`, valid `ttl_s` seconds from `now`."""
        check_issue(user, ttl_s)
        token = secrets.token_urlsafe(24)  # 192 bits; URL-safe for the tak:// link
        with self._db.transaction():
            self._run(
                "DELETE FROM commonsky_enroll_token WHERE expires < %s", (now - KEEP_EXPIRED_S,)
            )  # housekeeping
            self._run(
                "INSERT INTO commonsky_enroll_token (digest, party, username, created, expires) "
                "VALUES (%s, %s, %s, %s, %s)",
                (digest(token), party, user, now, now + ttl_s),
            )
        return token

    def check(self, user: str, token: str, now: float, spend: bool) -> Token | Refusal:
        rows = self._run(
            "SELECT digest, party, username, expires, used FROM commonsky_enroll_token "
            "WHERE digest = %s",
            (digest(token),),
        ).fetchall()
        return judge(Token(*rows[0]) if rows else None, user, now, spend)

    def redeem(self, row: Token, now: float) -> bool:
        cursor = self._run(
            "UPDATE commonsky_enroll_token SET used = %s "
            "WHERE digest = %s AND used IS NULL AND expires > %s",
            (now, row.digest, now),
        )
        return cursor.rowcount == 1

    def note_serial(self, row: Token, serial: int) -> None:
        self._run(
            "UPDATE commonsky_enroll_token SET serial = %s WHERE digest = %s",
            (format(serial, "x"), row.digest),
        )

    # ---- the move of a folder's tokens (adopt.py) -----------------------------------------

    def known(self, digests: list[str]) -> set[str]:
        rows = self._run(
            "SELECT digest FROM commonsky_enroll_token WHERE digest = ANY(%s)", (digests,)
        ).fetchall()
        return {str(r[0]) for r in rows}

    def insert_rows(self, rows: list[Row]) -> int:
        """Tokens as they were (spent, expiry, serial); one already here is left as it is
        (this database may have spent it since). How many were new."""
        added = 0
        with self._db.transaction():
            for row in rows:
                cursor = self._run(
                    "INSERT INTO commonsky_enroll_token (digest, party, username, created, "
                    "expires, used, serial) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (digest) DO NOTHING",
                    row,
                )
                added += cursor.rowcount
        return added
