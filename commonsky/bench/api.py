"""`commonsky bench api`: item-query latency of the HTTP API under a steady request rate.

The hub runs as its own process (`commonsky serve`), so the load generator's work is not
counted against it; it is filled with live tracks over a real TAK TCP listener and airspace
over the API, then queried open-loop: request i is due at t0 + i/rate whatever happened to
earlier ones, and its latency counts from when it was due, so a stall shows up in the
figures instead of quietly slowing the load (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import httpx
import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from commonsky.bench.ports import HeldPorts
from commonsky.errors import UsageError, finite_flags

TOKENS = {"USA": "bench-usa-token-0123456789", "JPN": "bench-jpn-token-0123456789"}
JPN = {"Authorization": f"Bearer {TOKENS['JPN']}"}
TARGET_P99_MS = 20.0


def _config(data_dir: Path, http_port: int, tak_port: int) -> str:
    parties = "".join(f'[[party]]\nid = "{p}"\ntoken = "{t}"\n\n' for p, t in TOKENS.items())
    return (
        f'[server]\ndata_dir = "{data_dir}"\nhttp = "127.0.0.1:{http_port}"\n\n'
        f'[[listener]]\nkind = "tak-tcp"\nbind = "127.0.0.1:{tak_port}"\nparty = "USA"\n\n'
        f"{parties}"
        '[[agreement]]\nname = "bench"\nfrom = "USA"\nto = ["JPN"]\n'
        'categories = ["track", "airspace"]\ndisclosure = "full"\n'
    )


def track_events(n: int, step: int = 0) -> bytes:
    """`n` live tracks on a grid; each `step` moves every one of them ~1 km north."""
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    now = time.time()
    t, s = time.strftime(fmt, time.gmtime(now)), time.strftime(fmt, time.gmtime(now + 3600))
    return b"".join(
        f'<event version="2.0" uid="b{i}" type="a-f-A-M-F" time="{t}" start="{t}" stale="{s}"'
        f' how="m-g"><point lat="{30 + (i % 50) * 0.3 + step * 0.01:.5f}"'
        f' lon="{120 + (i // 50) * 0.5}"'
        f' hae="9000" ce="10" le="10"/><detail><contact callsign="B{i}"/></detail></event>'.encode()
        for i in range(n)
    )


def _area(i: int) -> bytes:
    now = time.time()
    x, y = 120 + (i % 10) * 2.0, 30 + (i // 10) * 2.0
    ring = [[x, y], [x + 1, y], [x + 1, y + 1], [x, y + 1], [x, y]]
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "uid": f"area{i}",
            "floor_m": 0,
            "ceiling_m": 9000,
            "start": now - 60,
            "end": now + 3600,
        },
    }
    return json.dumps(feature).encode()


def _start_hub(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "commonsky", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@dataclass
class LoadedHub:
    """A hub process filled with traffic: its base URL, an API client, the USA TAK socket."""

    base: str
    http: httpx.AsyncClient
    usa_tak: asyncio.StreamWriter


@contextlib.asynccontextmanager
async def loaded_hub(tracks: int, areas: int) -> AsyncIterator[LoadedHub]:
    """`commonsky serve` in its own process, holding `areas` volumes and `tracks` live tracks
    that JPN may see in full; stopped on exit."""
    # The ports are held until the hub is stopped (bench/ports.py: the config is written first).
    with tempfile.TemporaryDirectory(prefix="csky-bench-hub-") as tmp, HeldPorts() as held:
        http_port, tak_port = held.port(), held.port()
        cfg = Path(tmp) / "hub.toml"
        cfg.write_text(_config(Path(tmp) / "data", http_port, tak_port))
        proc = _start_hub(cfg)
        base = f"http://127.0.0.1:{http_port}"
        try:
            # Enough connections that the client never queues a request the rate asks for.
            limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
            timeout = httpx.Timeout(30.0, pool=None)
            async with httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits) as http:
                for _ in range(200):
                    try:
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if proc.poll() is not None:
                        raise UsageError(f"hub exited: {proc.stderr.read().decode()[-400:]}")  # type: ignore[union-attr]
                    await asyncio.sleep(0.05)
                usa = {"Authorization": f"Bearer {TOKENS['USA']}"}
                for i in range(areas):
                    r = await http.post("/api/airspace", content=_area(i), headers=usa)
                    if r.status_code != 201:
                        raise UsageError(f"hub refused bench airspace: {r.text[:200]}")
                _, writer = await asyncio.open_connection("127.0.0.1", tak_port)
                writer.write(track_events(tracks))
                await writer.drain()
                for _ in range(200):
                    got = (await http.get("/api/items?category=track", headers=JPN)).json()
                    if len(got) >= tracks:
                        break
                    await asyncio.sleep(0.05)
                try:
                    yield LoadedHub(base, http, writer)
                finally:
                    writer.close()
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _run(
    tracks: int, areas: int, rate: float, duration: float
) -> dict[str, tuple[int, np.ndarray, int]]:
    async with loaded_hub(tracks, areas) as hub:
        queries = {
            "track, small bbox": "/api/items?category=track&bbox=120,30,121,31",
            "airspace": "/api/items?category=airspace",
            f"all {tracks:,} tracks": "/api/items?category=track",
        }
        results: dict[str, tuple[int, np.ndarray, int]] = {}
        for name, path in queries.items():
            results[name] = await _load(hub.http, path, JPN, rate, duration)
        return results


async def _load(
    http: httpx.AsyncClient, path: str, headers: dict[str, str], rate: float, duration: float
) -> tuple[int, np.ndarray, int]:
    n = max(1, int(rate * duration))
    latencies: list[float] = []
    errors = 0
    size = 0
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.1

    async def one(due: float) -> None:
        nonlocal errors, size
        await asyncio.sleep(max(0.0, due - loop.time()))
        try:
            response = await http.get(path, headers=headers)
        except httpx.HTTPError:
            errors += 1
            return
        latencies.append(loop.time() - due)
        if response.status_code != 200:
            errors += 1
        size = len(response.content)

    await asyncio.gather(*(one(t0 + i / rate) for i in range(n)))
    return size, np.array(latencies) * 1e3, errors


def bench(
    tracks: Annotated[int, typer.Option(help="live tracks in the hub")] = 2000,
    areas: Annotated[int, typer.Option(help="airspace volumes in the hub")] = 50,
    rate: Annotated[float, typer.Option(help="requests per second, per query")] = 100.0,
    duration: Annotated[float, typer.Option(help="seconds of load per query")] = 10.0,
) -> None:
    """API item-query latency at a steady rate against a hub in its own process."""
    finite_flags(rate=rate, duration=duration)
    if tracks < 0 or areas < 0 or rate <= 0 or duration <= 0:
        raise UsageError("--tracks and --areas must be >= 0, --rate and --duration > 0")
    results = asyncio.run(_run(tracks, areas, rate, duration))
    table = Table(
        title=f"commonsky bench api: {rate:g} req/s for {duration:g} s per query, "
        f"{os.cpu_count()} cores"
    )
    for col in ("query (as JPN)", "bytes", "p50 ms", "p99 ms", "max ms", "errors", "target"):
        table.add_column(col)
    for name, (size, lat, errors) in results.items():
        p99 = float(np.percentile(lat, 99))
        verdict = "ok" if p99 < TARGET_P99_MS and not errors else "MISSED"
        table.add_row(
            name,
            f"{size:,}",
            f"{np.percentile(lat, 50):.2f}",
            f"{p99:.2f}",
            f"{lat.max():.2f}",
            str(errors),
            f"p99 < {TARGET_P99_MS:g} ms ({verdict})",
        )
    Console(width=120).print(table)
