"""An agreement's end takes its items off the recipients' maps (hub/withdraw.py), over TCP.

The real hub on loopback with a clock the test moves past the agreement's `valid_until`; the
hub's own housekeeping notices the change. Absence is shown with a barrier (a later marker
or track), never by waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytak

from commonsky.bench.fuzz_seeds import PARTIES
from commonsky.bench.hubproc import HubProcess, hub_config
from tests.conftest import RunningHub, TakClient, barrier_event, base_config, running_hub
from tests.integration.test_fuzz_counting import until
from tests.integration.test_tak_tcp import chat

END_IN_S = 600.0  # the agreements end this long after the test starts


class Clock:
    """Real time plus an offset the test moves (the hub checks events' stale times on it)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ending(name: str, to: str, categories: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "from": "USA",
        "to": [to],
        "categories": categories,
        "disclosure": "full",
        "valid_until": iso(time.time() + END_IN_S),
        **extra,
    }


def marker(uid: str, lat: float = 35.0, lon: float = 35.0) -> bytes:
    data = pytak.gen_cot(
        lat=lat, lon=lon, hae=0, ce=10, le=10, uid=uid, stale=86_400, cot_type="b-m-p-s-m"
    )  # (stale in a day: without a withdrawal it would stay on the map that long)
    assert data is not None
    return data


def clocked_hub(
    tmp_path: Path, agreements: list[dict[str, Any]], clock: Clock
) -> contextlib.AbstractAsyncContextManager[RunningHub]:
    return running_hub(base_config(tmp_path, agreements), clock=clock)


def is_delete_of(name: str) -> Any:
    return lambda e: e["type"] == "t-x-d-d" and f'uid="{name}"' in e["detail"]


async def before_barrier(hub: RunningHub, observer: TakClient) -> list[dict[str, Any]]:
    """Everything `observer` received (deletes included, no control events) before a track
    another client of its party sends now: nothing queued before it is still on the way."""
    mate = await hub.connect(observer.party, settle=0)
    uid = f"barrier-{id(mate)}"
    mate.send(barrier_event(uid))
    event = await observer.wait_for(lambda e: e["uid"] == uid)
    return [
        e
        for e in observer.events[: observer.events.index(event)]
        if e["type"] == "t-x-d-d" or not str(e["type"]).startswith("t-x-")  # (no control)
    ]


async def test_an_agreements_end_deletes_its_markers_from_the_recipients_maps(tmp_path) -> None:
    clock = Clock()
    deal = ending("US-JP markers", "JPN", ["marker"])
    async with clocked_hub(tmp_path, [deal], clock) as hub:
        usa, jpn, kor = await hub.connect_all(("USA", "JPN", "KOR"))
        usa.send(marker("M1"))
        await jpn.wait_for(lambda e: e["uid"] == "USA::M1")
        before = len(usa.events)
        clock.offset = END_IN_S + 60  # the agreement has ended: the housekeeping notices
        got = await jpn.wait_for(is_delete_of("USA::M1"), timeout=5.0)
        assert "__forcedelete" in got["detail"] and got["uid"].startswith("USA::")
        assert (got["lat"], got["lon"]) == (0.0, 0.0)  # nothing of where the marker is
        # The provider's own clients get nothing new; a third party never got anything.
        assert [e for e in await before_barrier(hub, usa) if e in usa.events[before:]] == []
        assert await before_barrier(hub, kor) == []
        # A client of the recipient connecting now is not given the marker; it is told to
        # take it off (it may have been away at the end: `Withdrawals.owed`).
        late = await hub.connect("JPN")
        assert [e["uid"] for e in await before_barrier(hub, late)] == [got["uid"]]
        # The marker is still the provider's: its clients keep it (nothing deleted there).
        assert ("USA", "M1") in hub.hub.durable


async def test_a_marker_that_left_the_area_before_the_end_is_not_withdrawn(tmp_path) -> None:
    clock = Clock()
    box = [[30.0, 30.0], [40.0, 30.0], [40.0, 40.0], [30.0, 40.0], [30.0, 30.0]]
    deal = ending("US-JP markers in the box", "JPN", ["marker"], area=box)
    async with clocked_hub(tmp_path, [deal], clock) as hub:
        usa, jpn = await hub.connect_all(("USA", "JPN"))
        usa.send(marker("LEFT"))
        usa.send(marker("STAYS"))
        await jpn.wait_for(lambda e: e["uid"] == "USA::STAYS")
        assert [e["uid"] for e in jpn.items()] == ["USA::LEFT", "USA::STAYS"]
        usa.send(marker("LEFT", lat=50.0, lon=50.0))  # out of the box: JPN is not told
        await usa.sync()
        clock.offset = END_IN_S + 60
        await jpn.wait_for(is_delete_of("USA::STAYS"), timeout=5.0)
        # Both withdrawals would be queued in the same pass: the barrier shows none for LEFT.
        received = await before_barrier(hub, jpn)
        assert not [e for e in received if is_delete_of("USA::LEFT")(e)]
        assert [e["uid"] for e in received if e["type"] == "b-m-p-s-m"] == [
            "USA::LEFT",
            "USA::STAYS",
        ]  # (the first versions only: the one outside the box never came)


async def test_a_hotline_message_is_not_withdrawn(tmp_path) -> None:
    clock = Clock()
    deal = ending("US-RU hotline and markers", "RUS", ["hotline", "marker"])
    async with clocked_hub(tmp_path, [deal], clock) as hub:
        usa, rus = await hub.connect_all(("USA", "RUS"))
        usa.send(chat("h1", "stay east of the line", "RUS"))
        usa.send(marker("SIGNAL"))
        await rus.wait_for(lambda e: e["uid"] == "USA::SIGNAL")
        assert any(e["uid"] == "USA::GeoChat.h1" for e in rus.items())
        clock.offset = END_IN_S + 60
        await rus.wait_for(is_delete_of("USA::SIGNAL"), timeout=5.0)
        received = await before_barrier(hub, rus)
        deletes = [e for e in received if e["type"] == "t-x-d-d"]
        assert len(deletes) == 1 and "GeoChat" not in deletes[0]["detail"]


async def test_a_downgrade_to_generalized_deletes_the_full_marker_only(tmp_path) -> None:
    clock = Clock()
    full = ending("US-JP markers in full", "JPN", ["marker"])
    gen = {**ending("US-JP markers generalized", "JPN", ["marker"]), "disclosure": "generalized"}
    del gen["valid_until"]
    async with clocked_hub(tmp_path, [full, gen], clock) as hub:
        usa, jpn = await hub.connect_all(("USA", "JPN"))
        usa.send(marker("M1"))
        await jpn.wait_for(lambda e: e["uid"] == "USA::M1")
        clock.offset = END_IN_S + 60  # the full agreement has ended; the generalized goes on
        got = await jpn.wait_for(is_delete_of("USA::M1"), timeout=5.0)
        assert (got["lat"], got["lon"]) == (0.0, 0.0)
        usa.send(marker("M1", lat=35.5))  # the next version: generalized
        received = await before_barrier(hub, jpn)
        assert [e["uid"] for e in received if e["type"] == "t-x-d-d"] == [got["uid"]]
        markers = [e["uid"] for e in received if e["type"] == "b-m-p-s-m"]
        assert markers[0] == "USA::M1" and len(markers) == 2
        assert markers[1].startswith("USA::") and markers[1] != "USA::M1"  # the handle


async def test_a_client_away_at_the_end_takes_the_marker_off_when_it_returns(tmp_path) -> None:
    """JPN's only client was off line when the agreement ended: it returns to a replay that
    no longer names the marker, so only a delete can take it off its map."""
    clock = Clock()
    async with clocked_hub(tmp_path, [ending("US-JP", "JPN", ["marker"])], clock) as hub:
        usa, jpn = await hub.connect_all(("USA", "JPN"))
        usa.send(marker("M1"))
        await jpn.wait_for(lambda e: e["uid"] == "USA::M1")
        await jpn.close()
        await until(lambda: not hub.hub.wires.by_party.get("JPN"))
        clock.offset = END_IN_S + 60
        await until(lambda: hub.hub.withdrawals.at > clock())  # the change handled
        back = await hub.connect("JPN")
        (delete,) = await before_barrier(hub, back)
        assert is_delete_of("USA::M1")(delete)


async def test_a_hub_down_at_the_end_has_the_marker_taken_off_when_it_restarts(tmp_path) -> None:
    clock = Clock()
    deal = ending("US-JP", "JPN", ["marker"])
    async with clocked_hub(tmp_path, [deal], clock) as hub:
        usa, jpn = await hub.connect_all(("USA", "JPN"))
        usa.send(marker("M1"))
        await jpn.wait_for(lambda e: e["uid"] == "USA::M1")
    clock.offset = END_IN_S + 60  # the agreement ended while the hub was down
    async with clocked_hub(tmp_path, [deal], clock) as hub:
        back = await hub.connect("JPN")
        (delete,) = await before_barrier(hub, back)
        assert is_delete_of("USA::M1")(delete)


def deleting(uid: str) -> bytes:
    """The owner's `t-x-d-d` for its marker `uid` (as ATAK sends it)."""
    event = pytak.gen_cot_xml(lat=35.0, lon=35.0, uid=f"del-{uid}")
    assert event is not None
    event.set("type", "t-x-d-d")
    detail = event.find("detail")
    assert detail is not None
    ET.SubElement(detail, "link", uid=uid, relation="none", type="b-m-p-s-m")
    ET.SubElement(detail, "__forcedelete")
    return ET.tostring(event)


async def test_a_client_away_at_an_owners_delete_is_told_after_a_restart(tmp_path) -> None:
    """JPN's only client was off line when USA deleted a marker, and the hub restarted
    before it came back: what the delete owes it is kept across the restart (the store's
    tombstone), so it is sent the delete ahead of its replay, which no longer names it."""
    deal = {**ending("US-JP", "JPN", ["marker"])}
    del deal["valid_until"]
    config = base_config(tmp_path, [deal])
    async with running_hub(config) as hub:
        usa, jpn = await hub.connect_all(("USA", "JPN"))
        usa.send(marker("M1"))
        usa.send(marker("M2"))
        await jpn.wait_for(lambda e: e["uid"] == "USA::M2")
        await jpn.close()
        await until(lambda: not hub.hub.wires.by_party.get("JPN"))
        usa.send(deleting("M1"))
        await until(lambda: ("USA", "M1") not in hub.hub.durable)
    async with running_hub(config) as hub:
        back = await hub.connect("JPN")
        received = await before_barrier(hub, back)
        assert [e["uid"] for e in received] == ["USA::withdrawn.M1", "USA::M2"]
        assert is_delete_of("USA::M1")(received[0])


async def test_a_hub_killed_after_an_owners_delete_owes_it_when_it_restarts(
    tmp_path: Path, held_port: Callable[[], int]
) -> None:
    """The same with the real `commonsky serve` killed (SIGKILL) just after the delete:
    nothing but what the store committed survives, and that is enough."""
    http, ports = held_port(), {party: held_port() for party in PARTIES}
    config = tmp_path / "hub.toml"
    config.write_text(
        hub_config(tmp_path / "data", http, ports) + '\n[[agreement]]\nname = "us-jp-markers"'
        '\nfrom = "USA"\nto = ["JPN"]\ncategories = ["marker"]\ndisclosure = "full"\n'
    )

    async def client(party: str) -> TakClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", ports[party])
        return TakClient(reader, writer, party=party)

    hub = HubProcess(config, tmp_path / "hub.log", http, "warning")
    await hub.start()
    try:
        usa, mate, jpn = await client("USA"), await client("USA"), await client("JPN")
        usa.send(marker("M1"))
        usa.send(marker("M2"))
        await jpn.wait_for(lambda e: e["uid"] == "USA::M2", timeout=10.0)
        await jpn.close()
        await usa.sync()  # (JPN's client is gone before the delete: nothing queued to it)
        usa.send(deleting("M1"))
        usa.send(marker("M3"))  # after the delete: once its mate has it, the delete is in
        await mate.wait_for(lambda e: e["uid"] == "M3", timeout=10.0)
        await usa.close()
        await mate.close()
    finally:
        assert hub.proc is not None
        hub.proc.kill()
        hub.proc.wait()
    await hub.start()
    try:
        back = await client("JPN")
        await back.wait_for(lambda e: e["uid"] == "USA::M3", timeout=10.0)  # (its replay)
        received = [e["uid"] for e in back.events if not is_control(e)]
        assert received[:3] == ["USA::withdrawn.M1", "USA::M2", "USA::M3"]
        await back.close()
    finally:
        hub.stop()


def is_control(event: dict[str, Any]) -> bool:
    return event["type"] != "t-x-d-d" and str(event["type"]).startswith("t-x-")
