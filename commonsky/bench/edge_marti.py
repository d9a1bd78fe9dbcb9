"""`python -m commonsky.bench.edge_marti [--megabytes 8] [--requests 300] [--repeat 3]`: TAK's
HTTP side through a cluster's edge (forwarded over NATS to the core in acknowledged parts:
cluster/edge_marti.py, forward.py) against a single process, in one run.

Both as `commonsky serve` processes on loopback with one CA: an edge and a core (role "core",
PostgreSQL: a fresh database; NATS: `COMMONSKY_TEST_NATS`, default nats://127.0.0.1:4222),
and one hub without `[cluster]` (its files in its data folder). Per target, with a client
certificate (mutual TLS, one keep-alive connection):

- `GET /Marti/api/version`, `--requests` times, alternating target by target: p50 / p99 ms;
- a data package of `--megabytes` (random bytes: zip adds nothing) up to
  `/Marti/sync/missionupload` and down from `/Marti/sync/content`, `--repeat` times (a new
  package each time): MB/s, best and median.

Prints one JSON object. The single process keeps files in its folder, the cluster in
PostgreSQL: the upload and download figures include that difference (`commonsky bench marti
--postgres` measures it alone).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import ssl
import statistics
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx

from commonsky.bench.cluster import Cluster, Process, scratch_cluster
from commonsky.bench.hubproc import hub_config
from commonsky.pki import init_ca, issue_client

HOST = "127.0.0.1"
BOUNDARY = "----CommonSkyBenchBoundary"


def _listeners(ca: Path, marti: int, enroll: int) -> str:
    return (
        f'\n[[listener]]\nkind = "marti"\nbind = "{HOST}:{marti}"\nca = "{ca}"\n'
        f'[[listener]]\nkind = "enroll"\nbind = "{HOST}:{enroll}"\nca = "{ca}"\n'
    )


def _package(megabytes: float) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("MANIFEST/manifest.xml", '<MissionPackageManifest version="2"/>')
        archive.writestr("blob.bin", os.urandom(int(megabytes * 1_000_000)))
    return out.getvalue()


def _multipart(data: bytes) -> bytes:
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"assetfile\"; "
            'filename="bench.zip"\r\nContent-Type: application/zip\r\n\r\n').encode()  # fmt: skip
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def _client(port: int, ca: Path, cert: Path) -> httpx.AsyncClient:
    context = ssl.create_default_context(cafile=str(ca / "ca.pem"))
    context.load_cert_chain(cert / "bench.pem", cert / "bench-key.pem")
    return httpx.AsyncClient(base_url=f"https://{HOST}:{port}", verify=context, timeout=300)


def _ms(samples: list[float]) -> dict[str, float]:
    ms = sorted(1000 * s for s in samples)
    return {"p50_ms": round(ms[len(ms) // 2], 2),
            "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2)}  # fmt: skip


def _rate(samples: list[float]) -> dict[str, float]:
    median = statistics.median(samples)
    return {"best_mb_s": round(max(samples), 1), "median_mb_s": round(median, 1)}


async def _single(cluster: Cluster, ca: Path) -> tuple[Process, int]:
    """A single hub beside `cluster`, on ports the cluster holds until it stops."""
    folder = cluster.folder
    marti, http = cluster.port(), cluster.port()
    ports = {p: cluster.port() for p in ("USA", "RUS", "JPN", "KOR")}
    config = folder / "single.toml"
    listeners = _listeners(ca, marti, cluster.port())
    config.write_text(hub_config(folder / "data-single", http, ports) + listeners)
    process = Process(config, folder / "single.log", http=http)
    process.start()
    await process.wait_log(r"listening marti:")
    return process, marti


async def _files(client: httpx.AsyncClient, megabytes: float) -> tuple[float, float]:
    """(upload MB/s, download MB/s) of one new package."""
    data = _package(megabytes)
    body = _multipart(data)
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    started = time.perf_counter()
    r = await client.post("/Marti/sync/missionupload?filename=bench.zip", content=body,
                          headers=headers)  # fmt: skip
    up = time.perf_counter() - started
    r.raise_for_status()
    sha = hashlib.sha256(data).hexdigest()
    started = time.perf_counter()
    r = await client.get(f"/Marti/sync/content?hash={sha}")
    down = time.perf_counter() - started
    r.raise_for_status()
    if r.content != data:
        raise AssertionError("the package came back changed")
    return len(data) / up / 1e6, len(data) / down / 1e6


async def _measure(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    folder = cluster.folder
    ca = folder / "ca"
    init_ca(ca, server_names=[HOST])
    issue_client(ca, "USA", "bench", folder / "cert")
    edge_marti = cluster.port()  # (held until the cluster stops: bench/ports.reserve_port)
    cluster.base = lambda d, http, ports, extra: (
        hub_config(d, http, ports, extra) + _listeners(ca, edge_marti, cluster.port())
    )
    await cluster.edge()
    await cluster.core()
    single, single_marti = await _single(cluster, ca)
    targets = {"edge": edge_marti, "single": single_marti}
    version: dict[str, list[float]] = {name: [] for name in targets}
    rates: dict[str, dict[str, list[float]]] = {n: {"up": [], "down": []} for n in targets}
    try:
        clients = {name: _client(port, ca, folder / "cert") for name, port in targets.items()}
        for _ in range(args.requests):
            for name, client in clients.items():
                started = time.perf_counter()
                r = await client.get("/Marti/api/version")
                version[name].append(time.perf_counter() - started)
                r.raise_for_status()
        for _ in range(args.repeat):
            for name, client in clients.items():
                up, down = await _files(client, args.megabytes)
                rates[name]["up"].append(up)
                rates[name]["down"].append(down)
        for client in clients.values():
            await client.aclose()
    finally:
        single.stop()
    return {
        "megabytes": args.megabytes, "requests": args.requests, "repeat": args.repeat,
        **{name: {"version": _ms(version[name]), "upload": _rate(rates[name]["up"]),
                  "download": _rate(rates[name]["down"])} for name in targets},
        "load_average": [round(v, 2) for v in os.getloadavg()], "cores": os.cpu_count(),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m commonsky.bench.edge_marti")
    parser.add_argument("--megabytes", type=float, default=8.0)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with scratch_cluster("em") as cluster:
        result = asyncio.run(_measure(cluster, args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
