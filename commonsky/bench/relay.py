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
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from commonsky.errors import CommonSkyError, UsageError

_SEQ = re.compile(rb'<bench s="(\d+)"/>')


@dataclass
class Plan:
    parties: list[str]
    targets: dict[str, list[str]]  # provider -> parties that receive (own party included)
    ports: dict[str, int]
    sender_parties: list[str]
    receiver_parties: list[str]


def make_plan(
    parties: int, senders: int, receivers: int, port: Callable[[], int] | None = None
) -> Plan:
    """The parties, their ring of agreements, and a listener port each from `port()` (by
    default 0: the system binds port 0 and `start_system` reads back what it got; a cluster
    bench gives its processes ports of its own, `Cluster.port`). Never a port chosen free and
    let go before it is bound (bench/ports.py)."""
    port = port or (lambda: 0)
    names = [f"P{i}" for i in range(parties)] + ["LONER"]
    ring = names[:-1]
    targets = {
        p: [p, ring[(i + 1) % len(ring)], ring[(i + 2) % len(ring)]] for i, p in enumerate(ring)
    }
    targets["LONER"] = ["LONER"]
    ports = {p: port() for p in names}
    return Plan(
        names,
        targets,
        ports,
        [ring[i % len(ring)] for i in range(senders)],
        [names[i % len(names)] for i in range(receivers)],
    )


def bench_plan(parties: int, senders: int, receivers: int) -> Plan:
    """`bench relay`'s plan: every listener port 0, bound by the system and read back when it
    starts (`start_bench_system`), never chosen here first."""
    return make_plan(parties, senders, receivers, port=lambda: 0)


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


class NotStarted(CommonSkyError):
    """A benchmarked system (the hub, the baseline relay) did not say it was ready: why (its
    exit status, or the time waited) and the last lines it wrote."""


# What a system started by `start_system` reports of the ports it bound (each binds port 0):
# the hub's log line for each TAK listener (hub/listeners.py), its "hub serving" line (HTTP),
# the baseline relay's ready line (`ready {"PARTY": port, …}`).
_LISTENING = re.compile(r"listening tak-tcp:\S+:(\d+) for party (\S+)")
_SERVING_HTTP = re.compile(r"hub serving .*? http://\S+?:(\d+)/")
_READY_PORTS = re.compile(r"^ready (\{.*\})$")


@dataclass
class Started:
    """A system process once it said it was ready: the TCP port each party's listener bound,
    the HTTP port (the hub's; 0 for the relay), and the last lines it wrote (`tail`: its
    output is read to the end by a thread, so a chatty log never blocks it on a full pipe)."""

    proc: subprocess.Popen[str]
    ports: dict[str, int] = field(default_factory=dict)
    http: int = 0
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    ready: bool = False


def start_system(
    cmd: list[str],
    ready: str,
    env: dict[str, str] | None = None,
    parties: list[str] | None = None,
    timeout: float = 30.0,
) -> Started:
    """Start `cmd` and wait (at most `timeout` s) for a line holding `ready`; read the ports
    it bound from its output (`parties`: each must have one).

    Rule: a benchmarked system binds port 0 and says which port it got. Choosing a free port
    here and binding it in the child later raced: in between, the kernel may hand the same
    port out again (a port chosen twice in one plan gave two parties one port, and the hub
    refused to start: "port … is already in use"). Raises NotStarted with the process's exit
    status (or the time waited) and its last lines."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    started = Started(proc)
    said = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        with proc.stdout:  # (closed when the output ends)
            for line in proc.stdout:
                seen(line.rstrip("\n"))
        said.set()  # (its output ended: it exited)

    def seen(line: str) -> None:
        started.tail.append(line)
        if found := _LISTENING.search(line):
            started.ports[found[2]] = int(found[1])
        elif found := _READY_PORTS.match(line):
            started.ports.update(json.loads(found[1]))
        if not started.ready and ready in line:
            if found := _SERVING_HTTP.search(line):
                started.http = int(found[1])
            started.ready = True
            said.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    said.wait(timeout)
    missing = [p for p in parties or () if p not in started.ports]
    if started.ready and not missing:
        return started
    proc.kill()
    status = proc.wait()
    reader.join(5.0)  # (its last lines, for the error)
    if started.ready:
        why = f"no port reported for {', '.join(missing)}"
    elif status == -signal.SIGKILL:  # (killed here: it never said it was ready)
        why = f"no {ready!r} line within {timeout:g} s"
    else:
        why = f"exit status {status}"
    tail = "\n".join(started.tail)
    raise NotStarted(f"{cmd[2]} did not start ({why}); its output ends:\n{tail}")


def start_bench_system(system: str, plan: Plan, folder: Path, loop: str = "asyncio") -> Started:
    """`system` ("hub" or "relay") as its own process on `plan`'s parties, on event loop
    `loop`, with its data in `folder`; `plan.ports` is set to the ports it bound (the plan's
    own are written into its configuration: 0, from `bench_relay`). NotStarted if it does
    not come up."""
    if system == "hub":
        config = folder / "bench.toml"
        config.write_text(hub_config(plan, folder / "hub", 0))
        env: dict[str, str] | None = dict(os.environ, PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "commonsky", "serve", "--config", str(config),
               "--log-level", "info", "--loop", loop]  # fmt: skip
        ready = "hub serving"
    else:
        spec = json.dumps({"ports": plan.ports, "targets": plan.targets, "loop": loop})
        cmd, env, ready = (
            [sys.executable, "-m", "commonsky.bench.baseline_relay", spec],
            None,
            "ready {",  # (its ready line; "already in use" holds "ready")
        )
    started = start_system(cmd, ready, env, plan.parties)
    plan.ports = dict(started.ports)
    return started


def _measure(
    system: str, plan: Plan, folder: Path, loop: str, rate: int, duration: float
) -> Result:
    """Start one system as its own process, put the load on it, stop it."""
    proc = start_bench_system(system, plan, folder, loop).proc
    name = "commonsky hub" if system == "hub" else "policy-free relay"
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
    Returns [hub, relay]. Each binds port 0 for every listener (`start_system`'s rule)."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for system in ("relay", "hub") if relay_first else ("hub", "relay"):
            plan = bench_plan(parties, senders, receivers)
            results[system] = _measure(system, plan, Path(tmp), loop, rate, duration)
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
