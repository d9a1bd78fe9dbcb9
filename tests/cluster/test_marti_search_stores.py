"""A file search against both stores (files.py's SQLite, pgfiles.py's PostgreSQL): the rows
each store's SQL selects are exactly those query.py's `matches` accepts, so a match is found
whatever its age; keywords are kept; a store of before keywords opens and reads."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commonsky.marti.files import Files, FileStore, StoredFile
from commonsky.marti.pgfiles import PgFileStore
from commonsky.marti.query import Query, distance_m, matches
from commonsky.marti.search import SEARCH_SCAN_ROWS, search
from commonsky.policy import Party, Policy
from commonsky.settings import Settings
from commonsky.store.postgres import PostgresStore

NOW = 1_900_000_000.0
FIXTURES = [HealthCheck.function_scoped_fixture]


@pytest.fixture(params=["sqlite", "postgres"])
def files(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Files]:
    if request.param == "sqlite":
        opened: Any = FileStore.open(tmp_path, Settings())
        try:
            yield opened
        finally:
            opened.close()
        return
    store = PostgresStore(request.getfixturevalue("postgres_url"))
    try:
        opened = PgFileStore.open(store, tmp_path, Settings())
        try:
            yield opened
        finally:
            opened.close()
    finally:
        store.close()


def emptied(files: Files) -> None:
    if isinstance(files, FileStore):
        files.db.execute("DELETE FROM file")
    else:
        assert isinstance(files, PgFileStore)
        files.store.connection().execute("DELETE FROM commonsky_file")


def add_all(files: Files, rows: list[StoredFile]) -> None:
    """Many rows in one transaction (one commit: the test's setup, not its subject)."""
    if isinstance(files, FileStore):
        files.db.execute("BEGIN")
        for row in rows:
            files.add(row)
        files.db.execute("COMMIT")
    else:
        assert isinstance(files, PgFileStore)
        with files.store.transaction():
            for row in rows:
                files.add(row)


def a_file(n: int, party: str = "USA", **given: Any) -> StoredFile:
    fields: dict[str, Any] = dict(
        sha256=f"{n:064x}", party=party, user="u", creator_uid="c", name=f"f{n}", mime="m",
        size=1, kind="file", categories=("file",), lat=math.nan, lon=math.nan,
        received=NOW + n,
    )  # fmt: skip
    fields.update(given)
    return StoredFile(**fields)


def state_of(files: Files) -> Any:
    policy = Policy([Party(p) for p in ("USA", "JPN")], [])
    port = SimpleNamespace(entitled=lambda item: policy.entitled(item, NOW))
    return SimpleNamespace(port=port, files=files)


def test_an_old_match_behind_more_newer_rows_than_a_search_reads_is_found(files: Files) -> None:
    newer = [a_file(i + 10) for i in range(SEARCH_SCAN_ROWS + 1)]  # plain files, newer
    old = a_file(1, kind="package", name="Sable-Plan.zip")  # the oldest row of all
    kept = a_file(2, kind="package", name="other.zip", tool="private")
    add_all(files, [old, kept, *newer])
    state = state_of(files)
    for query in (Query(keywords=("missionpackage",), tool="public"), Query(name="sable")):
        found = search(state, "USA", query)
        assert [r.sha256 for r in found.rows] == [old.sha256] and found.complete
    # Everything matches: the newest SEARCH_SCAN_ROWS are read, and the answer says it is cut.
    everything = search(state, "USA", Query())
    assert not everything.complete and old.sha256 not in {r.sha256 for r in everything.rows}
    # Another party's file it may not fetch is in no answer, old or new.
    assert search(state, "JPN", Query(name="sable")).rows == []


def test_areas_and_times_select_by_position_and_submission(files: Files) -> None:
    tokyo = a_file(1, lat=35.6812, lon=139.7671)
    osaka = a_file(2, lat=34.7025, lon=135.4959)
    nowhere = a_file(3)
    add_all(files, [tokyo, osaka, nowhere])
    metres = distance_m(35.6812, 139.7671, 34.7025, 135.4959)
    assert 390_000 < metres < 410_000  # (Tokyo–Osaka, ~400 km)

    def selected(query: Query) -> set[str]:
        return {r.sha256 for r in files.matching(query, 100)}

    assert selected(Query(box=(139.0, 35.0, 140.0, 36.0))) == {tokyo.sha256}
    assert selected(Query(box=(-180.0, -90.0, 180.0, 90.0))) == {tokyo.sha256, osaka.sha256}
    assert selected(Query(circle=(139.7671, 35.6812, metres + 10))) == {
        tokyo.sha256,
        osaka.sha256,
    }
    # The store's box around the circle holds Osaka; the distance leaves it out.
    near = [r for r in files.matching(Query(circle=(139.7671, 35.6812, metres - 10)), 100)]
    assert {
        r.sha256 for r in near if matches(Query(circle=(139.7671, 35.6812, metres - 10)), r)
    } == {tokyo.sha256}
    assert selected(Query(start=NOW + 2)) == {osaka.sha256, nowhere.sha256}
    assert selected(Query(start=NOW + 1, stop=NOW + 2)) == {tokyo.sha256}
    assert selected(Query(altitude=True)) == set()


def test_keywords_are_kept_and_a_store_of_before_them_opens(tmp_path: Path) -> None:
    old = tmp_path / "old"
    (old).mkdir()
    db = sqlite3.connect(old / "files.sqlite3")
    db.execute(
        "CREATE TABLE file (sha256 TEXT NOT NULL, party TEXT NOT NULL, user TEXT NOT NULL,"
        " creator_uid TEXT NOT NULL, name TEXT NOT NULL, mime TEXT NOT NULL, size INTEGER"
        " NOT NULL, kind TEXT NOT NULL, categories TEXT NOT NULL, lat REAL, lon REAL,"
        " received REAL NOT NULL, tool TEXT NOT NULL, source TEXT NOT NULL,"
        " PRIMARY KEY (sha256, party))"
    )
    db.execute("INSERT INTO file VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
               ("a" * 64, "USA", "u", "c", "n", "m", 1, "package", "file", None, None, NOW,
                "public", ""))  # fmt: skip
    db.commit()
    db.close()
    files = FileStore.open(old, Settings())
    try:
        assert files.rows("a" * 64)[0].keywords == ()
        files.add(a_file(7, keywords=("Alpha", "b c")))
        assert files.rows(f"{7:064x}")[0].keywords == ("Alpha", "b c")
        assert [r.sha256 for r in files.matching(Query(keywords=("alpha",)), 10)] == [f"{7:064x}"]
        assert len(files.matching(Query(keywords=("missionpack",)), 10)) == 1  # (a package)
    finally:
        files.close()


def test_a_postgres_store_of_before_keywords_opens(postgres_url: str, tmp_path: Path) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE commonsky_file (sha256 TEXT NOT NULL, party TEXT NOT NULL, username"
            " TEXT NOT NULL, creator_uid TEXT NOT NULL, name TEXT NOT NULL, mime TEXT NOT NULL,"
            " size BIGINT NOT NULL, kind TEXT NOT NULL, categories TEXT NOT NULL, lat DOUBLE"
            " PRECISION, lon DOUBLE PRECISION, received DOUBLE PRECISION NOT NULL, tool TEXT"
            " NOT NULL, source TEXT NOT NULL, PRIMARY KEY (sha256, party))"
        )
        conn.execute("INSERT INTO commonsky_file VALUES ('" + "a" * 64 + "', 'USA', 'u', 'c',"
                     " 'n', 'm', 1, 'file', 'file', NULL, NULL, 1, 'public', '')")  # fmt: skip
    store = PostgresStore(postgres_url)
    try:
        files = PgFileStore.open(store, tmp_path, Settings())
        try:
            assert files.rows("a" * 64)[0].keywords == ()
            files.add(a_file(7, keywords=("Alpha",)))
            assert files.rows(f"{7:064x}")[0].keywords == ("Alpha",)
        finally:
            files.close()
    finally:
        store.close()


# ---- the rule: each store's SQL selects exactly what `matches` accepts -----------------

TEXTS = ["", "a", "A", "ab", "É", "é", "pack", "%", "_", "'"]
rows = st.lists(
    st.builds(
        lambda n, party, name, kind, tool, place, at, words: a_file(
            n,
            party,
            name=name,
            kind=kind,
            tool=tool,
            lat=place[0],
            lon=place[1],
            received=NOW + at,
            creator_uid=name.upper(),
            keywords=words,
        ),
        st.integers(0, 40),
        st.sampled_from(["USA", "JPN"]),
        st.sampled_from(["Alpha.zip", "beta", "ÉTÉ", "50%_off", "it's"]),
        st.sampled_from(["package", "file", "quickpic-own", "image"]),
        st.sampled_from(["public", "private"]),
        st.sampled_from(
            [
                (math.nan, math.nan),
                (0.0, 0.0),
                (35.0, 139.0),
                (89.9, -179.9),
                (-45.0, 179.99),
                (0.001, 0.0),
                (10.0, 10.0),
            ]
        ),
        st.sampled_from([0.0, 0.0005, 1.0, 1.0009, 2.5]),
        st.sampled_from([(), ("Alpha",), ("b", "Missions")]),
    ),
    max_size=12,
    unique_by=lambda r: r.sha256,
)
queries = st.builds(
    Query,
    keywords=st.sampled_from([(), ("missionpackage",), ("pack",), ("alpha", "s"), ("é",)]),
    tool=st.sampled_from([None, "public", "private"]),
    name=st.sampled_from(TEXTS),
    mime=st.sampled_from(["", "m", "x"]),
    hash=st.sampled_from(["", "0", "1f", "2"]),
    creator=st.sampled_from(["", "usa::", "jpn::a", "a", "É"]),
    start=st.sampled_from([None, NOW, NOW + 1.0, NOW + 1.0009]),
    stop=st.sampled_from([None, NOW + 1.001, NOW + 3.0]),
    box=st.sampled_from(
        [None, (-180.0, -90.0, 180.0, 90.0), (0.0, 0.0, 10.0, 10.0), (138.0, 34.0, 140.0, 36.0)]
    ),
    circle=st.sampled_from(
        [
            None,
            (0.0, 0.0, 112.0),
            (0.0, 0.0, 111.0),
            (-179.9, 89.9, 5e5),
            (179.99, -45.0, 1.0),
            (10.0, 10.0, 0.0),
            (0.0, 0.0, 2e7),
        ]
    ),
    altitude=st.booleans() | st.just(False),
)


@settings(max_examples=200, suppress_health_check=FIXTURES)
@given(stored=rows, query=queries)
def test_the_store_selects_what_matches_accepts(
    files: Files, stored: list[StoredFile], query: Query
) -> None:
    emptied(files)
    add_all(files, stored)
    selected = files.matching(query, 1000)
    assert {r.sha256 for r in selected if matches(query, r)} == {
        r.sha256 for r in stored if matches(query, r)
    }
    # Only the circle's box selects more than `matches` accepts.
    if query.circle is None:
        assert all(matches(query, r) for r in selected)
    received = [r.received for r in selected]
    assert received == sorted(received, reverse=True)
