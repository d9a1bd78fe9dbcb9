"""`commonsky bench relay`: the hub under load, against a policy-free relay in the same run.

Both the hub and the baseline relay run as separate processes on loopback; this process is
the load: S senders offering R msgs/s in total (spread evenly, sent every 10 ms) and
receivers spread over several parties. Agreements form a ring (party i shares tracks with
i+1 and i+2), plus one party nobody shares with, whose receivers must get nothing. Latency
is measured from the moment a message is written by its sender to the moment a receiver
has read it, on the same clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from commonsky.errors import UsageError

_SEQ = re.compile(rb'<bench s="(\d+)"/>')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Plan:
    parties: list[str]
    targets: dict[str, list[str]]  # provider -> parties that receive (own party included)
    ports: dict[str, int]
    sender_parties: list[str]
    receiver_parties: list[str]


def make_plan(parties: int, senders: int, receivers: int) -> Plan:
    names = [f"P{i}" for i in range(parties)] + ["LONER"]
    ring = names[:-1]
    targets = {
        p: [p, ring[(i + 1) % len(ring)], ring[(i + 2) % len(ring)]] for i, p in enumerate(ring)
    }
    targets["LONER"] = ["LONER"]
    ports = {p: free_port() for p in names}
    return Plan(
        names,
        targets,
        ports,
        [ring[i % len(ring)] for i in range(senders)],
        [names[i % len(names)] for i in range(receivers)],
    )


def hub_config(plan: Plan, data_dir: Path, http_port: int) -> str:
    lines = [f'[server]\ndata_dir = "{data_dir}"\nhttp = "127.0.0.1:{http_port}"\n']
    for party in plan.parties:
        lines.append(
            f'[[listener]]\nkind = "tak-tcp"\nbind = "127.0.0.1:{plan.ports[party]}"\n'
            f'party = "{party}"\n'
        )
        lines.append(f'[[party]]\nid = "{party}"\n')
    for provider, recipients in plan.targets.items():
        others = [p for p in recipients if p != provider]
        if others:
            lines.append(
                f'[[agreement]]\nname = "{provider} ring"\nfrom = "{provider}"\n'
                f'to = {json.dumps(others)}\ncategories = ["track"]\n'
                'disclosure = "full"\n'
            )
    return "\n".join(lines)


@dataclass
class Result:
    name: str
    offered: int = 0
    expected: int = 0
    delivered: int = 0
    unexpected: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    rss_mb: float = 0.0
    # (seq, receiver's port, when read) of every delivery, when asked for (bench/hops.py)
    reads: list[tuple[int, int, float]] | None = None
    sent: dict[int, tuple[float, str]] = field(default_factory=dict)  # (with `reads`)

    def row(self) -> dict[str, float | str]:
        lat = sorted(self.latencies) or [float("nan")]
        return {
            "system": self.name,
            "offered msg/s": self.offered / self.seconds,
            "delivered msg/s": self.delivered / self.seconds,
            "delivery ratio": self.delivered / max(1, self.expected),
            "missed (entitled)": self.expected - self.delivered,
            "unexpected": self.unexpected,
            "p50 ms": 1000 * lat[len(lat) // 2],
            "p99 ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "max ms": 1000 * lat[-1],
            "cpu %": 100 * self.cpu_s / self.seconds,
            "rss MB": self.rss_mb,
        }


def event_bytes(party: str, sender: int, track: int, seq: int, now: float) -> bytes:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    stale = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now + 120))
    return (
        f'<event version="2.0" uid="S{sender}-T{track}" type="a-f-A-M-F" time="{stamp}.000Z" '
        f'start="{stamp}.000Z" stale="{stale}.000Z" how="m-g"><point lat="{30 + track * 0.05}" '
        f'lon="{40 + sender * 0.5}" hae="{6000 + (track % 20) * 300}" ce="10" le="10"/><detail>'
        f'<contact callsign="{party}-S{sender}-T{track}"/><track speed="230" course="90"/>'
        f'<bench s="{seq}"/></detail></event>'
    ).encode()


class _Receiver(asyncio.Protocol):
    """One receiving client: counts each marked event it is owed (and any it is not).

    A bare Protocol, not a StreamReader: the load generator must stay cheaper than what it
    measures, or it measures itself."""

    def __init__(
        self, party: str, plan: Plan, sent_at: dict[int, tuple[float, str]], result: Result
    ) -> None:
        self.party = party
        self.plan = plan
        self.sent_at = sent_at
        self.result = result
        self.tail = b""
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.port = transport.get_extra_info("peername")[1]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        data = self.tail + data
        cut = data.rfind(b"</event>")
        if cut < 0:
            self.tail = data
            return
        self.tail = data[cut + 8 :]
        result = self.result
        for match in _SEQ.finditer(data, 0, cut):
            origin = self.sent_at.get(int(match.group(1)))
            if origin is None:
                continue
            if self.party in self.plan.targets[origin[1]]:
                result.delivered += 1
                result.latencies.append(now - origin[0])
                if result.reads is not None:
                    result.reads.append((int(match.group(1)), self.port, now))
            else:
                result.unexpected += 1


Writers = list[tuple[str, asyncio.StreamReader, asyncio.StreamWriter]]


async def run_load(
    plan: Plan, rate: int, duration: float, name: str, proc: psutil.Process, trace: bool = False
) -> Result:
    """Offer `rate` msg/s for `duration` s from the plan's senders to the system on its ports
    (`proc` is the process measured: CPU, RSS); count what its receivers get (`trace`: and
    keep when each message was sent and each delivery read, `Result.sent` and `.reads`)."""
    result = Result(name, reads=[] if trace else None)
    sent_at = result.sent
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    receivers = []
    for party in plan.receiver_parties:
        transport, _ = await loop.create_connection(
            lambda party=party: _Receiver(party, plan, sent_at, result),  # type: ignore[misc]
            "127.0.0.1",
            plan.ports[party],
        )
        receivers.append(transport)
    writers: Writers = []
    for party in plan.sender_parties:
        reader, writer = await asyncio.open_connection("127.0.0.1", plan.ports[party])
        writers.append((party, reader, writer))
    await asyncio.sleep(0.5)
    drains = [asyncio.create_task(_discard(reader, stop)) for _, reader, _ in writers]
    cpu0 = sum(proc.cpu_times()[:2])
    await _offer(plan, rate, duration, writers, sent_at, result, proc)
    await _settle(result)
    result.cpu_s = sum(proc.cpu_times()[:2]) - cpu0
    result.rss_mb = max(result.rss_mb, proc.memory_info().rss / 1e6)
    stop.set()
    for transport in receivers:
        transport.close()
    for task in drains:
        task.cancel()
    await asyncio.gather(*drains, return_exceptions=True)
    for _, _, writer in writers:
        writer.close()
    return result


async def _offer(
    plan: Plan,
    rate: int,
    duration: float,
    writers: Writers,
    sent_at: dict[int, tuple[float, str]],
    result: Result,
    proc: psutil.Process,
) -> None:
    """Send at `rate` in 10 ms ticks, each sender its share, for `duration` seconds."""
    receivers_per_party: dict[str, int] = defaultdict(int)
    for party in plan.receiver_parties:
        receivers_per_party[party] += 1
    per_tick = rate / len(writers) / 100.0
    seq = 0
    start = time.perf_counter()
    tick = 0
    credit = [0.0] * len(writers)
    while time.perf_counter() - start < duration:
        wall = time.time()
        for index, (party, _, writer) in enumerate(writers):
            credit[index] += per_tick
            batch = []
            while credit[index] >= 1:
                credit[index] -= 1
                seq += 1
                batch.append(event_bytes(party, index, seq % 100, seq, wall))
                sent_at[seq] = (time.perf_counter(), party)
                result.expected += sum(receivers_per_party[t] for t in plan.targets[party])
            if batch:
                writer.write(b"".join(batch))
        tick += 1
        if tick % 50 == 0:
            result.rss_mb = max(result.rss_mb, proc.memory_info().rss / 1e6)
        await asyncio.sleep(max(0.0, start + tick * 0.01 - time.perf_counter()))
    result.seconds = time.perf_counter() - start
    result.offered = seq


async def _settle(result: Result) -> None:
    """Let in-flight messages land: until every expected delivery arrived, or none arrived
    for 1 s (a system that fell behind on a busy machine is late, not lossy; what never
    comes is counted missed), at most 15 s."""
    last, quiet_since, give_up = -1, time.perf_counter(), time.perf_counter() + 15.0
    while result.delivered < result.expected and time.perf_counter() < give_up:
        await asyncio.sleep(0.1)
        if result.delivered != last:
            last, quiet_since = result.delivered, time.perf_counter()
        elif time.perf_counter() - quiet_since >= 1.0:
            break


async def _discard(reader: asyncio.StreamReader, stop: asyncio.Event) -> None:
    while not stop.is_set() and await reader.read(262144):
        pass


def _start(cmd: list[str], ready: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert proc.stdout is not None
    deadline = time.time() + 30
    for line in proc.stdout:
        if ready in line:
            return proc
        if time.time() > deadline:
            break
    proc.kill()
    raise RuntimeError(f"{cmd[2]} did not start")


def _measure(
    cmd: list[str],
    ready: str,
    env: dict[str, str] | None,
    plan: Plan,
    rate: int,
    duration: float,
    name: str,
) -> Result:
    """Start one system as its own process, put the load on it, stop it."""
    proc = _start(cmd, ready, env)
    try:
        return asyncio.run(run_load(plan, rate, duration, name, psutil.Process(proc.pid)))
    finally:
        proc.terminate()
        proc.wait(10)


def bench_relay(
    receivers: int,
    senders: int,
    rate: int,
    duration: float,
    parties: int,
    loop: str = "asyncio",
    relay_first: bool = False,
) -> list[Result]:
    """The hub, then the policy-free relay (or the other way round: `relay_first`), each
    its own process on event loop `loop` ("asyncio" or "uvloop"), under the same load.
    Returns [hub, relay]."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for system in ("relay", "hub") if relay_first else ("hub", "relay"):
            plan = make_plan(parties, senders, receivers)
            if system == "hub":
                config = Path(tmp) / "bench.toml"
                config.write_text(hub_config(plan, Path(tmp) / "hub", free_port()))
                env = dict(os.environ, PYTHONUNBUFFERED="1")
                hub_cmd = [sys.executable, "-m", "commonsky", "serve", "--config", str(config),
                           "--log-level", "info", "--loop", loop]  # fmt: skip
                results[system] = _measure(hub_cmd, "hub serving", env, plan, rate, duration,
                                           "commonsky hub")  # fmt: skip
            else:
                spec = json.dumps({"ports": plan.ports, "targets": plan.targets, "loop": loop})
                relay_cmd = [sys.executable, "-m", "commonsky.bench.baseline_relay", spec]
                results[system] = _measure(relay_cmd, "ready", None, plan, rate, duration,
                                           "policy-free relay")  # fmt: skip
    return [results["hub"], results["relay"]]


def parse_rates(text: str) -> list[int]:
    """`--rates 1000,2000,4000`: messages per second offered, each > 0, in the order given.
    Raises UsageError naming what is wrong."""
    rates = []
    for part in text.split(","):
        part = part.strip().replace("_", "")
        if not part.isdigit() or int(part) < 1:
            raise UsageError(f"--rates {text!r}: {part!r} is not a whole number of msg/s > 0")
        rates.append(int(part))
    return rates


@dataclass
class RatePair:
    """One rate's hub and relay runs (same load, same loop, one after the other)."""

    rate: int
    repeat: int
    hub: Result
    relay: Result

    def summary(self) -> dict[str, float | int | str]:
        """The figures the targets of issue #19 are judged on, hub against relay."""
        h, r = self.hub.row(), self.relay.row()
        relay_ratio = float(r["delivery ratio"])
        throughput = float(h["delivered msg/s"]) / max(1e-9, float(r["delivered msg/s"]))
        p99 = float(h["p99 ms"]) / max(1e-9, float(r["p99 ms"]))
        judged = relay_ratio >= 0.99  # the relay keeps up: the hub is judged at this rate
        met = throughput >= 0.8 and int(h["missed (entitled)"]) == 0 and p99 <= 2.0
        return {
            "rate": self.rate,
            "run": self.repeat + 1,
            "hub msg/s out": float(h["delivered msg/s"]),
            "relay msg/s out": float(r["delivered msg/s"]),
            "out ratio": throughput,
            "hub delivered": float(h["delivery ratio"]),
            "relay delivered": relay_ratio,
            "hub p50 ms": float(h["p50 ms"]),
            "hub p99 ms": float(h["p99 ms"]),
            "relay p50 ms": float(r["p50 ms"]),
            "relay p99 ms": float(r["p99 ms"]),
            "p99 ratio": p99,
            "hub cpu %": float(h["cpu %"]),
            "relay cpu %": float(r["cpu %"]),
            "unexpected": int(h["unexpected"]) + int(r["unexpected"]),
            "targets": ("met" if met else "NOT met") if judged else "not judged",
        }


def bench_rates(
    receivers: int,
    senders: int,
    rates: list[int],
    duration: float,
    parties: int,
    loop: str = "asyncio",
    repeat: int = 1,
) -> list[RatePair]:
    """`bench_relay` at each rate, `repeat` times over: hub and relay alternate at every
    rate, and which goes first alternates from one run to the next, so a neighbour's burst
    on a shared machine does not always fall on the same system."""
    pairs: list[RatePair] = []
    for round_ in range(repeat):
        for rate in rates:
            relay_first = len(pairs) % 2 == 1
            hub, relay = bench_relay(receivers, senders, rate, duration, parties, loop, relay_first)
            pairs.append(RatePair(rate, round_, hub, relay))
    return pairs
