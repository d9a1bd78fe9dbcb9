"""Issue 13, class 1: whatever is in the store, the hub starts. Rows planted behind its back
(no validation ever saw them) are quarantined — logged, counted, listed in
DATA_DIR/quarantine.jsonl, left out of the picture and of replays, kept in the store."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import httpx
import msgspec
import pytest

from commonsky.ledger.agreement import disagreements
from commonsky.ledger.entry import EntryFields
from commonsky.ledger.log import Ledger
from commonsky.model import Category, CotEvent, Item, Point
from commonsky.protocol.bounds import MAX_TIME_S
from commonsky.store import HotlineRow
from commonsky.store.sqlite import SQLiteStore
from tests.conftest import token_of
from tests.integration.test_tak_tcp import HOTLINE, metric


def hotline_item(uid: str, detail: str, now: float, stale: float | None = None) -> Item:
    event = CotEvent(
        uid,
        "b-t-f",
        now,
        now,
        now + 86400 if stale is None else stale,
        "h-g-i-g-o",
        Point(0.0, 0.0),
        detail + '<marti><dest party="RUS"/></marti>',
        dest_parties=("RUS",),
    )
    return Item("USA", "api", Category.HOTLINE, event, received=now)


def plant(data_dir: Path, now: float) -> dict[str, int]:
    """Rows written straight into the store, as a disk error or a hand would."""
    store = SQLiteStore(data_dir)
    seqs = {
        "nul": store.append(hotline_item("p-nul", "<remarks>a\x00b</remarks>", now)),
        "unclosed": store.append(hotline_item("p-unclosed", "<remarks>oops", now)),
        "year10000": store.append(
            hotline_item("p-year", "<remarks>late</remarks>", now, stale=MAX_TIME_S + 86340.0)
        ),
        # Stale, so not in the picture: only the hotline desk's indexing of the store reads it.
        "stale-nul": store.append(hotline_item("p-old", "<remarks>\x01</remarks>", 1e9, 1.5e9)),
    }
    # A hotline message's own state row (the desk's, not an item) that does not decode.
    row = HotlineRow(90, "USA", "p-row", ("USA", "RUS"), True, now + 86400, b"\xc1 no state")
    store.put_hotline(row)
    store.close()
    db = sqlite3.connect(data_dir / "hub.sqlite3")
    with db:
        cursor = db.execute(
            "INSERT INTO items (party, uid, category, stale, body) VALUES (?,?,?,?,?)",
            ("USA", "p-garbage", "hotline", now + 86400, b"\xc1 not an item"),
        )
        # As a store from before hotline rows: the desk indexes every stored item again.
        db.execute("DELETE FROM meta WHERE key = 'hotline_index_v1'")
    assert cursor.lastrowid is not None
    seqs["garbage"] = cursor.lastrowid
    db.close()
    with Ledger.open(data_dir) as ledger:  # an entry recording an item nobody stored
        ledger.append(
            EntryFields("item", round(now * 1e6), "USA", ["USA"], {"store_seq": 999, "uid": "x"})
        )
    return seqs


async def test_planted_rows_are_quarantined_and_reported_and_the_hub_starts(
    make_hub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "hub"
    async with make_hub([HOTLINE]) as hub:
        headers = {"Authorization": f"Bearer {token_of('USA')}"}
        async with httpx.AsyncClient(base_url=hub.http, headers=headers) as usa:
            sent = await usa.post("/api/hotline/send", json={"to": "RUS", "text": "good"})
            assert sent.status_code == 201
        now = hub.hub.clock()
    seqs = plant(data_dir, now)
    caplog.set_level(logging.ERROR, "commonsky.quarantine")
    async with make_hub([HOTLINE]) as hub:
        found = hub.hub.quarantine.items
        assert sorted(found) == sorted(seqs.values())
        assert found[seqs["nul"]].where == "picture" and "U+0000" in found[seqs["nul"]].reason
        assert found[seqs["unclosed"]].where == "picture"
        assert "stale" in found[seqs["year10000"]].reason
        assert found[seqs["stale-nul"]].where == "hotline"
        assert "decode" in found[seqs["garbage"]].reason
        assert len(hub.hub.quarantine.rows) == 1  # the hotline state row
        assert await metric(hub, "commonsky_quarantined_items_total") == 6
        logged = [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()]
        assert len(logged) == 6 and all("kept in the store" in line for line in logged)
        # A recipient gets the good message on connect, and none of the planted ones.
        rus = await hub.connect("RUS")
        await rus.wait_for(lambda e: e["uid"] == "USA::" + sent.json()["uid"])
        assert not any(str(e["uid"]).startswith("USA::p-") for e in rus.items())
        headers = {"Authorization": f"Bearer {token_of('RUS')}"}
        async with httpx.AsyncClient(base_url=hub.http, headers=headers) as client:
            history = (await client.get("/api/hotline")).json()
        assert [m["text"] for m in history] == ["good"]
        # The store/ledger check names what was planted behind the hub's back: the stray
        # entry, and the decodable rows no entry records.
        recorder = hub.server.services.recorder
        assert recorder is not None
        stray = disagreements(hub.hub.store.since(0), recorder.ledger.entries())
        assert stray[0] == "ledger #2 records store item 999, which is not stored"
        planted = [seqs[k] for k in ("nul", "unclosed", "year10000", "stale-nul")]
        assert [int(line.split()[2]) for line in stray[1:]] == planted
    listed = [json.loads(line) for line in (data_dir / "quarantine.jsonl").read_text().splitlines()]
    assert sorted(r["seq"] for r in listed if "seq" in r) == sorted(seqs.values())
    assert (data_dir / "quarantine.jsonl").stat().st_mode & 0o777 == 0o600
    async with make_hub([HOTLINE]) as hub:  # and again: reported again, listed once
        assert len(hub.hub.quarantine) == 5  # (the store is indexed once: 5 of them now)
    assert len((data_dir / "quarantine.jsonl").read_text().splitlines()) == 6
    raw = sqlite3.connect(data_dir / "hub.sqlite3")
    assert raw.execute("SELECT COUNT(*) FROM items WHERE uid LIKE 'p-%'").fetchone() == (5,)
    raw.close()


def test_a_desk_that_fails_on_one_stored_item_quarantines_it_and_rebuilds_the_rest(
    tmp_path: Path,
) -> None:
    from tests.engines.harness import T0, chat, make_world

    world = make_world(tmp_path, [HOTLINE])
    world.send("USA", chat("m1", "one", "RUS"))
    world.send("USA", chat("m2", "two", "RUS"))
    seen: list[str] = []

    def fragile(item: Item) -> None:
        if item.uid == "m1":
            raise KeyError("a desk's own bug")
        seen.append(item.uid)

    assert world.hub.rebuild("test-desk", fragile) == len(seen)
    assert "m2" in seen and "m1" not in seen
    (entry,) = world.hub.quarantine.items.values()
    assert entry.where == "test-desk" and entry.uid == "m1" and "KeyError" in entry.reason
    assert ("USA", "m1") not in world.hub.durable and ("USA", "m2") in world.hub.durable

    # Desks failing on live input cost neither the item nor the sender.
    class Broken:
        name, categories = "broken", ()

        def check(self, party: str, event: object) -> None:
            return None

        def observe(self, item: Item, routes: object, parsed: object = None) -> None:
            if item.uid == "m3":
                msgspec.json.decode(b"{")

    # First, before every other desk (add_desk puts a desk last): the ones after it run.
    world.hub._desks.insert(0, Broken())
    item = world.send("USA", chat("m3", "three", "RUS", now=T0 + 1))
    assert item.seq > 0
    assert "USA::m3" in [e.uid for e in world.take("RUS")]
    assert "b-t-f-d" in [e.type for e in world.take("USA")]  # the desks after it still ran
    assert world.hub.metrics.internal_errors.labels("observer")._value.get() == 1


def test_an_overlap_with_no_point_anchors_nowhere_rather_than_failing() -> None:
    from commonsky.desks.deconfliction import _anchor, canonical_geometry

    sliver = {"type": "Polygon", "coordinates": [[[30, 30], [30 + 1e-9, 30], [30, 30]]]}
    assert _anchor({"type": "Polygon", "coordinates": []}) == (0.0, 0.0)
    assert _anchor({"type": "GeometryCollection", "geometries": []}) == (0.0, 0.0)
    assert canonical_geometry({"type": "Nonsense"}) is None
    _anchor(canonical_geometry(sliver))  # simplified to nothing: still no exception


def test_a_desk_whose_whole_rebuild_fails_does_not_stop_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from commonsky.desks.deconfliction import AirspaceDesk
    from tests.engines.harness import make_world

    make_world(tmp_path, [HOTLINE]).services.close()

    def broken(self: AirspaceDesk) -> None:
        raise RuntimeError("a desk's own bug")

    monkeypatch.setattr(AirspaceDesk, "rebuild", broken)
    world = make_world(tmp_path, [HOTLINE])  # starts again on the same data
    counted = world.hub.metrics.render().decode()
    assert 'commonsky_internal_errors_total{where="rebuild_airspace"} 1.0' in counted
    assert world.services.launch is not None  # the desks after it were built and rebuilt
