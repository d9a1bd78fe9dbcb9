"""A file search against both stores (files.py's SQLite, pgfiles.py's PostgreSQL): the rows
each store's SQL selects are exactly those query.py's `matches` accepts, so a match is found
whatever its age; keywords are kept; a store of before keywords opens and reads."""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commonsky.marti import search as search_module
from commonsky.marti.files import Files, FileStore, StoredFile
from commonsky.marti.pgfiles import PgFileStore
from commonsky.marti.query import Query, distance_m, matches
from commonsky.marti.search import SEARCH_SCAN_ROWS, parse_query, search
from commonsky.model import Category, Disclosure
from commonsky.policy import Agreement, Party, Policy
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
    port = SimpleNamespace(
        entitled=lambda item: policy.entitled(item, NOW), providers_to=policy.providers_to
    )
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
    # Everything matches: more of USA's own files than an answer holds, and it says it is cut.
    everything = search(state, "USA", Query())
    assert not everything.complete and old.sha256 not in {r.sha256 for r in everything.rows}
    # Another party's file it may not fetch is in no answer, old or new.
    assert search(state, "JPN", Query(name="sable")).rows == []


def test_files_the_caller_may_not_fetch_never_cut_its_answer(files: Files) -> None:
    """More of USA's files match than a page holds; JPN may fetch none of them. JPN's own
    old file is found and the answer is whole: it was cut (`truncated`) when the rows read
    reached their bound, so counting matches in time windows told JPN how many files of
    others it may not see there, and its own file behind them was not found."""
    others = [a_file(i + 10) for i in range(SEARCH_SCAN_ROWS + 1)]  # USA's, newer
    own = a_file(1, party="JPN", name="own-plan.zip")  # JPN's, the oldest row of all
    add_all(files, [own, *others])
    found = search(state_of(files), "JPN", Query())
    assert [r.sha256 for r in found.rows] == [own.sha256] and found.complete


def test_a_box_across_the_antimeridian_is_the_area_about_it(files: Files) -> None:
    """`bbox=170,-10,-170,10` (west, south, east, north) is the 20 degrees about the
    antimeridian: it was read as the 340 degrees about Greenwich, the area not asked for."""
    fiji = a_file(1, lat=-8.0, lon=178.4)
    samoa = a_file(2, lat=-8.0, lon=-172.1)
    gulf = a_file(3, lat=0.5, lon=0.5)
    add_all(files, [fiji, samoa, gulf])
    query = parse_query([("bbox", "170,-10,-170,10")])
    selected = [r for r in files.matching(query, 100) if matches(query, r)]
    assert {r.sha256 for r in selected} == {fiji.sha256, samoa.sha256}
    greenwich = parse_query([("bbox", "-170,-10,170,10")])
    assert [r.sha256 for r in files.matching(greenwich, 100)] == [gulf.sha256]


def test_a_full_answer_says_nothing_of_files_the_caller_may_not_fetch(
    files: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer of SEARCH_MAX_RESULTS files is cut only when the caller may fetch one more:
    another party's older file that matched said `truncated` (an oracle: upload that many
    files named like a guess, and learn whether another party has one so named)."""
    monkeypatch.setattr(search_module, "SEARCH_MAX_RESULTS", 3)
    own = [a_file(10 + i, name=f"Op-Sable-{i}") for i in range(3)]
    add_all(files, own)
    state = state_of(files)
    alone = search(state, "USA", Query(name="sable"))
    assert alone.complete and [r.sha256 for r in alone.rows] == [r.sha256 for r in own[::-1]]
    add_all(files, [a_file(1, "JPN", name="sable-secret.zip")])  # older, not USA's to fetch
    same = search(state, "USA", Query(name="sable"))
    assert same.complete and [r.sha256 for r in same.rows] == [r.sha256 for r in own[::-1]]
    add_all(files, [a_file(2, name="sable-mine.zip")])  # one more of its own: cut
    more = search(state, "USA", Query(name="sable"))
    assert not more.complete and [r.sha256 for r in more.rows] == [r.sha256 for r in own[::-1]]


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


OLD_PG_FILE = (
    "CREATE TABLE commonsky_file (sha256 TEXT NOT NULL, party TEXT NOT NULL, username TEXT"
    " NOT NULL, creator_uid TEXT NOT NULL, name TEXT NOT NULL, mime TEXT NOT NULL, size BIGINT"
    " NOT NULL, kind TEXT NOT NULL, categories TEXT NOT NULL, lat DOUBLE PRECISION, lon DOUBLE"
    " PRECISION, received DOUBLE PRECISION NOT NULL, tool TEXT NOT NULL, source TEXT NOT NULL,"
    " PRIMARY KEY (sha256, party))"
)


def test_a_start_does_not_wait_behind_a_reader_of_the_files(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a store that has every column takes no exclusive lock: a restarting core
    neither waits behind a running one's reads nor stalls them (it did, at every start)."""
    store = PostgresStore(postgres_url)
    try:
        PgFileStore.open(store, tmp_path / "a", Settings()).close()
    finally:
        store.close()
    with psycopg.connect(postgres_url) as reader:  # (a transaction reading the files, open)
        reader.execute("SELECT count(*) FROM commonsky_file").fetchone()
        reader.execute("SELECT count(*) FROM commonsky_file_chunk").fetchone()
        monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=2000")
        store = PostgresStore(postgres_url)
        try:
            PgFileStore.open(store, tmp_path / "b", Settings()).close()
        finally:
            store.close()


def opened_at_once(stores: list[PostgresStore], where: Path) -> list[BaseException]:
    """What opening a file store on each of `stores`, all at once, raised."""
    start = threading.Barrier(len(stores))
    failed: list[BaseException] = []

    def open_one(n: int) -> None:
        start.wait()
        try:
            PgFileStore.open(stores[n], where / str(n), Settings()).close()
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=open_one, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failed


@pytest.mark.parametrize("before", ["fresh", "before keywords", "current"])
def test_stores_opened_at_once_all_open(postgres_url: str, tmp_path: Path, before: str) -> None:
    """Cores starting together on one database (a store of before keywords too) all open it
    (two held the files table's lesser lock and each waited for the other's: deadlock)."""
    stores = [PostgresStore(postgres_url) for _ in range(6)]
    try:
        if before != "fresh":
            PgFileStore.open(stores[0], tmp_path / "first", Settings()).close()
        if before == "before keywords":
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                conn.execute("DROP TABLE commonsky_file")
                conn.execute(OLD_PG_FILE)
        for attempt in range(3):
            assert opened_at_once(stores, tmp_path / str(attempt)) == []
        files = PgFileStore.open(stores[0], tmp_path / "last", Settings())
        try:
            files.add(a_file(7, keywords=("Alpha",)))
            assert files.rows(f"{7:064x}")[0].keywords == ("Alpha",)
        finally:
            files.close()
    finally:
        for store in stores:
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
        [
            None,
            (-180.0, -90.0, 180.0, 90.0),
            (0.0, 0.0, 10.0, 10.0),
            (138.0, 34.0, 140.0, 36.0),
            (179.0, -50.0, -179.0, 90.0),  # (across the antimeridian)
        ]
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


def test_pages_list_every_row_once_in_order_ties_and_shared_files_included(
    files: Files,
) -> None:
    """A search reads the store in pages, each after the last row of the one before (its
    received time, sha256, party): rows received at the same second and files held by two
    parties (one sha256, two rows) are listed once each, in the order of one long read."""
    rows = [a_file(n, received=NOW + n // 4) for n in range(1, 30)]  # ties of four
    rows += [a_file(n, party="JPN", received=NOW + n // 4) for n in range(5, 15)]  # shared
    add_all(files, rows)
    whole = files.matching(Query(), 1000)
    assert len(whole) == len(rows)
    paged: list[StoredFile] = []
    after = None
    while page := files.matching(Query(), 7, after):
        paged += page
        after = key(page[-1])
    assert [key(r) for r in paged] == [key(r) for r in whole]  # (lat/lon NaN: never ==)


def key(row: StoredFile) -> tuple[float, str, str]:
    return (row.received, row.sha256, row.party)


def test_a_search_reads_no_file_of_a_party_that_grants_the_caller_nothing(
    files: Files,
) -> None:
    """The store leaves out the files of parties no agreement lets reach the caller: a
    rival's many files are not read, one by one, to be refused by the policy."""
    add_all(files, [a_file(n) for n in range(1, 40)] + [a_file(99, party="JPN")])
    read: list[StoredFile] = []
    real = files.matching

    def matching(query: Query, limit: int, after: Any = None) -> list[StoredFile]:
        read.extend(rows := real(query, limit, after))
        return rows

    files.matching = matching  # type: ignore[method-assign]
    found = search(state_of(files), "JPN", Query())
    assert [r.party for r in found.rows] == ["JPN"] and found.complete
    assert {r.party for r in read} == {"JPN"}
    assert Policy([Party(p) for p in ("USA", "JPN")], []).providers_to("JPN") == frozenset()
    granted = Policy(
        [Party(p) for p in ("USA", "JPN", "KOR")],
        [Agreement("a", "USA", ("JPN", "KOR"), frozenset({Category.FILE}), Disclosure.FULL)],
    )
    assert granted.providers_to("JPN") == {"USA"} and granted.providers_to("USA") == set()
