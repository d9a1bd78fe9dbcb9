"""The directory's last report of each device (hub/directory.py `Seen`): kept across a
restart for `clientEndPoints`, written without costing a write per report."""

from __future__ import annotations

import json
import math
from pathlib import Path

from commonsky.hub.directory import Directory, Seen
from commonsky.model import CotEvent, Point

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


def test_a_bad_last_report_sets_the_file_aside(tmp_path: Path) -> None:
    path = tmp_path / "directory.json"
    bad = ["GBR", "EUD-7", "yesterday", "a-f", 1.0, 2.0, "", "", True]
    path.write_text(json.dumps({"devices": [["GBR", "EUD-7", "FOX"]], "seen": [bad]}))
    d = opened(path)
    assert len(d) == 0 and list(d.last_seen()) == []
    assert (tmp_path / "directory.json.bad").exists()
