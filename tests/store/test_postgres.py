"""What only the PostgreSQL store has to show: clear errors for a bad URL or an unreachable
server (with the password kept out of them), a refused row inside a block, reconnecting
after the server drops the connection, paged replay, and a hub serving from it."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import pytest

from commonsky.config import config_from_dict
from commonsky.errors import StoreUnavailable, UsageError
from commonsky.store import postgres
from commonsky.store.postgres import PostgresStore
from tests.conftest import base_config, running_hub, token_of
from tests.store.conftest import ADMIN_URL
from tests.store.test_stores import item


def test_a_store_url_that_is_not_postgresql_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="store_url must be empty or a postgresql:// URL"):
        config_from_dict({"server": {"data_dir": str(tmp_path), "store_url": "mysql://x"}})


def test_an_unreachable_server_is_one_clear_line_without_the_password() -> None:
    with pytest.raises(UsageError) as caught:
        PostgresStore("postgresql://hub:s3cret@127.0.0.1:1/commonsky", connect_timeout_s=2)
    message = str(caught.value)
    assert message.startswith("store_url: cannot use PostgreSQL at postgresql://hub:***@")
    assert "s3cret" not in message and "\n" not in message


def test_a_refused_row_in_a_block_takes_nothing_else_with_it(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    try:
        # A row the server refuses (here a constraint added for the test) aborts a
        # PostgreSQL transaction; the store's savepoint keeps the rest of the block.
        store._conn.execute("ALTER TABLE commonsky_items ADD CHECK (uid <> 'bad'::bytea)")
        with store.transaction():
            store.append(item("good-1"))
            with pytest.raises(psycopg.errors.CheckViolation):
                store.append(item("bad"))
            with pytest.raises(psycopg.DataError):
                store.append(item("bad", party="NUL\x00PARTY"))  # refused before it is sent
            store.append(item("good-2"))
        assert [i.uid for i in store.since(0)] == ["good-1", "good-2"]
    finally:
        store.close()


def test_the_store_reconnects_after_the_server_drops_it(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    try:
        store.append(item("before"))
        pid = store._conn.info.backend_pid
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreUnavailable, match="connection lost"):
            store.append(item("lost"))  # not stored, so the hub relays nothing of it
        store.append(item("after"))
        assert [i.uid for i in store.since(0)] == ["before", "after"]
    finally:
        store.close()


def test_replay_reads_in_pages(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "_PAGE", 7)
    store = PostgresStore(postgres_url)
    try:
        with store.transaction():
            store.append_many([item(f"u{n}") for n in range(30)])
        assert [i.seq for i in store.since(0)] == list(range(1, 31))
        assert [i.seq for i in store.since(21)] == list(range(22, 31))
    finally:
        store.close()


async def test_a_hub_keeps_its_items_in_postgresql_across_a_restart(
    tmp_path: Path, postgres_url: str
) -> None:
    agreements = [{"name": "areas", "from": "USA", "to": ["RUS"], "categories": ["airspace"]}]
    config = base_config(tmp_path, agreements, server={"store_url": postgres_url})
    ring = [[38, 34], [39, 34], [39, 35], [38, 35], [38, 34]]
    area = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "uid": "PG-1",
            "floor_m": 0,
            "ceiling_m": 9000,
            "start": "2020-01-01T00:00:00Z",
            "end": "2099-01-01T00:00:00Z",
        },
    }
    async with running_hub(config) as hub:
        headers = {"Authorization": f"Bearer {token_of('USA')}"}
        async with httpx.AsyncClient(base_url=hub.http, headers=headers) as usa:
            assert (await usa.post("/api/airspace", json=area)).status_code == 201
    with psycopg.connect(postgres_url) as conn:
        (rows,) = conn.execute("SELECT count(*) FROM commonsky_items").fetchone() or (0,)
    assert rows == 1
    async with running_hub(config) as hub:  # a new process would do the same: replay
        headers = {"Authorization": f"Bearer {token_of('RUS')}"}
        async with httpx.AsyncClient(base_url=hub.http, headers=headers) as rus:
            items = (await rus.get("/api/items", params={"category": "airspace"})).json()
    assert [i["uid"] for i in items] == ["USA::PG-1"]


def test_the_store_benchmark_runs_on_both(postgres_url: str, capsys: pytest.CaptureFixture) -> None:
    # Figures are the benchmark's business; this only checks it measures both stores.
    from commonsky.bench.store import bench

    bench(store_url=postgres_url, rounds=3)
    out = capsys.readouterr().out
    assert "sqlite: round committed" in out and "postgresql: round committed" in out
    assert out.count("replay of 60 items") == 2


async def test_a_hub_whose_database_drops_refuses_writes_clearly_then_recovers(
    tmp_path: Path, postgres_url: str
) -> None:
    agreements = [{"name": "hl", "from": "USA", "to": ["RUS"], "categories": ["hotline"]}]
    config = base_config(tmp_path, agreements, server={"store_url": postgres_url})

    def drop_the_hub_connection(hub) -> None:
        pid = hub.server.store._conn.info.backend_pid
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    async with running_hub(config) as hub:
        headers = {"Authorization": f"Bearer {token_of('USA')}"}
        async with httpx.AsyncClient(base_url=hub.http, headers=headers) as usa:
            drop_the_hub_connection(hub)
            lost = await usa.post("/api/hotline/send", json={"to": "RUS", "text": "one"})
            assert lost.status_code == 503 and "not stored" in lost.json()["error"]
            ok = await usa.post("/api/hotline/send", json={"to": "RUS", "text": "two"})
            assert ok.status_code == 201, ok.text  # reconnected
            # Over TAK the client is disconnected, so it sends again when it comes back.
            tak = await hub.connect("USA")
            drop_the_hub_connection(hub)
            tak.send(
                b'<event version="2.0" uid="GeoChat.x" type="b-t-f" time="2030-01-01T00:00:00Z"'
                b' start="2030-01-01T00:00:00Z" stale="2030-01-01T01:00:00Z" how="h-e">'
                b'<point lat="0" lon="0" hae="0" ce="1" le="1"/><detail>'
                b'<marti><dest party="RUS"/></marti><remarks>three</remarks></detail></event>'
            )
            with pytest.raises(ConnectionError):
                await tak.collect(2.0)
        texts = [i.event.detail for i in hub.server.store.since(0)]
    assert any("two" in t for t in texts) and not any("one" in t or "three" in t for t in texts)


def test_while_the_server_is_away_writes_fail_fast_between_spaced_reconnects(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each reconnect may block the event loop up to the connect timeout: after a failed one,
    # writes are refused at once (StoreUnavailable) until the next attempt is due, and the
    # attempts are spaced ever wider. The server's absence is the library's connect failing.
    now = [1000.0]
    store = PostgresStore(postgres_url, clock=lambda: now[0])
    real_connect = psycopg.connect
    attempts: list[float] = []
    away = [True]

    def connect(*args: object, **kwargs: object) -> psycopg.Connection:
        attempts.append(now[0])
        if away[0]:
            raise psycopg.OperationalError("connection refused")
        return real_connect(*args, **kwargs)  # type: ignore[arg-type]

    try:
        store.append(item("before"))
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (store._conn.info.backend_pid,))
        monkeypatch.setattr(postgres.psycopg, "connect", connect)
        with pytest.raises(StoreUnavailable, match="connection lost"):
            store.append(item("lost"))
        with pytest.raises(StoreUnavailable, match="unreachable: connection refused"):
            store.append(item("first attempt"))  # tried at once
        assert attempts == [1000.0]
        for _ in range(3):
            with pytest.raises(StoreUnavailable, match=r"next attempt in 0\.5 s"):
                store.append(item("meanwhile"))
        assert attempts == [1000.0]  # no attempt before it is due
        now[0] += 0.5
        with pytest.raises(StoreUnavailable, match="unreachable"):
            store.append(item("second attempt"))
        now[0] += 0.9
        with pytest.raises(StoreUnavailable, match=r"next attempt in 0\.1 s"):
            store.append(item("meanwhile"))  # the wait doubled: 1 s
        assert attempts == [1000.0, 1000.5]
        away[0] = False
        now[0] += 0.1
        store.append(item("after"))  # the server is back: the attempt succeeds
        assert attempts == [1000.0, 1000.5, 1001.5]
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (store._conn.info.backend_pid,))
        with pytest.raises(StoreUnavailable, match="connection lost"):
            store.append(item("lost again"))
        store.append(item("at once"))  # a success reset the wait: the next drop retries at once
        assert [i.uid for i in store.since(0)] == ["before", "after", "at once"]
    finally:
        store.close()
