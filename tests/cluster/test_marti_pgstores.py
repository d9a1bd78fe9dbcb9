"""The PostgreSQL stores of a cluster's tokens and files (marti/pgtokens.py, pgfiles.py):
the same answers as one process's SQLite ones, one-time tokens one-time across cores, and
bytes stored whole and checked or not at all."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commonsky.marti.files import FileStore, StoredFile
from commonsky.marti.pgfiles import CHUNK, BadContent, PgFileStore
from commonsky.marti.pgtokens import PgTokenStore
from commonsky.marti.query import Query
from commonsky.marti.tokens import Refusal, TokenStore
from commonsky.settings import Settings
from commonsky.store.postgres import PostgresStore
from tests.cluster.marti_core import counts

NOW = 1_900_000_000.0
FIXTURES = [HealthCheck.function_scoped_fixture]  # (the database is emptied where it matters)


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:
    opened = PostgresStore(postgres_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def files(store: PostgresStore, tmp_path: Path) -> Iterator[PgFileStore]:
    opened = PgFileStore.open(store, tmp_path, Settings())
    try:
        yield opened
    finally:
        opened.close()


def test_two_cores_racing_one_token_get_one_certificate(postgres_url: str) -> None:
    maker = PgTokenStore(postgres_url)
    cores = [PgTokenStore(postgres_url) for _ in range(6)]
    try:
        token = maker.issue("USA", "usa-1", 600, NOW)
        rows = [c.check("usa-1", token, NOW + 1, spend=True) for c in cores]
        assert all(not isinstance(r, Refusal) for r in rows)
        start = threading.Barrier(len(cores))
        won: list[bool] = []

        def spend(core: PgTokenStore, row: object) -> None:
            start.wait()
            won.append(core.redeem(row, NOW + 2))  # type: ignore[arg-type]

        threads = [
            threading.Thread(target=spend, args=pair) for pair in zip(cores, rows, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(won) == [False] * (len(cores) - 1) + [True]
        assert cores[0].check("usa-1", token, NOW + 3, spend=True) is Refusal.SPENT
    finally:
        for opened in (maker, *cores):
            opened.close()


# One step: (what, user index, token index, seconds later). The same steps against both
# stores must get the same answers: the database's tokens follow tokens.py's rules exactly.
STEPS = st.lists(
    st.tuples(st.sampled_from(["issue", "check", "profile", "redeem"]),
              st.integers(0, 2), st.integers(0, 3), st.floats(0, 400)),
    max_size=25,
)  # fmt: skip


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURES)
@given(steps=STEPS)
def test_the_database_tokens_answer_as_the_folder_tokens(
    steps: list[tuple[str, int, int, float]],
    postgres_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    sqlite = TokenStore(tmp_path_factory.mktemp("tokens"))
    pg = PgTokenStore(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("DELETE FROM commonsky_enroll_token")
    try:
        now = NOW
        issued: list[tuple[str, str, str]] = []  # (user, sqlite token, pg token)
        users = ["usa-1", "USA-1", "jpn-2"]
        for what, user_i, token_i, later in steps:
            now += later
            user = users[user_i]
            if what == "issue":
                issued.append(
                    (user, sqlite.issue("USA", user, 300, now), pg.issue("USA", user, 300, now))
                )
                continue
            if not issued:
                continue
            _, mine, theirs = issued[token_i % len(issued)]
            a = sqlite.check(user, mine, now, spend=what != "profile")
            b = pg.check(user, theirs, now, spend=what != "profile")
            assert (a if isinstance(a, Refusal) else "ok") == (
                b if isinstance(b, Refusal) else "ok"
            )
            if what == "redeem" and not isinstance(a, Refusal) and not isinstance(b, Refusal):
                assert sqlite.redeem(a, now) == pg.redeem(b, now)
    finally:
        sqlite.close()
        pg.close()


def row(sha: str, party: str = "USA", name: str = "f.zip") -> StoredFile:
    return StoredFile(sha, party, "usa-1", "ANDROID-1", name, "application/zip", 1, "package",
                      ("file",), float("nan"), 40.0, NOW)  # fmt: skip


async def test_bytes_round_trip_in_chunks(files: PgFileStore, tmp_path: Path) -> None:
    for size in (1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 7):
        data = os.urandom(size)
        digest = hashlib.sha256(data).hexdigest()
        with files.temporary() as temp:
            temp.write_bytes(data)
            files.put(temp, digest)
        content = files.content(digest)
        assert content is not None and content.size == size and content.stream is not None
        streamed = b"".join([chunk async for chunk in content.stream()])
        assert streamed == data == files.read_bytes(digest)
    assert files.content("0" * 64) is None and files.read_bytes("0" * 64) is None
    assert list((tmp_path / "tmp").iterdir()) == []  # (temporary() removed each)


def test_bytes_that_are_not_their_name_are_not_stored(
    files: PgFileStore, postgres_url: str
) -> None:
    data = os.urandom(CHUNK + 10)
    with files.temporary() as temp:
        temp.write_bytes(data)
        with pytest.raises(BadContent, match="not stored"):
            files.put(temp, hashlib.sha256(b"something else").hexdigest())
        truncated = hashlib.sha256(data).hexdigest()
        temp.write_bytes(data[:-1])  # (the bytes shortened after they were hashed)
        with pytest.raises(BadContent):
            files.put(temp, truncated)
    assert counts(postgres_url)["commonsky_file_blob"] == 0
    assert counts(postgres_url)["commonsky_file_chunk"] == 0


def test_the_same_bytes_stored_at_once_are_kept_once(files: PgFileStore, postgres_url: str) -> None:
    data = os.urandom(3 * CHUNK)
    start = threading.Barrier(4)
    failed: list[BaseException] = []

    def put() -> None:
        start.wait()
        try:
            files.put_bytes(data)
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=put) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failed == []
    assert counts(postgres_url)["commonsky_file_blob"] == 1
    assert counts(postgres_url)["commonsky_file_chunk"] == 3
    assert files.read_bytes(hashlib.sha256(data).hexdigest()) == data


@settings(max_examples=30, deadline=None, suppress_health_check=FIXTURES)
@given(
    name=st.text(max_size=60), creator=st.text(max_size=60), party=st.sampled_from(["USA", "JPN"])
)
def test_any_name_is_kept_as_a_name(
    files: PgFileStore, name: str, creator: str, party: str
) -> None:
    """Whatever text a row carries (quotes, SQL, NUL) is stored as data: read back as it was
    (NUL, which PostgreSQL text cannot hold, as U+FFFD), and the tables stay whole."""
    digest = hashlib.sha256(repr((name, creator)).encode()).hexdigest()  # (a row of its own)
    stored = StoredFile(digest, party, "u", creator, name, "m", 1, "file", ("file",),
                        35.0, float("nan"), NOW)  # fmt: skip
    assert files.add(stored)
    [back] = [r for r in files.rows(digest) if r.party == party]
    assert back.name == name.replace("\x00", "\ufffd")
    assert back.creator_uid == creator.replace("\x00", "\ufffd")
    assert back.lat == 35.0 and back.lon != back.lon  # (NaN kept as no position)


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURES)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 4), st.sampled_from(["USA", "JPN", "KOR"]), st.integers(0, 3)),
        max_size=12,
    ),
    limit=st.integers(1, 15),
)
def test_the_newest_rows_are_the_folder_stores(
    files: PgFileStore,
    postgres_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[int, str, int]],
    limit: int,
) -> None:
    """`matching` (a search's candidates, marti/search.py): the same rows, in the same order,
    as one process's SQLite store holding the same rows (equal times included)."""
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("DELETE FROM commonsky_file")
    folder = FileStore.open(tmp_path_factory.mktemp("files"), Settings())
    try:
        for n, party, later in rows:
            stored = StoredFile(f"{n:064x}", party, "u", "c", f"f{n}", "m", 1, "package",
                                ("file",), 35.0, 40.0, NOW + later)  # fmt: skip
            assert files.add(stored) == folder.add(stored)
        assert files.matching(Query(), limit) == folder.matching(Query(), limit)
    finally:
        folder.close()
