"""Per-recipient fusion and public warnings through the hub (Korea situation)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
import pytest
from lxml import etree

from commonsky.alerts import LaunchReport, cap_xml, validate_cap
from commonsky.alerts.simulate import Ballistic, radar_report
from commonsky.desks.launch import report_event
from commonsky.errors import RemoteProtocolError
from commonsky.model import CotEvent
from tests.engines.harness import T0, make_world

LAUNCH = datetime.fromtimestamp(T0 - 600, UTC)
TRUTH = Ballistic(
    lat=39.9,
    lon=127.5,
    launch_time=LAUNCH,
    azimuth_deg=84.0,
    range_m=1_150_000.0,
    apogee_m=420_000.0,
)


def link(a: str, b: str, categories: tuple[str, ...] = ("launch",)) -> dict:
    return {"name": f"{a}-{b}", "from": a, "to": [b], "categories": list(categories)}


BILATERAL = [link("USA", "JPN"), link("JPN", "USA"), link("USA", "KOR"), link("KOR", "USA")]
GSOMIA = [link("KOR", "JPN"), link("JPN", "KOR")]


def reports(seed: int = 7) -> tuple[LaunchReport, LaunchReport]:
    rng = np.random.default_rng(seed)
    kor = radar_report(TRUTH, "KOR", "kor-1", 20, 140, 10, 400, 300, rng)  # sees the boost
    jpn = radar_report(
        TRUTH, "JPN", "jpn-1", TRUTH.flight_s - 260, TRUTH.flight_s - 60, 10, 500, 400, rng
    )  # sees the descent
    return kor, jpn


def fused(events: list[CotEvent]) -> list[dict]:
    out = []
    for e in events:
        if e.type == "b-l-f":
            node = etree.fromstring(f"<d>{e.detail}</d>").find("csky_fused")
            if node is not None and node.text:
                out.append(json.loads(node.text))
    return out


def send_report(w, report: LaunchReport) -> None:
    w.send(report.party, report_event(report, w.clock.now))


@pytest.mark.parametrize("trilateral", [True, False])
def test_each_party_gets_fusion_of_exactly_what_it_may_see(tmp_path: Path, trilateral) -> None:
    w = make_world(tmp_path, BILATERAL + (GSOMIA if trilateral else []))
    kor, jpn = reports()
    send_report(w, kor)
    send_report(w, jpn)
    views = {p: fused(w.take(p)) for p in ("USA", "JPN", "KOR", "RUS")}
    assert views["RUS"] == []
    latest = {p: v[-1] for p, v in views.items() if v}
    assert latest["USA"]["parties"] == ["JPN", "KOR"]  # the US sees both sensors
    if trilateral:
        for party in ("JPN", "KOR"):
            event = latest[party]
            assert event["parties"] == ["JPN", "KOR"]
            assert event["launch"] is not None and event["impact"] is not None
    else:
        assert latest["JPN"]["parties"] == ["JPN"] and latest["KOR"]["parties"] == ["KOR"]


def test_trilateral_event_is_better_than_either_alone(tmp_path: Path) -> None:
    alone = make_world(tmp_path / "a", BILATERAL)
    both = make_world(tmp_path / "b", BILATERAL + GSOMIA)
    for w in (alone, both):
        for r in reports():
            send_report(w, r)
    jpn_alone = fused(alone.take("JPN"))[-1]
    jpn_both = fused(both.take("JPN"))[-1]
    area = lambda e: e["impact"]["ellipse"]["semi_major_m"] * e["impact"]["ellipse"]["semi_minor_m"]  # noqa: E731
    assert area(jpn_both) < area(jpn_alone)
    la_alone = jpn_alone["launch"]["ellipse"]["semi_major_m"]
    la_both = jpn_both["launch"]["ellipse"]["semi_major_m"]
    assert la_both < la_alone / 3


def test_jpn_view_ignores_reports_it_may_not_see(tmp_path: Path) -> None:
    """Non-interference for fusion: KOR's report changes, JPN (bilateral only) sees nothing."""
    outputs = []
    for seed in (1, 2):
        w = make_world(tmp_path / str(seed), BILATERAL)
        kor, _ = reports(seed)
        _, jpn = reports(99)
        send_report(w, jpn)
        send_report(w, kor)
        outputs.append([e.detail for e in w.take("JPN")])
    assert outputs[0] == outputs[1]


def test_warnings_are_valid_cap_and_reach_alert_partners(tmp_path: Path) -> None:
    alerts = [link("JPN", "USA", ("alert",))]
    w = make_world(tmp_path, BILATERAL + GSOMIA + alerts)
    for r in reports():
        send_report(w, r)
    feed = w.services.launch.feed()
    assert feed, "a missile over northern Japan must warn someone"
    seen: set[str] = set()
    for alert in feed:
        validate_cap(cap_xml(alert))
        assert alert.sender.startswith("commonsky.jpn")
        region = alert.info[0].areas[0].geocodes[0][1]
        # Alert first for a region, then Updates that reference what they update.
        assert alert.msg_type == ("Update" if region in seen else "Alert")
        assert bool(alert.references) == (region in seen)
        seen.add(region)
    jp_regions = {a.info[0].areas[0].geocodes[0][1] for a in feed}
    assert all(code.startswith("JP-") for code in jp_regions)
    assert any(e.type == "b-a-o-csky" for e in w.take("USA"))
    assert not any(e.type == "b-a-o-csky" for e in w.take("RUS"))


def test_bad_reports_are_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    w = make_world(tmp_path, BILATERAL)
    kor, _ = reports()
    good = report_event(kor, w.clock.now)
    before = list(w.hub.store.since(0))
    raw = msgspec.to_builtins(kor)
    raw["points"][1]["lat"] = 95.0
    bad = good.__class__(
        **{
            **msgspec.structs.asdict(good),
            "detail": "<csky_launch>"
            + json.dumps(raw).replace("&", "&amp;").replace("<", "&lt;")
            + "</csky_launch>",
        }
    )
    with pytest.raises(RemoteProtocolError, match="points"):
        w.send("KOR", bad)
    assert list(w.hub.store.since(0)) == before


def test_events_are_forgotten_an_hour_after_their_last_observation(tmp_path: Path) -> None:
    w = make_world(tmp_path, BILATERAL + GSOMIA)
    for r in reports():
        send_report(w, r)
    assert w.services.launch.views["JPN"]
    w.clock.now += 2 * 3600
    w.services.launch.tick()
    assert not w.services.launch.views["JPN"] and not w.services.launch.views["KOR"]


def test_the_map_gets_each_alerts_warned_areas_as_the_cap_document_has_them(
    tmp_path: Path,
) -> None:
    alerts = [link("JPN", "USA", ("alert",))]
    w = make_world(tmp_path, BILATERAL + GSOMIA + alerts)
    for r in reports():
        send_report(w, r)
    pages = [
        msgspec.json.decode(rendered.wire(variant, "json"))
        for rendered, variant in w.hub.visible("USA")
        if rendered.item.category.value == "alert"
    ]
    assert pages, "a missile over northern Japan must warn USA"
    for page in pages:
        # The CAP document's polygons ("lat,lon lat,lon …"), as the page used to fetch them.
        document = etree.fromstring(cap_xml(w.services.launch.alerts[page["cap"]["identifier"]]))
        rings = [
            [[float(v) for v in pair.split(",")[::-1]] for pair in (node.text or "").split()]
            for node in document.iter("{*}polygon")
        ]
        assert rings, "every warning names its area"
        assert page["geometry"] == {"type": "MultiPolygon", "coordinates": [[r] for r in rings]}
