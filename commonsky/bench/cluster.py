"""A cluster on this machine for tests and benches: `commonsky serve` processes (edges, cores)
on one NATS server and one PostgreSQL database, and TAK clients that keep what they were sent.

Every wait is a barrier with a deadline (`until`): a condition polled until it holds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from commonsky.bench.fuzz_inputs import PARTIES
from commonsky.bench.hubproc import hub_config
from commonsky.bench.kill9 import chat as hotline_chat
from commonsky.bench.ports import HeldPorts
from commonsky.times import format_time

DEADLINE = 60.0  # seconds a condition may take on a loaded 2-core machine
_UID = re.compile(rb'<event [^>]*?uid="([^"]+)"')


async def until(condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    """Wait until `condition()` holds; AssertionError naming `what` after `deadline` s."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline:.0f} s: {what}")
        await asyncio.sleep(0.05)


async def until_async(condition: Callable[[], Awaitable[bool]], what: str,
                      deadline: float = DEADLINE) -> None:  # fmt: skip
    """`until` for a condition that must be awaited."""
    end = time.monotonic() + deadline
    while not await condition():
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline:.0f} s: {what}")
        await asyncio.sleep(0.05)


# A hub's configuration text without its `[cluster]` table: (data folder, HTTP port, a TCP port
# per party, more `[server]` lines) -> TOML. `hubproc.hub_config` is the fuzz bench's.
HubText = Callable[[Path, int, dict[str, int], str], str]


def cluster_config(folder: Path, name: str, nats_url: str, store_url: str, role: str,
                   ports: dict[str, int], http: int, base: HubText = hub_config,
                   more: str = "") -> Path:  # fmt: skip
    """`base`'s parties and agreements (by default the fuzz bench's four: a TCP listener per
    party), as one process of cluster `name`, with its own data folder
    (`folder/data-ROLE-HTTP`: what the cores share is in PostgreSQL and NATS); `more`:
    lines added to its `[cluster]` table."""
    text = base(
        folder / f"data-{role}-{http}",
        http,
        ports,
        f'store_url = "{store_url}"\nlimit_durable_items_per_party = 100000\n',
    )
    text += (
        f'\n[cluster]\nnats_url = "{nats_url}"\nrole = "{role}"\nname = "{name}"\n'
        f"lease_ttl_s = 5.0\n{more}"
    )
    path = folder / f"{role}-{http}.toml"
    n = 1
    while path.exists():  # (edges sharing their ports: each its own file and log)
        n += 1
        path = folder / f"{role}-{http}-{n}.toml"
    path.write_text(text)
    return path


@dataclass
class Process:
    """One `commonsky serve` of the cluster."""

    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    http: int = 0  # its `[server] http` port (an edge's map and API; a core's own)
    init: bool = False  # `serve --init`: the cluster's first core makes the hub's keys

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "commonsky", "serve", "--config", str(self.config),
                 "--log-level", "info", *(["--init"] if self.init else [])],
                stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def wait_log(self, pattern: str, count: int = 1) -> None:
        def seen() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.config.name} exited: {self.text()[-3000:]}")
            return len(re.findall(pattern, self.text())) >= count

        await until(seen, f"{pattern!r} in {self.log.name}: {self.text()[-2000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Cluster:
    folder: Path
    name: str
    nats_url: str
    store_url: str
    parties: tuple[str, ...] = tuple(PARTIES)  # (a TCP port for each on every process)
    base: HubText = hub_config  # (the parties, agreements and listeners of every process)
    processes: list[Process] = field(default_factory=list)
    edge_ports: list[dict[str, int]] = field(default_factory=list)
    edge_http: list[int] = field(default_factory=list)  # (its `[server] http`, in edge order)
    core_http: list[int] = field(default_factory=list)
    held: HeldPorts = field(default_factory=HeldPorts, repr=False)
    more: str = ""  # (lines added to each process's `[cluster]` table)

    def port(self) -> int:
        """A port of 127.0.0.1 for one of the cluster's processes, held (bench/ports.py)
        until `stop` (which every user of a Cluster must call): no other process is given it
        meanwhile."""
        return self.held.port()

    def _process(self, role: str, ports: dict[str, int], http: int) -> Process:
        config = cluster_config(self.folder, self.name, self.nats_url, self.store_url, role,
                                ports, http, self.base, self.more)  # fmt: skip
        return self.started(config, role, http)

    def started(self, config: Path, role: str, http: int = 0) -> Process:
        """A process of `config` started; the cluster's first core with `--init` (an empty
        database holds no hub: hub/shared.py), every later one without."""
        first = role != "edge" and not any(p.init for p in self.processes)
        process = Process(config, self.folder / f"{config.stem}.log", http=http, init=first)
        process.start()
        self.processes.append(process)
        return process

    async def edge(self, ports: dict[str, int] | None = None,
                   http: int | None = None) -> tuple[Process, dict[str, int]]:  # fmt: skip
        """An edge process, on new ports or on `ports` and `http` (another edge's:
        SO_REUSEPORT)."""
        ports = ports or {p: self.port() for p in self.parties}
        http = http or self.port()
        process = self._process("edge", ports, http)
        await process.wait_log(r"cluster edge \S+ ready")
        self.edge_ports.append(ports)
        self.edge_http.append(http)
        return process, ports

    async def core(self, wait: bool = True) -> Process:
        """A core process (it serves once it holds the lease; `wait`: until it does)."""
        http = self.port()
        process = self._process("core", {p: self.port() for p in self.parties}, http)
        self.core_http.append(http)
        if wait:
            await process.wait_log(r"cluster core \S+ serving")
        else:
            await process.wait_log(r"cluster core \S+: standing by")
        return process

    async def core_and_two_edges(self) -> tuple[dict[str, int], dict[str, int]]:
        """A serving core, then two edges: each edge's TAK ports by party."""
        await self.core()
        _, a = await self.edge()
        _, b = await self.edge()
        return a, b

    async def both(self, serving: bool) -> tuple[Process, dict[str, int]]:
        """A process of role "all": an edge (ready at once) and a core (`serving`: wait until
        it holds the lease; else until it stands by)."""
        ports = {p: self.port() for p in self.parties}
        http = self.port()
        process = self._process("all", ports, http)
        await process.wait_log(r"cluster edge \S+ ready")
        await process.wait_log(r"cluster core \S+ serving" if serving else "standing by")
        self.edge_ports.append(ports)
        self.edge_http.append(http)
        return process, ports

    def stop(self) -> None:
        """Every process stopped, then the ports they held given back (also when stopping
        one raised: a test's ports are not left held for the rest of the session)."""
        try:
            for process in self.processes:
                process.stop()
        finally:
            self.held.close()


def track(uid: str, now: float, lat: float = 30.0, stale_s: float = 600) -> bytes:
    return (
        f'<event version="2.0" uid="{uid}" type="a-f-A-M-F" time="{format_time(now)}" '
        f'start="{format_time(now)}" stale="{format_time(now + stale_s)}" how="m-g">'
        f'<point lat="{lat}" lon="31" hae="9000" ce="10" le="10"/><detail>'
        f'<contact callsign="{uid}"/><track speed="200" course="90"/></detail></event>'
    ).encode()


def marker(uid: str, now: float) -> bytes:
    """A spot marker: durable (stored, replayed to the party's clients that connect later)."""
    return (
        f'<event version="2.0" uid="{uid}" type="b-m-p-s-m" time="{format_time(now)}" '
        f'start="{format_time(now)}" stale="{format_time(now + 3600)}" how="h-g-i-g-o">'
        '<point lat="35" lon="139" hae="0" ce="10" le="10"/><detail>'
        f'<contact callsign="{uid}"/></detail></event>'
    ).encode()


def chat(uid: str, to: str, now: float) -> bytes:
    """`kill9.chat`: a hotline message to party `to`."""
    return hotline_chat(uid, to, now, note="cluster")


class Client:
    """A TAK client over TCP that keeps every event it receives (raw, in order)."""

    def __init__(self, party: str, port: int) -> None:
        self.party, self.port = party, port
        self.events: list[bytes] = []
        self._buffer = b""
        self._task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.closed = asyncio.Event()

    async def connect(self) -> Client:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._task = asyncio.create_task(self._read(reader))
        return self

    async def _read(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while chunk := await reader.read(65536):
                self._buffer += chunk
                while (end := self._buffer.find(b"</event>")) >= 0:
                    self.events.append(self._buffer[: end + 8])
                    self._buffer = self._buffer[end + 8 :]
        self.closed.set()

    async def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    def got(self, text: str) -> int:
        """How many received events contain `text`."""
        needle = text.encode()
        return sum(needle in e for e in self.events)

    def uids(self) -> list[str]:
        return [m.group(1).decode() for e in self.events if (m := _UID.search(e))]

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def forget(nats_url: str, name: str) -> None:
    """Remove cluster `name`'s streams and buckets from the NATS server."""
    import nats

    from commonsky.cluster.config import nats_options

    nc = await nats.connect(**nats_options(nats_url))
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name and name in info.config.name:
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()


@contextlib.contextmanager
def scratch_cluster(prefix: str) -> Iterator[Cluster]:
    """A cluster of a new name (`prefix` + random) on a new database of its own, on the NATS
    and PostgreSQL of COMMONSKY_TEST_NATS / COMMONSKY_TEST_POSTGRES (default: this machine's
    standard loopback ports); its processes stopped, its stream, buckets and database removed
    afterwards. For benchmarks run as commands (bench/edge_api.py, bench/edge_marti.py)."""
    import psycopg

    nats_url = os.environ.get("COMMONSKY_TEST_NATS", "nats://127.0.0.1:4222")
    admin_url = os.environ.get(
        "COMMONSKY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory() as tmp:
            store_url = f"{admin_url.rsplit('/', 1)[0]}/{name}"
            cluster = Cluster(Path(tmp), name, nats_url, store_url)
            try:
                yield cluster
            finally:
                cluster.stop()
                asyncio.run(forget(nats_url, name))
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()
