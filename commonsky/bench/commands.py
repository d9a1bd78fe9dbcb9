"""`commonsky bench relay`, `bench fuzz` and `bench kill9`: the commands that start a real
hub process and load it. Each imports its benchmark only when run."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from commonsky.errors import UsageError, finite_flags

if TYPE_CHECKING:  # (the benchmark itself is imported only when run)
    from commonsky.bench.relay import RatePair


def relay(
    receivers: Annotated[int, typer.Option(help="Receiving TAK connections.")] = 60,
    senders: Annotated[int, typer.Option(help="Sending TAK connections.")] = 10,
    rate: Annotated[int, typer.Option(help="Messages per second offered in total.")] = 1000,
    duration: Annotated[float, typer.Option(help="Seconds of load per system.")] = 10.0,
    parties: Annotated[int, typer.Option(help="Parties in the agreement ring.")] = 6,
    rates: Annotated[
        str | None,
        typer.Option(help="Several rates in one run, e.g. 1000,2000,4000 (instead of --rate)."),
    ] = None,
    loop: Annotated[
        str, typer.Option(help="Event loop of both the hub and the relay: asyncio or uvloop.")
    ] = "asyncio",
    repeat: Annotated[int, typer.Option(help="Times the whole series of rates is run.")] = 1,
    edges: Annotated[
        int, typer.Option(help="Also a cluster of this many edges and a core (NATS, PostgreSQL).")
    ] = 0,
) -> None:
    """Hub vs a policy-free asyncio relay, same load, same run: throughput, latency, CPU, RSS.
    With --edges N (one --rate), a cluster beside them (bench/relay_cluster.py)."""
    finite_flags(duration=duration)
    if edges > 0:
        from commonsky.bench.relay_cluster import bench_cluster, print_figures

        figures = bench_cluster(receivers, senders, rate, duration, parties, edges,
                                "nats://127.0.0.1:4222",
                                "postgresql://postgres@127.0.0.1:5432/postgres")  # fmt: skip
        print_figures(figures, receivers, senders, rate, duration)
        return
    from commonsky.bench.relay import bench_rates, parse_rates

    if min(receivers, senders, rate, parties, repeat) < 1 or duration <= 0:
        raise UsageError(
            "--receivers, --senders, --rate, --parties, --repeat and --duration must be > 0"
        )
    if loop not in ("asyncio", "uvloop"):
        raise UsageError(f"--loop {loop!r}: choose asyncio or uvloop")
    from commonsky.eventloop import resolve

    resolve(loop)  # (uvloop not installed: said now, before any process starts)
    series = parse_rates(rates) if rates is not None else [rate]
    pairs = bench_rates(receivers, senders, series, duration, parties, loop, repeat)
    title = (
        f"bench relay: {receivers} receivers, {senders} senders, {duration:g} s per system, "
        f"{loop}, {os.cpu_count()} cores"
    )
    if len(pairs) == 1:
        _relay_table(pairs[0], title)
    else:
        _rates_table(pairs, title)


def _relay_table(pair: RatePair, title: str) -> None:
    """One rate: every figure of the hub and the relay side by side."""
    from rich.console import Console
    from rich.table import Table

    hub, relay = pair.hub, pair.relay
    rows = [hub.row(), relay.row()]
    table = Table(title=f"{title}, {pair.rate} msg/s offered")
    table.add_column("measure")
    for row in rows:
        table.add_column(str(row["system"]), justify="right")
    for key in list(rows[0])[1:]:
        table.add_row(
            key,
            *(f"{row[key]:.3f}" if isinstance(row[key], float) else str(row[key]) for row in rows),
        )
    Console(width=100).print(table)
    h, r = rows
    throughput = float(h["delivered msg/s"]) / float(r["delivered msg/s"])
    print(f"throughput ratio hub/relay = {throughput:.3f}  (target >= 0.8)")
    print(
        f"p99 ratio hub/relay = {float(h['p99 ms']) / max(1e-9, float(r['p99 ms'])):.2f}"
        f"  (target <= 2)"
    )
    print(
        f"hub RSS = {hub.rss_mb:.0f} MB (target <= 300); unexpected deliveries = "
        f"{hub.unexpected} (target 0)"
    )


def _rates_table(pairs: list[RatePair], title: str) -> None:
    """Several rates (and runs): one line per rate and run, hub against relay."""
    from rich.console import Console
    from rich.table import Table

    summaries = [p.summary() for p in pairs]
    table = Table(title=title)
    for key in summaries[0]:
        table.add_column(key, justify="right")
    for summary in summaries:
        table.add_row(
            *(f"{v:,.3f}" if isinstance(v, float) and abs(v) < 10 else
              f"{v:,.1f}" if isinstance(v, float) else str(v) for v in summary.values())
        )  # fmt: skip
    Console(width=200).print(table)
    print(
        "targets (issue #19), judged where the relay delivers >= 99 %: out ratio (hub's "
        "deliveries/s over the relay's) >= 0.8, the hub misses nothing, p99 ratio <= 2"
    )


def cluster_capacity(
    messages: Annotated[int, typer.Option(help="Recorded messages the core drains.")] = 20_000,
    rates: Annotated[
        str, typer.Option(help="Rates (msg/s in) of the one-edge runs, e.g. 1000,2000,4000.")
    ] = "1000,2000,4000",
    receivers: Annotated[int, typer.Option(help="Receiving TAK connections.")] = 50,
    senders: Annotated[int, typer.Option(help="Sending TAK connections.")] = 10,
    parties: Annotated[int, typer.Option(help="Parties in the agreement ring.")] = 6,
    duration: Annotated[float, typer.Option(help="Seconds of load per edge run.")] = 10.0,
    core_cpu: Annotated[int, typer.Option(help="CPU the core is pinned to.")] = 0,
    edge_cpu: Annotated[int, typer.Option(help="CPU the edge is pinned to.")] = 1,
    nats_url: Annotated[str, typer.Option(help="NATS with JetStream.")] = ("nats://127.0.0.1:4222"),
    postgres: Annotated[
        str, typer.Option(help="PostgreSQL where a fresh database is made (and dropped).")
    ] = "postgresql://postgres@127.0.0.1:5432/postgres",
) -> None:
    """What one core and one edge each carry, measured alone (bench/cluster_capacity.py):
    the core pinned to one CPU drains a stream filled beforehand with MESSAGES recorded
    tracks (bench relay's load); then bench relay's load at each of RATES through one edge
    pinned to EDGE_CPU, the core on CORE_CPU. Prints both, and what 2, 4 and 8 CPUs carry
    from those measured capacities (edges scale by processes; the core is one loop)."""
    from commonsky.bench.cluster_capacity import core_capacity, edge_capacity, print_capacity
    from commonsky.bench.relay import parse_rates

    finite_flags(duration=duration)
    cpus = os.cpu_count() or 1
    if messages <= 0 or not {core_cpu, edge_cpu} <= set(range(cpus)):
        raise UsageError(f"--messages must be positive and --core-cpu/--edge-cpu in 0..{cpus - 1}")
    series = parse_rates(rates)
    drain = core_capacity(messages, receivers, senders, parties, core_cpu, nats_url, postgres)
    edges = [edge_capacity(r, receivers, senders, parties, duration, edge_cpu, core_cpu,
                           nats_url, postgres) for r in series]  # fmt: skip
    print_capacity(drain, edges)


def fuzz(
    inputs: Annotated[int, typer.Option(help="Mutated messages to send in all.")] = 1_000_000,
    restarts: Annotated[int, typer.Option(help="Times the hub is restarted midway.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the mutations (a run replays).")] = 1,
    corpus: Annotated[
        Path | None, typer.Option(help="Folder of real CoT events (*.xml) to seed from.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the hub's data, log and the report.")
    ] = None,
    hub_log_level: Annotated[str, typer.Option(help="The hub's --log-level.")] = "warning",
) -> None:
    """Mutated TAK (XML, protobuf) and API input against a real hub restarted midway; prints
    the figures (also in OUT/fuzz-report.json); exit 1 when a must-hold figure fails."""
    import importlib.util

    if importlib.util.find_spec("websockets") is None:  # its WebSocket receivers need it
        raise UsageError("bench fuzz needs the dev extras: pip install -e '.[dev]'")
    from commonsky.bench.fuzz import fuzz as run

    if inputs <= 0 or restarts < 0:
        raise UsageError("--inputs must be positive and --restarts not negative")
    if corpus is not None and not corpus.is_dir():
        raise UsageError(f"--corpus {corpus}: not a folder")
    out = _empty_out(out, "var/fuzz", "each run starts from an empty hub")
    _report(run(inputs, restarts, seed, corpus, out, hub_log_level))


def kill9(
    runs: Annotated[int, typer.Option(help="Times the hub is killed under load.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the kill moments.")] = 1,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the hub's data, log and the report.")
    ] = None,
    cluster: Annotated[
        bool, typer.Option(help="Kill the core of a cluster (two edges, a standby core).")
    ] = False,
    nats_url: Annotated[str, typer.Option(help="--cluster: NATS with JetStream.")] = (
        "nats://127.0.0.1:4222"
    ),
    postgres: Annotated[
        str, typer.Option(help="--cluster: PostgreSQL where a fresh database is made.")
    ] = "postgresql://postgres@127.0.0.1:5432/postgres",
) -> None:
    """Kill -9 the hub under load RUNS times on the same data; every item it acknowledged
    must be in the store afterwards. Prints the figures (also in OUT/kill9.json); exit 1 when
    an acknowledged item was lost or the hub did not start again. With --cluster, the core
    of a cluster is killed while a standby waits (bench/kill9_cluster.py): exit 1 when a
    durable item was lost or applied twice, or a client lost its edge."""
    if runs <= 0:
        raise UsageError("--runs must be positive")
    out = _empty_out(out, "var/kill9", "the runs start from an empty hub")
    if cluster:
        from commonsky.bench.kill9_cluster import kill9_cluster

        figures = kill9_cluster(runs, out, seed, nats_url, postgres)
    else:
        from commonsky.bench.kill9 import kill9 as run

        figures = run(runs, out, seed)
    _report(figures, leave_out="per_run")


def federation(
    count: Annotated[int, typer.Option(help="Tracks sent in each of the two runs.")] = 5000,
    rate: Annotated[float, typer.Option(help="Tracks a second.")] = 500.0,
    markers: Annotated[int, typer.Option(help="Durable markers sent around each kill.")] = 300,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the hubs' data, logs and the report.")
    ] = None,
) -> None:
    """Two hubs on loopback (federated over TAK Federation v2) against one hub, same load,
    same run: items/s and latency p50/p99 end to end; then the receiving hub and the sending
    hub are each killed with SIGKILL and started again: resume time, durable items lost
    (must be 0) and applied twice (must be 0). Exit 1 when one is not 0."""
    from commonsky.bench.federation import federation as run

    finite_flags(rate=rate)
    if count <= 0 or rate <= 0 or markers <= 0:
        raise UsageError("--count, --rate and --markers must be positive")
    out = _empty_out(out, "var/bench-federation", "the runs start from empty hubs")
    figures = run(out, count, rate, markers)
    _report(figures)


def _empty_out(out: Path | None, root: str, why: str) -> Path:
    """`--out`, or a new folder under `root` named by the time; UsageError when not empty."""
    out = out or Path(root) / time.strftime("%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out}: not empty ({why})")
    return out


def _report(figures: dict[str, Any], leave_out: str = "") -> None:
    """Print a bench's figures a line each; exit 1 when it did not pass."""
    for name, value in figures.items():
        if name != leave_out:
            print(f"{name:40} {value}")
    if not figures["passed"]:
        raise typer.Exit(1)
