# Rule: the engine raises a conflict once, updates it while it lasts, clears it when it ends,
# and only ever between different parties; notices under conflicts-only reveal the overlap and
# nothing else.

from __future__ import annotations

import msgspec
import pytest
import shapely
import shapely.geometry
from hypothesis import given, settings
from hypothesis import strategies as st

from commonsky.deconflict.engine import ConflictEngine, Track
from commonsky.deconflict.notice import notice_for
from commonsky.deconflict.shapes import (
    Circle,
    Line,
    Point,
    Polygon,
    Shape,
    Site,
    Volume,
    VolumeKind,
)
from commonsky.geo import Frame


def box(lon0: float, lat0: float, lon1: float, lat1: float) -> Polygon:
    return Polygon(ring=((lon0, lat0), (lon1, lat0), (lon1, lat1), (lon0, lat1)))


def vol(shape: Shape, floor: float = 0.0, ceil: float = 5000.0, t0: float = 0.0,
        t1: float = 3600.0, kind: VolumeKind | None = None) -> Volume:  # fmt: skip
    return Volume(shape=shape, floor_m=floor, ceiling_m=ceil, start_s=t0, end_s=t1, kind=kind)


def test_volume_conflict_lifecycle() -> None:
    e = ConflictEngine()
    assert e.upsert_volume("USA", "u1", vol(box(38.0, 35.0, 38.5, 35.5)), now=0.0) == []
    raised = e.upsert_volume("RUS", "r1", vol(box(38.4, 35.0, 39.0, 35.5)), now=0.0)
    assert [c.action for c in raised] == ["raised"]
    c = raised[0].conflict
    assert c.kind == "volume-volume"
    assert {c.a.party, c.b.party} == {"USA", "RUS"}
    assert (c.floor_m, c.ceiling_m, c.start_s, c.end_s) == (0.0, 5000.0, 0.0, 3600.0)
    # Same again: nothing to say.
    assert e.upsert_volume("RUS", "r1", vol(box(38.4, 35.0, 39.0, 35.5)), now=1.0) == []
    # Grows towards the other: same conflict id, updated.
    upd = e.upsert_volume("RUS", "r1", vol(box(38.3, 35.0, 39.0, 35.5)), now=2.0)
    assert [(x.action, x.conflict.id) for x in upd] == [("updated", c.id)]
    # Same party never conflicts with itself.
    assert e.upsert_volume("USA", "u2", vol(box(38.0, 35.0, 39.0, 35.5)), now=2.0)[0].conflict.b
    own = [x for x in e.conflicts() if {x.a.uid, x.b.uid} == {"u1", "u2"}]
    assert own == []
    # Moved above: cleared.
    cleared = e.upsert_volume("RUS", "r1", vol(box(38.3, 35.0, 39.0, 35.5), 6000, 9000), 3.0)
    assert {x.action for x in cleared} == {"cleared"}
    assert c.id in {x.conflict.id for x in cleared}
    assert len(cleared) == 2  # with u1 and with u2
    assert e.conflicts() == []


def test_altitude_and_time_are_strict_and_expiry_clears() -> None:
    e = ConflictEngine()
    e.upsert_volume("A", "a", vol(box(0.0, 0.0, 1.0, 1.0), 0, 3000, 0, 100), now=0.0)
    assert e.upsert_volume("B", "b", vol(box(0.5, 0.5, 1.5, 1.5), 3000, 4000, 0, 100), 0.0) == []
    assert e.upsert_volume("B", "b", vol(box(0.5, 0.5, 1.5, 1.5), 0, 4000, 100, 200), 0.0) == []
    ch = e.upsert_volume("B", "b", vol(box(0.5, 0.5, 1.5, 1.5), 2000, 4000, 50, 200), 0.0)
    assert ch[0].action == "raised"
    assert (ch[0].conflict.floor_m, ch[0].conflict.ceiling_m) == (2000, 3000)
    assert (ch[0].conflict.start_s, ch[0].conflict.end_s) == (50, 100)
    assert e.expire(99.0) == []
    gone = e.expire(100.0)
    assert [x.action for x in gone] == ["cleared"]
    assert e.conflicts() == []


def test_line_crossing_by_volume_and_track() -> None:
    e = ConflictEngine()
    # A north-south line along 40E: RUS responsible west (left, looking north), USA east.
    e.upsert_line("USA", "line", Line(path=((40.0, 34.0), (40.0, 36.0)),
                                         left_party="RUS", right_party="USA"), now=0.0)  # fmt: skip
    assert e.upsert_volume("RUS", "west", vol(box(39.0, 35.0, 39.9, 35.5)), 0.0) == []
    ch = e.upsert_volume("RUS", "over", vol(box(39.5, 35.0, 40.5, 35.5)), 0.0)
    assert len(ch) == 1
    c = ch[0].conflict
    assert c.kind == "line-crossing"
    assert c.entered_party == "USA"
    assert c.geometry is not None
    lons = [p[0] for p in c.geometry["coordinates"][0]]
    assert min(lons) == pytest.approx(40.0, abs=1e-6)
    assert max(lons) == pytest.approx(40.5, abs=1e-6)
    # A USA track heading west will cross into the RUS side within the look-ahead.
    t = Track(lat=35.2, lon=40.1, alt_m=9000, gs_mps=250, trk_deg=270, vs_mps=0, time_s=0.0)
    ch = e.upsert_track("USA", "f16", t, now=0.0)
    kinds = [(x.action, x.conflict.kind, x.conflict.entered_party) for x in ch]
    assert ("raised", "line-crossing", "RUS") in kinds
    east = Track(lat=35.2, lon=40.1, alt_m=9000, gs_mps=250, trk_deg=90, vs_mps=0, time_s=1.0)
    assert [x.action for x in e.upsert_track("USA", "f16", east, now=1.0)] == ["cleared"]


def test_track_entering_volume_and_site() -> None:
    e = ConflictEngine()
    e.upsert_volume("RUS", "ops", vol(box(37.0, 35.0, 37.5, 35.5), 0, 8000, 0, 10_000), 0.0)
    e.upsert_site("RUS", "base", Site(shape=Point(at=(37.9, 35.25))), 0.0)
    t = Track(lat=35.25, lon=36.9, alt_m=6000, gs_mps=250, trk_deg=90, vs_mps=0, time_s=0.0)
    ch = e.upsert_track("USA", "t1", t, now=0.0)
    got = {x.conflict.kind: x.conflict for x in ch}
    assert set(got) == {"track-volume"}  # the site is ~90 km away: beyond 300 s at 250 m/s
    assert got["track-volume"].start_s == pytest.approx(9_100 / 250, abs=3)
    far = Track(lat=35.25, lon=37.6, alt_m=6000, gs_mps=250, trk_deg=90, vs_mps=0, time_s=1.0)
    ch = e.upsert_track("USA", "t1", far, now=1.0)
    assert sorted((x.action, x.conflict.kind) for x in ch) == [
        ("cleared", "track-volume"),
        ("raised", "track-site"),
    ]
    high = Track(lat=35.25, lon=37.6, alt_m=8500, gs_mps=250, trk_deg=90, vs_mps=0, time_s=2.0)
    e.upsert_track("USA", "t1", high, now=2.0)
    assert [c.kind for c in e.conflicts()] == ["track-site"]  # sites protect every altitude


def test_track_pairs_with_minima_per_party_pair() -> None:
    def minima(a: str, b: str) -> tuple[float, float]:
        return (2_000.0, 300.0) if {a, b} == {"JPN", "KOR"} else (9_260.0, 304.8)

    e = ConflictEngine(minima=minima, id_key=b"test")
    a = Track(lat=0.0, lon=0.0, alt_m=9000, gs_mps=0, trk_deg=0, vs_mps=0, time_s=0.0)
    b = Track(lat=0.0, lon=0.045, alt_m=9000, gs_mps=0, trk_deg=0, vs_mps=0, time_s=0.0)
    e.upsert_track("JPN", "a", a, 0.0)
    assert e.upsert_track("KOR", "b", b, 0.0) == []  # 5 km apart, minimum 2 km
    ch = e.upsert_track("USA", "c", b, 0.0)
    assert [x.conflict.kind for x in ch] == ["track-track", "track-track"]
    dcpa = sorted(x.conflict.dcpa_m or 0.0 for x in ch)
    assert dcpa == [pytest.approx(0.0, abs=1), pytest.approx(5_009, abs=5)]
    assert [x.action for x in e.remove("USA", "c", 1.0)] == ["cleared", "cleared"]
    # Stale tracks go away.
    e.upsert_track("USA", "c", b, 0.0)
    assert e.expire(30.0) == []
    assert any(x.action == "cleared" for x in e.expire(61.0))
    assert len(e) == 0


def test_notice_disclosure_levels() -> None:
    e = ConflictEngine()
    e.upsert_volume("USA", "strike-7", vol(box(38.0, 35.0, 38.5, 35.5), kind="strike-area"), 0.0)
    c = e.upsert_volume("RUS", "ops-1", vol(box(38.4, 35.0, 39.0, 35.5)), 0.0)[0].conflict
    full = notice_for(c, "RUS", "full")
    assert (full.other_party, full.other_uid, full.other_kind) == ("USA", "strike-7", "strike-area")
    assert full.own_uid == "ops-1"
    gen = notice_for(c, "RUS", "generalized", handle=lambda p, u: f"{p}::g-{len(u)}")
    assert (gen.other_uid, gen.other_kind) == ("USA::g-8", None)  # the handle, never the uid
    assert notice_for(c, "RUS", "generalized").other_uid is None  # no handle: not named
    only = notice_for(c, "RUS", "conflicts-only")
    text = msgspec.json.encode(only)
    assert b"strike" not in text
    assert only.other_party == "USA"
    with pytest.raises(ValueError, match="not a side"):
        notice_for(c, "JPN", "full")


coord = st.floats(min_value=0.05, max_value=0.5)


@settings(max_examples=25, deadline=None)
@given(
    lon0=st.floats(min_value=-179.9, max_value=179.0),
    lat0=st.floats(min_value=-70.0, max_value=70.0),
    w=coord,
    h=coord,
    overlap=st.floats(min_value=0.1, max_value=0.9),
    bw=coord,
    extend=st.floats(min_value=0.01, max_value=1.0),
    floors=st.tuples(st.floats(1500, 4000), st.floats(-1500, 2500)),
)
def test_conflicts_only_notice_ignores_the_other_volume_outside_the_overlap(
    lon0: float,
    lat0: float,
    w: float,
    h: float,
    overlap: float,
    bw: float,
    extend: float,
    floors: tuple[float, float],
) -> None:
    def wrap(x: float) -> float:
        return (x + 180.0) % 360.0 - 180.0

    mine = box(wrap(lon0), lat0, wrap(lon0 + w), lat0 + h)
    bx0 = lon0 + w * (1 - overlap)  # starts inside mine, runs east beyond it
    bx1, y0, y1 = lon0 + w + bw, lat0 - 0.1, lat0 + h / 2
    theirs = box(wrap(bx0), y0, wrap(bx1), y1)
    # The same edges through the overlap, plus a bulge beyond the far side, away from mine.
    bump = ((bx1, y0), (bx1 + extend, y0 - extend), (bx1 + extend, y1 + extend), (bx1, y1))
    bigger = Polygon(ring=((wrap(bx0), y0), *((wrap(x), y) for x, y in bump), (wrap(bx0), y1)))

    def notice(other: Polygon, uid: str) -> bytes:
        e = ConflictEngine(id_key=b"fixed")
        e.upsert_volume("USA", "mine", vol(mine, floors[0], floors[0] + 3000), 0.0)
        other_vol = vol(
            other, floors[0] + floors[1], floors[0] + floors[1] + 2000, kind="strike-area"
        )
        (ch,) = e.upsert_volume("RUS", uid, other_vol, 0.0)
        n = notice_for(ch.conflict, "USA", "conflicts-only")
        text = msgspec.json.encode(n)
        assert uid.encode() not in text
        assert b"strike" not in text
        return text

    a = msgspec.json.decode(notice(theirs, "SECRET-1"))
    b = msgspec.json.decode(notice(bigger, "SECRET-1"))
    # The overlap must be the same region: within 5 cm everywhere (Hausdorff distance in a
    # local frame). Vertex lists may differ by a crossing node a float's width apart.
    ga, gb = shapely.geometry.shape(a.pop("geometry")), shapely.geometry.shape(b.pop("geometry"))
    frame = Frame(*ga.centroid.coords[0])
    pa, pb = shapely.transform(ga, frame.fwd), shapely.transform(gb, frame.fwd)
    assert pa.area > 1e4
    assert shapely.hausdorff_distance(pa, pb) < 0.05
    _assert_close(a, b)


def _assert_close(a: object, b: object) -> None:
    """Equal structures; floats within 1e-7 (degrees: about a centimetre)."""
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, int | float)
        assert isinstance(b, int | float)
        assert a == pytest.approx(b, abs=1e-7)
    elif isinstance(a, list):
        assert isinstance(b, list)
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_close(x, y)
    elif isinstance(a, dict):
        assert isinstance(b, dict)
        assert a.keys() == b.keys()
        for k in a:
            _assert_close(a[k], b[k])
    else:
        assert a == b


def test_strike_area_over_another_partys_site_conflicts_but_other_plans_do_not() -> None:
    from commonsky.deconflict.engine import ConflictEngine
    from commonsky.deconflict.shapes import Circle, Polygon, Site, Volume

    engine = ConflictEngine()
    engine.upsert_site(
        "RUS", "hospital", Site(shape=Circle(centre=(40.10, 35.30), radius_m=1500)), now=0.0
    )
    ring = ((40.02, 35.34), (40.16, 35.34), (40.16, 35.24), (40.02, 35.24), (40.02, 35.34))
    ops = Volume(
        shape=Polygon(ring=ring),
        floor_m=0,
        ceiling_m=9000,
        start_s=0,
        end_s=3600,
        kind="operating-area",
    )
    assert engine.upsert_volume("USA", "ops", ops, now=0.0) == []
    strike = Volume(
        shape=Polygon(ring=ring),
        floor_m=0,
        ceiling_m=9000,
        start_s=0,
        end_s=3600,
        kind="strike-area",
    )
    (change,) = engine.upsert_volume("USA", "strike", strike, now=0.0)
    assert change.action == "raised" and change.conflict.kind == "volume-site"
    # A party's strike over its own site is its own business: no volume-site conflict.
    own = engine.upsert_volume("RUS", "own-strike", strike, now=0.0)
    assert "volume-site" not in [c.conflict.kind for c in own]


def test_every_pair_of_item_kinds_is_checked_without_error() -> None:
    # The pair checks are dispatched on the two kinds; a pair no check names (two parties'
    # protected sites, side by side) once fell to the strike-area check and raised
    # AssertionError. Every kind against every kind, all in one place, must just work.
    site = Site(shape=Circle(centre=(10.0, 10.0), radius_m=2000))
    items = {
        "volume": vol(Circle(centre=(10.0, 10.0), radius_m=3000), kind="strike-area"),
        "site": site,
        "line": Line(path=((9.9, 9.9), (10.1, 10.1)), left_party="A", right_party="B"),
        "track": Track(lat=10.0, lon=10.0, alt_m=1000, gs_mps=100, trk_deg=0, vs_mps=0, time_s=0),
    }
    for first, x in items.items():
        for second, y in items.items():
            engine = ConflictEngine()
            for party, item in (("A", x), ("B", y)):
                upsert = {
                    Volume: engine.upsert_volume,
                    Site: engine.upsert_site,
                    Line: engine.upsert_line,
                    Track: engine.upsert_track,
                }[type(item)]
                upsert(party, f"{party}-{first}-{second}", item, 0.0)  # type: ignore[operator]
            kinds = {c.kind for c in engine.conflicts()}
            if {first, second} == {"site"}:
                assert kinds == set()


def test_a_strike_area_ending_now_is_over_as_every_window_is() -> None:
    # Windows are [start, end) for every kind (volume-volume, line-crossing, expiry); the
    # strike check alone once raised a conflict for a strike area ending at this instant.
    engine = ConflictEngine()
    engine.upsert_site("RUS", "site", Site(shape=Circle(centre=(0.0, 0.0), radius_m=500)), 0)
    strike = vol(Circle(centre=(0.0, 0.0), radius_m=800), t0=40.0, t1=100.0, kind="strike-area")
    assert engine.upsert_volume("USA", "ends-now", strike, now=100.0) == []
    (change,) = engine.upsert_volume("USA", "ends-later", strike, now=99.0)
    assert change.conflict.kind == "volume-site" and change.conflict.start_s == 99.0


def test_a_lines_side_is_a_band_beside_it_however_short_the_line() -> None:
    # A line's side once reached only as far as the line's own cap: a volume beside the end of
    # a short line, outside that cap, was on no side. Now each side is the band beside the
    # line (flat at its ends), line_reach_m deep, wherever along the line the volume is.
    line = Line(path=((0.0, -0.045), (0.0, 0.0), (0.0225, 0.039)), left_party="A",
                  right_party="B")  # fmt: skip
    e = ConflictEngine(line_reach_m=50_000.0)
    e.upsert_line("A", "line", line, now=0.0)
    beside_the_end = vol(Circle(centre=(0.0, 0.0489), radius_m=834.0))
    (change,) = e.upsert_volume("B", "v", beside_the_end, 0.0)
    assert change.conflict.kind == "line-crossing" and change.conflict.entered_party == "A"
    # 40 km beside the line: on its side; 60 km: past its reach, on neither.
    at_40 = vol(Circle(centre=(-0.36, 0.0), radius_m=500.0))
    at_60 = vol(Circle(centre=(-0.54, 0.0), radius_m=500.0))
    assert [c.conflict.kind for c in e.upsert_volume("B", "at-40", at_40, 0.0)] == ["line-crossing"]
    assert e.upsert_volume("B", "at-60", at_60, 0.0) == []
