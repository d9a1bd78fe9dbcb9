"""A hub as its own process for the benchmarks that load it from outside (`bench fuzz`,
`bench kill9`, `bench federation`): its configuration (four parties, agreements of every
kind), start and stop (SIGTERM, then kill), a minimal HTTP/1.1 client for its API and
metrics, and the store/ledger check of its data once stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from commonsky.bench.fuzz_seeds import PARTIES

_METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")

OPERATOR = "fuzz-operator-token-0123456789"  # reads all of /metrics


def token(party: str) -> str:
    return f"fuzz-token-{party.lower()}-0123456789"


def hub_config(data_dir: Path, http: int, ports: dict[str, int], extra: str = "") -> str:
    """Four parties, a TCP listener each, and agreements of every kind between them
    (`extra`: more `[server]` settings)."""
    lines = [
        f'[server]\ndata_dir = "{data_dir}"\nhttp = "127.0.0.1:{http}"\n'
        "limit_refusals_before_close = 500\nlimit_queue_durable = 100000\n"
        f'operator_token = "{OPERATOR}"\n{extra}'
    ]
    for party in PARTIES:
        lines.append(f'[[listener]]\nkind = "tak-tcp"\nbind = "127.0.0.1:{ports[party]}"\n'
                     f'party = "{party}"\n')  # fmt: skip
        lines.append(f'[[party]]\nid = "{party}"\ntoken = "{token(party)}"\n')
    # Airspace flows one way per pair, and hotline agreements join parties whose drawings
    # are not compared: a conflict notice about every pair of overlapping drawings, and a
    # hotline thread for each, would otherwise grow the pictures without end.
    for name, src, dst, categories, disclosure in (
        ("us-ru", "USA", "RUS", '["track", "airspace", "site", "launch", "alert"]', "full"),
        ("ru-us", "RUS", "USA", '["track", "launch", "imagery"]', "full"),
        ("us-jp", "USA", "JPN", '["track", "launch", "hotline"]', "generalized"),
        ("jp-us", "JPN", "USA", '["hotline", "track"]', "full"),
        ("kr-jp", "KOR", "JPN", '["airspace", "site"]', "conflicts-only"),
        ("jp-kr", "JPN", "KOR", '["alert", "launch"]', "full"),
        ("ru-kr", "RUS", "KOR", '["hotline"]', "full"),
        ("kr-ru", "KOR", "RUS", '["hotline", "alert"]', "full"),
    ):
        lines.append(f'[[agreement]]\nname = "{name}"\nfrom = "{src}"\nto = ["{dst}"]\n'
                     f'categories = {categories}\ndisclosure = "{disclosure}"\n')  # fmt: skip
    return "\n".join(lines)


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """Prometheus text as {name: {labels: value}}."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        match = _METRIC.match(line)
        if match and not line.startswith("#"):
            with contextlib.suppress(ValueError):
                out.setdefault(match.group(1), {})[match.group(2) or ""] = float(match.group(3))
    return out


class HubProcess:
    def __init__(self, config: Path, log: Path, http: int, log_level: str) -> None:
        self.config, self.log, self.http, self.log_level = config, log, http, log_level
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 300.0) -> float:
        """Start the hub; the seconds until /healthz answers (RuntimeError if it never does)."""
        began = time.perf_counter()
        with self.log.open("ab") as out:
            # Popen returns at once (the hub lives on); its output goes to a file.
            self.proc = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "commonsky", "serve", "--config", str(self.config),
                 "--log-level", self.log_level],
                stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )  # fmt: skip
        while time.perf_counter() - began < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the hub exited with {self.proc.returncode} on start")
            with contextlib.suppress(OSError):
                status, _ = await http_get(self.http, "/healthz")
                if status == 200:
                    return time.perf_counter() - began
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the hub did not answer /healthz within {timeout} s")

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9

    def rss_mb(self) -> float:
        with contextlib.suppress(psutil.Error, AttributeError):
            return float(psutil.Process(self.proc.pid).memory_info().rss) / 1e6  # type: ignore[union-attr]
        return 0.0


async def http_get(port: int, path: str, auth: str = OPERATOR) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await http_request(reader, writer, "GET", path, auth, b"")
    finally:
        writer.close()


async def http_request(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    method: str,
    path: str,
    auth: str,
    body: bytes,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a keep-alive connection: (status, body)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: fuzz\r\nContent-Length: {len(body)}\r\n"
    if auth:
        head += f"Authorization: Bearer {auth}\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed before the response")
    status = int(status_line.split()[1])
    length, chunked = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "transfer-encoding" and "chunked" in value:
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length)
    data = bytearray()
    while size := int((await reader.readline()).strip() or b"0", 16):
        data += await reader.readexactly(size + 2)
    await reader.readline()
    return status, bytes(data)


def check_data(data_dir: Path) -> tuple[list[str], int]:
    """Store/ledger disagreements and unreadable rows in a stopped hub's data."""
    from commonsky.ledger.agreement import disagreements
    from commonsky.ledger.log import Ledger
    from commonsky.store.sqlite import SQLiteStore

    store = SQLiteStore(data_dir)
    try:
        with Ledger.open(data_dir) as ledger:
            found = disagreements(store.since(0), ledger.entries())
        return found, len(store.unreadable)
    finally:
        store.close()
