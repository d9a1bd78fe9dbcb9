"""The checks of scenarios played on federated hubs that one hub has no counterpart for:
private deconfliction's (issue #18) — every conflict the single hub would raise between the
hubs raised on both, no hub holding the other's plans, threads acknowledged on both sides —
and the marking of checks a layout cannot meet by design. Each reads what the clients
received, the hubs' answers collected after the run (`federated.HubSnapshot`) and the hubs'
own files, never a hub's memory: every hub is its own process.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

from commonsky.demo.layouts import FederatedRun
from commonsky.demo.scenario import Scenario


def received_outside(folder: Path) -> tuple[int, float]:
    """From a hub's own log of what peers sent of their shapes (`privdeconf/*/*.received`,
    federation/private.py): how many pieces, and their area (m²) outside the H3 cells that
    hub matched in that round. Independent of the round code: the cells are H3's own
    boundaries, the area is geodesic (pyproj), 20 m of slack for the covering's margin."""
    import h3
    import msgspec
    import shapely
    from pyproj import Geod
    from shapely.geometry import shape

    geod = Geod(ellps="WGS84")
    pieces = 0
    outside = 0.0
    for path in sorted(folder.glob("*/*.received")):
        body = msgspec.msgpack.decode(path.read_bytes())
        cells = {token.split(":")[1] for token in body["matched"]}
        allowed = shapely.union_all(
            [shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(c)]) for c in cells]
        ).buffer(0.0002)
        for piece in body["pieces"]:
            pieces += 1
            extra = shapely.difference(shape(piece["geometry"]), allowed)
            if not extra.is_empty:
                outside += abs(geod.geometry_area_perimeter(extra)[0])
    return pieces, outside


def private_summary(runner: FederatedRun) -> dict[str, Any]:
    """Per hub: its private rounds by outcome (its /metrics), the last round's figures (as
    the hub showed them to its own duty officers), and the independent check of its store
    and its log: no plan (airspace, site) of the other hub's parties in its store (read
    from its SQLite file, not asked of the hub), and every piece of the other's shapes it
    received inside its matched cells."""
    out: dict[str, Any] = {}
    for name, snap in runner.snapshots.items():
        if not snap.rounds:
            continue
        other = {p for hub, ps in runner.layout.hubs.items() if hub != name for p in ps}
        stored = [
            f"{party}::{uid}"
            for party, uid, category in stored_items(runner.hub_dir(name))
            if party in other and category in ("airspace", "site")
        ]
        pieces, outside = received_outside(runner.hub_dir(name) / "privdeconf")
        out[name] = {
            "rounds": snap.rounds,
            "last_round": {link: snap.last_round.get(link) for link in snap.rounds},
            "others_plans_stored": stored,
            "pieces_received": pieces,
            "received_outside_cells_m2": round(outside, 3),
        }
    return out


def stored_items(data_dir: Path) -> list[tuple[str, str, str]]:
    """(party, uid, category) of every item in a hub's SQLite store, read-only beside the
    running hub (WAL: a consistent snapshot)."""
    import sqlite3

    from commonsky.store.sqlite import DB_NAME

    uri = f"file:{data_dir / DB_NAME}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        db.execute("PRAGMA busy_timeout = 5000")
        return [tuple(row) for row in db.execute("SELECT party, uid, category FROM items")]


def _planar_apart(g1: dict[str, Any] | None, g2: dict[str, Any] | None) -> float:
    """Hausdorff distance (m) between two GeoJSON geometries near one another (a local
    azimuthal-equidistant frame at the first one's first vertex)."""
    import shapely
    from shapely.geometry import shape

    from commonsky.geo import Frame

    if not g1 or not g2:
        return math.inf
    s1, s2 = shape(g1), shape(g2)
    x0, y0 = shapely.get_coordinates(s1)[0]
    frame = Frame(float(x0), float(y0))
    p1, p2 = (shapely.transform(s, frame.fwd) for s in (s1, s2))
    return float(p1.hausdorff_distance(p2))


def single_hub_truth(runner: FederatedRun, scenario: Scenario) -> list[Any]:
    """The conflicts the single-hub engine raises between parties of different hubs, from
    the scenario's airspace as played (hub clock), recast as the desk tells them."""
    from commonsky.deconflict.engine import ConflictEngine
    from commonsky.deconflict.shapes import Circle, Line, Polygon, Site, Volume
    from commonsky.desks.deconfliction import across_the_line

    party_of = {c.id: c.party for c in scenario.client}
    t0 = runner.start_wall
    engine = ConflictEngine()
    for a in scenario.airspace:
        party = a.api or party_of[a.client]
        if a.item == "line":
            line = Line(
                path=tuple(map(tuple, a.line or [])),  # type: ignore[arg-type]
                left_party=a.left_party,
                right_party=a.right_party,
            )
            engine.upsert_line(party, a.uid, line, t0)
        elif a.item == "site":
            assert a.circle is not None
            lon, lat, radius = a.circle
            engine.upsert_site(
                party, a.uid, Site(shape=Circle(centre=(lon, lat), radius_m=radius)), t0
            )
        else:
            volume = Volume(
                shape=Polygon(ring=tuple(map(tuple, a.polygon or []))),  # type: ignore[arg-type]
                floor_m=a.floor_m,
                ceiling_m=a.ceiling_m,
                start_s=t0 + a.start,
                end_s=t0 + a.end,
                kind=a.kind,  # type: ignore[arg-type]
            )
            engine.upsert_volume(party, a.uid, volume, t0)
    home = runner.home
    return [
        c
        for c in map(across_the_line, engine.conflicts())
        if home.get(c.a.party) != home.get(c.b.party)
    ]


def cross_hub_conflicts(runner: FederatedRun, scenario: Scenario) -> tuple[bool, str]:
    """Every conflict the single-hub engine raises between the two hubs' parties reached
    both parties' duty officers, each on its own hub, while the conflict was still to end,
    with the single hub's conflicts-only overlap (within 50 m: the grid's resolution is
    ~9.9 km; the private pieces are clipped with a 5 m margin and resampled every km)."""
    from commonsky.deconflict.notice import notice_for
    from commonsky.desks.deconfliction import canonical_geometry

    truth = single_hub_truth(runner, scenario)
    if not truth:
        return False, "the single-hub engine raised no conflict between the hubs"
    found, notes = 0, []
    for c in truth:
        for own, other in ((c.a, c.b), (c.b, c.a)):
            expected = notice_for(c, own.party, "conflicts-only")
            got = [
                (n, r)
                for client in runner.clients.values()
                if client.party == own.party
                for r in client.received
                if r.event.type == "t-x-csky-conflict"
                for n in _notices_of(r)
                if n["kind"] == c.kind and n["other_party"] == other.party
            ]
            best = min(
                (
                    _planar_apart(canonical_geometry(expected.geometry), n["geometry"])
                    for n, r in got
                    if r.t <= c.end_s
                ),
                default=math.inf,
            )
            if best <= 50.0:
                found += 1
            else:
                notes.append(f"{c.kind} {own.party}/{other.party}: {best:.0f} m")
    total = 2 * len(truth)
    detail = f"{found}/{total} told on their own hubs, overlaps within 50 m"
    return found == total, detail + (f" (missing: {'; '.join(notes)})" if notes else "")


def _notices_of(r: Any) -> list[dict[str, Any]]:
    import json

    from commonsky.protocol.cot import detail_tree

    node = detail_tree(r.event.detail).find("csky_conflict")
    return [json.loads(node.text)] if node is not None and node.text else []


def unjudge(runner: FederatedRun, result: dict[str, Any]) -> None:
    """Mark the checks this layout cannot meet by design (with why); `all_held` over the
    rest."""
    names = {c["name"] for c in result["checks"]}
    for name in runner.layout.unjudged:  # (not even played: the photographs)
        if name not in names:
            result["checks"].append({"name": name, "kind": "", "held": False, "observed": ""})
    for check in result["checks"]:
        why = runner.layout.unjudged.get(check["name"])
        if why is not None:
            check["status"] = "not judged on these hubs"
            check["why"] = why
    judged = [c for c in result["checks"] if "status" not in c]
    result["all_held"] = all(c["held"] for c in judged)


def private_checks(runner: FederatedRun, scenario: Scenario) -> list[dict[str, Any]]:
    """The checks of a scenario on hubs that deconflict privately (issue #18)."""
    held, observed = cross_hub_conflicts(runner, scenario)
    private = private_summary(runner)
    leaks = {
        hub: (p["others_plans_stored"], p["received_outside_cells_m2"])
        for hub, p in private.items()
        if p["others_plans_stored"] or p["received_outside_cells_m2"] >= 1.0
    }
    pieces = sum(p["pieces_received"] for p in private.values())
    threads_held, threads_seen = threads_across(runner, scenario)
    return [
        {
            "name": "conflict threads acknowledged by both sides, each on its own hub",
            "kind": "private_threads",
            "held": threads_held,
            "observed": threads_seen,
        },
        {
            "name": "every conflict the single hub raises between the hubs is raised on both",
            "kind": "private_conflicts",
            "held": held,
            "observed": observed,
        },
        {
            "name": "independent check: no hub holds the other's plans; what it received of "
            "them lies inside the cells that met",
            "kind": "private_leaks",
            "held": not leaks and pieces > 0,
            "observed": f"{pieces} pieces received; "
            + (f"LEAKS {leaks}" if leaks else "none outside the matched cells, no plan stored"),
        },
    ]


def threads_across(runner: FederatedRun, scenario: Scenario) -> tuple[bool, str]:
    """Every conflict between the hubs has a hotline thread on each side's hub (one
    conflict id), every one acknowledged by its recipients: together, by both sides."""
    by_conflict: dict[str, list[Any]] = {}
    for snap in runner.snapshots.values():
        seen: dict[Any, Any] = {}
        for party in scenario.party:
            for m in snap.hotline.get(party.id, []):
                seen.setdefault(m.seq, m)
        for m in seen.values():
            if m.conflict:
                by_conflict.setdefault(m.conflict, []).append(m)
    both = [
        ms
        for ms in by_conflict.values()
        if len({runner.home.get(p) for m in ms for p in m.recipients}) == 2
    ]
    acked = [ms for ms in both if all(set(m.recipients) <= set(m.acks) for m in ms)]
    return bool(both) and len(acked) == len(both), (
        f"{len(acked)}/{len(both)} conflicts with a thread on both hubs, all acknowledged"
    )
