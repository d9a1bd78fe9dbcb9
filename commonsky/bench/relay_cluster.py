"""`commonsky bench relay --edges N`: the cluster beside the single process and the
policy-free relay, same load, same run (bench/relay.py's load and figures).

The cluster is N edges and one core (`commonsky serve` with `[cluster]`, bench/cluster.py)
on this machine's NATS and a fresh PostgreSQL database. Each party has a TCP port on every
edge; the load's connections go to the edges in turn (receivers first, then senders), so a
sender's items reach receivers on its own edge and on the others through the core. CPU is
measured per process (the core, each edge) over the load: that is where the time goes, and
what sizes a larger machine — the core is one event loop, edges scale out.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import psutil

from commonsky.bench import relay
from commonsky.bench.cluster import Cluster, Process, forget


class _Times(NamedTuple):
    user: float
    system: float


class _Memory(NamedTuple):
    rss: int


class _Processes:
    """What `relay.run_load` reads of the measured process (`cpu_times`, `memory_info`),
    summed over the cluster's processes; each one's CPU is also kept (`per_process`)."""

    def __init__(self, processes: dict[str, psutil.Process]) -> None:
        self.processes = processes
        self.start = {name: self._cpu(p) for name, p in processes.items()}

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    def cpu_times(self) -> _Times:
        user = sum(p.cpu_times().user for p in self.processes.values())
        system = sum(p.cpu_times().system for p in self.processes.values())
        return _Times(user, system)

    def memory_info(self) -> _Memory:
        return _Memory(sum(p.memory_info().rss for p in self.processes.values()))

    def per_process(self) -> dict[str, float]:
        """CPU seconds each process used since this object was made."""
        return {n: self._cpu(p) - self.start[n] for n, p in self.processes.items()}


class _EdgePorts(dict[str, int]):
    """`plan.ports` for `run_load`: each lookup of a party gives its port on the next edge in
    turn (the load connects once per lookup), so connections spread over the edges."""

    def __init__(self, edges: list[dict[str, int]]) -> None:
        super().__init__(edges[0])
        self.turns: dict[str, Iterator[int]] = {
            party: itertools.cycle([e[party] for e in edges]) for party in edges[0]
        }

    def __getitem__(self, party: str) -> int:
        return next(self.turns[party])


async def _cluster_run(cluster: Cluster, plan: relay.Plan, edges: int, rate: int,
                       duration: float) -> tuple[relay.Result, dict[str, float]]:  # fmt: skip
    core = await cluster.core()
    processes: dict[str, Process] = {"core": core}
    ports = []
    for n in range(edges):
        edge, edge_ports = await cluster.edge()
        processes[f"edge {n + 1}"] = edge
        ports.append(edge_ports)
    measured = _Processes({n: psutil.Process(p.proc.pid) for n, p in processes.items() if p.proc})
    loaded = relay.Plan(plan.parties, plan.targets, _EdgePorts(ports), plan.sender_parties,
                        plan.receiver_parties)  # fmt: skip
    result = await relay.run_load(loaded, rate, duration, f"cluster ({edges} edges)",
                                  measured)  # type: ignore[arg-type]  # fmt: skip
    seconds = result.seconds
    return result, {n: 100 * s / seconds for n, s in measured.per_process().items()}


def bench_cluster(receivers: int, senders: int, rate: int, duration: float, parties: int,
                  edges: int, nats_url: str, postgres_admin: str) -> dict[str, Any]:  # fmt: skip
    """The single process, the cluster and the relay under the same load, one after the
    other; their `relay.Result`s and the cluster's CPU % per process."""
    import psycopg

    single, baseline = relay.bench_relay(receivers, senders, rate, duration, parties)
    name = f"rc{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(postgres_admin, autocommit=True, connect_timeout=5)
    admin.execute(f'CREATE DATABASE "{name}"')
    with tempfile.TemporaryDirectory() as tmp:
        plan = relay.make_plan(parties, senders, receivers)
        store_url = f"{postgres_admin.rsplit('/', 1)[0]}/{name}"
        cluster = _RelayCluster(Path(tmp), name, nats_url, store_url, plan=plan)
        try:
            result, cpu = asyncio.run(_cluster_run(cluster, plan, edges, rate, duration))
        finally:
            cluster.stop()
            asyncio.run(forget(nats_url, name))
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            admin.close()
    return {"results": [single, result, baseline], "cluster_cpu": cpu, "cores": os.cpu_count()}


class _RelayCluster(Cluster):
    """A cluster on bench/relay.py's plan: its parties and ring agreements (`relay.hub_config`)
    instead of the fuzz bench's."""

    def __init__(self, folder: Path, name: str, nats_url: str, store_url: str,
                 plan: relay.Plan) -> None:  # fmt: skip
        super().__init__(folder, name, nats_url, store_url, parties=tuple(plan.parties))
        self.plan = plan

    def _process(self, role: str, ports: dict[str, int], http: int) -> Process:
        plan = relay.Plan(self.plan.parties, self.plan.targets, ports, [], [])
        text = relay.hub_config(plan, self.folder / "data", http).replace(
            "[server]\n", f'[server]\nstore_url = "{self.store_url}"\n', 1
        )
        text += (
            f'\n[cluster]\nnats_url = "{self.nats_url}"\nrole = "{role}"\nname = "{self.name}"\n'
        )
        config = self.folder / f"{role}-{http}.toml"
        config.write_text(text)
        return self.started(config, role, http)  # (the first core with --init)


def print_figures(figures: dict[str, Any], receivers: int, senders: int, rate: int,
                  duration: float) -> None:  # fmt: skip
    """The three systems side by side, then the cluster's CPU per process."""
    from rich.console import Console
    from rich.table import Table

    rows = [r.row() for r in figures["results"]]
    table = Table(
        title=f"bench relay --edges: {receivers} receivers, {senders} senders, {rate} msg/s "
        f"offered, {duration:g} s, {figures['cores']} cores"
    )
    table.add_column("measure")
    for row in rows:
        table.add_column(str(row["system"]), justify="right")
    for key in list(rows[0])[1:]:
        table.add_row(key, *(f"{r[key]:.3f}" if isinstance(r[key], float) else str(r[key])
                             for r in rows))  # fmt: skip
    Console(width=120).print(table)
    cpu = ", ".join(f"{name} {pct:.0f} %" for name, pct in figures["cluster_cpu"].items())
    print(f"cluster CPU by process (of one core): {cpu}")
    single, cluster = rows[0], rows[1]
    ratio = float(cluster["delivered msg/s"]) / max(1e-9, float(single["delivered msg/s"]))
    print(f"delivered ratio cluster/single = {ratio:.3f}  (target >= 1 at 1,000 msg/s)")
    sys.stdout.flush()
