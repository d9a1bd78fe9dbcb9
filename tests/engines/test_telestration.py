"""Telestration (`u-d-f-m`) is a drawing, not an airspace volume, unless its sender declares
it one with `<csky_airspace>` (issue #12 fault 5). Strokes are whole CoT events escaped into
`<link line=…>` (corpus 020, 074); they get every rule an event gets."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest

from commonsky.errors import RemoteProtocolError
from commonsky.model import Category, CotEvent
from commonsky.protocol.cot import XmlLimits, parse_event
from tests.engines.harness import T0, drawing, make_world, square
from tests.engines.test_airspace_desk import RIVALS, notices


def stroke(points: list[tuple[float, float]], uid: str = "s1", extra: str = "") -> str:
    """One stroke as ATAK writes it: a u-d-f event, single-quoted, with its own points."""
    links = "".join(f"<link point='{lat},{lon}'/>" for lon, lat in points)
    return (
        "<?xml version='1.0' encoding='UTF-8' standalone='yes'?>"
        f"<event version='2.0' uid='{uid}' type='u-d-f' time='2026-01-01T00:00:00.000Z'"
        " start='2026-01-01T00:00:00.000Z' stale='2026-01-02T00:00:00.000Z' how='h-e'>"
        f"<point lat='{points[0][1]}' lon='{points[0][0]}' hae='9999999.0' ce='9999999.0'"
        f" le='9999999.0' /><detail>{links}{extra}<strokeColor value='-1'/>"
        "<contact callsign='SABLE 2'/></detail></event>"
    )


def telestration(strokes: list[str], extension: str = "", uid: str = "tele-1") -> bytes:
    lines = "".join(f"<link line={quoteattr(s)}/>" for s in strokes)
    return (
        f"<event version='2.0' uid='{uid}' type='u-d-f-m' time='2026-01-01T00:00:00.000Z'"
        " start='2026-01-01T00:00:00.000Z' stale='2099-01-01T00:00:00.000Z' how='h-e'>"
        "<point lat='0.0' lon='0.0' hae='9999999.0' ce='9999999.0' le='9999999.0' />"
        f"<detail>{lines}<strokeColor value='-1'/><contact callsign='SABLE 2'/>"
        f"<remarks></remarks><archive/>{extension}</detail></event>"
    ).encode()


SCRIBBLE = [(38.2 + i * 0.01, 34.2 + (i % 3) * 0.01) for i in range(40)]
LOOP = [*square(38.2, 34.2, 0.6)]  # closed: first point repeated


def sent(data: bytes) -> CotEvent:
    return parse_event(data, XmlLimits())


def test_a_telestration_is_accepted_as_a_drawing_and_raises_no_conflict(tmp_path: Path) -> None:
    draw = {"name": "d", "from": "USA", "to": ["RUS"], "categories": ["drawing"],
            "disclosure": "full"}  # fmt: skip
    w = make_world(tmp_path, [*RIVALS, draw])
    w.send("RUS", drawing("RU-OPS", square(38.0, 34.0, 1.0), 0, 12000))
    item = w.send("USA", sent(telestration([stroke(SCRIBBLE), stroke(LOOP, "s2")])))
    assert item.category is Category.DRAWING
    got = w.take("RUS")
    assert [e.type for e in got if e.uid == "USA::tele-1"] == ["u-d-f-m"]
    assert notices(got) == [] and notices(w.take("USA")) == []
    assert "USA::tele-1" not in str(w.services.airspace.for_party("RUS"))


def test_with_the_airspace_extension_one_stroke_is_an_airspace_volume(tmp_path: Path) -> None:
    w = make_world(tmp_path, RIVALS)
    w.send("RUS", drawing("RU-OPS", square(38.0, 34.0, 1.0), 0, 12000))
    ext = f'<csky_airspace kind="operating-area" floor_m="0" ceiling_m="9000" start="{T0}"/>'
    item = w.send("USA", sent(telestration([stroke(LOOP)], ext)))
    assert item.category is Category.AIRSPACE
    assert len(notices(w.take("RUS"))) == 1


def test_an_airspace_telestration_must_be_one_stroke(tmp_path: Path) -> None:
    w = make_world(tmp_path, RIVALS)
    ext = '<csky_airspace kind="operating-area"/>'
    with pytest.raises(RemoteProtocolError) as info:
        w.send("USA", sent(telestration([stroke(LOOP), stroke(SCRIBBLE, "s2")], ext)))
    assert info.value.reason == "bad_airspace" and "one stroke" in str(info.value)


def test_a_long_stroke_within_the_message_limit_is_accepted() -> None:
    """A stroke is one attribute; 200 points is ~12 kB, past limit_attribute_bytes (4096),
    which still holds for every other attribute."""
    many = [(38.0 + i * 1e-4, 34.0 + i * 1e-4) for i in range(200)]
    data = telestration([stroke(many)])
    assert len(stroke(many)) > XmlLimits().attribute_bytes
    assert parse_event(data).type == "u-d-f-m"
    with pytest.raises(RemoteProtocolError) as info:
        parse_event(data.replace(b"<archive/>", b'<archive note="' + b"x" * 5000 + b'"/>'))
    assert info.value.reason == "attribute_too_long"


@pytest.mark.parametrize(
    ("bad_stroke", "reason"),
    [
        ('<!DOCTYPE e [<!ENTITY x "y">]>' + stroke(LOOP), "dtd"),
        (stroke(LOOP).replace("</detail>", "<remarks>&x;</remarks></detail>"), "malformed"),
        (stroke(LOOP)[:-20], "malformed"),
        ("not xml at all", "malformed"),
        (stroke(LOOP).replace("<event ", "<evil ").replace("</event>", "</evil>"), "malformed"),
        (stroke(LOOP, extra="<x>" * 40 + "</x>" * 40), "too_deep"),
        (stroke(LOOP, extra=f"<a b='{'x' * 5000}'/>"), "attribute_too_long"),
        (stroke(LOOP, extra=f"<link line={quoteattr(stroke(LOOP))}/>"), "malformed"),
    ],
)
def test_a_hostile_stroke_is_refused_by_name(bad_stroke: str, reason: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_event(telestration([stroke(SCRIBBLE), bad_stroke]))
    assert info.value.reason == reason
    assert "telestration stroke" in str(info.value)
