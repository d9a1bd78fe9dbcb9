"""TAK's HTTP side in a cluster (issue 19): enrollment tokens and Marti files live in the
PostgreSQL database the cores share, not in a core's data folder — so a data package uploaded
to one core downloads, byte for byte, from the next, and a token made with `commonsky enroll
--config` enrolls once on whichever core serves. Hostile uploads store nothing and harm
nothing stored; a core that is no longer the writer stores nothing. (The kill -9 version with
`commonsky serve` processes: test_marti_failover.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from commonsky.errors import WriterFenced
from commonsky.evidence.render import aerial_jpeg
from commonsky.evidence.sign import read_manifest
from commonsky.server import HubServer
from commonsky.store.postgres import PostgresStore
from tests.cluster.marti_core import (
    basic,
    cli,
    core,
    core_config,
    core_data,
    counts,
    csr,
    enroll,
    issue_token,
    marti,
    rows,
    sqlite_files,
    toml,
)
from tests.conftest import RunningHub
from tests.marti.helpers import client_cert, make_ca
from tests.marti.test_hostile_uploads import CASES, LIMITS, chunks
from tests.marti.uploads import HEADERS, multipart, package, sha


def big_package() -> bytes:
    """A data package of more than two chunks (pgfiles.CHUNK), that does not compress."""
    return package("MP-BIG", {"blob.bin": os.urandom(2_500_000)})


async def test_a_package_and_a_token_outlive_their_core(tmp_path: Path, postgres_url: str) -> None:
    ca = make_ca(tmp_path, "127.0.0.1")
    usa = client_cert(ca, "USA", "usa-ops", tmp_path / "usa")
    conf_a = tmp_path / "core-a.toml"
    conf_a.write_text(toml(core_data(tmp_path / "a", postgres_url, ca)))
    data = big_package()
    async with core(core_config(tmp_path / "a", postgres_url, ca), "a epoch 1", init=True) as a:
        async with marti(a, ca, usa) as client:
            up = await client.post(f"/Marti/sync/missionupload?hash={sha(data)}&filename=big.zip",
                                   content=multipart(data, "big.zip"), headers=HEADERS)  # fmt: skip
            assert up.status_code == 200, up.text
        # The operator's token, made against core A's config while A serves.
        token = issue_token(conf_a, "JPN", "jpn-7")
    stored = counts(postgres_url)
    assert stored["commonsky_file"] == 1 and stored["commonsky_file_blob"] == 1
    assert stored["commonsky_file_chunk"] == 3 and stored["commonsky_enroll_token"] == 1
    assert sqlite_files(tmp_path / "a") == []  # (nothing of it in A's folder)
    assert not (tmp_path / "a" / "files").exists()

    async with core(core_config(tmp_path / "b", postgres_url, ca), "b epoch 2") as b:
        async with marti(b, ca, usa) as client:
            head = await client.head(f"/Marti/sync/content?hash={sha(data)}")
            assert head.status_code == 200 and head.content == b""
            assert int(head.headers["content-length"]) == len(data)
            got = await client.get(f"/Marti/sync/content?hash={sha(data)}")
            assert got.status_code == 200
            assert got.content == data  # byte-identical, from the other core
            assert got.headers["etag"] == f'"{sha(data)}"'
            assert 'filename="big.zip"' in got.headers["content-disposition"]
            query = await client.get(f"/Marti/sync/missionquery?hash={sha(data)}")
            assert query.status_code == 200 and query.text.endswith(sha(data))
        async with enroll(b, ca) as client:
            sign = "/Marti/api/tls/signClient/v2"
            sql = "'; UPDATE commonsky_enroll_token SET used = 1; --"
            for user, guess in (("jpn-7", "' OR '1'='1"), ("jpn-7' --", token),
                                ("jpn-7", f"{token}{sql}"), ("jpn-7", token[:-1])):  # fmt: skip
                hostile = await client.post(sign, content=csr("JPN", "jpn-7"),
                                            headers=basic(user, guess))  # fmt: skip
                assert hostile.status_code == 401, (user, guess, hostile.text)
            first = await client.post(sign, content=csr("JPN", "jpn-7"),
                                      headers=basic("jpn-7", token))  # fmt: skip
            assert first.status_code == 200, first.text
            again = await client.post(sign, content=csr("JPN", "jpn-7"),
                                      headers=basic("jpn-7", token))  # fmt: skip
            assert again.status_code == 401 and "already used" in again.text
    assert sqlite_files(tmp_path / "b") == []
    [(used, serial)] = rows(postgres_url, "SELECT used, serial FROM commonsky_enroll_token")
    assert used is not None and serial


async def test_hostile_uploads_store_nothing_and_harm_nothing_stored(
    tmp_path: Path, postgres_url: str
) -> None:
    ca = make_ca(tmp_path, "127.0.0.1")
    usa = client_cert(ca, "USA", "usa-ops", tmp_path / "usa")
    config = core_config(tmp_path / "a", postgres_url, ca, server=LIMITS)
    good = package("MP-GOOD")
    async with core(config, "a epoch 1", init=True) as a, marti(a, ca, usa) as client:
        kept = await client.post(f"/Marti/sync/missionupload?hash={sha(good)}&filename=good.zip",
                                 content=multipart(good, "good.zip"), headers=HEADERS)  # fmt: skip
        assert kept.status_code == 200, kept.text
        before = counts(postgres_url)
        for case, (data, query, headers, status, _) in sorted(CASES.items()):
            body = multipart(data, "evil.zip", close=query != "truncate")
            sent = chunks(body) if query == "stream" else body
            params = query if "=" in query else ""
            answer = await client.post(f"/Marti/sync/missionupload?filename=evil.zip&{params}",
                                       content=sent, headers=headers or HEADERS)  # fmt: skip
            assert answer.status_code == status, (case, answer.text)
            assert counts(postgres_url) == before, case
            assert list((tmp_path / "a" / "tmp").iterdir()) == [], case
        # Names that read like SQL are names: kept as sent, nothing else touched.
        odd = package("MP-ODD")
        name = "x'); DROP TABLE commonsky_file; --.zip"
        creator = "u'; DELETE FROM commonsky_file_blob; --%00"
        answer = await client.post(
            f"/Marti/sync/upload?name={name.replace(';', '%3B')}&creatorUid={creator}",
            content=odd, headers={"Content-Type": "application/zip"},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert answer.json()["Name"] == name
        assert answer.json()["CreatorUid"] == "u'; DELETE FROM commonsky_file_blob; --"
        after = counts(postgres_url)
        assert after["commonsky_file"] == before["commonsky_file"] + 1
        assert after["commonsky_file_blob"] == before["commonsky_file_blob"] + 1
        got = await client.get(f"/Marti/sync/content?hash={sha(good)}")
        assert got.status_code == 200 and got.content == good
    # (wrong hash, crc and truncation are among CASES; each was counted as refused)
    assert {c[4] for c in CASES.values()} >= {"wrong_hash", "bad_zip", "truncated", "too_big"}


async def test_a_core_that_is_no_longer_the_writer_stores_no_file(
    tmp_path: Path, postgres_url: str
) -> None:
    ca = make_ca(tmp_path, "127.0.0.1")
    usa = client_cert(ca, "USA", "usa-ops", tmp_path / "usa")
    data = package("MP-LATE")
    server = HubServer(core_config(tmp_path / "a", postgres_url, ca), init=True,
                       writer="a epoch 1")  # fmt: skip
    await server.start()
    try:
        successor = PostgresStore(postgres_url)
        try:
            assert successor.claim("b epoch 2", 30) == "a epoch 1"
        finally:
            successor.close()
        async with marti(RunningHub(server), ca, usa) as client:
            answer = await client.post(
                f"/Marti/sync/missionupload?hash={sha(data)}&filename=late.zip",
                content=multipart(data, "late.zip"), headers=HEADERS,
            )  # fmt: skip
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"]
    finally:
        with pytest.raises(WriterFenced):  # (its last checkpoint too: a real core exits)
            await server.stop()
        server._release()
    assert counts(postgres_url)["commonsky_file_blob"] == 0
    assert counts(postgres_url)["commonsky_file"] == 0


def test_enroll_against_an_edge_config_without_store_url_says_so(
    tmp_path: Path, postgres_url: str
) -> None:
    ca = make_ca(tmp_path, "127.0.0.1")
    data = core_data(tmp_path / "edge", postgres_url, ca)
    del data["server"]["store_url"]
    data["cluster"]["role"] = "edge"
    config = tmp_path / "edge.toml"
    config.write_text(toml(data))
    made = cli("enroll", "--config", str(config), "--party", "USA", "--user", "usa-1")
    assert made.returncode == 2, made.stdout + made.stderr
    [line] = made.stderr.strip().splitlines()
    assert "store_url" in line and "core's config" in line
    assert not (tmp_path / "edge" / "enroll.sqlite3").exists()


async def test_evidence_signed_on_one_core_is_served_by_the_next(
    tmp_path: Path, postgres_url: str
) -> None:
    ca = make_ca(tmp_path, "127.0.0.1")
    usa = client_cert(ca, "USA", "usa-recce", tmp_path / "usa")
    photo = aerial_jpeg(35.41, 40.12, 1_700_000_000.0)
    async with core(core_config(tmp_path / "a", postgres_url, ca), "a epoch 1", init=True) as a:
        async with marti(a, ca, usa) as client:
            body = multipart(photo, "recce.jpg")
            up = await client.post("/Marti/sync/missionupload?filename=recce.jpg",
                                   content=body, headers=HEADERS)  # fmt: skip
            assert up.status_code == 200, up.text
    made = dict(rows(postgres_url, "SELECT kind, sha256 FROM commonsky_file WHERE party = 'USA'"))
    assert set(made) == {"image", "evidence", "quickpic-own", "quickpic-other"}
    assert made["image"] == sha(photo)
    async with core(core_config(tmp_path / "b", postgres_url, ca), "b epoch 2") as b:
        async with marti(b, ca, usa) as client:
            got = {}
            for kind, digest in made.items():
                answer = await client.get(f"/Marti/sync/content?hash={digest}")
                assert answer.status_code == 200, (kind, answer.text)
                assert sha(answer.content) == digest  # (every byte, from the other core)
                got[kind] = answer.content
    assert got["image"] == photo
    report = read_manifest(got["evidence"], "image/jpeg")
    assert report is not None and report.assertion is not None
    assert report.assertion["position"] == {"lat": 35.41, "lon": 40.12}
