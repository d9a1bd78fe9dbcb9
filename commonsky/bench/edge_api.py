"""`python -m commonsky.bench.edge_api [--requests N]`: the API's latency through a cluster's
edge (forwarded over NATS to the core: cluster/edge_http.py) against the same requests sent
to the core's own HTTP, alternating request by request in one run.

A core and an edge (`commonsky serve` processes, bench/cluster.py) on the machine's NATS
(`COMMONSKY_TEST_NATS`, default nats://127.0.0.1:4222) and a fresh PostgreSQL database
(`COMMONSKY_TEST_POSTGRES`: an admin URL); 20 tracks posted first, then N rounds of
`GET /api/items` (RUS's view: the tracks USA shares in full) on one keep-alive connection to
each. Prints one JSON object: per path, p50 / p99 / mean milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

import httpx

from commonsky.bench.cluster import Cluster, scratch_cluster, track
from commonsky.bench.hubproc import token


def _summary(samples: list[float]) -> dict[str, float]:
    ms = sorted(1000 * s for s in samples)
    return {
        "p50_ms": round(ms[len(ms) // 2], 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


async def _measure(cluster: Cluster, requests: int) -> dict[str, Any]:
    core = await cluster.core()
    edge, _ = await cluster.edge()
    auth = {"Authorization": f"Bearer {token('RUS')}"}
    usa = {"Authorization": f"Bearer {token('USA')}"}
    times: dict[str, list[float]] = {"edge": [], "core": []}
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.http}", timeout=30) as via,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{core.http}", timeout=30) as direct,
    ):
        for n in range(20):
            r = await direct.post("/api/cot", content=track(f"bench-{n}", time.time()), headers=usa)
            r.raise_for_status()
        for _ in range(requests):
            for name, client in (("edge", via), ("core", direct)):
                started = time.perf_counter()
                r = await client.get("/api/items", headers=auth)
                times[name].append(time.perf_counter() - started)
                r.raise_for_status()
    return {
        "requests": requests,
        "edge": _summary(times["edge"]),
        "core": _summary(times["core"]),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "cores": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m commonsky.bench.edge_api")
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args(argv)
    with scratch_cluster("ea") as cluster:
        result = asyncio.run(_measure(cluster, args.requests))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
