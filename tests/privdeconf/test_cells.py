"""Cells: the covering never misses, and the invariant the private path rests on — whenever
the single-hub engine finds a conflict between an item of A and one of B, their tokens meet."""

from __future__ import annotations

import h3
import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commonsky.deconflict.shapes import Circle, Line, Polygon, Site, Volume
from commonsky.privdeconf import CellsError, Holding, Terms
from commonsky.privdeconf.cells import (
    COVER_MARGIN_M,
    CellSet,
    band_range,
    cell_polygons,
    claims_of,
    parse_token,
)
from tests.privdeconf.helpers import (
    A_PARTIES,
    B_PARTIES,
    T0,
    TERMS,
    across_an_edge,
    centres,
    circle_volume,
    engine_cross,
    rival_items,
    shapes,
)

SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _tokens(h: Holding, now: float, terms: Terms = TERMS) -> set[str]:
    peers = B_PARTIES if h.party in A_PARTIES else A_PARTIES
    return {t for c in claims_of(h, terms, now, peers, 10**6) for t in c.tokens()}


@SLOW
@given(st.data())
def test_every_point_of_a_dilated_item_lies_in_one_of_its_cells(data: st.DataObject) -> None:
    lon, lat = data.draw(centres())
    shape = data.draw(shapes(lon, lat))
    v = Volume(shape=shape, floor_m=0, ceiling_m=1, start_s=T0, end_s=T0 + 1)
    (claim, *_) = claims_of(Holding(party="A1", uid="x", item=v), TERMS, T0, [], 10**6)
    region = claim.region.buffer(TERMS.rpz_m / 2)
    x0, y0, x1, y1 = region.bounds
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
    pts = rng.uniform([x0, y0], [x1, y1], size=(3000, 2))
    pts = pts[shapely.contains_xy(region, pts[:, 0], pts[:, 1])]
    # ...and points right on the dilated outline, where a cover would be thinnest.
    edge = shapely.get_coordinates(region.exterior)
    lonlat = claim.frame.inv(np.vstack([pts, edge]))
    missing = {h3.latlng_to_cell(la, lo, TERMS.grid_level) for lo, la in lonlat} - claim.cells
    assert not missing


@settings(max_examples=40, deadline=None)
@given(centres(), st.integers(3, 7), st.integers(0, 2**32))
def test_a_cells_outline_holds_every_point_h3_puts_in_it(
    centre: tuple[float, float], level: int, seed: int
) -> None:
    # The covering decides "meets" with our rendering of a cell's outline; H3 decides which
    # cell a point is in. They must agree to within the margin, or a cover could miss.
    lon, lat = centre
    cell = h3.latlng_to_cell(lat, lon, level)
    from commonsky.geo import Frame

    frame = Frame(lon, lat)
    poly = cell_polygons([cell], frame)[0]
    ring = np.asarray(h3.cell_to_boundary(cell))
    rng = np.random.default_rng(seed)
    # Points along the true edges, nudged a millimetre to a metre either way.
    k = rng.integers(0, len(ring), 400)
    t = rng.uniform(0, 1, 400)
    a, b = ring[k], ring[(k + 1) % len(ring)]
    dlon = (b[:, 1] - a[:, 1] + 540) % 360 - 180
    pts = np.column_stack([a[:, 1] + t * dlon, a[:, 0] + t * (b[:, 0] - a[:, 0])])
    pts[:, 0] = (pts[:, 0] + 180) % 360 - 180
    xy = frame.fwd(pts) + rng.normal(0, 0.5, (400, 2))
    back = frame.inv(xy)
    inside = np.array([h3.latlng_to_cell(la, lo, level) == cell for lo, la in back])
    dist = shapely.distance(poly, shapely.points(xy[inside]))
    assert (dist <= COVER_MARGIN_M).all(), dist.max()


@SLOW
@given(st.one_of(rival_items(), across_an_edge()))
def test_a_conflict_the_engine_finds_across_hubs_shares_a_token(
    items: tuple[list[Holding], list[Holding]],
) -> None:
    a, b = items
    now = T0
    by_uid = {h.uid: h for h in (*a, *b)}
    for c in engine_cross(a, b, now):
        ta, tb = _tokens(by_uid[c.a.uid], now), _tokens(by_uid[c.b.uid], now)
        assert ta & tb, f"{c.kind} between {c.a.uid} and {c.b.uid} shares no token"


def test_bands_and_slots_round_outwards() -> None:
    assert band_range(0, 1000, 1000) == range(0, 1)  # [0, 1000) is band 0 only
    assert band_range(-1, 1000, 1000) == range(-1, 1)
    assert band_range(999.5, 1000.5, 1000) == range(0, 2)
    assert band_range(5, 5, 1000) == range(0, 1)  # never empty


def test_tokens_carry_the_cell_and_nothing_of_the_item() -> None:
    h = circle_volume(
        "RUS",
        "SECRET-UID-7",
        (38.3, 34.6),
        radius_m=3_000,
        ceiling_m=1000,
        end_s=T0 + 60,
        kind="strike-area",
    )
    tokens = CellSet.build([h], TERMS, T0, ["USA"]).tokens
    assert tokens
    for t in tokens:
        assert "SECRET" not in t and "strike" not in t
        layer, cell, rest = parse_token(t)
        assert h3.is_valid_cell(cell) and h3.get_resolution(cell) == TERMS.grid_level
        assert layer in "vsl" and (rest == "RUS" or layer != "l")


def test_a_volume_that_has_ended_makes_no_cells_and_a_line_only_sides_the_peer_holds() -> None:
    ended = circle_volume("A1", "v", (0, 0), radius_m=500, ceiling_m=1, start_s=0, end_s=T0)
    assert claims_of(ended, TERMS, T0, B_PARTIES, 10**6) == []
    line = Line(path=((0, 0), (0.1, 0.1)), left_party="A1", right_party="B1")
    claims = claims_of(Holding(party="A1", uid="l", item=line), TERMS, T0, B_PARTIES, 10**6)
    assert [(c.party, c.entered) for c in claims] == [("B1", "A1")]  # A1's side binds only A1


def test_cells_past_the_cap_are_refused_with_what_to_change() -> None:
    big = Volume(
        shape=Polygon(ring=((30, 30), (35, 30), (35, 34), (30, 34))),
        floor_m=0,
        ceiling_m=20_000,
        start_s=T0,
        end_s=T0 + 86_400,
    )
    terms = Terms(grid_level=6, max_cells=5_000)
    with pytest.raises(CellsError, match=r"max_cells|grid level"):
        CellSet.build([Holding(party="A1", uid="big", item=big)], terms, T0, B_PARTIES)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"h_uncertainty_m": -1.0}, "h_uncertainty_m"),
        ({"v_uncertainty_m": float("nan")}, "v_unc"),
        ({"party": "A:1"}, "party"),
    ],
)
def test_a_holding_refuses_what_would_break_its_tokens(kwargs: dict, field: str) -> None:
    site = Site(shape=Circle(centre=(0, 0), radius_m=100))
    args = {"party": "A1", "uid": "s", "item": site, **kwargs}
    with pytest.raises(ValueError, match=field):
        Holding(**args)


def test_uncertainty_widens_the_cells() -> None:
    site = Site(shape=Circle(centre=(10, 10), radius_m=100))
    plain = _tokens(Holding(party="A1", uid="s", item=site), T0)
    vague = _tokens(Holding(party="A1", uid="s", item=site, h_uncertainty_m=20_000), T0)
    assert plain < vague
