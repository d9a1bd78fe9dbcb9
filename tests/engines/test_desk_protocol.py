"""Desks stand on the hub through `add_desk` and a narrow view (hub/desk.py): what a desk's
check parsed is handed to its observe, so an accepted item is parsed once."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

import commonsky.desks.deconfliction as airspace_module
import commonsky.desks.launch as warnings_module
from commonsky.errors import LocalProtocolError
from commonsky.hub.desk import Desk
from commonsky.hub.desk_view import DeskView
from tests.engines.harness import drawing, make_world, square
from tests.engines.test_airspace_desk import RIVALS
from tests.engines.test_launch_desk import BILATERAL, reports, send_report


def counting(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[object]:
    calls: list[object] = []
    real = getattr(module, name)

    def wrapped(*args: object, **kwargs: object) -> object:
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return calls


def test_an_airspace_drawing_is_read_once(tmp_path: Path, monkeypatch) -> None:
    w = make_world(tmp_path, RIVALS)
    reads = counting(monkeypatch, airspace_module, "screened_shape")
    w.send("USA", drawing("US-STRIKE-7", square(38.0, 34.0, 1.0), 3000, 9000, "strike-area"))
    w.send("RUS", drawing("RU-OPS-2", square(38.5, 34.5, 1.0), 5000, 12000))
    assert len(reads) == 2  # one per item: the check's, handed to observe
    assert w.services.airspace.notices  # and observe did its work with it


def test_a_launch_report_is_read_once(tmp_path: Path, monkeypatch) -> None:
    w = make_world(tmp_path, BILATERAL)
    reads = counting(monkeypatch, warnings_module, "report_from_event")
    kor, _ = reports()
    send_report(w, kor)
    assert len(reads) == 1
    assert w.services.launch.reports_settled == 1


def test_each_desk_has_its_own_name_and_the_desks_are_desks(tmp_path: Path) -> None:
    w = make_world(tmp_path, RIVALS)
    desks: list[Desk] = [w.services.hotline, w.services.airspace, w.services.launch]
    assert [d.name for d in desks] == ["hotline", "airspace", "launch"]
    with pytest.raises(LocalProtocolError):
        w.hub.add_desk(w.services.hotline)
    assert isinstance(w.services.hotline.hub, DeskView)  # never the hub itself


SHARED = [
    {"name": "US areas to JP", "from": "USA", "to": ["JPN"], "categories": ["airspace"]},
    {
        "name": "US areas to KR, generalized",
        "from": "USA",
        "to": ["KOR"],
        "categories": ["airspace"],
        "disclosure": "generalized",
    },
]


def test_the_page_json_reuses_the_desks_reading_of_a_drawing(tmp_path: Path, monkeypatch) -> None:
    import commonsky.hub.pagejson as pagejson_module

    w = make_world(tmp_path, SHARED)
    ring = square(38.0, 34.0, 1.0)
    w.send("USA", drawing("US-AREA-1", ring, 3000, 9000))
    page_reads = counting(monkeypatch, pagejson_module, "airspace_from_cot")
    pages = {}
    for party in ("USA", "JPN", "KOR"):
        (seen,) = [
            msgspec.json.decode(rendered.wire(variant, "json"))
            for rendered, variant in w.hub.visible(party)
            if rendered.item.category.value == "airspace"
        ]
        pages[party] = seen
    ring_json = [[list(p) for p in ring]]
    # Its sender and a `full` recipient draw the desk's reading: nothing read again.
    assert pages["USA"]["geometry"] == {"type": "Polygon", "coordinates": ring_json}
    assert pages["JPN"]["geometry"] == pages["USA"]["geometry"]
    # A generalized recipient's form has its vertices stripped: read anew, a coarse spot.
    assert pages["KOR"]["geometry"]["type"] == "Point"
    assert len(page_reads) == 1 and page_reads[0].uid == pages["KOR"]["uid"]
