"""The Syria scenario on two hubs — the coalition's (USA, GBR, FRA) and Russia's (RUS, SYR) —
with no hub that holds both: every conflict the single-hub engine raises between the two
sides is raised on both hubs before the event (the coalition's own line crossed by its own
strike plan by the coalition hub's own engine, the rest by the private round), with the same
overlap geometry within the grid's resolution, and neither hub holds the other's shapes
beyond the cells that met."""

from __future__ import annotations

import h3
import pytest
import shapely
from shapely.geometry import shape

from commonsky.deconflict.engine import Conflict, ConflictEngine
from commonsky.deconflict.notice import notice_for
from commonsky.deconflict.shapes import Circle, Line, Polygon, Site, Volume
from commonsky.demo.scenario import load
from commonsky.desks.deconfliction import across_the_line, canonical_geometry
from commonsky.geo import Frame
from commonsky.privdeconf import Holding, PrivateRound, Terms, run_in_memory
from commonsky.privdeconf.cells import union_of_cells
from commonsky.privdeconf.pieces import item_handle
from tests.privdeconf.helpers import metres_apart

T0 = 1_800_000_000.0
COALITION, RUSSIA = ("USA", "GBR", "FRA"), ("RUS", "SYR")
TERMS = Terms(grid_level=5, time_slot_s=600, altitude_band_m=3000)


def _holdings() -> list[Holding]:
    scenario = load("syria")
    party = {c.id: c.party for c in scenario.client}
    out = []
    for a in scenario.airspace:
        item: Volume | Line | Site
        if a.item == "line":
            assert a.line is not None
            item = Line(
                path=tuple(map(tuple, a.line)),
                left_party=a.left_party,  # type: ignore[arg-type]
                right_party=a.right_party,
            )
        elif a.item == "site":
            assert a.circle is not None
            lon, lat, radius = a.circle
            item = Site(shape=Circle(centre=(lon, lat), radius_m=radius))
        else:
            assert a.polygon is not None
            item = Volume(
                shape=Polygon(ring=tuple(map(tuple, a.polygon))),
                floor_m=a.floor_m,  # type: ignore[arg-type]
                ceiling_m=a.ceiling_m,
                start_s=T0 + a.start,
                end_s=T0 + a.end,
                kind=a.kind,
            )  # type: ignore[arg-type]
        out.append(Holding(party=a.api or party[a.client], uid=a.uid, item=item))
    return out


def _engine(holdings: list[Holding]) -> list[Conflict]:
    eng = ConflictEngine()
    for h in holdings:
        upsert = {Volume: eng.upsert_volume, Line: eng.upsert_line, Site: eng.upsert_site}
        upsert[type(h.item)](h.party, h.uid, h.item, T0)  # type: ignore[operator]
    return [across_the_line(c) for c in eng.conflicts()]


def _across(c: Conflict) -> bool:
    return {c.a.party in COALITION, c.b.party in COALITION} == {True, False}


@pytest.mark.slow
def test_both_hubs_raise_every_conflict_the_single_hub_raises_between_the_sides() -> None:
    every = _holdings()
    coalition = [h for h in every if h.party in COALITION]
    russia = [h for h in every if h.party in RUSSIA]
    truth = [c for c in _engine(every) if _across(c)]
    # The scenario's conflicts between the sides (not a vacuous check): the Palmyra windows
    # against Russia's operating area, the strike plan over the protected hospital, and the
    # strike plan across the Euphrates line into Russia's side.
    assert sorted((c.kind, c.a.uid, c.b.uid) for c in truth) == [
        ("line-crossing", "US-STRIKE-DZ", "EUPHRATES-LINE"),
        ("volume-site", "RU-FIELD-HOSPITAL", "US-STRIKE-DZ"),
        ("volume-volume", "RU-OPS-WEST", "US-PALMYRA-WINDOW"),
    ]
    ini = PrivateRound(
        role="initiator",
        terms=TERMS,
        holdings=coalition,
        peer="russia",
        peer_parties=RUSSIA,
        secret=b"c" * 32,
        now=T0,
    )
    res = PrivateRound(
        role="responder",
        terms=TERMS,
        holdings=russia,
        peer="coalition",
        peer_parties=COALITION,
        secret=b"r" * 32,
        now=T0,
    )
    run_in_memory(ini, res)
    assert ini.result is not None and res.result is not None
    local = [c for c in _engine(coalition) if _across(c)]  # the coalition's own line and plan
    assert [(c.kind, c.a.uid) for c in local] == [("line-crossing", "US-STRIKE-DZ")]
    assert [c for c in _engine(russia) if _across(c)] == []
    handle = {h.uid: item_handle(b"c" * 32, "russia", h.party, h.uid) for h in coalition}
    handle |= {h.uid: item_handle(b"r" * 32, "coalition", h.party, h.uid) for h in russia}
    for c in truth:
        if c.kind == "line-crossing":
            found = {"coalition": local}
        else:
            found = {"coalition": ini.result.conflicts, "russia": res.result.conflicts}
        for hub, conflicts in found.items():
            mine = COALITION if hub == "coalition" else RUSSIA
            (match,) = [p for p in conflicts if p.kind == c.kind]
            uids = {s.uid for s in (match.a, match.b)}
            expected = {
                s.uid
                if s.party in mine or (hub == "coalition" and c.kind == "line-crossing")
                else handle[s.uid]
                for s in (c.a, c.b)
            }
            assert uids == expected
            assert (match.floor_m, match.ceiling_m, match.start_s, match.end_s) == (
                c.floor_m,
                c.ceiling_m,
                c.start_s,
                c.end_s,
            )
            # What each hub's duty officers are told: the overlap, within the grid's resolution
            # (an H3 level-5 cell's edge is ~9.9 km; the overlaps agree to centimetres).
            for party in {s.party for s in (match.a, match.b)} & set(mine):
                told = notice_for(match, party, "conflicts-only")
                truth_told = notice_for(c, party, "conflicts-only")
                assert told.other_uid is None and told.other_kind is None
                gap = metres_apart(
                    canonical_geometry(truth_told.geometry), canonical_geometry(told.geometry)
                )
                assert gap < 5.0, (c.kind, party, gap)
    # Both hubs name each private conflict alike (one hotline thread for both).
    assert sorted(c.id for c in ini.result.conflicts) == sorted(c.id for c in res.result.conflicts)


@pytest.mark.slow
def test_neither_hub_receives_the_others_shapes_outside_the_cells_that_met() -> None:
    # The independent check: everything of the other hub's a hub received (the pieces, as
    # received bytes decode) lies inside its OWN matched cells; the rest of the other's
    # operating areas — most of RU-OPS-WEST, all of US-OPS-EAST — never arrived.
    from commonsky.privdeconf.round import Answer, Pieces, _decode

    every = _holdings()
    coalition = [h for h in every if h.party in COALITION]
    russia = [h for h in every if h.party in RUSSIA]
    ini = PrivateRound(
        role="initiator",
        terms=TERMS,
        holdings=coalition,
        peer="russia",
        peer_parties=RUSSIA,
        secret=b"c" * 32,
        now=T0,
    )
    res = PrivateRound(
        role="responder",
        terms=TERMS,
        holdings=russia,
        peer="coalition",
        peer_parties=COALITION,
        secret=b"r" * 32,
        now=T0,
    )
    received: dict[str, list[bytes]] = {"initiator": [], "responder": []}
    for side in (ini, res):
        real = side.receive

        def spy(data: bytes, real=real, side=side) -> list[bytes]:  # type: ignore[no-untyped-def]
            received[side.role].append(data)
            return real(data)

        side.receive = spy  # type: ignore[method-assign]
    run_in_memory(ini, res)
    assert ini.result is not None and res.result is not None
    others = {"initiator": russia, "responder": coalition}
    frame = Frame(39.0, 35.0)
    for side in (ini, res):
        assert side.result is not None
        pieces = [
            p
            for m in map(_decode, received[side.role])
            if isinstance(m, Answer | Pieces)
            for p in m.pieces
        ]
        assert pieces
        mine = {t.split(":")[1] for t in side.result.matched}
        # Our matched cells (with the covering's 5 m margin), and a metre for the pieces'
        # 1-km chords drawn in this frame rather than the sender's.
        allowed = union_of_cells(mine, frame).buffer(1.0)
        got = shapely.union_all([shapely.transform(shape(p.geometry), frame.fwd) for p in pieces])
        assert shapely.difference(got, allowed).area < 1.0
        # ...which is near our own plans: a matched cell meets our item dilated by rpz/2, so
        # anything received lies within a cell's width of that.
        assert side._cells is not None
        ours = shapely.union_all(
            [
                shapely.transform(c.region, lambda xy, c=c: frame.fwd(c.frame.inv(xy)))
                for c in side._cells.claims
            ]
        )
        cell_width = 2.5 * h3.average_hexagon_edge_length(TERMS.grid_level, "m")
        near = ours.buffer(cell_width + TERMS.rpz_m / 2 + 10.0)
        assert shapely.difference(got, near).area < 1.0
        # (and the other side's operating area far from ours never arrived at all)
        far = [h for h in others[side.role] if h.uid in ("US-OPS-EAST",)]
        for h in far:
            assert isinstance(h.item, Volume)
            assert shapely.intersection(got, h.item.shape.planar(frame)).area == 0.0
