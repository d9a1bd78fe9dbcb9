"""The map page's typed JSON: each shape kind's GeoJSON is the shape the item's detail draws."""

from __future__ import annotations

import math

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from commonsky.evidence.marker import marker_event
from commonsky.hub.render import item_json
from commonsky.model import Category, CotEvent, Item, Point

NOW = 1_800_000_000.0


def _page(cot_type: str, category: Category, detail: str, point: Point | None = None) -> dict:
    event = CotEvent(
        uid="u1",
        type=cot_type,
        time=NOW,
        start=NOW,
        stale=NOW + 3600,
        how="h-e",
        point=point or Point(50.0, 10.0),
        detail=detail,
    )
    item = Item("A", "a", category, event, NOW)
    # Through the wire form, as the page gets it.
    out: dict = msgspec.json.decode(msgspec.json.encode(item_json(item, event)))
    assert out["detail"] == detail  # the API keeps the detail as sent
    return out


def _links(points: list[tuple[float, float]]) -> str:
    return "".join(f'<link point="{lat},{lon}"/>' for lon, lat in points)


RING = [(10.0, 50.0), (10.2, 50.0), (10.2, 50.1), (10.0, 50.1), (10.0, 50.0)]
PATH = [(10.0, 50.0), (10.3, 50.2), (10.5, 50.1)]


def test_polygon_volume() -> None:
    ext = '<csky_airspace item="volume" kind="operating-area" floor_m="100" ceiling_m="3000"/>'
    out = _page("u-d-f", Category.AIRSPACE, _links(RING) + ext + "<remarks>ops</remarks>")
    assert out["geometry"] == {"type": "Polygon", "coordinates": [[list(p) for p in RING]]}
    assert out["airspace"]["kind"] == "operating-area"
    assert (out["airspace"]["floor_m"], out["airspace"]["ceiling_m"]) == (100.0, 3000.0)
    assert out["remarks"] == "ops"


def test_rectangle_is_closed() -> None:
    out = _page("u-d-r", Category.AIRSPACE, _links(RING[:4]))
    assert out["geometry"]["coordinates"] == [[list(p) for p in RING]]


def test_circle_from_ellipse() -> None:
    detail = '<shape><ellipse major="2500" minor="2500" angle="0"/></shape>'
    out = _page("u-d-c-c", Category.AIRSPACE, detail, Point(50.5, 10.5))
    assert out["geometry"] == {"type": "Point", "coordinates": [10.5, 50.5], "radius_m": 2500.0}


def test_route_corridor() -> None:
    out = _page("b-m-r", Category.AIRSPACE, _links(PATH) + '<csky_airspace width_m="3000"/>')
    assert out["geometry"] == {
        "type": "LineString",
        "coordinates": [list(p) for p in PATH],
        "width_m": 3000.0,
    }


def test_deconfliction_line() -> None:
    ext = '<csky_airspace item="line" left_party="A" right_party="B"/>'
    out = _page("u-d-f", Category.AIRSPACE, _links(PATH) + ext)
    assert out["geometry"] == {"type": "LineString", "coordinates": [list(p) for p in PATH]}
    assert (out["airspace"]["left_party"], out["airspace"]["right_party"]) == ("A", "B")


def test_protected_site_point_and_radius() -> None:
    out = _page("u-d-p", Category.SITE, '<csky_airspace radius_m="750"/>', Point(49.0, 8.0))
    assert out["geometry"] == {"type": "Point", "coordinates": [8.0, 49.0], "radius_m": 750.0}
    assert out["airspace"]["item"] == "site"
    default = _page("b-m-p-s-p-i", Category.SITE, "", Point(49.0, 8.0))
    assert default["geometry"]["radius_m"] == 1000.0


def test_generalized_drawing_is_its_coarse_spot() -> None:
    out = _page("u-d-f", Category.AIRSPACE, "", Point(49.0, 8.0, ce=11_000.0))
    assert out["geometry"] == {"type": "Point", "coordinates": [8.0, 49.0], "radius_m": 11_000.0}


def test_photo_footprint_and_evidence() -> None:
    facts = {"captured": "2027-01-01T00:00:00Z", "user": "cam", "sha256": "ab" * 32}
    event = marker_event("p1", NOW, (50.05, 10.1), "t", facts, RING, b"\xff\xd8jpeg")
    out = _page(event.type, Category.IMAGERY, event.detail, event.point)
    assert out["geometry"] == {"type": "Polygon", "coordinates": [[list(p) for p in RING]]}
    assert out["evidence"]["user"] == "cam" and out["evidence"]["sha256"] == "ab" * 32
    assert out["thumbnail"]
    bare = _page("b-i-x-i", Category.IMAGERY, "", Point(50.0, 10.0))
    assert bare["geometry"] == {"type": "Point", "coordinates": [10.0, 50.0]}
    assert bare["evidence"] is None


def test_conflict_notice_geometry() -> None:
    geometry = {"type": "Polygon", "coordinates": [[list(p) for p in RING]]}
    body = msgspec.json.encode({"other_party": "B", "geometry": geometry}).decode()
    out = _page(
        "t-x-csky-conflict",
        Category.CONFLICT,
        f'<csky_conflict state="open">{body}</csky_conflict>',
    )
    assert out["notice"]["other_party"] == "B"
    assert out["geometry"] == geometry


def test_tracks_carry_no_page_fields() -> None:
    out = _page("a-f-A", Category.TRACK, "<remarks>x</remarks>")
    assert "geometry" not in out and "remarks" not in out


@given(
    st.lists(
        st.tuples(
            st.floats(-179.0, 179.0).map(lambda v: round(v, 5)),
            st.floats(-80.0, 80.0).map(lambda v: round(v, 5)),
        ),
        min_size=3,
        max_size=12,
        unique=True,
    )
)
def test_polygon_geometry_is_the_drawn_ring(points: list[tuple[float, float]]) -> None:
    """Whatever ring a TAK user draws, the page gets exactly its vertices ([lon, lat]), or —
    when the deconfliction desk refuses the drawing — the item's spot, never another shape."""
    ring = [*points, points[0]]
    out = _page("u-d-f", Category.AIRSPACE, _links(ring))
    if out["geometry"]["type"] == "Polygon":
        assert out["geometry"]["coordinates"] == [[list(p) for p in ring]]
    else:
        assert out["geometry"]["coordinates"] == [10.0, 50.0]
        assert math.isfinite(out["geometry"]["radius_m"])


def test_launch_and_alert_extensions() -> None:
    fused = {"event_id": "e1", "parties": ["A"], "n_points": 3}
    out = _page(
        "b-l-f", Category.LAUNCH, f"<csky_fused>{msgspec.json.encode(fused).decode()}</csky_fused>"
    )
    assert out["fused"] == fused and out["report"] is None
    cap = '<csky_cap identifier="id-1" msgType="Alert"/><remarks>take cover</remarks>'
    out = _page("b-a-o-c", Category.ALERT, cap)
    assert out["cap"] == {"identifier": "id-1", "msgType": "Alert"}
    assert out["remarks"] == "take cover"


def test_unreadable_extension_json_is_null_not_an_error() -> None:
    out = _page("b-l-r", Category.LAUNCH, "<csky_launch>{not json</csky_launch>")
    assert out["report"] is None and out["fused"] is None


def test_an_alert_carries_its_warned_areas_as_geometry() -> None:
    areas = {"type": "MultiPolygon", "coordinates": [[[list(p) for p in RING]]]}
    cap = (
        f'<csky_cap identifier="id-2" msgType="Update">{msgspec.json.encode(areas).decode()}'
        "</csky_cap>"
    )
    out = _page("b-a-o-csky", Category.ALERT, cap)
    assert out["geometry"] == areas
    assert out["cap"] == {"identifier": "id-2", "msgType": "Update"}
    bare = _page("b-a-o-csky", Category.ALERT, '<csky_cap identifier="id-1" msgType="Alert"/>')
    assert bare["geometry"] is None  # (an alert without areas, or made before they rode along)
