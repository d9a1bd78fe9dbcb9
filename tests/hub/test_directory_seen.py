"""The directory's last report of each device (hub/directory.py `Seen`): kept across a
restart for `clientEndPoints`, written without costing a write per report."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from msgspec.structs import replace

from commonsky.errors import Refused, RemoteProtocolError
from commonsky.hub import directory
from commonsky.hub.core import Hub
from commonsky.hub.directory import Directory, Seen
from commonsky.model import Category, CotEvent, Item, Point
from commonsky.policy import Party, Policy
from commonsky.settings import defaults
from commonsky.store.sqlite import SQLiteStore

GROUP = '<contact callsign="VIPER" endpoint="*:-1:stcp"/><__group name="Cyan" role="HQ"/>'


def report(uid: str, lat: float = 35.0, **kw: object) -> CotEvent:
    return CotEvent(
        uid=uid, type="a-f-G-U-C", time=1.0, start=1.0, stale=2.0, how="m-g",
        point=Point(lat, 40.0), detail=GROUP, callsign="VIPER", **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def opened(path: Path) -> Directory:
    directory = Directory()
    directory.open(path)
    return directory


def test_last_reports_survive_a_restart_and_are_written_at_most_every_so_often(
    tmp_path: Path,
) -> None:
    path = tmp_path / "directory.json"
    d = opened(path)
    d.report("USA", "ANDROID-1", "VIPER")
    d.saw("USA", report("ANDROID-1"), 100.0, audience=False)
    d.report("USA", "ANDROID-2", "VIPER")
    d.saw("USA", report("ANDROID-2", dest_parties=("JPN",)), 101.0, audience=False)
    d.report("USA", "ANDROID-3", "VIPER")
    d.saw("USA", report("ANDROID-3", lat=math.nan), 102.0, audience=True)
    d.save()  # (a new device: written at once)
    d.saw("USA", report("ANDROID-1"), 200.0, audience=False)
    d.save()  # a newer report alone: not yet
    assert dict((k, s.last) for k, _, s in opened(path).last_seen())[("USA", "ANDROID-1")] == 100
    d.save(force=True)  # (at shutdown)
    again = {key: seen for key, _, seen in opened(path).last_seen()}
    assert again[("USA", "ANDROID-1")] == Seen(200.0, "a-f-G-U-C", 35.0, 40.0, "Cyan", "HQ", True)
    assert again[("USA", "ANDROID-2")].open is False  # addressed: its party's only
    assert again[("USA", "ANDROID-3")].open is False and math.isnan(again[("USA", "ANDROID-3")].lat)


def test_a_directory_from_before_last_reports_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "directory.json"
    path.write_text(json.dumps({"version": 1, "devices": [["GBR", "EUD-7", "RED FOX 1"]]}))
    d = opened(path)
    assert d.parties("RED FOX 1") == {"GBR"} and list(d.last_seen()) == []


def test_a_bad_last_report_is_left_out_and_the_rest_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "directory.json"
    good = ["GBR", "EUD-8", 5.0, "a-f", 1.0, 2.0, "Red", "", True]
    bad = ["GBR", "EUD-7", "yesterday", "a-f", 1.0, 2.0, "", "", True]
    devices = [["GBR", "EUD-7", "FOX"], ["GBR", "EUD-8", "WOLF"]]
    path.write_text(json.dumps({"devices": devices, "seen": [bad, good, bad]}))
    d = opened(path)
    assert d.parties("FOX") == {"GBR"} and d.parties("WOLF") == {"GBR"}  # routes kept
    assert [(key, s.team) for key, _, s in d.last_seen()] == [(("GBR", "EUD-8"), "Red")]
    assert [r.message.count("left out") for r in caplog.records] == [1]  # one line
    assert not (tmp_path / "directory.json.bad").exists()


def test_a_team_longer_than_a_load_takes_is_cut_when_saved(tmp_path: Path) -> None:
    """(`limit_attribute_bytes` above 4096 lets a `__group name` be that long.)"""
    path = tmp_path / "directory.json"
    d = opened(path)
    d.report("USA", "ANDROID-1", "VIPER")
    long = GROUP.replace('name="Cyan"', f'name="{"C" * 5000}"')
    d.saw("USA", replace(report("ANDROID-1"), detail=long), 100.0, audience=False)
    d.save(force=True)
    again = opened(path)
    assert again.parties("VIPER") == {"USA"}
    assert [s.team for _, _, s in again.last_seen()] == ["C" * 4096]


def test_reports_read_for_a_listing_are_still_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `clientEndPoints` request reads the fresh reports (`last_seen`): they are written
    all the same, at the next save and at shutdown."""
    path = tmp_path / "directory.json"
    d = opened(path)
    d.report("USA", "ANDROID-1", "VIPER")
    d.save()
    d.saw("USA", report("ANDROID-1"), 100.0, audience=False)
    assert len(list(d.last_seen())) == 1
    d.save(force=True)  # (at shutdown)
    assert [s.last for _, _, s in opened(path).last_seen()] == [100.0]
    d.saw("USA", report("ANDROID-1"), 200.0, audience=False)
    list(d.last_seen())
    monkeypatch.setattr(directory, "SEEN_SAVE_S", 0.0)  # (the next save is due)
    d.save()
    assert [s.last for _, _, s in opened(path).last_seen()] == [200.0]
    d.save()  # (written: nothing more to write)
    path.unlink()
    d.save()
    assert not path.exists()


class NoFarNorth:
    """A desk refusing a track north of 50°."""

    name = "no-far-north"
    categories = (Category.TRACK,)

    def check(self, party: str, event: CotEvent) -> None:
        if event.point.lat > 50:
            raise RemoteProtocolError("far_north", "too far north")

    def observe(self, item: Item, routes: object, parsed: object = None) -> None:
        pass


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    store = SQLiteStore(tmp_path)
    made = Hub(Policy([Party("USA"), Party("JPN")], []), store, defaults(), b"k" * 32)
    made.directory.open(tmp_path / "directory.json")
    made.add_desk(NoFarNorth())
    yield made
    store.close()


def seen_in(hub: Hub) -> list[tuple[tuple[str, str], float]]:
    return [(key, s.lat) for key, _, s in hub.directory.last_seen()]


def test_a_refused_report_is_not_a_last_report(hub: Hub) -> None:
    """Refused by a desk or for want of an agreement: other parties are never listed it."""
    with pytest.raises(RemoteProtocolError, match="too far north"):
        hub.accept("USA", "u", report("ANDROID-1", lat=60.0))
    with pytest.raises(Refused):
        hub.accept("USA", "u", report("ANDROID-1"), refuse_unrouted=(Category.TRACK,))
    assert seen_in(hub) == []
    hub.accept("USA", "u", report("ANDROID-1"))
    with pytest.raises(RemoteProtocolError, match="too far north"):
        hub.accept("USA", "u", report("ANDROID-1", lat=60.0))
    assert seen_in(hub) == [(("USA", "ANDROID-1"), 35.0)]


def test_the_owners_delete_of_the_device_drops_its_last_report(hub: Hub, tmp_path: Path) -> None:
    hub.accept("USA", "u", report("ANDROID-1"))
    hub.accept("USA", "u", report("ANDROID-2"))
    hub.directory.save(force=True)
    assert len(list(opened(tmp_path / "directory.json").last_seen())) == 2
    link = '<link uid="ANDROID-1" relation="none" type="a-f-G-U-C"/><__forcedelete/>'
    hub.accept("USA", "u", replace(report("del-1"), type="t-x-d-d", detail=link, callsign=""))
    assert seen_in(hub) == [(("USA", "ANDROID-2"), 35.0)]
    hub.directory.save(force=True)
    again = opened(tmp_path / "directory.json")
    assert [key for key, _, _ in again.last_seen()] == [("USA", "ANDROID-2")]
    assert again.parties("VIPER") == {"USA"}  # (its callsign still routes)
