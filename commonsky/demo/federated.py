"""`commonsky demo --federated`: the Korea situation on three sovereign hubs.

JPN, KOR and USA each run their own hub (its own data folder, store, ledger, keys and
federation CA), holding only its own party; the hubs are linked bilaterally over TAK
Federation v2 (gRPC over mutual TLS on loopback): JPN–KOR (GSOMIA), USA–JPN, USA–KOR. Every
hub is given the scenario's agreements; the hub holding an item applies them before it
leaves, so each hub fuses each launch from what its own party may see, and each hub issues
the warnings of its own country. The three hubs run in this one process (one event loop),
each a full `HubServer` with its own listeners — not three processes.

The scenario's checks are judged as on one hub, from what each party's clients received and
from the hub of the party a check is about; every hub's ledger export must verify, and every
receipt a hub holds must prove, against the peer's export, what it sent and the peer
acknowledged (`commonsky ledger verify A --peer B`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from commonsky.config import config_from_dict
from commonsky.demo.clients import SimClient, tls_context
from commonsky.demo.runner import Runner
from commonsky.demo.scenario import Scenario
from commonsky.hub.datadir import private_dir
from commonsky.pki import init_ca
from commonsky.server import HubServer

log = logging.getLogger("commonsky.demo")


@dataclass(frozen=True)
class Layout:
    """Which hub holds which parties, the links ((dialer, listener), each pair once), the
    hub whose HTTP port is --http, and the extra `[[federate]]` keys of every link (private
    deconfliction's terms)."""

    hubs: dict[str, tuple[str, ...]]
    links: tuple[tuple[str, str], ...]
    map_hub: str
    terms: dict[str, Any] = field(default_factory=dict)
    #: Checks of the single-hub scenario that these hubs cannot meet by design, with why:
    #: shown in the summary as not judged (never as held), and left out of `all_held`.
    unjudged: dict[str, str] = field(default_factory=dict)
    photos: bool = True  # (photographs travel by file federation, not implemented)


KOREA = Layout(
    {"jpn": ("JPN",), "kor": ("KOR",), "usa": ("USA",)},
    (("jpn", "kor"), ("usa", "jpn"), ("usa", "kor")),
    "jpn",
)
_PLANS_HOME = "plans stay home on a private link; the private checks below replace it"
_TRACKS = (
    "tracks cross only under an agreement and these are conflicts-only; live tracks are "
    "not in the private path (docs/private-deconfliction.md)"
)
_THREADS = (
    "each hub opens the thread of a conflict for its own parties; judged across the hubs below"
)
_FILES = "photographs cross by file federation (SendOneBlob), not implemented"
#: Syria on the coalition's hub and Russia's, deconflicting privately (issue #18): H3 level
#: 5 (cells ~252 km², edges ~9.9 km), 10-minute slots, 3 km bands; a round on every change of
#: either side's plans, at most one every 20 hub seconds (2 s at the demo's speed 10).
SYRIA = Layout(
    {"coalition": ("USA", "GBR", "FRA"), "russia": ("RUS", "SYR")},
    (("coalition", "russia"),),
    "coalition",
    {
        "deconflict": "private",
        "grid_level": 5,
        "time_slot_s": 600,
        "altitude_band_m": 3000,
        "reveal": "cells",
        "min_interval_s": 20,
        "round_every_s": 300,
    },
    unjudged={
        "Russia sees the coalition's operating area": _PLANS_HOME,
        "the coalition sees Russia's operating area": _PLANS_HOME,
        "stacked encounter: CPA conflict raised to the US": _TRACKS,
        "stacked encounter: CPA conflict raised to Russia": _TRACKS,
        "the strike plan conflicts with Syrian ground forces": _TRACKS,
        "conflict threads acknowledged by both sides": _THREADS,
        "the coalition's photograph verifies offline, and Russia has it": _FILES,
        "Russia's photograph verifies offline, and the coalition has it": _FILES,
    },
    photos=False,
)
LAYOUTS = {"korea": KOREA, "syria": SYRIA}
HUBS, LINKS, MAP_HUB = KOREA.hubs, KOREA.links, KOREA.map_hub  # (the default: Korea)


def free_port() -> int:
    """A port free on loopback now (the hubs' federation listeners must know each other's
    before any starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Launch:
    def __init__(self, services: list[Any]) -> None:
        self.services = services

    def feed(self) -> list[Any]:
        alerts = [a for s in self.services if s.launch is not None for a in s.launch.feed()]
        return sorted(alerts, key=lambda a: a.sent)


class _Hotline:
    def __init__(self, by_party: dict[str, Any]) -> None:
        self.by_party = by_party

    def records(self, party: str) -> list[Any]:
        services = self.by_party.get(party)
        return list(services.hotline.records(party)) if services is not None else []


class _Services:
    """What the checks read of "the hub", answered by the hub each party lives on."""

    def __init__(self, runner: FederatedRunner) -> None:
        servers = list(runner.servers.values())
        self.launch = _Launch([s.services for s in servers])
        self.hotline = _Hotline({p: runner.servers[h].services for p, h in runner.home.items()})
        self.recorder = runner.servers[runner.layout.map_hub].services.recorder


class _Hubs:
    """Stands in for `Runner.server`: the map hub's address, every hub's listeners."""

    def __init__(self, runner: FederatedRunner) -> None:
        self.runner = runner
        self.services = _Services(runner)
        main = runner.servers[runner.layout.map_hub]
        self.hub = main.hub
        self.http_host, self.http_port = main.http_host, main.http_port
        self.listeners = [ln for s in runner.servers.values() for ln in s.listeners]
        self.marti = None

    def port(self, kind: str) -> int:
        return self.runner.servers[self.runner.layout.map_hub].port(kind)


class FederatedRunner(Runner):
    def __init__(
        self,
        scenarios: list[Scenario],
        data_dir: Path,
        http: str,
        speed: float,
        layout: Layout = KOREA,
    ) -> None:
        super().__init__(scenarios, data_dir, http, speed)
        self.layout = layout
        self.servers: dict[str, HubServer] = {}
        self.home = {party: hub for hub, parties in layout.hubs.items() for party in parties}
        self.apis: dict[str, httpx.AsyncClient] = {}
        self.proven: dict[str, int] = {}  # "a->b": durable items proven sent and acknowledged

    def hub_config_data(self, name: str, ports: dict[str, int]) -> dict[str, Any]:
        """Hub `name`'s share of the scenario: its own parties' listeners and tokens, the
        other parties behind its links, every agreement."""
        data = self.config_data()
        layout = self.layout
        own = set(layout.hubs[name])
        peers = {b if a == name else a for a, b in layout.links if name in (a, b)}
        parties = []
        for party in data["party"]:
            hub = self.home.get(party["id"], name)
            if party["id"] in own or hub == name:
                parties.append(party)
            elif hub in peers:
                parties.append({"id": party["id"], "name": party["name"], "federate": hub})
        fed_ca = self.data_dir / f"{name}-federation-ca"
        listeners = [
            ln
            for ln in data["listener"]
            if ln["kind"] == "tak-tls" or (ln["kind"] == "tak-tcp" and ln["party"] in own)
        ]
        listeners.append(
            {"kind": "federation", "bind": f"127.0.0.1:{ports[name]}", "ca": str(fed_ca)}
        )
        federates = []
        for peer in sorted(peers):
            table: dict[str, Any] = {
                "name": peer,
                "parties": [p for p in layout.hubs[peer] if any(q["id"] == p for q in parties)],
                "ca": str(self.data_dir / f"{peer}-federation-ca" / "ca.pem"),
                **layout.terms,
            }
            if (name, peer) in layout.links:
                table["connect"] = f"127.0.0.1:{ports[peer]}"
            federates.append(table)
        server = dict(data["server"], data_dir=str(self.data_dir / f"hub-{name}"))
        server["timeout_federation_retry_s"] = 0.2
        if name != layout.map_hub:
            server["http"] = "127.0.0.1:0"
        return {
            "server": server,
            "listener": listeners,
            "party": parties,
            "agreement": data["agreement"],
            "federate": federates,
        }

    def _pki(self) -> None:
        super()._pki()
        for name in self.layout.hubs:
            fed_ca = self.data_dir / f"{name}-federation-ca"
            if not (fed_ca / "ca.pem").exists():
                private_dir(fed_ca)
                init_ca(fed_ca, name=f"{name.upper()} hub federation CA")

    async def run(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._pki()
        self.start_wall = self.clock() + 3.0 * self.speed
        ports = {name: free_port() for name in self.layout.hubs}
        for name in self.layout.hubs:
            config = config_from_dict(self.hub_config_data(name, ports), f"demo hub {name}")
            server = HubServer(config, clock=self.clock)
            await server.start()
            self.servers[name] = server
            self.apis[name] = httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{server.http_port}", timeout=10
            )
        self.server = _Hubs(self)  # type: ignore[assignment]
        await self.connect()
        await self._links_up()
        self.ready.set()
        await asyncio.gather(*(self.play(s) for s in self.scenarios))

    async def _links_up(self, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not all(  # noqa: ASYNC110 (three hubs' links, polled once at set-up)
                link.up
                for server in self.servers.values()
                if server.federation is not None
                for link in server.federation.links.values()
            ):
                await asyncio.sleep(0.05)

    async def connect(self) -> None:
        ca = self.data_dir / "ca"
        for scenario in self.scenarios:
            for spec in scenario.client:
                server = self.servers[self.home[spec.party]]
                client = SimClient(spec.id, spec.party, spec.transport)
                if spec.transport.startswith("tls"):
                    context = tls_context(ca, ca / "clients" / spec.party, spec.id)
                    await client.open(server.port("tak-tls"), context)
                else:
                    port = next(ln.port for ln in server.listeners if ln.config.party == spec.party)
                    await client.open(port, None)
                client.listeners.append(self._maybe_ack_thread)
                client.clock = self.clock
                self.clients[spec.id] = client

    async def _post(self, party: str, path: str, **kwargs: Any) -> httpx.Response:
        api = self.apis[self.home[party]]
        response = await api.post(
            path, headers={"Authorization": f"Bearer {self.tokens[party]}"}, **kwargs
        )
        if response.status_code >= 400:
            raise httpx.HTTPError(f"{path} as {party}: {response.status_code} {response.text}")
        return response

    def map_url_of(self, party: str) -> str:
        server = self.servers[self.home.get(party, self.layout.map_hub)]
        return f"http://127.0.0.1:{server.http_port}/"

    async def stop(self) -> None:
        for api in self.apis.values():
            await api.aclose()
        for client in self.clients.values():
            await client.close()
        for server in self.servers.values():  # every link first: no hub redials a stopped one
            if server.federation is not None:
                await server.federation.stop()
        for server in self.servers.values():
            await server.stop()


def check_ledgers(runner: FederatedRunner, data_dir: Path) -> bool:
    """Every hub's whole ledger export verifies, and each hub's receipts prove against each
    peer's export what it sent and the peer acknowledged (none may fail)."""
    from commonsky.federation.receipts import cross_check
    from commonsky.ledger.export import export, verify

    out = data_dir / "ledger"
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    ok = True
    for name, server in runner.servers.items():
        assert server.services.recorder is not None
        path = paths[name] = out / f"hub-{name}.jsonl"
        export(server.services.recorder.ledger, path)
        result = verify(path)
        if not result.ok:
            log.error("ledger of hub %s does not verify: %s", name, result)
            ok = False
    runner.proven = {}
    for a, b in itertools.permutations(paths, 2):
        proven, problems = cross_check(paths[a], paths[b])
        runner.proven[f"{a}->{b}"] = len(proven)
        if problems:
            log.error("receipts of hub %s against hub %s: %s", a, b, problems[0])
            ok = False
    return ok


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


def private_summary(runner: FederatedRunner) -> dict[str, Any]:
    """Per hub: its private rounds by outcome, the last round's figures, and the independent
    check of its store and its log: no plan (airspace, site) of the other hub's parties in
    its store, and every piece of the other's shapes it received inside its matched cells."""
    from commonsky.model import Category

    out: dict[str, Any] = {}
    for name, server in runner.servers.items():
        desk = server.federation.private if server.federation is not None else None
        if desk is None:
            continue
        other = {p for hub, ps in runner.layout.hubs.items() if hub != name for p in ps}
        stored = [
            f"{item.party}::{item.uid}"
            for item in server.hub.store.since(0)
            if item.party in other and item.category in (Category.AIRSPACE, Category.SITE)
        ]
        pieces, outside = received_outside(server.folder.path / "privdeconf")
        out[name] = {
            "rounds": {link: dict(p.rounds) for link, p in desk.links.items()},
            "last_round": {
                link: p.figures[-1] if p.figures else None for link, p in desk.links.items()
            },
            "others_plans_stored": stored,
            "pieces_received": pieces,
            "received_outside_cells_m2": round(outside, 3),
        }
    return out


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


def single_hub_truth(runner: FederatedRunner, scenario: Scenario) -> list[Any]:
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


def cross_hub_conflicts(runner: FederatedRunner, scenario: Scenario) -> tuple[bool, str]:
    """Every conflict the single-hub engine raises between the two hubs' parties reached
    both parties' duty officers, each on its own hub, while the conflict was still to end,
    with the single hub's conflicts-only overlap (within 50 m: the grid's resolution is
    ~9.9 km; the private pieces are clipped with a 5 m margin and resampled every km)."""
    from commonsky.deconflict.notice import notice_for
    from commonsky.demo.checks import _received
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
                for r in _received(runner, own.party)
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


def unjudge(runner: FederatedRunner, result: dict[str, Any]) -> None:
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


def private_checks(runner: FederatedRunner, scenario: Scenario) -> list[dict[str, Any]]:
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


def threads_across(runner: FederatedRunner, scenario: Scenario) -> tuple[bool, str]:
    """Every conflict between the hubs has a hotline thread on each side's hub (one
    conflict id), every one acknowledged by its recipients: together, by both sides."""
    from commonsky.demo.checks import _hotline

    by_conflict: dict[str, list[Any]] = {}
    for hub in runner.servers.values():
        for m in _hotline(hub.services, scenario.party):
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
