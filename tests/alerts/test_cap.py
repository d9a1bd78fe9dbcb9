from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from alerts_scenarios import T0, at
from lxml import etree

from commonsky.alerts.cap import (
    CAP_NS,
    CapAlert,
    CapArea,
    CapInfo,
    CapInvalid,
    atom_feed,
    cap_xml,
    validate_cap,
)
from commonsky.alerts.engine import AlertEngine
from commonsky.alerts.fusion import fuse
from commonsky.alerts.regions import RegionRegistry
from commonsky.alerts.simulate import Ballistic, radar_report
from commonsky.geo import GEOD as WGS84

N = {"c": CAP_NS}


def _akita_shot() -> Ballistic:
    az, _b, dist = WGS84.inv(127.5, 40.0, 140.2, 39.7)
    return Ballistic(40.0, 127.5, T0, float(az), float(dist), 400_000.0)


def _run(regions: RegionRegistry) -> tuple[AlertEngine, list[list[CapAlert]]]:
    """A missile at Akita: a coarse early estimate, a sharp late one, then impact."""
    truth = _akita_shot()
    rng = np.random.default_rng(21)
    early = radar_report(truth, "KOR", "k", 20, 60, 5, 3_000.0, 3_000.0, rng)
    late = radar_report(
        truth, "JPN", "j", truth.flight_s - 150, truth.flight_s - 60, 5, 300.0, 300.0, rng
    )
    engine = AlertEngine(regions, "jalert@fdma.example", status="Exercise", sender_name="J-Alert")
    steps = []
    for now, reps in (
        (at(61), [early]),
        (at(62), [early]),  # nothing new: no messages
        (at(truth.flight_s - 59), [early, late]),
        (truth.impact_time + timedelta(minutes=3), [early, late]),
    ):
        ev = fuse(reps)
        assert ev is not None
        steps.append(engine.step_events(now, [ev]))
    return engine, steps


def test_alert_update_cancel_sequence(regions: RegionRegistry) -> None:
    engine, (first, again, sharper, over) = _run(regions)
    akita = [m for m in first if m.info[0].areas[0].geocodes == (("ISO3166-2", "JP-05"),)]
    assert [m.msg_type for m in akita] == ["Alert"]
    assert akita[0].info[0].severity == "Extreme"
    assert akita[0].status == "Exercise"
    assert again == []
    by_type = {(m.msg_type, m.info[0].areas[0].geocodes[0][1]) for m in sharper}
    assert ("Update", "JP-05") in by_type
    # Neighbours alerted on the coarse estimate are cancelled when it sharpens.
    others = {m.info[0].areas[0].geocodes[0][1] for m in first} - {"JP-05"}
    assert others
    assert {("Cancel", r) for r in others} <= by_type
    assert [(m.msg_type, m.info[0].areas[0].geocodes[0][1]) for m in over] == [("Cancel", "JP-05")]
    assert "Akita" in (over[0].info[0].description or "")
    # References chain the stream; identifiers are unique and stable.
    update = next(m for m in sharper if m.msg_type == "Update")
    assert update.references == (akita[0].ref,)
    assert over[0].references == (akita[0].ref, update.ref)
    ids = [m.identifier for m in engine.history()]
    assert len(ids) == len(set(ids))
    assert [m.identifier for m in _run(regions)[0].history()] == ids
    assert engine.active() == []


def test_every_generated_document_is_valid_cap(regions: RegionRegistry) -> None:
    engine, _steps = _run(regions)
    for msg in engine.history():
        root = validate_cap(cap_xml(msg))
        assert root.findtext("c:scope", namespaces=N) == "Public"
        sent = root.findtext("c:sent", namespaces=N) or ""
        assert sent.endswith("+00:00")
        assert root.find("c:info/c:area/c:geocode/c:value", N) is not None
        for poly in root.iterfind(".//c:polygon", N):
            pairs = (poly.text or "").split()
            assert pairs[0] == pairs[-1]
            assert len(pairs) >= 4


def _doc(**changes: object) -> bytes:
    info = CapInfo(
        ("Safety",),
        "Ballistic missile",
        "Immediate",
        "Extreme",
        "Likely",
        areas=(
            CapArea(
                "Akita", polygons=(((39.0, 140.0), (39.5, 140.0), (39.5, 140.5), (39.0, 140.0)),)
            ),
        ),
    )
    base = CapAlert("id-1", "jalert@fdma.example", T0, "Actual", "Alert", info=(info,))
    return cap_xml(msgspec_replace(base, **changes))


def msgspec_replace(a: CapAlert, **changes: object) -> CapAlert:
    import msgspec

    return msgspec.structs.replace(a, **changes)


def _mutate(data: bytes, xpath: str, text: str | None = None, remove: bool = False) -> bytes:
    root = etree.fromstring(data)
    el = root.find(xpath, N)
    assert el is not None
    if remove:
        el.getparent().remove(el)  # type: ignore[union-attr]
    else:
        el.text = text
    return bytes(etree.tostring(root))


@pytest.mark.parametrize(
    ("xpath", "text", "remove"),
    [
        ("c:status", "Real", False),
        ("c:msgType", "Warning", False),
        ("c:sent", "2022-10-04T07:22:00Z", False),
        ("c:sent", "2022-10-04T07:22:00", False),
        ("c:identifier", "has space", False),
        ("c:sender", "a,b", False),
        ("c:identifier", None, True),
        ("c:scope", None, True),
        ("c:info/c:urgency", "Now", False),
        ("c:info/c:severity", "Bad", False),
        ("c:info/c:certainty", None, True),
        ("c:info/c:category", "Military", False),
        ("c:info/c:event", None, True),
        ("c:info/c:area/c:areaDesc", None, True),
        ("c:info/c:area/c:polygon", "39,140 39.5,140", False),
        ("c:info/c:area/c:polygon", "39,140 39.5,140 39.5,140.5 39.1,140", False),  # not closed
        ("c:info/c:area/c:polygon", "99,140 39.5,140 39.5,140.5 99,140", False),  # lat range
    ],
)
def test_schema_rejects_invalid_documents(xpath: str, text: str | None, remove: bool) -> None:
    good = _doc()
    validate_cap(good)
    with pytest.raises(CapInvalid):
        validate_cap(_mutate(good, xpath, text, remove))


def test_rules_beyond_the_schema() -> None:
    with pytest.raises(CapInvalid, match="references"):
        validate_cap(_doc(msg_type="Update"))
    validate_cap(_doc(msg_type="Update", references=("a,b,2022-10-04T07:22:00+00:00",)))
    with pytest.raises(CapInvalid):
        validate_cap(_doc(msg_type="Cancel", references=("a,b",)))
    with pytest.raises(CapInvalid, match="well-formed"):
        validate_cap(b"<alert")
    evil = (
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><alert xmlns="'
        + CAP_NS.encode()
        + b'"/>'
    )
    with pytest.raises(CapInvalid, match="DOCTYPE"):
        validate_cap(evil)
    # A document in another namespace is not CAP 1.2.
    with pytest.raises(CapInvalid):
        validate_cap(_doc().replace(b"cap:1.2", b"cap:1.1"))


def test_atom_feed_links_each_alert(regions: RegionRegistry) -> None:
    engine, _steps = _run(regions)
    alerts = engine.history()
    feed = etree.fromstring(atom_feed(alerts, "https://hub.example/"))
    a = {"a": "http://www.w3.org/2005/Atom"}
    hrefs = [e.get("href") for e in feed.iterfind("a:entry/a:link", a)]
    assert len(hrefs) == len(alerts)
    assert set(hrefs) == {f"https://hub.example/cap/alerts/{m.identifier}.xml" for m in alerts}
    assert feed.findtext("a:updated", namespaces=a) == max(m.sent for m in alerts).isoformat(
        timespec="seconds"
    )
    assert feed.find("a:entry/a:title", a) is not None
    empty = etree.fromstring(atom_feed([], "https://hub.example"))
    assert empty.find("a:entry", a) is None


def test_read_cap_gives_back_what_cap_xml_wrote() -> None:
    from datetime import timedelta

    from commonsky.alerts.cap import read_cap

    info = CapInfo(
        ("Safety", "Security"),
        "Ballistic missile",
        "Immediate",
        "Extreme",
        "Likely",
        response_type=("Shelter",),
        effective=T0,
        expires=T0 + timedelta(minutes=30),
        sender_name="CommonSky",
        headline="Take shelter",
        description="A missile may fall near Aomori",
        instruction="Go indoors",
        parameters=(("event", "launch-1"),),
        areas=(
            CapArea(
                "Aomori",
                polygons=(((39.0, 140.0), (39.5, 140.0), (39.5, 140.5), (39.0, 140.0)),),
                circles=((40.8, 140.7, 25.0),),
                geocodes=(("ISO3166-2", "JP-02"),),
            ),
        ),
    )
    alert = CapAlert(
        "id-2",
        "commonsky.jpn",
        T0,
        "Exercise",
        "Cancel",
        references=("commonsky.jpn,id-1,2022-10-04T07:22:00+00:00",),
        note="cancelled",
        info=(info,),
    )
    assert read_cap(cap_xml(alert)) == alert
    with pytest.raises(CapInvalid):
        read_cap(_mutate(cap_xml(alert), "c:status", "Real"))
