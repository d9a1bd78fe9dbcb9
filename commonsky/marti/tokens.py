"""One-time enrollment tokens: made by `commonsky enroll`, spent by the enrollment listener.

Rules:

- A token belongs to one party and one user name; the certificate it buys has O = the party
  and CN = the user, whatever the CSR asks (pki.sign_csr).
- Only its SHA-256 is kept (`DATA_DIR/enroll.sqlite3`, 0600): the database leaks no usable
  token. The token itself is shown once, by the command that made it.
- It signs one certificate: `redeem` is one conditional UPDATE, so two requests racing with
  the same token (even from two processes) get one certificate between them.
- It expires (`timeout_enroll_token_s`, or `--ttl`). A spent token still opens the two
  read-only profile requests ATAK makes right after enrolling, for `PROFILE_GRACE_S`.
- The command line writes while the hub serves: SQLite's own locking (WAL, busy timeout)
  orders them; the hub's folder lock is not needed for this file.
- A cluster keeps them in PostgreSQL instead (pgtokens.py), so every core honours them:
  `stores.open_tokens` chooses; the listeners see only the `Tokens` calls.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from commonsky.errors import UsageError, positive_seconds

DB_NAME = "enroll.sqlite3"
PROFILE_GRACE_S = 600.0
KEEP_EXPIRED_S = 7 * 86400.0  # spent and expired tokens kept this long for the record
# A user name becomes the certificate's CN and ATAK's login name: keep it to what both take.
USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class Refusal(enum.StrEnum):
    """Why a token does not authenticate (the metric label `enroll_<value>`)."""

    UNKNOWN = "unknown_token"
    WRONG_USER = "wrong_user"
    EXPIRED = "expired_token"
    SPENT = "spent_token"


@dataclass(frozen=True, slots=True)
class Token:
    digest: str
    party: str
    user: str
    expires: float
    used: float | None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Tokens(Protocol):
    """What `commonsky enroll` and the enrollment listener ask of the tokens' store (here
    in SQLite; pgtokens.py for a cluster)."""

    def issue(self, party: str, user: str, ttl_s: float, now: float) -> str: ...

    def check(self, user: str, token: str, now: float, spend: bool) -> Token | Refusal: ...

    def redeem(self, row: Token, now: float) -> bool: ...

    def note_serial(self, row: Token, serial: int) -> None: ...

    def close(self) -> None: ...


def check_issue(user: str, ttl_s: float) -> None:
    """UsageError for a user name or lifetime a token may not have."""
    if not USER_RE.fullmatch(user):
        raise UsageError(
            f"--user {user!r}: use letters, digits and . _ @ - (at most 64), starting "
            "with a letter or digit"
        )
    positive_seconds("--ttl", ttl_s)  # (nan and inf too: a token that never expires is not)


def judge(row: Token | None, user: str, now: float, spend: bool) -> Token | Refusal:
    """The token if `user` may enroll with it now (`spend`: sign a certificate) or read
    its profile (not `spend`: a spent token still may, for PROFILE_GRACE_S)."""
    if row is None:
        return Refusal.UNKNOWN
    if row.user.casefold() != user.casefold():
        return Refusal.WRONG_USER
    if row.used is not None and (spend or now > row.used + PROFILE_GRACE_S):
        return Refusal.SPENT
    if row.used is None and now >= row.expires:
        return Refusal.EXPIRED
    return row


class TokenStore:
    def __init__(self, data_dir: Path) -> None:
        path = Path(data_dir) / DB_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        try:
            self.db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
            if not existed:
                path.chmod(0o600)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS token (digest TEXT PRIMARY KEY, party TEXT NOT NULL,"
                " user TEXT NOT NULL, created REAL NOT NULL, expires REAL NOT NULL, used REAL,"
                " serial TEXT)"
            )
        except sqlite3.Error as exc:
            raise UsageError(f"{path}: cannot open the enrollment tokens ({exc})") from None
        self.path = path

    def close(self) -> None:
        self.db.close()

    def issue(self, party: str, user: str, ttl_s: float, now: float) -> str:
        """A new token for `user` of `party`, valid `ttl_s` seconds from `now`."""
        check_issue(user, ttl_s)
        token = secrets.token_urlsafe(24)  # 192 bits; URL-safe for the tak:// link
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "DELETE FROM token WHERE expires < ?", (now - KEEP_EXPIRED_S,)
            )  # housekeeping
            self.db.execute(
                "INSERT INTO token (digest, party, user, created, expires) VALUES (?,?,?,?,?)",
                (digest(token), party, user, now, now + ttl_s),
            )
        return token

    def _row(self, token: str) -> Token | None:
        row = self.db.execute(
            "SELECT digest, party, user, expires, used FROM token WHERE digest = ?",
            (digest(token),),
        ).fetchone()
        return Token(*row) if row else None

    def check(self, user: str, token: str, now: float, spend: bool) -> Token | Refusal:
        """The token if `user`/`token` may enroll now (`judge`)."""
        return judge(self._row(token), user, now, spend)

    def redeem(self, row: Token, now: float) -> bool:
        """Spend the token (True), or find it spent or expired meanwhile (False)."""
        cursor = self.db.execute(
            "UPDATE token SET used = ? WHERE digest = ? AND used IS NULL AND expires > ?",
            (now, row.digest, now),
        )
        return cursor.rowcount == 1

    def note_serial(self, row: Token, serial: int) -> None:
        self.db.execute(
            "UPDATE token SET serial = ? WHERE digest = ?", (format(serial, "x"), row.digest)
        )
