"""What ATAK lists of the hub (marti/search.py): `GET /Marti/sync/search`, the files the
caller's party may fetch and nothing else, filtered as TAK Server filters; `GET
/Marti/api/groups/all`, the caller's party as its one group."""

from __future__ import annotations

import asyncio
import math
import re
import tempfile
import threading
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from commonsky.marti import search as search_module
from commonsky.marti.files import FileStore, StoredFile
from commonsky.marti.ingest import Refused, may_fetch
from commonsky.marti.query import PageKey
from commonsky.marti.search import SEARCH_MAX_RESULTS, Query, matches, parse_query, search
from commonsky.model import Category, Disclosure
from commonsky.policy import Agreement, Party, Policy
from commonsky.settings import Settings
from tests.marti.helpers import client_cert, https, marti_hub
from tests.marti.test_files import FILES_US_JP
from tests.marti.uploads import HEADERS, multipart, package, sha

PARTIES3 = ("USA", "JPN", "KOR")
ATAK_LIST = "/Marti/sync/search?keywords=missionpackage&tool=public"
ATAK_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")  # ATAK's parse format


async def upload_package(client: httpx.AsyncClient, name: str, creator: str) -> str:
    data = package(name)
    answer = await client.post(
        f"/Marti/sync/missionupload?hash={sha(data)}&filename={name}.zip&creatorUid={creator}",
        content=multipart(data, f"{name}.zip"),
        headers=HEADERS,
    )
    assert answer.status_code == 200, answer.text
    return sha(data)


async def listed(client: httpx.AsyncClient, query: str = "") -> dict[str, dict[str, Any]]:
    answer = await client.get(f"/Marti/sync/search{query}")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["resultCount"] == len(body["results"])
    return {r["Hash"]: r for r in body["results"]}


def valid_for_atak(result: dict[str, Any]) -> None:
    """What ATAK's MissionPackageQueryResult requires of each result (one invalid result
    and ATAK shows none)."""
    assert result["UID"] and result["Name"] and result["Hash"]
    assert ATAK_TIME.match(result["SubmissionDateTime"]), result["SubmissionDateTime"]
    assert 0 <= int(result["PrimaryKey"]) < 2**31
    assert int(result["Size"]) > 0 and isinstance(result["Keywords"], list)


async def test_search_lists_what_the_party_may_fetch_and_filters_as_atak_asks(
    tmp_path: Path,
) -> None:
    async with marti_hub(tmp_path, [FILES_US_JP]) as (hub, host, ca):
        certs = {p: client_cert(ca, p, f"{p.lower()}-ops", tmp_path / p) for p in PARTIES3}
        async with https(hub, host, ca, "marti", certs["USA"]) as usa:
            usa_pkg = await upload_package(usa, "MP-USA", "ANDROID-usa")
            note = await usa.post(
                "/Marti/sync/upload?name=notes.txt&creatorUid=ITAK-usa",
                content=b"plain text, no package",
                headers={"Content-Type": "text/plain"},
            )
            assert note.status_code == 200, note.text
            usa_note = note.json()["Hash"]
        async with https(hub, host, ca, "marti", certs["JPN"]) as jpn:
            jpn_pkg = await upload_package(jpn, "MP-JPN", "ANDROID-jpn")
        async with https(hub, host, ca, "marti", certs["KOR"]) as kor:
            kor_pkg = await upload_package(kor, "MP-KOR", "ANDROID-kor")
            # KOR: its own only; USA's and JPN's files are in no answer, whatever it asks.
            assert set(await listed(kor)) == {kor_pkg}
            assert set(await listed(kor, "?keywords=missionpackage")) == {kor_pkg}
            assert await listed(kor, f"?hash={usa_pkg}") == {}
            assert await listed(kor, "?name=MP-USA") == {}
        async with https(hub, host, ca, "marti", certs["JPN"]) as jpn:
            everything = await listed(jpn)
            assert set(everything) == {usa_pkg, usa_note, jpn_pkg}
            for result in everything.values():
                valid_for_atak(result)
            theirs = everything[usa_pkg]
            assert theirs["Name"] == "MP-USA.zip" and theirs["Keywords"] == ["missionpackage"]
            assert theirs["CreatorUid"] == "USA::ANDROID-usa"  # (as its b-f-t-r named it)
            assert theirs["SubmissionUser"] == "usa-ops" and theirs["Tool"] == "public"
            assert everything[jpn_pkg]["CreatorUid"] == "ANDROID-jpn"
            assert everything[usa_note]["Keywords"] == []
            # ATAK's own query: packages, public.
            assert set(await listed(jpn, "?keywords=missionpackage&tool=public")) == {
                usa_pkg,
                jpn_pkg,
            }
            assert set(await listed(jpn, "?name=mp-usa")) == {usa_pkg}
            assert set(await listed(jpn, "?FileName=notes")) == {usa_note}
            assert set(await listed(jpn, "?mimetype=text/plain")) == {usa_note}
            assert set(await listed(jpn, f"?uid={jpn_pkg}")) == {jpn_pkg}
            assert await listed(jpn, "?keywords=nothing") == {}
            # An area: a file without a position is outside it (as in TAK Server).
            assert await listed(jpn, "?bbox=1,2,3,4&keywords=missionpackage") == {}
            # Parameters TAK Server takes but the hub does not filter by: accepted.
            assert set(await listed(jpn, "?remarks=x&keywords=missionpackage")) == {
                usa_pkg,
                jpn_pkg,
            }
            # Parameters nobody defined: ignored, as TAK Server ignores them (ATAK's own
            # query, with what a client or proxy may add: a cache-buster, a newer filter).
            extras = "&_=1764680000000&sortBy=name&somethingNew=%00&colour=red"
            assert set(await listed(jpn, f"?keywords=missionpackage&tool=public{extras}")) == {
                usa_pkg,
                jpn_pkg,
            }
            assert set(await listed(jpn, f"?{extras[1:]}")) == set(everything)
            # A known parameter with a bad value: still 400.
            long = await jpn.get("/Marti/sync/search?name=" + "x" * 1025 + extras)
            assert long.status_code == 400
            bad = await jpn.get(f"/Marti/sync/search?keywords=missionpackage&bbox=1,2{extras}")
            assert bad.status_code == 400 and "bbox" in bad.text
        # The holder marks its package private: out of ATAK's public list, still fetchable.
        async with https(hub, host, ca, "marti", certs["USA"]) as usa:
            put = await usa.put(f"/Marti/api/sync/metadata/{usa_pkg}/tool", content=b"private")
            assert put.status_code == 200
        async with https(hub, host, ca, "marti", certs["JPN"]) as jpn:
            assert set(await listed(jpn, ATAK_LIST.removeprefix("/Marti/sync/search"))) == {jpn_pkg}
            assert set(await listed(jpn, "?tool=private")) == {usa_pkg}


async def test_groups_all_is_the_callers_party_alone(tmp_path: Path) -> None:
    async with marti_hub(tmp_path, [FILES_US_JP]) as (hub, host, ca):
        cert = client_cert(ca, "JPN", "jpn-ops", tmp_path / "JPN")
        async with https(hub, host, ca, "marti", cert) as jpn:
            cached = await jpn.get("/Marti/api/groups/all?useCache=true")
            assert cached.status_code == 200, cached.text
            body = cached.json()
            assert body["version"] == "3" and body["nodeId"]
            assert body["type"] == "com.bbn.marti.remote.groups.Group"
            assert {(g["name"], g["direction"]) for g in body["data"]} == {
                ("JPN", "IN"),
                ("JPN", "OUT"),
            }
            for group in body["data"]:  # (ATAK's ServerGroup.isValid)
                assert group["type"] == "SYSTEM" and group["bitpos"] >= 0
                datetime.strptime(group["created"], "%Y-%m-%d")
            assert "USA" not in cached.text and "KOR" not in cached.text
            plain = (await jpn.get("/Marti/api/groups/all")).json()
            assert [(g["name"], g["direction"]) for g in plain["data"]] == [("JPN", "OUT")]
            assert (await jpn.get("/Marti/api/groups/all?useCache=maybe")).status_code == 400


# ---- the rule, as a property ------------------------------------------------------------

PARTIES = ["USA", "JPN", "KOR"]
NOW = 1_000_000.0

stored = st.tuples(
    st.integers(0, 5),  # which bytes (few: several holders of the same bytes)
    st.sampled_from(PARTIES),
    st.sampled_from([("file",), ("imagery",), ("file", "imagery")]),
    st.sampled_from(["package", "file", "image", "quickpic"]),
    st.sampled_from(["public", "private"]),
    st.booleans(),  # located
)
grant = st.tuples(
    st.sampled_from(PARTIES),
    st.sampled_from(PARTIES),
    st.sampled_from([Category.FILE, Category.IMAGERY]),
    st.sampled_from([Disclosure.FULL, Disclosure.GENERALIZED]),
)
queries = st.builds(
    Query,
    keywords=st.sampled_from([(), ("missionpackage",), ("nothing",)]),
    tool=st.sampled_from([None, "public", "private"]),
    name=st.sampled_from(["", "f1", "f"]),
)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(stored, max_size=14), grants=st.lists(grant, max_size=6), query=queries)
@example(  # two other holders grant JPN the same bytes, one public, one private
    rows=[(0, "KOR", ("file",), "package", "private", False),
          (0, "USA", ("file",), "package", "public", False)],
    grants=[("USA", "JPN", Category.FILE, Disclosure.FULL),
            ("KOR", "JPN", Category.FILE, Disclosure.FULL)],
    query=Query(tool="public"),
)  # fmt: skip
def test_search_is_exactly_what_may_fetch_allows(
    rows: list[tuple[int, str, tuple[str, ...], str, str, bool]],
    grants: list[tuple[str, str, Category, Disclosure]],
    query: Query,
) -> None:
    agreements = [
        Agreement(f"a{i}", by, (to,), frozenset({category}), level)
        for i, (by, to, category, level) in enumerate(grants)
        if by != to
    ]
    policy = Policy([Party(p) for p in PARTIES], agreements)
    with tempfile.TemporaryDirectory() as folder:
        files = FileStore.open(Path(folder), Settings())
        try:
            for i, (n, holder, categories, kind, tool, located) in enumerate(rows):
                files.add(
                    StoredFile(f"{n:064x}", holder, "u", "c", f"f{n}", "m", 1, kind, categories,
                               35.0 if located else float("nan"), 40.0, NOW + i, tool)
                )  # fmt: skip
            port = SimpleNamespace(
                entitled=lambda item: policy.entitled(item, NOW),
                providers_to=policy.providers_to,
            )
            state: Any = SimpleNamespace(port=port, files=files)
            for party in PARTIES:
                answer = search(state, party, query)
                assert answer.complete
                found = answer.rows
                expected = set()
                for n in range(6):
                    row = may_fetch(state, party, f"{n:064x}")
                    if row is not None and matches(query, row):
                        expected.add(row.sha256)
                # One result per file, the newest first by the rows of parties that can
                # reach the caller (another's copy, uploaded later, must not move it up).
                reach = {party, *policy.providers_to(party)}
                assert [r.sha256 for r in found] == sorted(
                    {r.sha256 for r in found},
                    key=lambda s: (
                        -max(
                            r.received
                            for r in files.rows(s)
                            if matches(query, r) and r.party in reach
                        )
                    ),
                )
                assert {r.sha256 for r in found} == expected
                assert len(found) <= SEARCH_MAX_RESULTS
        finally:
            files.close()


# ---- keywords, time, bounds, refusals, off the loop --------------------------------------


async def test_keywords_given_at_upload_are_kept_listed_and_searched(tmp_path: Path) -> None:
    async with marti_hub(tmp_path, [FILES_US_JP]) as (hub, host, ca):
        cert = client_cert(ca, "USA", "usa-ops", tmp_path / "USA")
        async with https(hub, host, ca, "marti", cert) as usa:
            note = await usa.post(
                "/Marti/sync/upload?name=n.txt&keywords=Alpha,%20bravo%20,alpha,,",
                content=b"a note", headers={"Content-Type": "text/plain"},
            )  # fmt: skip
            assert note.status_code == 200, note.text
            assert note.json()["Keywords"] == ["Alpha", "bravo"]
            data = package("MP-KW")
            up = await usa.post(
                f"/Marti/sync/missionupload?hash={sha(data)}&filename=kw.zip&keyword=exercise",
                content=multipart(data, "kw.zip"), headers=HEADERS,
            )  # fmt: skip
            assert up.status_code == 200, up.text
            mp = sha(data)
            found = await listed(usa)
            assert found[note.json()["Hash"]]["Keywords"] == ["Alpha", "bravo"]
            assert found[mp]["Keywords"] == ["missionpackage", "exercise"]
            assert set(await listed(usa, "?keywords=ALPHA")) == {note.json()["Hash"]}
            assert set(await listed(usa, "?keywords=exer,nothing")) == {mp}
            assert set(await listed(usa, "?keywords=missionpackage&tool=public")) == {mp}
            many = ",".join(f"k{i}" for i in range(33))
            refused = await usa.post(
                f"/Marti/sync/upload?name=m.txt&keywords={many}",
                content=b"many", headers={"Content-Type": "text/plain"},
            )  # fmt: skip
            assert refused.status_code == 400 and refused.text.count("\n") == 1, refused.text


async def test_time_filters_bound_the_submission_time_to_the_millisecond(
    tmp_path: Path,
) -> None:
    async with marti_hub(tmp_path, [FILES_US_JP]) as (hub, host, ca):
        cert = client_cert(ca, "USA", "usa-ops", tmp_path / "USA")
        async with https(hub, host, ca, "marti", cert) as usa:
            mp = await upload_package(usa, "MP-TIME", "ANDROID-usa")
            shown = (await listed(usa))[mp]["SubmissionDateTime"]  # e.g. 2026-…T…:07.123Z
            moment = datetime.fromisoformat(shown)
            later = (moment + timedelta(milliseconds=1)).isoformat()[:23] + "Z"
            earlier = (moment - timedelta(milliseconds=1)).isoformat()[:23] + "Z"
            assert set(await listed(usa, f"?startTime={shown}&stopTime={shown}")) == {mp}
            assert set(await listed(usa, f"?submissionDateTime={shown}")) == {mp}
            assert set(await listed(usa, f"?startTime={earlier}")) == {mp}
            assert await listed(usa, f"?startTime={later}") == {}
            assert await listed(usa, f"?stopTime={earlier}") == {}
            assert set(await listed(usa, "?startTime=2020-01-01T00:00:00.0Z")) == {mp}
            assert await listed(usa, "?minAltitude=-100") == {}  # (the hub keeps no altitude)


HOSTILE = [
    "startTime=yesterday",
    "stopTime=2025-13-01T00:00:00Z",
    "startTime=2025-02-01T00:00:00Z&stopTime=2025-01-01T00:00:00Z",
    "submissionDateTime=2025-01-01T00:00:00Z&startTime=2025-01-01T00:00:00Z",
    "bbox=1,2,3",
    "bbox=1,2,3,95",
    "bbox=-181,0,0,0",
    "bbox=nan,0,1,1",
    "box=0,0,1,inf",
    "circle=0,0",
    "circle=0,0,-1",
    "circle=0,0,nan",
    "circle=0,91,10",
    "circle=0,0,1e400",
    "bbox=0,0,1,1&circle=0,0,10",
    "minAltitude=high",
    "maxAltitude=nan",
    "minAltitude=10&maxAltitude=5",
    "name=a%00b",
    "keywords=" + ",".join(f"k{i}" for i in range(65)),
    "startTime=" + "9" * 1000,
    "circle=" + "1," * 300 + "1",
    "name=" + "x" * 1025,
]


async def test_malformed_values_are_refused_with_one_line_never_a_500(tmp_path: Path) -> None:
    async with marti_hub(tmp_path, [FILES_US_JP]) as (hub, host, ca):
        cert = client_cert(ca, "JPN", "jpn-ops", tmp_path / "JPN")
        async with https(hub, host, ca, "marti", cert) as jpn:
            for query in HOSTILE:
                answer = await jpn.get(f"/Marti/sync/search?{query}")
                assert answer.status_code == 400, (query, answer.status_code, answer.text)
                assert answer.text.count("\n") == 1 and len(answer.text) < 200, answer.text
            # Well-formed ones at the edges of their ranges are answered.
            for query in ("bbox=-180,-90,180,90", "circle=180,-90,20000000",
                          "startTime=0001-01-01T00:00:00Z", "stopTime=9999-12-31T23:59:59.999Z",
                          "name=%E2%9C%93", "keywords=,,,"):  # fmt: skip
                answer = await jpn.get(f"/Marti/sync/search?{query}")
                assert answer.status_code == 200, (query, answer.text)


def test_unknown_parameters_change_nothing_of_the_query() -> None:
    atak = [("keywords", "missionpackage"), ("tool", "public")]
    extras = [("_", "1764680000000"), ("sortBy", "name"), ("x" * 2000, "\x00" * 2000)]
    assert parse_query(atak + extras) == parse_query(atak)
    assert parse_query(extras) == parse_query([])


@settings(max_examples=300)
@given(
    params=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "bbox",
                    "circle",
                    "startTime",
                    "stopTime",
                    "submissionDateTime",
                    "minAltitude",
                    "maxAltitude",
                    "keywords",
                    "name",
                    "tool",
                    "Box",
                ]
            ),
            st.one_of(
                st.text(max_size=40),
                st.from_regex(r"[-+0-9.,eE naif]{0,30}", fullmatch=True),
                st.from_regex(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z?", fullmatch=True),
            ),
        ),
        max_size=4,
    )
)
def test_any_parameters_give_a_query_or_a_400(params: list[tuple[str, str]]) -> None:
    refusal: Refused | None = None
    try:
        query = parse_query(params)
    except Refused as exc:
        refusal = exc
    if refusal is not None:
        assert refusal.status == 400 and "\n" not in str(refusal) and str(refusal)
        return
    for bound in (query.start, query.stop, *(query.box or ()), *(query.circle or ())):
        assert bound is None or math.isfinite(bound)


async def test_the_search_reads_the_store_off_the_event_loop(tmp_path: Path) -> None:
    async with marti_hub(tmp_path, [FILES_US_JP]) as (hub, host, ca):
        state = hub.server.marti
        assert state is not None
        files = state.files
        readers: list[int] = []
        real = files.matching

        def matching(query: Query, limit: int, after: PageKey | None = None) -> list[StoredFile]:
            readers.append(threading.get_ident())
            return real(query, limit, after)

        files.matching = matching  # type: ignore[method-assign]
        cert = client_cert(ca, "USA", "usa-ops", tmp_path / "USA")
        async with https(hub, host, ca, "marti", cert) as usa:
            mp = await upload_package(usa, "MP-THREAD", "ANDROID-usa")
            assert set(await listed(usa)) == {mp}
        assert readers and threading.get_ident() not in readers


async def test_an_answer_cut_by_its_bound_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_module, "SEARCH_MAX_RESULTS", 2)
    async with marti_hub(tmp_path, [FILES_US_JP]) as (hub, host, ca):
        cert = client_cert(ca, "USA", "usa-ops", tmp_path / "USA")
        async with https(hub, host, ca, "marti", cert) as usa:
            made = [await upload_package(usa, f"MP-{i}", "ANDROID-usa") for i in range(3)]
            cut = await usa.get("/Marti/sync/search?keywords=missionpackage")
            assert cut.status_code == 200 and cut.headers["CommonSky-Search"] == "truncated"
            assert [r["Hash"] for r in cut.json()["results"]] == made[::-1][:2]  # newest first
            whole = await usa.get("/Marti/sync/search?name=MP-0")
            assert "CommonSky-Search" not in whole.headers
            assert [r["Hash"] for r in whole.json()["results"]] == [made[0]]


async def test_a_flood_of_searches_leaves_the_worker_threads_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each search took a thread of the loop's executor, and waited in it: one client's
    flood of them held every thread (4 s measured with 64 searches of 6,000 rows), and the
    hub's other blocking calls — an upload's checks, a download's reads — waited behind
    it. Now at most SEARCHES_AT_ONCE run in threads; the others wait on the loop."""
    from commonsky.marti import api

    held, entered, go = threading.Lock(), [0], threading.Event()

    def search_answer(*args: Any) -> tuple[bytes, bool]:
        with held:
            entered[0] += 1
        go.wait(30)
        return b'{"resultCount":0,"results":[]}', True

    monkeypatch.setattr(api, "search_answer", search_answer)
    async with marti_hub(tmp_path, [FILES_US_JP]) as (hub, host, ca):
        cert = client_cert(ca, "USA", "usa-ops", tmp_path / "USA")
        async with https(hub, host, ca, "marti", cert) as usa:
            flood = [asyncio.create_task(usa.get("/Marti/sync/search")) for _ in range(48)]
            try:
                async with asyncio.timeout(20):
                    while entered[0] < api.SEARCHES_AT_ONCE:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                    await asyncio.to_thread(lambda: None)  # (a thread is free)
                assert entered[0] <= api.SEARCHES_AT_ONCE
            finally:
                go.set()
            answers = await asyncio.gather(*flood)
    assert [a.status_code for a in answers] == [200] * 48 and entered[0] == 48


def test_an_empty_filter_is_no_filter_whichever_it_is() -> None:
    """`tool=` with nothing after it matched no file while `name=` matched every one: an empty
    value filters nothing, for each text filter alike."""
    every = parse_query([])
    for name in ("tool", "name", "filename", "mimeType", "hash", "creatorUid", "keywords"):
        assert parse_query([(name, "")]) == every, name
