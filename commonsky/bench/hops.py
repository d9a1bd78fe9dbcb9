"""`python -m commonsky.bench.hops`: where a cluster's latency goes, hop by hop.

The relay bench's load (`bench/relay.py`: senders, receivers over a ring of parties) through
a cluster of N edges and one core (`bench/relay_cluster.py`), with the latency probe on in
its processes (`commonsky.probe`, COMMONSKY_PROBE): each bench message is stamped when

    sent (the load) → edge_accept (its edge parsed and checked it) → stream_ack (JetStream
    acknowledged it to that edge; beside the path: the core is pushed the message once it is
    stored, not once the edge has its acknowledgement) → core_apply (the hub accepted it:
    routed, queued) → core_publish (its delivery message to an edge left) → edge_receive
    (that edge read the delivery) → client_write (the edge wrote it to a client's socket)
    → client_read (the load read it)

on one clock (CLOCK_MONOTONIC, shared by the processes of one machine). Printed: each hop's
p50/p99/max over every pair it joins (one per message up to the core, one per (message,
edge) for the delivery leg, one per (message, client) for the last two), and each station's
time since sent. `client_write → client_read` is not joined pair by pair (the bytes of a
write are not told apart by reader); `edge_receive → client_read` is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil

from commonsky import probe
from commonsky.bench import relay
from commonsky.bench.cluster import forget
from commonsky.bench.relay_cluster import _EdgePorts, _Processes, _RelayCluster

NATS_URL = "nats://127.0.0.1:4222"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

Stamp = tuple[int, str, int, str, float]  # (pid, station, seq, where, seconds)


def _pct(values: list[float]) -> dict[str, float]:
    """p50, p99 and max of `values` in ms, with how many."""
    if not values:
        nan = float("nan")
        return {"n": 0, "min ms": nan, "p50 ms": nan, "p99 ms": nan, "max ms": nan}
    values = sorted(values)
    return {
        "n": len(values),
        "min ms": 1000 * values[0],
        "p50 ms": 1000 * values[len(values) // 2],
        "p99 ms": 1000 * values[min(len(values) - 1, int(len(values) * 0.99))],
        "max ms": 1000 * values[-1],
    }


class Joined:
    """The stamps of one run, joined by message (and by edge on the delivery leg)."""

    def __init__(
        self,
        stamps: list[Stamp],
        sent: dict[int, float],
        reads: list[tuple[int, str, float]],
        edge_of_pid: dict[int, str],
    ) -> None:
        self.sent = sent
        self.once: dict[str, dict[int, float]] = defaultdict(dict)  # station -> seq -> first
        self.per_edge: dict[str, dict[tuple[int, str], float]] = defaultdict(dict)
        self.writes: dict[tuple[int, str], list[float]] = defaultdict(list)
        for pid, station, seq, where, at in stamps:
            if station in ("edge_accept", "stream_ack", "core_apply"):
                self.once[station].setdefault(seq, at)
            elif station in ("core_publish", "edge_receive"):
                self.per_edge[station].setdefault((seq, where), at)
            elif station == "client_write":
                self.writes[(seq, edge_of_pid.get(pid, "?"))].append(at)
        self.reads = reads  # (seq, the reader's edge, when)

    def _hop(self, a: dict[int, float], b: dict[int, float]) -> list[float]:
        return [b[k] - a[k] for k in a.keys() & b.keys()]

    def hops(self) -> dict[str, dict[str, float]]:
        """Each hop's spread (`_pct`), in path order."""
        once, edge = self.once, self.per_edge
        apply_, publish, receive = once["core_apply"], edge["core_publish"], edge["edge_receive"]
        out = {
            "sent → edge_accept": self._hop(self.sent, once["edge_accept"]),
            "edge_accept → stream_ack": self._hop(once["edge_accept"], once["stream_ack"]),
            "edge_accept → core_apply": self._hop(once["edge_accept"], apply_),
            "core_apply → core_publish": [
                t - apply_[s] for (s, _), t in publish.items() if s in apply_
            ],
            "core_publish → edge_receive": [
                t - publish[k] for k, t in receive.items() if k in publish
            ],
            "edge_receive → client_write": [
                t - receive[k] for k, ts in self.writes.items() if k in receive for t in ts
            ],
            "edge_receive → client_read": [
                t - receive[(s, e)] for s, e, t in self.reads if (s, e) in receive
            ],
            "sent → client_read": [t - self.sent[s] for s, _, t in self.reads if s in self.sent],
        }
        return {name: _pct(values) for name, values in out.items()}

    def stations(self) -> dict[str, dict[str, float]]:
        """Each station's time since the message was sent (`_pct`)."""
        sent = self.sent
        out: dict[str, list[float]] = {
            name: [t - sent[s] for s, t in self.once[name].items() if s in sent]
            for name in ("edge_accept", "stream_ack", "core_apply")
        }
        for name in ("core_publish", "edge_receive"):
            out[name] = [t - sent[s] for (s, _), t in self.per_edge[name].items() if s in sent]
        out["client_write"] = [t - sent[s] for (s, _), ts in self.writes.items() if s in sent
                               for t in ts]  # fmt: skip
        out["client_read"] = [t - sent[s] for s, _, t in self.reads if s in sent]
        return {name: _pct(values) for name, values in out.items()}


async def _run(cluster: _RelayCluster, plan: relay.Plan, edges: int, rate: int,
               duration: float) -> tuple[relay.Result, dict[int, str], dict[int, int]]:  # fmt: skip
    """The load through the cluster; its result, the pid of each edge by TAK port, and the
    core's and edges' pids."""
    core = await cluster.core()
    port_pid: dict[int, int] = {}
    ports = []
    pids = {core.proc.pid: "core"} if core.proc else {}
    for n in range(edges):
        edge, edge_ports = await cluster.edge()
        assert edge.proc is not None
        pids[edge.proc.pid] = f"edge {n + 1}"
        port_pid.update({port: edge.proc.pid for port in edge_ports.values()})
        ports.append(edge_ports)
    measured = _Processes({name: psutil.Process(pid) for pid, name in pids.items()})
    loaded = relay.Plan(plan.parties, plan.targets, _EdgePorts(ports), plan.sender_parties,
                        plan.receiver_parties)  # fmt: skip
    result = await relay.run_load(loaded, rate, duration, f"cluster ({edges} edges)",
                                  measured, trace=True)  # type: ignore[arg-type]  # fmt: skip
    await asyncio.sleep(0.5)  # (the probes' writer threads write every 0.2 s)
    return result, pids, port_pid


def bench_hops(rate: int, duration: float, senders: int = 10, receivers: int = 50,
               parties: int = 6, edges: int = 2, nats_url: str = NATS_URL,
               postgres_admin: str = POSTGRES_ADMIN) -> dict[str, Any]:  # fmt: skip
    """Run the load through a probed cluster; the figures (`Joined.hops`, `.stations`), the
    delivery counts and the processes' CPU. Raises what psycopg and NATS raise when they are
    not there."""
    import psycopg

    name = f"hop{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(postgres_admin, autocommit=True, connect_timeout=5)
    admin.execute(f'CREATE DATABASE "{name}"')
    before = os.environ.get("COMMONSKY_PROBE")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "probe"
        os.environ["COMMONSKY_PROBE"] = str(folder)  # (for the processes started below)
        plan = relay.make_plan(parties, senders, receivers)
        store_url = f"{postgres_admin.rsplit('/', 1)[0]}/{name}"
        cluster = _RelayCluster(Path(tmp), name, nats_url, store_url, plan=plan)
        try:
            result, pids, port_pid = asyncio.run(_run(cluster, plan, edges, rate, duration))
        finally:
            cluster.stop()  # (SIGTERM: each process writes what its probe still holds)
            if before is None:
                os.environ.pop("COMMONSKY_PROBE", None)
            else:
                os.environ["COMMONSKY_PROBE"] = before
            asyncio.run(forget(nats_url, name))
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            admin.close()
        stamps = probe.read(folder)
    edge_of_pid = {pid: where for pid, station, _, where, _ in stamps if station == "edge_accept"}
    reads = [(seq, edge_of_pid.get(port_pid.get(port, 0), "?"), at)
             for seq, port, at in result.reads or ()]  # fmt: skip
    path = Joined(stamps, {s: t for s, (t, _) in result.sent.items()}, reads, edge_of_pid)
    return {
        "rate": rate,
        "duration": duration,
        "cores": os.cpu_count(),
        "load": os.getloadavg(),
        "relay": result.row(),
        "hops": path.hops(),
        "stations": path.stations(),
        "stamps": len(stamps),
        "processes": sorted(pids.values()),
    }


def print_figures(figures: dict[str, Any]) -> None:
    row = figures["relay"]
    print(f"bench hops: {figures['rate']} msg/s, {figures['duration']:g} s, "
          f"{figures['cores']} cores, load {figures['load'][0]:.2f}; delivered "
          f"{row['delivered msg/s']:.0f}/s, ratio {row['delivery ratio']:.3f}, "
          f"end to end p50 {row['p50 ms']:.2f} / p99 {row['p99 ms']:.2f} ms; "
          f"{figures['stamps']} stamps")  # fmt: skip
    for title in ("hops", "stations"):
        print(f"\n{title:<30} {'n':>8} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
        for name, f in figures[title].items():
            print(f"{name:<30} {f['n']:>8} {f['p50 ms']:>9.2f} {f['p99 ms']:>9.2f} "
                  f"{f['max ms']:>9.2f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m commonsky.bench.hops",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("--rate", type=int, default=1000, help="messages/s offered")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--receivers", type=int, default=50)
    parser.add_argument("--edges", type=int, default=2)
    parser.add_argument("--nats", default=NATS_URL)
    parser.add_argument("--postgres", default=POSTGRES_ADMIN, help="an admin URL (CREATE "
                        "DATABASE): the run's database is made and dropped")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="the figures as JSON")
    args = parser.parse_args(argv)
    figures = bench_hops(args.rate, args.duration, args.senders, args.receivers,
                         edges=args.edges, nats_url=args.nats,
                         postgres_admin=args.postgres)  # fmt: skip
    if args.json:
        print(json.dumps(figures, indent=1))
    else:
        print_figures(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
