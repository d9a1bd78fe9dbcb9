"""`python -m commonsky.bench.core_ledger [--messages N] [--rounds R]`: what a durable item
costs a cluster core whose ledger is in PostgreSQL (issue 19: on the store's connection, one
commit, the writer row checked per transaction) against the single process on the same
PostgreSQL store (ledger in SQLite, the store's journal in between): hotline messages
through the hub's API in this process (no sockets), the two alternating, each on a fresh
database. Prints ms per message for each round and the medians."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

from commonsky.config import config_from_dict
from commonsky.server import HubServer

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
TOKENS = {"USA": "usa-token-0123456789", "JPN": "jpn-token-0123456789"}


def _config(folder: Path, url: str, cluster: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "server": {"data_dir": str(folder), "http": "127.0.0.1:0", "store_url": url},
        "party": [{"id": p, "token": t} for p, t in TOKENS.items()],
        "agreement": [{"name": "us-jp", "from": "USA", "to": ["JPN"], "categories": ["hotline"]}],
    }
    if cluster:
        data["cluster"] = {"nats_url": "nats://127.0.0.1:4222", "role": "core"}
    return data


async def _round(cluster: bool, messages: int, admin_url: str) -> float:
    from commonsky.http.app import build_app

    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{admin_url.rsplit('/', 1)[0]}/{name}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = config_from_dict(_config(Path(tmp), url, cluster), "bench")
            server = HubServer(config, init=True, writer="bench epoch 1" if cluster else None)
            try:
                server.hub.call_soon = asyncio.get_running_loop().call_soon
                transport = httpx.ASGITransport(app=build_app(server.services))
                headers = {"Authorization": f"Bearer {TOKENS['USA']}"}
                async with httpx.AsyncClient(transport=transport, base_url="http://hub",
                                             headers=headers) as usa:  # fmt: skip
                    for i in range(messages + 20):  # (the first 20 warm up)
                        if i == 20:
                            start = time.perf_counter()
                        sent = await usa.post("/api/hotline/send",
                                              json={"to": "JPN", "text": f"m{i}"})  # fmt: skip
                        assert sent.status_code == 201, sent.text
                return (time.perf_counter() - start) / messages * 1000
            finally:
                server._release()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


async def run(messages: int, rounds: int, admin_url: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"single process": [], "cluster core": []}
    for n in range(rounds):
        for label, cluster in (("single process", False), ("cluster core", True)):
            ms = await _round(cluster, messages, admin_url)
            out[label].append(round(ms, 2))
            print(f"round {n + 1}: {label}: {ms:.2f} ms/message", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", default=ADMIN)
    args = parser.parse_args()
    figures = asyncio.run(run(args.messages, args.rounds, args.postgres))
    for label, values in figures.items():
        print(f"{label}: median {statistics.median(values):.2f} ms/message "
              f"({min(values):.2f}-{max(values):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
