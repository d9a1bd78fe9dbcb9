"""Deconfliction through the hub: drawings in, need-to-know notices out."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from commonsky.errors import RemoteProtocolError
from commonsky.model import CotEvent
from tests.engines.harness import drawing, event, make_world, site, square


def notice_of(e: CotEvent) -> dict:
    node = etree.fromstring(f"<d>{e.detail}</d>").find("csky_conflict")
    assert node is not None
    return json.loads(node.text or "")


def notices(events: list[CotEvent]) -> list[dict]:
    return [notice_of(e) for e in events if e.type == "t-x-csky-conflict"]


RIVALS = [
    {
        "name": "US to RU areas, conflicts only",
        "from": "USA",
        "to": ["RUS"],
        "categories": ["airspace", "site"],
        "disclosure": "conflicts-only",
    },
    {
        "name": "RU to US areas, conflicts only",
        "from": "RUS",
        "to": ["USA"],
        "categories": ["airspace", "site"],
        "disclosure": "conflicts-only",
    },
]


def test_overlapping_plans_raise_intersection_only_notices(tmp_path: Path) -> None:
    w = make_world(tmp_path, RIVALS)
    w.send("USA", drawing("US-STRIKE-7", square(38.0, 34.0, 1.0), 3000, 9000, "strike-area"))
    w.send("RUS", drawing("RU-OPS-2", square(38.5, 34.5, 1.0), 5000, 12000))
    us, ru = notices(w.take("USA")), notices(w.take("RUS"))
    assert len(us) == 1 and len(ru) == 1
    assert us[0]["other_party"] == "RUS" and ru[0]["other_party"] == "USA"
    for n in (us[0], ru[0]):
        assert (n["floor_m"], n["ceiling_m"]) == (5000, 9000)
        assert n["other_uid"] is None and n["other_kind"] is None
    text = json.dumps(ru) + "".join(e.detail for e in w.received["RUS"])
    assert "US-STRIKE-7" not in text and "strike-area" not in text
    # the overlap is the 0.5 x 0.5 degree square, nothing of USA's larger area
    lons = [p[0] for p in ru[0]["geometry"]["coordinates"][0]]
    assert min(lons) == pytest.approx(38.5, abs=1e-3) and max(lons) == pytest.approx(39, abs=1e-3)


def test_no_agreement_means_no_notice(tmp_path: Path) -> None:
    w = make_world(tmp_path, [])
    w.send("USA", drawing("A", square(38.0, 34.0, 1.0)))
    w.send("RUS", drawing("B", square(38.5, 34.5, 1.0)))
    assert notices(w.take("USA")) == [] and notices(w.take("RUS")) == []
    assert len(w.services.airspace.engine.conflicts()) == 1  # known to the hub, told to none


def test_full_disclosure_names_the_other_item(tmp_path: Path) -> None:
    full = [dict(a, disclosure="full") for a in RIVALS]
    w = make_world(tmp_path, full)
    w.send("USA", drawing("US-A", square(38.0, 34.0, 1.0)))
    w.send("RUS", drawing("RU-B", square(38.5, 34.5, 1.0)))
    (n,) = notices(w.take("USA"))
    assert n["other_uid"] == "RU-B"


def test_protected_site_is_revealed_only_by_a_conflicting_plan(tmp_path: Path) -> None:
    w = make_world(tmp_path, RIVALS)
    w.send("RUS", site("HOSPITAL-1", 40.15, 35.33, 2000))
    assert [e for e in w.take("USA")] == []  # never broadcast under conflicts-only
    w.send("USA", drawing("US-STRIKE", square(40.0, 35.2, 0.3), kind="strike-area"))
    (n,) = notices(w.take("USA"))
    assert n["kind"] in ("volume-site", "site-volume", "volume-volume") or "site" in n["kind"]
    assert "HOSPITAL" not in json.dumps(n)


def test_conflict_with_hotline_agreement_opens_a_thread_both_must_ack(tmp_path: Path) -> None:
    hotline = {"name": "hotline", "from": "USA", "to": ["RUS"], "categories": ["hotline"]}
    w = make_world(tmp_path, [*RIVALS, hotline])
    w.send("USA", drawing("A", square(38.0, 34.0, 1.0)))
    w.send("RUS", drawing("B", square(38.5, 34.5, 1.0)))
    threads = [m for m in w.services.hotline.history("USA") if m["conflict"]]
    assert len(threads) == 1 and set(threads[0]["to"]) == {"USA", "RUS"}
    assert set(threads[0]["pending"]) == {"USA", "RUS"}


def test_removing_a_plan_clears_the_notice(tmp_path: Path) -> None:
    w = make_world(tmp_path, RIVALS)
    w.send("USA", drawing("A", square(38.0, 34.0, 1.0)))
    w.send("RUS", drawing("B", square(38.5, 34.5, 1.0)))
    w.take("USA")
    w.send("USA", drawing("A", square(38.0, 34.0, 1.0), stale_s=0.0))  # withdrawn
    assert w.services.airspace.for_party("USA") == []
    cleared = [e for e in w.take("USA") if e.type == "t-x-csky-conflict"]
    assert cleared and 'state="cleared"' in cleared[0].detail


def test_tracks_on_collision_course_raise_cpa_notices_at_tick(tmp_path: Path) -> None:
    tracks = [
        {"name": n, "from": a, "to": [b], "categories": ["track"], "disclosure": "conflicts-only"}
        for n, a, b in (("1", "USA", "RUS"), ("2", "RUS", "USA"))
    ]
    w = make_world(tmp_path, tracks)
    w.send("USA", event("F22", "a-f-A-M-F", 34.60, 38.00, hae=9000, speed=250, course=90))
    w.send("RUS", event("SU35", "a-f-A-M-F", 34.60, 38.60, hae=9100, speed=250, course=270))
    # Each side's report of the *other's* aircraft (hostile to it) is an observation, not
    # one of its own forces: it never makes a conflict.
    w.send("USA", event("SEEN-SU35", "a-h-A-M-F", 34.60, 38.61, hae=9100, speed=250, course=270))
    assert notices(w.take("USA")) == []  # screened on the tick, not per update
    w.services.airspace.screen(budget_s=10.0)
    (n,) = notices(w.take("USA"))
    assert n["kind"] == "track-track" and n["tcpa_s"] == pytest.approx(109, abs=3)
    assert n["other_uid"] is None


@pytest.mark.parametrize(
    ("ring", "reason"),
    [
        ([(38.0, 34.0), (39.0, 35.0), (39.0, 34.0), (38.0, 35.0), (38.0, 34.0)], "self-inter"),
        ([(38.0, 34.0), (39.0, 34.0), (38.0, 34.0)], "fewer than 3"),
        ([(38.0, 34.0), (39.0, 34.0), (39.0, 95.0), (38.0, 34.0)], "latitude"),
    ],
)
def test_bad_drawings_are_refused_and_nothing_stored(tmp_path: Path, ring, reason) -> None:
    w = make_world(tmp_path, RIVALS)
    w.send("USA", drawing("GOOD", square(30.0, 30.0, 0.5)))
    before = list(w.hub.store.since(0))
    with pytest.raises(RemoteProtocolError) as info:
        w.send("USA", drawing("BAD", ring))
    assert info.value.reason == "bad_airspace" and reason in str(info.value).lower()
    assert list(w.hub.store.since(0)) == before
    assert ("USA", "GOOD") in w.hub.durable


def test_floor_above_ceiling_is_refused(tmp_path: Path) -> None:
    w = make_world(tmp_path, RIVALS)
    with pytest.raises(RemoteProtocolError, match="floor"):
        w.send("USA", drawing("BAD", square(30.0, 30.0, 0.5), floor_m=9000, ceiling_m=1000))


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(grow=st.floats(0.1, 2.0))
def test_notice_reveals_nothing_beyond_the_intersection(tmp_path_factory, grow) -> None:
    """RUS's notice is the same whatever USA's plan looks like outside the overlap."""
    results = []
    for size in (1.0, 1.0 + grow):
        w = make_world(tmp_path_factory.mktemp("w"), RIVALS)
        # USA's area: its only edge through RUS's square is the meridian lon=39; every other
        # edge lies outside the square and moves west as the area grows.
        west = 37.0 - size
        ring = [(39.0, 33.0), (39.0, 36.0), (west, 36.0), (west, 33.0), (39.0, 33.0)]
        w.send("USA", drawing("US-PLAN", ring))
        w.send("RUS", drawing("RU-OPS", square(38.5, 34.5, 1.0)))
        (n,) = notices(w.take("RUS"))
        n.pop("conflict_id")
        results.append(n)
    a, b = results
    assert a["other_uid"] is None and b["other_uid"] is None
    ring_a = a.pop("geometry")["coordinates"][0]
    ring_b = b.pop("geometry")["coordinates"][0]
    assert a == b
    # Same vertices, not just the same region: vertex spacing must not leak USA's edges.
    assert len(ring_a) == len(ring_b)
    for (xa, ya), (xb, yb) in zip(ring_a, ring_b, strict=True):
        assert (xa, ya) == pytest.approx((xb, yb), abs=1e-6)


def test_crossing_ones_own_line_concerns_the_other_side(tmp_path: Path) -> None:
    hotline = {"name": "hotline", "from": "USA", "to": ["RUS"], "categories": ["hotline"]}
    w = make_world(tmp_path, [*RIVALS, hotline])
    line = "".join(f'<link point="{lat},{lon}"/>' for lon, lat in ((38.0, 35.0), (41.0, 35.0)))
    w.send(
        "USA",
        event(
            "LINE",
            "u-d-f",
            35.0,
            38.0,
            stale_s=86400.0,
            detail=line + '<csky_airspace item="line" left_party="USA" right_party="RUS"/>',
        ),
    )
    # USA's plan reaches south of the line, into the side Russia is responsible for.
    w.send("USA", drawing("US-PLAN", square(39.0, 34.8, 0.4), kind="strike-area"))
    (n,) = [n for n in notices(w.take("RUS")) if n["kind"] == "line-crossing"]
    assert n["other_party"] == "USA" and n["other_uid"] is None  # conflicts-only for plans
    threads = [m for m in w.services.hotline.history("USA") if m["conflict"]]
    assert threads and set(threads[0]["to"]) == {"USA", "RUS"}


# ---- notices never undo `generalized` (issue 13, class 5) --------------------------------

GENERALIZED_TRACKS = [
    {
        "name": f"{a} tracks to {b}, generalized",
        "from": a,
        "to": [b],
        "categories": ["track"],
        "disclosure": "generalized",
    }
    for a, b in (("USA", "RUS"), ("RUS", "USA"))
]


def _head_on(w) -> None:
    # Two tracks closing on parallel courses 4.4 km apart: closest approach within a minute.
    w.send("USA", event("US-F16", "a-f-A-M-F", 35.02, 38.00, hae=6000, speed=250, course=90))
    w.send("RUS", event("RU-SU35", "a-f-A-M-F", 35.06, 38.30, hae=6100, speed=250, course=270))
    w.services.airspace.screen(budget_s=1.0)


def test_a_notice_about_a_generalized_track_names_its_handle_and_our_own_point(
    tmp_path: Path,
) -> None:
    hotline = {"name": "hotline", "from": "USA", "to": ["RUS"], "categories": ["hotline"]}
    w = make_world(tmp_path, [*GENERALIZED_TRACKS, hotline])
    _head_on(w)
    got = w.take("USA")
    (n,) = notices(got)
    (copy,) = [e for e in got if e.type.startswith("a-f-A")]  # RUS's generalized track
    assert n["kind"] == "track-track" and n["other_uid"] == copy.uid
    assert copy.uid.startswith("RUS::g-") and "SU35" not in json.dumps(n)
    assert n["dcpa_m"] is None and n["other_kind"] is None
    # USA's own position at closest approach, on USA's own track; USA's own altitude.
    lon, lat = n["geometry"]["coordinates"]
    assert lat == pytest.approx(35.02, abs=1e-4) and 38.0 < lon < 38.3
    assert n["floor_m"] == n["ceiling_m"] == pytest.approx(6000, abs=1)
    (m,) = notices(w.take("RUS"))
    _, lat_r = m["geometry"]["coordinates"]
    assert lat_r == pytest.approx(35.06, abs=1e-4)  # RUS is told its own point
    assert m["floor_m"] == pytest.approx(6100, abs=1)
    # Same answer whatever RUS's track carries beyond what USA may see of it.
    told = [e for e in w.received["USA"] if e.type == "t-x-csky-conflict"]
    assert "SU35" not in "".join(e.detail for e in told)
    # The thread both acknowledge names the conflict, no place, no height.
    (thread,) = [t for t in w.services.hotline.history("USA") if t["conflict"]]
    assert "35.0" not in thread["text"] and " m." not in thread["text"]
    assert n["thread"] == thread["id"] == m["thread"]


def test_no_thread_when_one_side_is_told_nothing(tmp_path: Path) -> None:
    hotline = {"name": "hotline", "from": "USA", "to": ["RUS"], "categories": ["hotline"]}
    one_way = [RIVALS[0], hotline]  # RUS is told of USA's plans; USA of nothing of RUS's
    w = make_world(tmp_path, one_way)
    w.send("USA", drawing("A", square(38.0, 34.0, 1.0)))
    w.send("RUS", drawing("B", square(38.5, 34.5, 1.0)))
    assert len(notices(w.take("RUS"))) == 1 and notices(w.take("USA")) == []
    assert [t for t in w.services.hotline.history("USA") if t["conflict"]] == []


# ---- a restart rebuilds the engine from the stored picture (issue 13, class 6) -----------


def test_after_a_restart_stored_plans_still_conflict_and_nothing_is_told_twice(
    tmp_path: Path,
) -> None:
    hotline = {"name": "hotline", "from": "USA", "to": ["RUS"], "categories": ["hotline"]}
    w = make_world(tmp_path, [*RIVALS, hotline])
    w.send("USA", drawing("US-A", square(38.0, 34.0, 1.0)))
    w.send("RUS", drawing("RU-B", square(38.5, 34.5, 1.0)))
    before = json.dumps(w.services.airspace.for_party("USA"))
    entries = w.services.recorder.ledger.size
    w.services.close()
    w.hub.store.close()
    w = make_world(tmp_path, [*RIVALS, hotline])
    assert json.dumps(w.services.airspace.for_party("USA")) == before  # read back, thread too
    assert json.loads(before)[0]["thread"]
    assert w.services.recorder.ledger.size == entries  # nothing published again
    # The stored plan is in the engine: a new one against it raises a new conflict...
    w.send("RUS", drawing("RU-C", square(37.5, 33.5, 1.0)))
    assert len(w.services.airspace.for_party("USA")) == 2
    # ...and withdrawing the stored one clears both.
    w.send("USA", drawing("US-A", square(38.0, 34.0, 1.0), stale_s=-1))
    assert w.services.airspace.for_party("USA") == []


def test_notices_that_no_longer_hold_after_a_restart_are_cleared(tmp_path: Path) -> None:
    w = make_world(tmp_path, RIVALS)
    w.send("USA", drawing("US-A", square(38.0, 34.0, 1.0), stale_s=600))
    w.send("RUS", drawing("RU-B", square(38.5, 34.5, 1.0), stale_s=7200))
    assert len(w.services.airspace.for_party("RUS")) == 1
    w.services.close()
    w.hub.store.close()
    # The agreements changed while the hub was down: neither may be told any more.
    w = make_world(tmp_path, [])
    assert w.services.airspace.for_party("RUS") == []
    notices_stored = [i for i in w.hub.store.since(0) if i.event.type == "t-x-csky-conflict"]
    assert [('state="cleared"' in i.event.detail) for i in notices_stored] == [0, 0, 1, 1]
    assert not any(i.key in w.hub.durable for i in notices_stored)
    w.services.close()
    w.hub.store.close()
    # US-A's end passed while down: its notice went stale with it, nothing to tell.
    w = make_world(tmp_path, RIVALS, now=w.clock.now + 1200)
    assert w.services.airspace.for_party("RUS") == []
    assert len(w.services.airspace.engine.conflicts()) == 0


# ---- TAK drawings its sender did not declare airspace (no <csky_airspace>) ----------------

SHARING = [
    {"name": "US to RU", "from": "USA", "to": ["RUS"], "categories": ["airspace"]},
    {"name": "RU to US", "from": "RUS", "to": ["USA"], "categories": ["airspace"]},
]
BOWTIE = [(38.0, 34.0), (39.0, 35.0), (39.0, 34.0), (38.0, 35.0), (38.0, 34.0)]


def tak_drawing(uid: str, points: list[tuple[float, float]], cot_type: str = "u-d-f") -> CotEvent:
    """A drawing as ATAK sends it: vertices and style, nothing of CommonSky's."""
    links = "".join(f'<link point="{lat},{lon}"/>' for lon, lat in points)
    style = '<strokeColor value="-1"/><contact callsign="Shape 1"/><archive/>'
    lon, lat = points[0] if points else (38.0, 34.0)
    return event(uid, cot_type, lat=lat, lon=lon, detail=links + style, stale_s=7200.0)


@pytest.mark.parametrize(
    ("points", "cot_type"),
    [
        (BOWTIE, "u-d-f"),  # a freehand that crosses itself
        ([(38.0, 34.0), (39.0, 34.0), (38.0, 34.0)], "u-d-f"),  # closed on two points
        ([(38.2, 34.2)], "b-m-r"),  # a route of one waypoint
        ([], "u-d-f"),  # no vertices at all
    ],
)
def test_a_tak_drawing_the_engine_cannot_hold_is_relayed_and_kept_unscreened(
    tmp_path: Path, points: list[tuple[float, float]], cot_type: str
) -> None:
    """Valid TAK traffic the user's team and partners must see: it was refused as
    bad_airspace (not relayed, not even inside its party). It is not screened."""
    w = make_world(tmp_path, SHARING)
    w.send("RUS", drawing("RU-OPS", square(37.5, 33.5, 2.0), 0, 12000))
    w.take("USA")
    w.send("USA", tak_drawing("DOODLE", points, cot_type))
    got = w.take("RUS")
    assert [e.uid for e in got if e.type == cot_type] == ["USA::DOODLE"]
    assert ("USA", "DOODLE") in w.hub.durable
    assert notices(got) == [] and notices(w.take("USA")) == []


def test_a_drawing_redrawn_into_one_the_engine_cannot_hold_leaves_the_engine(
    tmp_path: Path,
) -> None:
    w = make_world(tmp_path, SHARING)
    w.send("RUS", drawing("RU-OPS", square(38.0, 34.0, 1.0), 0, 12000))
    w.send("USA", tak_drawing("AREA", square(38.5, 34.5, 1.0)))
    assert len(notices(w.take("USA"))) == 1  # an undeclared drawing that is an area: screened
    w.send("USA", tak_drawing("AREA", BOWTIE))
    assert w.services.airspace.for_party("USA") == []
    cleared = [e for e in w.take("USA") if e.type == "t-x-csky-conflict"]
    assert cleared and 'state="cleared"' in cleared[0].detail


def test_bad_geometry_in_a_declared_drawing_is_still_refused(tmp_path: Path) -> None:
    w = make_world(tmp_path, SHARING)
    declared = tak_drawing("DECLARED", BOWTIE)
    declared = msgspec.structs.replace(declared, detail=declared.detail + "<csky_airspace/>")
    with pytest.raises(RemoteProtocolError) as info:
        w.send("USA", declared)
    assert info.value.reason == "bad_airspace"
    assert ("USA", "DECLARED") not in w.hub.durable
