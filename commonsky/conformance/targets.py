"""The hub a conformance play runs against: one process (`SingleHub`, what `commonsky
conformance` and the corpus tests use) or a cluster (`ClusterHub`: edges and a core, each a
`commonsky serve` process, on NATS JetStream and PostgreSQL — issue 19).

Both carry the same configuration (`hub_config`): parties ALPHA and BRAVO, a TAK TCP
listener per party (a client connecting there is that party), and a `full` agreement for
every category both ways. `Bench` (play.py) asks a target for:

- `edges`, and `port(party, edge)`: where a client of `party` connects (one process: one
  place; a cluster: each of its edges);
- `tokens` and `api_base()`: `GET /api/items` as each party;
- `refusals()`: the refusals counted so far, over every process (a number that grows);
- `log_lines()`: every log line written so far, as (level, message), in the order written
  per process.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from commonsky.cluster.config import nats_options, without_secrets
from commonsky.config import config_from_dict
from commonsky.errors import UsageError
from commonsky.model import Category
from commonsky.server import HubServer

from . import ALPHA, BRAVO

PLAYED = (ALPHA, BRAVO)


class Target(Protocol):
    tokens: dict[str, str]
    edges: int

    def port(self, party: str, edge: int = 0) -> int: ...

    def api_base(self) -> str: ...

    async def refusals(self) -> float: ...

    def log_lines(self) -> list[tuple[int, str]]: ...


def hub_config(data_dir: Path | str, http: int, ports: dict[str, int], tokens: dict[str, str],
               operator: str) -> dict[str, Any]:  # fmt: skip
    """The private hub's configuration (as `config_from_dict` reads it): `ports` maps each
    party to its TAK TCP port (0: any free one)."""
    categories = [c.value for c in Category]
    return {
        "server": {
            "data_dir": str(data_dir),
            "http": f"127.0.0.1:{http}",
            "operator_token": operator,
        },
        "listener": [
            {"kind": "tak-tcp", "bind": f"127.0.0.1:{ports[p]}", "party": p} for p in PLAYED
        ],
        "party": [{"id": p, "token": tokens[p]} for p in PLAYED],
        "agreement": [
            {
                "name": f"{a} shares everything with {b}",
                "from": a,
                "to": [b],
                "categories": categories,
                "disclosure": "full",
            }
            for a, b in ((ALPHA, BRAVO), (BRAVO, ALPHA))
        ],
    }


_TOML_ESCAPES = {chr(c): f"\\u{c:04x}" for c in (*range(0x20), 0x7F)} | {'"': '\\"', "\\": "\\\\"}


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A TOML basic string: quote, backslash and control characters escaped (JSON's
        # escaping would write a character beyond the BMP as a surrogate pair: not TOML).
        return '"' + "".join(_TOML_ESCAPES.get(c) or c for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def to_toml(config: dict[str, Any], server_extra: str = "") -> str:
    """`config` (tables and arrays of tables of scalars and lists) as TOML; `server_extra`:
    more `key = value` lines for `[server]`. Raises TypeError for anything else."""
    lines: list[str] = []
    for name, body in config.items():
        for table in body if isinstance(body, list) else [body]:
            lines.append(f"[[{name}]]" if isinstance(body, list) else f"[{name}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
            if name == "server" and server_extra:
                lines.append(server_extra.rstrip("\n"))
            lines.append("")
    return "\n".join(lines)


class _Capture(logging.Handler):
    """The hub's log lines while it plays (refusals say why)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.append((record.levelno, record.getMessage()))


class SingleHub:
    """The embedded single process, in this process (its TAK listeners on port 0)."""

    edges = 1

    def __init__(self, server: HubServer, tokens: dict[str, str]) -> None:
        self.server = server
        self.tokens = tokens
        self.capture = _Capture()

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls) -> AsyncIterator[SingleHub]:
        """Start the private hub (data in a temporary folder, removed afterwards)."""
        tokens = {p: secrets.token_hex(16) for p in PLAYED}
        with tempfile.TemporaryDirectory(prefix="commonsky-conformance-") as data_dir:
            ports = dict.fromkeys(PLAYED, 0)
            config = hub_config(data_dir, 0, ports, tokens, secrets.token_hex(16))
            target = cls(HubServer(config_from_dict(config, "conformance hub")), tokens)
            logger = logging.getLogger("commonsky")
            propagate, level = logger.propagate, logger.level
            logger.addHandler(target.capture)
            logger.propagate = False  # the findings say what the log said
            logger.setLevel(logging.INFO)
            try:
                await target.server.start()
                try:
                    yield target
                finally:
                    await target.server.stop()
            finally:
                logger.removeHandler(target.capture)
                logger.propagate, logger.level = propagate, level

    def port(self, party: str, edge: int = 0) -> int:
        return next(ln.port for ln in self.server.listeners if ln.config.party == party)

    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    async def refusals(self) -> float:
        total = 0.0
        for metric in self.server.hub.metrics.refusals.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    total += sample.value
        return total

    def log_lines(self) -> list[tuple[int, str]]:
        return self.capture.lines


# `commonsky serve`'s log format (cli.py): "2026-11-30 20:30:57,123 LEVEL logger: message".
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ([A-Z]+) [^:]+: (.*)$")


class ProcessLogs:
    """The log files of a cluster's processes, read as they grow."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.offsets = dict.fromkeys(paths, 0)
        self.lines: list[tuple[int, str]] = []

    def read(self) -> list[tuple[int, str]]:
        for path in self.paths:
            with contextlib.suppress(OSError), path.open("rb") as f:
                f.seek(self.offsets[path])
                data = f.read()
                end = data.rfind(b"\n") + 1  # (a line still being written waits)
                self.offsets[path] += end
                for raw in data[:end].decode("utf-8", "replace").splitlines():
                    match = _RECORD.match(raw)
                    if match is None:
                        continue  # (a traceback's lines: its record's line said it)
                    level = logging.getLevelName(match.group(1))
                    line = match.group(2)
                    self.lines.append((level if isinstance(level, int) else 0, line))
        return self.lines


def check_api(api: str, edges: int) -> None:
    """Raises UsageError unless `api` is "core" or "edge:N" with N < `edges`."""
    if api != "core" and not (re.fullmatch(r"edge:\d{1,4}", api) and int(api[5:]) < edges):
        raise UsageError(f"api {api!r} is neither 'core' nor 'edge:N' of the {edges} edges")


class ClusterHub:
    """A cluster of `edges` edges and one core, each a `commonsky serve` process
    (`bench.cluster.Cluster`), on NATS JetStream and a PostgreSQL database of its own.

    `api` says where `GET /api/items` is asked: `"edge:N"` (edge N's `[server] http`, which
    forwards it to the core: cluster/edge_http.py) or `"core"` (the core's own port).
    Refusals are `commonsky_refusals_total` of the core and of every edge (each its own
    /metrics: an edge counts what it refused itself, the core what it refused)."""

    def __init__(self, cluster: Any, tokens: dict[str, str], operator: str, api: str) -> None:
        """`cluster`: a started `bench.cluster.Cluster`. Raises UsageError for a bad `api`."""
        self.cluster = cluster
        self.tokens = tokens
        self.operator = operator
        self.edges = len(cluster.edge_ports)
        self.logs = ProcessLogs([p.log for p in cluster.processes])
        check_api(api, self.edges)
        self.api = api

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, folder: Path, name: str, nats_url: str, store_url: str, edges: int = 2,
        api: str = "edge:0",
    ) -> AsyncIterator[ClusterHub]:  # fmt: skip
        """Start the core and the edges (logs and data under `folder`); stop them and remove
        cluster `name`'s streams and buckets afterwards. The database at `store_url` should
        be empty (exactly once is per message id and per item)."""
        import asyncio

        from commonsky.bench.cluster import Cluster, forget

        check_api(api, edges)  # (before anything starts)

        tokens = {p: secrets.token_hex(16) for p in PLAYED}
        operator = secrets.token_hex(16)

        def base(data_dir: Path, http: int, ports: dict[str, int], extra: str) -> str:
            return to_toml(hub_config(data_dir, http, ports, tokens, operator), extra)

        cluster = Cluster(folder, name, nats_url, store_url, parties=PLAYED, base=base)
        try:
            # (All at once: an edge serves without a core; edge N is the N-th ready.)
            await asyncio.gather(cluster.core(), *(cluster.edge() for _ in range(edges)))
            yield cls(cluster, tokens, operator, api)
        finally:
            await asyncio.to_thread(cluster.stop)
            await forget(nats_url, name)

    def port(self, party: str, edge: int = 0) -> int:
        return int(self.cluster.edge_ports[edge][party])

    def api_base(self) -> str:
        if self.api == "core":
            return f"http://127.0.0.1:{self.cluster.core_http[-1]}"
        return f"http://127.0.0.1:{self.cluster.edge_http[int(self.api.split(':')[1])]}"

    async def refusals(self) -> float:
        from commonsky.bench.hubproc import http_get, parse_metrics

        total = 0.0
        for port in (self.cluster.core_http[-1], *self.cluster.edge_http):
            status, body = await http_get(port, "/metrics", self.operator)
            if status != 200:
                raise OSError(f"/metrics on port {port} answered {status}")
            total += sum(parse_metrics(body.decode()).get("commonsky_refusals_total", {}).values())
        return total

    def log_lines(self) -> list[tuple[int, str]]:
        return self.logs.read()


def _shown(url: str) -> str:
    """`url` without its secret (for error lines), by the cluster's one rule for reading a
    URL's userinfo (cluster/config.py)."""
    return without_secrets(url)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@contextlib.contextmanager
def fresh_databases(admin_url: str, count: int) -> Iterator[list[str]]:
    """`count` new, empty databases on the PostgreSQL server of `admin_url` (its user may
    create databases), dropped afterwards. Raises UsageError when the server cannot be
    reached or refuses."""
    import uuid

    import psycopg

    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        raise UsageError(f"PostgreSQL at {_shown(admin_url)}: {_one_line(exc)}") from None
    names = [f"commonsky_conformance_{uuid.uuid4().hex[:12]}" for _ in range(count)]
    try:
        for name in names:
            try:
                admin.execute(f'CREATE DATABASE "{name}"')
            except psycopg.Error as exc:
                raise UsageError(f"PostgreSQL at {_shown(admin_url)}: {_one_line(exc)}") from None
        yield [f"{admin_url.rsplit('/', 1)[0]}/{name}" for name in names]
    finally:
        for name in names:
            with contextlib.suppress(psycopg.Error):
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextlib.asynccontextmanager
async def cluster_hubs(
    nats_url: str,
    admin_url: str,
    wires: tuple[str, ...],
    folder: Path | None = None,
    api: str = "edge:0",
) -> AsyncIterator[Callable[[str], contextlib.AbstractAsyncContextManager[Target]]]:
    """For `play.per_wire`: a cluster per wire (`ClusterHub`, two edges), each on a fresh
    database of `admin_url`'s server and its own names on the NATS server at `nats_url`;
    logs and data under `folder` (a temporary one by default). Raises UsageError when NATS or
    PostgreSQL cannot be reached, or for a bad `api`."""
    import asyncio

    import nats

    check_api(api, 2)

    async def quiet(exc: Exception) -> None:
        pass  # (said once, below)

    # (The hub's own reading of the URL's credentials: nats-py would send `%XX` as written.)
    options = nats_options(nats_url, "--cluster")
    try:
        # (nats-py tries a server that refuses again and again unless told how often.)
        nc = await asyncio.wait_for(nats.connect(
            **options, connect_timeout=3, max_reconnect_attempts=1, reconnect_time_wait=0.2,
            error_cb=quiet), 10)  # fmt: skip
    except Exception as exc:  # (nats-py's errors share no base class)
        raise UsageError(f"NATS at {_shown(nats_url)}: {_one_line(exc)}") from None
    await nc.close()
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="commonsky-")))
        store = dict(zip(wires, stack.enter_context(fresh_databases(admin_url, len(wires))),
                         strict=True))  # fmt: skip

        def hubs(wire: str) -> contextlib.AbstractAsyncContextManager[Target]:
            assert folder is not None
            (folder / wire).mkdir(parents=True, exist_ok=True)
            name = f"conformance{secrets.token_hex(6)}"
            return ClusterHub.running(folder / wire, name, nats_url, store[wire], api=api)

        yield hubs
