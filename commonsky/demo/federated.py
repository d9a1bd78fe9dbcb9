"""`commonsky demo --federated`: the Korea situation on three sovereign hubs, each its own
OS process.

JPN, KOR and USA each run their own hub — `commonsky serve --config FILE`, a process of its
own with its own configuration file, data folder, store, ledger, keys and federation CA
(`commonsky ca init`), holding only its own party; the hubs are linked bilaterally over TAK
Federation v2 (gRPC over mutual TLS on loopback): JPN–KOR (GSOMIA), USA–JPN, USA–KOR. Every
hub is given the scenario's agreements; the hub holding an item applies them before it
leaves, so each hub fuses each launch from what its own party may see, and each hub issues
the warnings of its own country. (`--scenario syria`: the coalition's hub and Russia's,
deconflicting privately, federated_checks.py.)

The demo drives them from outside, as operators and devices would: it writes each hub's
configuration, starts the processes (hubproc.py), connects each party's clients to its own
hub over real TAK sockets and posts over each hub's HTTP API. Every hub runs on the same
compressed clock (settings `clock_rate`, `clock_origin`, `clock_until`: the demo's own
clock, so all read the same scenario time). When the timeline ends it collects each hub's
answers over HTTP (`HubSnapshot`: CAP feed, hotline records, current items, metrics) and
judges the scenario's checks as on one hub, from what each party's clients received and
from the hub of the party a check is about; every hub's ledger is exported with `commonsky
ledger export` and checked with `commonsky ledger verify A --peer B` for every pair.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from commonsky.alerts.cap import CapAlert, feed_links, read_cap
from commonsky.bench.ports import HeldPorts
from commonsky.demo.clients import SimClient, tls_context
from commonsky.demo.clock import ScenarioClock
from commonsky.demo.federated_checks import (
    private_checks,
    private_summary,
    received_over,
    unjudge,
)
from commonsky.demo.hubproc import HubProcess, metric_values, watching
from commonsky.demo.layouts import KOREA, LAYOUTS, HubSnapshot, Layout
from commonsky.demo.runner import Runner
from commonsky.demo.scenario import Scenario
from commonsky.hub.datadir import private_dir
from commonsky.pki import init_ca

log = logging.getLogger("commonsky.demo")
#: Real seconds between the demo's start and scenario time 0: the hubs' processes start,
#: their links come up and the clients connect inside it (agreements with scenario-relative
#: validity are written into the hubs' files before any starts, so time 0 is fixed first).
LEAD_S = 10.0
__all__ = ["LAYOUTS", "FederatedRunner", "check_ledgers", "private_checks", "private_summary"]
__all__ += ["unjudge"]


class _Launch:
    def __init__(self, runner: FederatedRunner) -> None:
        self.runner = runner

    def feed(self) -> list[CapAlert]:
        alerts = [a for s in self.runner.snapshots.values() for a in s.alerts]
        return sorted(alerts, key=lambda a: a.sent)


class _Hotline:
    def __init__(self, runner: FederatedRunner) -> None:
        self.runner = runner

    def records(self, party: str) -> list[Any]:
        snap = self.runner.snapshots.get(self.runner.home.get(party, ""))
        return list(snap.hotline.get(party, [])) if snap is not None else []


class _Durable:
    def __init__(self, runner: FederatedRunner) -> None:
        self.runner = runner

    def __contains__(self, key: object) -> bool:
        return any(key in s.durable for s in self.runner.snapshots.values())


class _Hubs:
    """Stands in for `Runner.server` (what the checks and the summary read of "the hub"):
    the map hub's address, every hub's TAK ports, and the hubs' answers (`HubSnapshot`)."""

    marti = None

    def __init__(self, runner: FederatedRunner) -> None:
        self.runner = runner
        self.services = SimpleNamespace(
            launch=_Launch(runner), hotline=_Hotline(runner), recorder=None
        )
        self.hub = SimpleNamespace(durable=_Durable(runner))
        self.http_host = "127.0.0.1"
        self.http_port = runner.procs[runner.layout.map_hub].http_port
        self.listeners = [
            SimpleNamespace(config=SimpleNamespace(kind=kind, party=party), port=port)
            for ports in runner.ports.values()
            for (kind, party), port in ports.items()
            if kind.startswith("tak-")
        ]

    def port(self, kind: str) -> int:
        return self.runner.ports[self.runner.layout.map_hub][(kind, None)]


class FederatedRunner(Runner):
    """`Runner` with each of the layout's hubs its own process (`HubProcess`), its clients
    on their own hub, its posts to their own hub's API; `collect` then asks every hub what
    the checks read (`snapshots`), and `check_ledgers` checks the hubs' ledgers."""

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
        self.procs: dict[str, HubProcess] = {}
        self.ports: dict[str, dict[tuple[str, str | None], int]] = {}
        self.operator = {name: secrets.token_urlsafe(18) for name in layout.hubs}
        self.home = {party: hub for hub, parties in layout.hubs.items() for party in parties}
        self.apis: dict[str, httpx.AsyncClient] = {}
        self.snapshots: dict[str, HubSnapshot] = {}
        self.proven: dict[str, int] = {}  # "a->b": durable items proven sent and acknowledged
        # Every hub's ports are written into its configuration file, and the hubs must know
        # each other's before any starts: held until `stop` (bench/ports.py).
        self.held = HeldPorts()

    def hub_dir(self, name: str) -> Path:
        return self.data_dir / f"hub-{name}"

    def _ports(self) -> None:
        """Every hub's ports, chosen before any starts (each file names its peers')."""
        _, _, map_port = self.http.rpartition(":")
        for name, parties in self.layout.hubs.items():
            ports: dict[tuple[str, str | None], int] = {
                ("http", None): self.held.port(),
                ("federation", None): self.held.port(),
                ("tak-tls", None): self.held.port(),
            }
            for party in parties:
                ports[("tak-tcp", party)] = self.held.port()
            if name == self.layout.map_hub and map_port not in ("", "0"):
                ports[("http", None)] = int(map_port)
            self.ports[name] = ports

    def hub_config_data(self, name: str) -> dict[str, Any]:
        """Hub `name`'s configuration file as data: its own parties' listeners and tokens,
        the other parties behind its links, every agreement, the shared clock."""
        data = self.config_data()
        layout, ports = self.layout, self.ports[name]
        own = set(layout.hubs[name])
        peers = {b if a == name else a for a, b in layout.links if name in (a, b)}
        parties = []
        for party in data["party"]:
            hub = self.home.get(party["id"], name)
            if party["id"] in own or hub == name:
                parties.append(party)
            elif hub in peers:
                parties.append({"id": party["id"], "name": party["name"], "federate": hub})
        listeners: list[dict[str, Any]] = [
            {"kind": "tak-tcp", "bind": f"127.0.0.1:{ports[('tak-tcp', p)]}", "party": p}
            for p in layout.hubs[name]
        ]
        ca = str(self.data_dir / "ca")
        listeners.append({"kind": "tak-tls", "bind": f"127.0.0.1:{ports[('tak-tls', None)]}"})
        listeners[-1]["ca"] = ca
        listeners.append(
            {
                "kind": "federation",
                "bind": f"127.0.0.1:{ports[('federation', None)]}",
                "ca": str(self.data_dir / f"{name}-federation-ca"),
            }
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
                table["connect"] = f"127.0.0.1:{self.ports[peer][('federation', None)]}"
            federates.append(table)
        host = self.http.rpartition(":")[0] if name == layout.map_hub else "127.0.0.1"
        server = dict(
            data["server"],
            data_dir=str(self.hub_dir(name)),
            http=f"{host or '127.0.0.1'}:{ports[('http', None)]}",
            timeout_federation_retry_s=0.2,
            operator_token=self.operator[name],
            clock_rate=float(self.speed),
            clock_origin=self.clock.origin,
            clock_until=self.clock.until or 0.0,
        )
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
        # One clock for the demo and every hub: fast from now until the longest scenario
        # ends, real time after it (so the final picture stays on the map).
        origin = time.time()
        self.start_wall = origin + LEAD_S * self.speed
        until = self.start_wall + max(s.duration_s for s in self.scenarios)
        self.clock = ScenarioClock(self.speed, origin, until)
        self._ports()
        for name in self.layout.hubs:
            self.procs[name] = HubProcess(
                name,
                self.hub_config_data(name),
                self.data_dir / "hubs",
                self.ports[name][("http", None)],
            )
        await asyncio.gather(*(p.start() for p in self.procs.values()))
        await asyncio.gather(*(p.ready() for p in self.procs.values()))
        await watching(self.procs.values(), self._run_started())

    async def _run_started(self) -> None:
        """The run once every hub serves: clients, links, then the scenarios."""
        for name, proc in self.procs.items():
            self.apis[name] = httpx.AsyncClient(base_url=proc.url, timeout=10)
        self.server = _Hubs(self)  # type: ignore[assignment]
        await self.connect()
        await self._links_up()
        late = self.clock() - self.start_wall
        if late > 0:
            log.warning("the hubs took %.1f s longer to start than the lead", late / self.speed)
        self.ready.set()
        await asyncio.gather(*(self.play(s) for s in self.scenarios))

    async def _links_up(self, timeout: float = 30.0) -> None:
        """Every hub reports each of its links up (`commonsky_federation_link_up`)."""
        wanted = {
            name: sum(name in link for link in self.layout.links) for name in self.layout.hubs
        }
        async with asyncio.timeout(timeout):
            while True:
                up = {
                    name: await metric_values(
                        self.apis[name], self.operator[name], "commonsky_federation_link_up"
                    )
                    for name in self.layout.hubs
                }
                if all(sum(v >= 1 for v in up[n]) >= wanted[n] for n in wanted):
                    return
                await asyncio.sleep(0.1)  # (other processes: polled at set-up)

    async def connect(self) -> None:
        ca = self.data_dir / "ca"
        for scenario in self.scenarios:
            for spec in scenario.client:
                ports = self.ports[self.home[spec.party]]
                client = SimClient(spec.id, spec.party, spec.transport)
                if spec.transport.startswith("tls"):
                    context = tls_context(ca, ca / "clients" / spec.party, spec.id)
                    await client.open(ports[("tak-tls", None)], context)
                else:
                    await client.open(ports[("tak-tcp", spec.party)], None)
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

    def tls_port_of(self, party: str) -> int:
        """The tak-tls port of the hub `party` lives on."""
        return self.ports[self.home.get(party, self.layout.map_hub)][("tak-tls", None)]

    def map_url_of(self, party: str) -> str:
        port = self.ports[self.home.get(party, self.layout.map_hub)][("http", None)]
        return f"http://127.0.0.1:{port}/"

    async def collect(self) -> None:
        """Ask every hub, over its HTTP API, what the checks read (`HubSnapshot`)."""
        for name in self.layout.hubs:
            self.snapshots[name] = await self._snapshot(name)

    async def _snapshot(self, name: str) -> HubSnapshot:
        api = self.apis[name]
        snap = HubSnapshot()
        feed = await api.get("/cap/feed.atom")
        feed.raise_for_status()
        for url in feed_links(feed.content):
            answer = await api.get(url)
            answer.raise_for_status()
            snap.alerts.append(read_cap(answer.content))
        for party in self.layout.hubs[name]:
            auth = {"Authorization": f"Bearer {self.tokens[party]}"}
            snap.hotline[party] = await self._hotline(api, auth, name)
            items = (await api.get("/api/items", headers=auth)).json()
            snap.durable |= {(i["party"], i["uid"]) for i in items if i["party"] == party}
        snap.rounds = await self._rounds(name)
        for client in self.clients.values():
            if self.home.get(client.party) != name:
                continue
            for r in client.received:
                figures = _round_figures(r.event)
                if figures is not None:
                    snap.last_round[figures[0]] = figures[1]
        return snap

    async def _hotline(
        self, api: httpx.AsyncClient, auth: dict[str, str], name: str
    ) -> list[SimpleNamespace]:
        """Every message of one party, oldest first (paged as `/api/hotline` serves them);
        `seq` is (hub, store sequence): the same message has its own on each hub."""
        out: list[SimpleNamespace] = []
        before: str | None = None
        while True:
            params = {"limit": "100", **({"before": before} if before else {})}
            answer = await api.get("/api/hotline", headers=auth, params=params)
            answer.raise_for_status()
            out[:0] = [
                SimpleNamespace(
                    seq=(name, m["seq"]),
                    sender=m["from"],
                    recipients=list(m["to"]),
                    acks=m["acks"],
                    conflict=m["conflict"],
                )
                for m in answer.json()
            ]
            before = answer.headers.get("X-Next-Before")
            if before is None:
                return out

    async def _rounds(self, name: str) -> dict[str, dict[str, int]]:
        from prometheus_client.parser import text_string_to_metric_families

        answer = await self.apis[name].get(
            "/metrics", headers={"Authorization": f"Bearer {self.operator[name]}"}
        )
        rounds: dict[str, dict[str, int]] = {}
        for family in text_string_to_metric_families(answer.text):
            if family.name != "commonsky_privdeconf_rounds":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    link, outcome = sample.labels["link"], sample.labels["outcome"]
                    rounds.setdefault(link, {})[outcome] = int(sample.value)
        return rounds

    async def stop(self) -> None:
        try:
            for api in self.apis.values():
                await api.aclose()
            for client in self.clients.values():
                await client.close()
        finally:
            try:
                await asyncio.gather(*(p.stop() for p in self.procs.values()))
            finally:
                for proc in self.procs.values():  # (cancelled while stopping: none outlives)
                    proc.kill_now()
                self.held.close()


def _round_figures(event: Any) -> tuple[str, dict[str, Any]] | None:
    """(link, figures) of a private round's notice to the hub's own duty officers."""
    import json

    from commonsky.protocol.cot import detail_tree

    if event.type != "t-x-csky-pd-round":
        return None
    node = detail_tree(event.detail).find("csky_pd_round")
    if node is None or not node.text:
        return None
    return str(node.get("link")), json.loads(node.text)


_PROVEN = re.compile(rb" -> .*?: (\d+) durable items sent by the first hub")


async def _cli(*args: str) -> tuple[int, bytes]:
    """`python -m commonsky ARGS…`: exit status and output (stdout and stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "commonsky",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out


async def check_ledgers(runner: FederatedRunner, data_dir: Path) -> bool:
    """Every hub's whole ledger, exported with `commonsky ledger export`, verifies against
    that hub's key, and `commonsky ledger verify A --peer B` proves, for every pair, what A
    sent and B acknowledged from A's receipts (none may fail). The hubs are exported one
    after the other: a peer's heads signed after an export are left for a newer one."""
    from commonsky.ledger.keys import HUB_KEY_NAME

    out = data_dir / "ledger"
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"hub-{name}.jsonl" for name in runner.layout.hubs}
    keys = {name: runner.hub_dir(name) / "keys" / HUB_KEY_NAME for name in runner.layout.hubs}
    ok = True
    for name, path in paths.items():
        status, said = await _cli(
            "ledger", "export", "--data-dir", str(runner.hub_dir(name)), "--out", str(path)
        )
        if status != 0:
            log.error("ledger export of hub %s failed: %s", name, said.decode(errors="replace"))
            return False
    runner.proven = {}
    pairs = list(itertools.permutations(paths, 2))
    results = await asyncio.gather(
        *(
            _cli(
                "ledger",
                "verify",
                str(paths[a]),
                "--hub-key",
                str(keys[a]),
                "--peer",
                str(paths[b]),
            )
            for a, b in pairs
        )
    )
    for (a, b), (status, said) in zip(pairs, results, strict=True):
        match = _PROVEN.search(said)
        proven = runner.proven[f"{a}->{b}"] = int(match.group(1)) if match else 0
        if status != 0 or match is None:
            lines = said.decode(errors="replace").strip().splitlines()
            log.error("ledger of hub %s against hub %s: %s", a, b, lines[-1] if lines else "")
            ok = False
        # B holds durable items from A: then A's ledger must prove some were acknowledged
        # (else "verifies" would hold with no receipt ever exchanged)
        held = received_over(runner.hub_dir(b), a)
        if held and not proven:
            log.error("hub %s holds %d durable items from hub %s; none proven", b, held, a)
            ok = False
    return ok
