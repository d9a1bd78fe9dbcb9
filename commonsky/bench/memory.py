"""`commonsky bench memory`: the hub's resident memory per 1,000 idle TAK connections and
with 10,000 live tracks (issue 19; target ≤ 30 MB per 1,000 idle connections).

The hub runs as its own process (`commonsky serve`, the pattern and helpers of
`bench/relay.py`); this process is the load. Steps, each ended by a barrier on the hub's own
`/metrics` (never a sleep):

1. warm-up: one connection per listener opened and closed (first-use imports and caches
   are not charged to the connections);
2. baseline RSS;
3. N idle TAK TCP connections, spread round-robin over `--parties` parties (a listener per
   party: a `tak-tcp` listener stamps its party on every connection), until
   `commonsky_connections` says N → RSS;
4. `--tracks` live tracks (distinct uids, stale in an hour) from `--senders` connections of
   a party nobody shares with (so the idle connections receive none of it and what is
   measured is the picture, not their outboxes), until `commonsky_items_in` says all were
   accepted → RSS.

RSS is VmRSS of /proc/PID/status (VmHWM for the peak): what the kernel charges the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import httpx
import typer
from prometheus_client.parser import text_string_to_metric_families

from commonsky.bench.relay import Plan, hub_config, start_system
from commonsky.errors import UsageError

TARGET_MB_PER_1000 = 30.0
TOKEN = "bench-memory-operator-token"
TRACKS_PARTY = "TRACKS"
OPEN_BATCH = 200  # connections opened at once: below the listen backlog's reach
WAIT_S = 120.0  # longest a barrier waits before the run is declared failed


@dataclass
class Figures:
    """One run's figures; every memory figure in MB (10^6 bytes) of the hub's RSS."""

    connections: int
    tracks: int
    baseline_mb: float
    idle_mb: float  # baseline + the idle connections
    tracks_mb: float  # idle + the live tracks
    peak_mb: float  # VmHWM at the end
    open_s: float  # opening the connections until the hub counted them all
    fill_s: float  # sending the tracks until the hub accepted them all

    @property
    def per_1000_idle_mb(self) -> float:
        return (self.idle_mb - self.baseline_mb) * 1000 / max(1, self.connections)

    @property
    def track_kb(self) -> float:
        return (self.tracks_mb - self.idle_mb) * 1000 / max(1, self.tracks)

    def as_dict(self) -> dict[str, float | int]:
        return {
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()},
            "per_1000_idle_mb": round(self.per_1000_idle_mb, 3),
            "track_kb": round(self.track_kb, 3),
        }

    def rows(self) -> list[tuple[str, str, str]]:
        """(figure, value, target) rows of the report table."""
        ok = "ok" if self.per_1000_idle_mb <= TARGET_MB_PER_1000 else "MISSED"
        return [
            ("RSS at start (MB)", f"{self.baseline_mb:.1f}", ""),
            (f"RSS with {self.connections:,} idle connections (MB)", f"{self.idle_mb:.1f}", ""),
            (
                "per 1,000 idle connections (MB)",
                f"{self.per_1000_idle_mb:.2f}",
                f"<= {TARGET_MB_PER_1000:g} ({ok})",
            ),
            (f"RSS with {self.tracks:,} live tracks too (MB)", f"{self.tracks_mb:.1f}", ""),
            (
                f"{self.tracks:,} live tracks (MB)",
                f"{self.tracks_mb - self.idle_mb:.1f}",
                "",
            ),
            ("per live track (kB)", f"{self.track_kb:.2f}", ""),
            ("peak RSS, VmHWM (MB)", f"{self.peak_mb:.1f}", ""),
            ("connections opened and counted in (s)", f"{self.open_s:.1f}", ""),
            ("tracks sent and accepted in (s)", f"{self.fill_s:.1f}", ""),
        ]


def status_mb(status: str, field: str) -> float:
    """The `field` (VmRSS, VmHWM…) of a /proc/PID/status text, in MB. Raises ValueError
    when the field is missing or not in kB."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == field:
            number, _, unit = value.strip().partition(" ")
            if unit != "kB":
                raise ValueError(f"{field}: unit {unit!r}, expected kB")
            return int(number) * 1024 / 1e6
    raise ValueError(f"no {field} in /proc/PID/status")


def metric_sum(text: str, sample: str, labels: Mapping[str, str] | None = None) -> float:
    """Sum of the samples named `sample` (a counter's `_total` included) in Prometheus text
    whose labels include `labels`; 0 when there is none."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                total += s.value
    return total


def memory_plan(parties: int) -> Plan:
    """Idle parties P0… and the tracks' party, each its own listener; no agreement at all:
    each party sees only its own, so idle connections get none of the tracks."""
    names = [f"P{i}" for i in range(parties)] + [TRACKS_PARTY]
    return Plan(names, {p: [p] for p in names}, dict.fromkeys(names, 0), [], [])  # (port 0)


def memory_config(plan: Plan, data_dir: Path, http_port: int, connections: int) -> str:
    """`bench/relay.py`'s hub config with the limits `connections` idle sockets need, an
    operator token for /metrics, and an idle timeout longer than the run (idle clients do
    not ping here)."""
    server = (
        f'operator_token = "{TOKEN}"\nlimit_connections = {connections + 100}\n'
        f"limit_connections_per_party = {connections + 100}\ntimeout_idle_s = 3600.0\n"
    )
    return hub_config(plan, data_dir, http_port).replace("[server]\n", f"[server]\n{server}", 1)


def raise_fd_limit(need: int) -> None:
    """This process holds one descriptor per connection: lift the soft limit to the hard
    one, or stop with a clear error when even that is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        raise UsageError(f"open-file hard limit {hard} is below the {need} this run needs")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class _Discard(asyncio.Protocol):
    """A client that reads and drops whatever the hub writes (the offer, echoes)."""

    def data_received(self, data: bytes) -> None:
        pass


def track_events(n: int, parts: int, now: float) -> list[bytes]:
    """`n` live tracks (uids T0…, air and ground alternately, on a grid inside the valid
    range whatever `n`, stale in an hour) dealt round-robin into `parts` byte strings."""
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    t, s = time.strftime(fmt, time.gmtime(now)), time.strftime(fmt, time.gmtime(now + 3600))
    events = [
        f'<event version="2.0" uid="T{i}" type="{"a-f-A-M-F" if i % 2 else "a-f-G-U-C"}" '
        f'time="{t}" start="{t}" stale="{s}" how="m-g"><point lat="{-60 + (i % 1200) * 0.1:.1f}"'
        f' lon="{-170 + (i // 1200 % 3400) * 0.1:.1f}" hae="{9000 if i % 2 else 0}" ce="10"'
        f' le="10"/><detail><contact callsign="T{i}"/></detail></event>'.encode()
        for i in range(n)
    ]
    return [b"".join(events[i::parts]) for i in range(parts)]


class _Hub:
    """The hub process: its RSS and its /metrics."""

    def __init__(self, proc: subprocess.Popen[str], http: httpx.AsyncClient) -> None:
        self.proc, self.http = proc, http

    def mb(self, field: str = "VmRSS") -> float:
        return status_mb(Path(f"/proc/{self.proc.pid}/status").read_text(), field)

    async def until(self, what: str, done: Callable[[str], bool]) -> None:
        """Poll /metrics until `done(text)`; RuntimeError after WAIT_S or if the hub died."""
        deadline = time.monotonic() + WAIT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the hub exited ({self.proc.returncode}) waiting for {what}")
            try:
                response = await self.http.get("/metrics")
                if response.status_code == 200 and done(response.text):
                    return
            except httpx.TransportError:
                pass  # (not listening yet)
            if time.monotonic() > deadline:
                raise RuntimeError(f"gave up after {WAIT_S:g} s waiting for {what}")
            await asyncio.sleep(0.2)

    async def connections(self, n: int) -> None:
        await self.until(f"{n} connections", lambda t: metric_sum(t, "commonsky_connections") == n)


async def _open(ports: list[int], n: int) -> list[asyncio.Transport]:
    loop = asyncio.get_running_loop()
    transports: list[asyncio.Transport] = []
    for start in range(0, n, OPEN_BATCH):
        batch = [
            loop.create_connection(_Discard, "127.0.0.1", ports[i % len(ports)])
            for i in range(start, min(n, start + OPEN_BATCH))
        ]
        transports.extend(t for t, _ in await asyncio.gather(*batch))
    return transports


async def _run(hub: _Hub, plan: Plan, connections: int, tracks: int, senders: int) -> Figures:
    idle_ports = [plan.ports[p] for p in plan.parties if p != TRACKS_PARTY]
    await hub.until("/metrics", lambda t: True)
    warm = await _open(list(plan.ports.values()), len(plan.ports))
    await hub.connections(len(warm))
    for transport in warm:
        transport.close()
    await hub.connections(0)
    baseline = hub.mb()
    t0 = time.perf_counter()
    idle = await _open(idle_ports, connections)
    await hub.connections(connections)
    open_s = time.perf_counter() - t0
    idle_mb = hub.mb()
    writers = []
    for _ in range(senders):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", plan.ports[TRACKS_PARTY], limit=2**20
        )
        writers.append((reader, writer))
    drains = [asyncio.create_task(_drain(reader)) for reader, _ in writers]
    t0 = time.perf_counter()
    for (_, writer), data in zip(writers, track_events(tracks, senders, time.time()), strict=True):
        writer.write(data)
    await asyncio.gather(*(w.drain() for _, w in writers))
    labels = {"party": TRACKS_PARTY}
    await hub.until(
        f"{tracks} tracks", lambda t: metric_sum(t, "commonsky_items_in_total", labels) >= tracks
    )
    fill_s = time.perf_counter() - t0
    figures = Figures(
        connections, tracks, baseline, idle_mb, hub.mb(), hub.mb("VmHWM"), open_s, fill_s
    )
    for task in drains:
        task.cancel()
    for _, writer in writers:
        writer.close()
    for transport in idle:
        transport.close()
    return figures


async def _drain(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError):
        while await reader.read(262144):
            pass


def bench_memory(connections: int, tracks: int, senders: int, parties: int) -> Figures:
    """Start a hub, load it as the module says, stop it; RuntimeError (with the end of the
    hub's log) when a barrier was not reached."""
    raise_fd_limit(connections + senders + 256)
    with tempfile.TemporaryDirectory(prefix="csky-bench-memory-") as tmp:
        plan = memory_plan(parties)
        config = Path(tmp) / "hub.toml"
        config.write_text(memory_config(plan, Path(tmp) / "hub", 0, connections + senders))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "commonsky", "serve", "--config", str(config),
               "--log-level", "info"]  # fmt: skip
        # (Every port is 0 in the config: the hub binds and reports them, `start_system`.)
        started = start_system(cmd, "hub serving", env, plan.parties)
        plan.ports, proc = started.ports, started.proc
        try:
            return asyncio.run(_with_client(proc, plan, started.http, connections, tracks, senders))
        except RuntimeError as exc:
            tail = "\n".join(started.tail)
            raise RuntimeError(f"{exc}; the hub's log ends:\n{tail}") from None
        finally:
            proc.terminate()
            proc.wait(30)


async def _with_client(
    proc: subprocess.Popen[str],
    plan: Plan,
    http_port: int,
    connections: int,
    tracks: int,
    senders: int,
) -> Figures:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    base = f"http://127.0.0.1:{http_port}"
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30.0) as http:
        return await _run(_Hub(proc, http), plan, connections, tracks, senders)


def bench(
    connections: Annotated[
        int, typer.Option(help="Idle TAK connections held open (1000; try 10000).")
    ] = 1000,
    tracks: Annotated[int, typer.Option(help="Live tracks sent after them.")] = 10_000,
    senders: Annotated[int, typer.Option(help="TAK connections sending the tracks.")] = 4,
    parties: Annotated[int, typer.Option(help="Parties the idle connections belong to.")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Hub RSS at start, per 1,000 idle TAK connections (target <= 30 MB) and with live
    tracks, the hub in its own process."""
    if min(connections, tracks, senders, parties) < 1:
        raise UsageError("--connections, --tracks, --senders and --parties must be > 0")
    try:
        figures = bench_memory(connections, tracks, senders, parties)
    except RuntimeError as exc:
        raise UsageError(f"bench memory: {exc}") from None
    if as_json:
        print(json.dumps(figures.as_dict(), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"commonsky bench memory: {connections:,} idle connections ({parties} parties), "
        f"{tracks:,} tracks from {senders} senders, {os.cpu_count()} cores"
    )
    for column in ("figure", "value", "target"):
        table.add_column(column)
    for row in figures.rows():
        table.add_row(*row)
    Console(width=110).print(table)
