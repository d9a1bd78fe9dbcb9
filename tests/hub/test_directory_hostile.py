"""A damaged DATA_DIR/directory.json (hub/directory.py) never stops the hub: what is
good in it is kept, the rest left out or the file set aside, one log line each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from commonsky.hub.directory import Directory
from commonsky.times import format_time

DEVICES = [["GBR", "EUD-7", "FOX"], ["GBR", "EUD-8", "WOLF"]]
GOOD = ["GBR", "EUD-8", 5.0, "a-f", 1.0, 2.0, "Red", "", True]


def opened(path: Path) -> Directory:
    directory = Directory()
    directory.open(path)
    return directory


@pytest.mark.parametrize(
    "bad",
    [
        '["GBR", "EUD-7", 1' + "0" * 400 + ', "a-f", 1.0, 2.0, "", "", true]',  # a float overflows
        '["GBR", "EUD-7", 5.0, "a-f", 1' + "0" * 400 + ', 2.0, "", "", true]',
        '["GBR", "EUD-7", 1e300, "a-f", 1.0, 2.0, "", "", true]',  # past any date
        '["GBR", "EUD-7", -1e12, "a-f", 1.0, 2.0, "", "", true]',  # before any date
    ],
)
def test_a_last_report_with_a_number_out_of_range_is_left_out_and_the_rest_listed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    path = tmp_path / "directory.json"
    path.write_text(f'{{"devices": {json.dumps(DEVICES)}, "seen": [{bad}, {json.dumps(GOOD)}]}}')
    d = opened(path)
    assert d.parties("FOX") == {"GBR"} and d.parties("WOLF") == {"GBR"}
    listed = [(key, format_time(s.last)) for key, _, s in d.last_seen()]
    assert listed == [(("GBR", "EUD-8"), "1970-01-01T00:00:05.000Z")]
    assert [r.message.count("left out") for r in caplog.records] == [1]


def test_a_file_nested_too_deep_is_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "directory.json"
    path.write_text('{"devices": ' + "[" * 100_000 + "]" * 100_000 + "}")
    d = opened(path)
    assert len(d) == 0 and (tmp_path / "directory.json.bad").exists()
    assert ["nested too deep" in r.message for r in caplog.records] == [True]
    d.report("GBR", "EUD-7", "FOX")
    d.save()
    assert opened(path).parties("FOX") == {"GBR"}


def test_a_file_that_cannot_be_set_aside_is_left_and_not_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "directory.json"
    path.write_text("{trunc")
    (tmp_path / "directory.json.bad").mkdir()
    (tmp_path / "directory.json.bad" / "x").write_text("")  # (a rename over it fails)
    d = opened(path)
    assert len(d) == 0 and not d.opened
    assert ["nor set it aside" in r.message for r in caplog.records] == [True]
    d.report("GBR", "EUD-7", "FOX")
    d.save(force=True)
    assert path.read_text() == "{trunc"  # (left as found, for whoever looks)
