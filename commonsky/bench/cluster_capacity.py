"""`commonsky bench cluster-capacity`: what one core and one edge each carry, measured alone
(issue 19), so that a larger machine is sized from measured capacities, not from CPU %.

- **The core alone.** The inbound stream `<name>_IN` is filled before the core starts with
  `messages` recorded ingest messages (bench/relay.py's tracks, its ring of agreements, its
  receivers attached first); then one core, pinned to `core_cpu`, drains it as fast as it
  takes it. Figures: messages in per second and deliveries out per second from its first
  delivery to its last (counted on the deliveries' NATS subject, as an edge would receive
  them), and the core's CPU over that time (~100 % of its CPU: the core was the limit).
- **One edge alone.** bench/relay.py's load at each of `rates` through one edge pinned to
  `edge_cpu` and the core pinned to the other CPU: delivery ratio, latency and each
  process's CPU. The edge's capacity is the highest rate it kept up with (ratio >= 0.99) and
  its deliveries per second of its own CPU there.

NATS's and PostgreSQL's CPU are measured too (their processes on this machine, read only).
Edges scale by adding processes; the core is one event loop, so its measured rate is the
cluster's ceiling on any machine (`print_capacity` says what 4 and 8 cores give).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from commonsky.bench import relay
from commonsky.bench.cluster import Process, forget, until
from commonsky.bench.relay_cluster import _cluster_run, _RelayCluster
from commonsky.cluster.config import nats_options
from commonsky.cluster.nats_io import ensure_stream
from commonsky.cluster.wire import Attach, ConnInfo, Ingest, Names, Roster, encode
from commonsky.protocol.cot import parse_event

_EDGE = "cap"  # the recorded messages' edge (no edge process: this bench reads its subject)
_SERVICES = ("nats-server", "postgres")


class _Pinned(_RelayCluster):
    """bench/relay_cluster.py's cluster with each role's process pinned to one CPU."""

    def __init__(self, *args: Any, pins: dict[str, int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pins = pins

    def _process(self, role: str, ports: dict[str, int], http: int) -> Process:
        process = super()._process(role, ports, http)
        if role in self.pins and process.proc is not None:
            # Set before the interpreter starts its threads: they inherit the main thread's.
            psutil.Process(process.proc.pid).cpu_affinity([self.pins[role]])
        return process


class _Services:
    """CPU seconds of NATS and PostgreSQL (every process of theirs on this machine)."""

    def __init__(self) -> None:
        self.procs = [p for p in psutil.process_iter(["name"])
                      if (p.info["name"] or "").startswith(_SERVICES)]  # fmt: skip
        self.start = self._cpu()

    def _cpu(self) -> dict[str, float]:
        total: dict[str, float] = dict.fromkeys(_SERVICES, 0.0)
        for p in self.procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total[next(s for s in _SERVICES if p.info["name"].startswith(s))] += (
                    t.user + t.system
                )
        return total

    def used(self) -> dict[str, float]:
        now = self._cpu()
        return {s: now[s] - self.start[s] for s in _SERVICES}


@contextlib.contextmanager
def _database(postgres_admin: str) -> Iterator[tuple[str, str]]:
    """A fresh database and cluster name, both gone afterwards: (name, store_url)."""
    import psycopg

    name = f"cc{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(postgres_admin, autocommit=True, connect_timeout=5)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name, f"{postgres_admin.rsplit('/', 1)[0]}/{name}"
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


@dataclass
class CoreDrain:
    """What one core did with a full stream."""

    messages: int
    deliveries: int = 0
    seconds: float = 0.0
    core_cpu_s: float = 0.0
    services_cpu_s: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, float]:
        s = max(self.seconds, 1e-9)
        return {"messages in/s": self.messages / s, "deliveries/s": self.deliveries / s,
                "core CPU %": 100 * self.core_cpu_s / s,
                **{f"{k} CPU %": 100 * v / s for k, v in self.services_cpu_s.items()},
                "seconds": self.seconds}  # fmt: skip


def _recorded(plan: relay.Plan, messages: int, now: float) -> Iterator[bytes]:
    """The stream's content: every client's Attach, then the senders' tracks in turn."""
    senders = [f"s{i}" for i in range(len(plan.sender_parties))]
    for conn, party in [*((f"r{i}", p) for i, p in enumerate(plan.receiver_parties)),
                        *zip(senders, plan.sender_parties, strict=True)]:  # fmt: skip
        yield encode(Attach(_EDGE, ConnInfo(conn, party, "bench", "tak-tcp", "", "xml"), None))
    for seq in range(1, messages + 1):
        index = seq % len(senders)
        party = plan.sender_parties[index]
        event = parse_event(relay.event_bytes(party, index, seq % 100, seq, now))
        yield encode(Ingest(f"{_EDGE}.{seq}", _EDGE, senders[index], party, "bench", "xml",
                            event, now))  # fmt: skip


async def _drain(cluster: _Pinned, names: Names, plan: relay.Plan, messages: int) -> CoreDrain:
    import nats

    from commonsky.cluster.wire import delivery_decoder

    nc = await nats.connect(**nats_options(cluster.nats_url))
    js = nc.jetstream()
    await ensure_stream(js, names)
    futures = []
    for n, data in enumerate(_recorded(plan, messages, time.time())):
        futures.append(await js.publish_async(names.ingest(_EDGE), data,
                                              headers={"Nats-Msg-Id": f"pre.{n}"}))  # fmt: skip
        if len(futures) >= 2000:
            await asyncio.gather(*futures)
            futures = []
    await asyncio.gather(*futures)
    drain = CoreDrain(messages)
    first: list[float] = []
    last = [0.0]
    got = [0]
    seqs: set[bytes] = set()
    holder: dict[str, Any] = {}

    async def on_delivery(msg: Any) -> None:
        delivery = delivery_decoder.decode(msg.data)
        if not first:
            first.append(time.perf_counter())
            started = cluster.processes[0].proc  # (the core: it delivers before it says so)
            assert started is not None
            holder["core"] = psutil.Process(started.pid)
            holder["cpu0"] = sum(holder["core"].cpu_times()[:2])
            holder["services"] = _Services()
        got[0] += len(delivery.pairs())
        for output in delivery.outputs:  # (which recorded messages came out at all)
            at = output.data.find(b'<bench s="')
            seqs.add(output.data[at + 10 : output.data.find(b'"', at + 10)])
        last[0] = time.perf_counter()
        holder["cpu1"] = sum(holder["core"].cpu_times()[:2])
        holder["used"] = holder["services"].used()

    await nc.subscribe(names.out(_EDGE), cb=on_delivery, pending_bytes_limit=1 << 30)
    roster = encode(Roster(_EDGE, []))
    beats = asyncio.create_task(_beat(nc, names, roster))
    await cluster.core()
    try:
        await until(lambda: len(seqs) >= messages, f"the core delivers all {messages} messages",
                    deadline=600)  # fmt: skip
        quiet = got[0]
        await asyncio.sleep(1.0)  # (the deliveries of the last message's other clients)
        while got[0] != quiet:
            quiet = got[0]
            await asyncio.sleep(1.0)
    finally:
        beats.cancel()
        await nc.close()
    drain.deliveries, drain.seconds = got[0], last[0] - first[0]
    drain.core_cpu_s = holder["cpu1"] - holder["cpu0"]
    drain.services_cpu_s = holder["used"]
    return drain


async def _beat(nc: Any, names: Names, roster: bytes) -> None:
    """The recorded edge's beat: the core keeps its clients while it hears it."""
    while True:
        await nc.publish(names.beat(_EDGE), roster)
        await asyncio.sleep(1.0)


def core_capacity(messages: int, receivers: int, senders: int, parties: int, core_cpu: int,
                  nats_url: str, postgres_admin: str) -> CoreDrain:  # fmt: skip
    """One core, pinned to `core_cpu`, draining `messages` recorded ingest messages."""
    plan = relay.make_plan(parties, senders, receivers)
    with _database(postgres_admin) as (name, store_url), tempfile.TemporaryDirectory() as tmp:
        cluster = _Pinned(Path(tmp), name, nats_url, store_url, plan=plan,
                          pins={"core": core_cpu})  # fmt: skip
        try:
            return asyncio.run(_drain(cluster, Names(name), plan, messages))
        finally:
            cluster.stop()
            asyncio.run(forget(nats_url, name))


def edge_capacity(rate: int, receivers: int, senders: int, parties: int, duration: float,
                  edge_cpu: int, core_cpu: int, nats_url: str,
                  postgres_admin: str) -> dict[str, Any]:  # fmt: skip
    """bench/relay.py's load through one edge pinned to `edge_cpu` (the core on `core_cpu`)."""
    plan = relay.make_plan(parties, senders, receivers)
    with _database(postgres_admin) as (name, store_url), tempfile.TemporaryDirectory() as tmp:
        cluster = _Pinned(Path(tmp), name, nats_url, store_url, plan=plan,
                          pins={"edge": edge_cpu, "core": core_cpu})  # fmt: skip
        try:
            result, cpu = asyncio.run(_cluster_run(cluster, plan, 1, rate, duration))
        finally:
            cluster.stop()
            asyncio.run(forget(nats_url, name))
    return {**result.row(), "rate": rate, "edge CPU %": cpu["edge 1"], "core CPU %": cpu["core"]}


def projection(drain: CoreDrain, edges: list[dict[str, Any]], cpus: int) -> dict[str, float]:
    """Messages in per second a machine of `cpus` CPUs carries, from the measured capacities:
    the core's drain rate (one loop: one CPU at most), and the edges' messages per second of
    their own CPU at the highest rate one edge kept up with, on the CPUs left once the core
    and NATS + PostgreSQL (their measured CPU per message in the drain) have theirs."""
    kept = [e for e in edges if float(e["delivery ratio"]) >= 0.99]
    if not kept:
        return {"cpus": cpus, "edges msg/s": 0.0, "core msg/s": 0.0, "cluster msg/s": 0.0}
    best = max(kept, key=lambda e: int(e["rate"]))
    per_edge_cpu = int(best["rate"]) / max(1e-9, float(best["edge CPU %"]) / 100)
    row = drain.row()
    core_in = row["messages in/s"]
    services = sum(v for k, v in row.items() if k.endswith(" CPU %") and k != "core CPU %")
    per_msg = services / 100 / max(1e-9, core_in)  # CPU seconds of NATS + PostgreSQL
    # rate = per_edge_cpu * (cpus - 1 - per_msg * rate), solved for rate:
    edges_in = per_edge_cpu * (cpus - 1) / (1 + per_edge_cpu * per_msg)
    return {"cpus": cpus, "edges msg/s": edges_in, "core msg/s": core_in,
            "cluster msg/s": min(edges_in, core_in)}  # fmt: skip


def print_capacity(drain: CoreDrain, edges: list[dict[str, Any]]) -> None:
    """The core's drain, each edge rate, and what 4 and 8 CPUs give."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    table = Table(title=f"the core alone: {drain.messages} recorded messages drained")
    for key, value in drain.row().items():
        table.add_row(key, f"{value:,.1f}")
    console.print(table)
    table = Table(title="one edge alone (the core on the other CPU)")
    keys = ["rate", "delivered msg/s", "delivery ratio", "p50 ms", "p99 ms", "edge CPU %",
            "core CPU %"]  # fmt: skip
    for key in keys:
        table.add_column(key, justify="right")
    for row in edges:
        table.add_row(*(f"{row[k]:,.3f}" if isinstance(row[k], float) else str(row[k])
                        for k in keys))  # fmt: skip
    console.print(table)
    for cpus in (2, 4, 8):
        p = projection(drain, edges, cpus)
        print(
            f"{cpus} CPUs: edges carry {p['edges msg/s']:,.0f} msg/s in, the core "
            f"{p['core msg/s']:,.0f}: the cluster {p['cluster msg/s']:,.0f} msg/s in"
        )
