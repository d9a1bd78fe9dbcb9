"""`commonsky bench store`: what the hub's durable writes cost in each store.

The unit is the hub's busiest write: one round of a launch desk publishing a fused event to
20 parties (20 items of ~3 kB, one block, one commit), as in `bench warnings`; then a replay
of everything written (what a restart reads). SQLite runs in the same invocation as the
baseline; PostgreSQL when `--store-url` names a database (its tables are created there and
left, so give it an empty database).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from commonsky.errors import UsageError
from commonsky.model import Category, CotEvent, Item, Point
from commonsky.settings import coerce
from commonsky.store import Store, open_store


def _round(n: int, parties: int) -> list[Item]:
    return [
        Item(
            party="HUB",
            user="hub",
            category=Category.LAUNCH,
            event=CotEvent(
                f"launch-L{n:08d}.P{p:02d}",
                "b-l-f",
                0.0,
                0.0,
                9e9,
                "h-e",
                Point(39.7, 125.6),
                "<csky_fused>" + "x" * 3000 + "</csky_fused>",
            ),
            received=0.0,
            audience=(f"P{p:02d}",),
        )
        for p in range(parties)
    ]


def _measure(store: Store, rounds: int) -> tuple[float, float, float, int]:
    latencies = []
    for n in range(rounds):
        items = _round(n, 20)
        began = time.perf_counter()
        with store.transaction():
            store.append_many(items)
        latencies.append(time.perf_counter() - began)
    began = time.perf_counter()
    replayed = sum(1 for _ in store.since(0))
    replay = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), replay, replayed


def bench(
    store_url: Annotated[
        str, typer.Option(help="An empty PostgreSQL database to measure beside SQLite.")
    ] = "",
    rounds: Annotated[int, typer.Option(help="Rounds of 20 fused events.")] = 1000,
) -> None:
    """Commit latency of a round of 20 fused events, and replay, per store."""
    if rounds <= 0:
        raise UsageError("--rounds must be > 0")
    store_url = str(coerce("store_url", store_url, "--store-url"))  # the setting's own check
    print(f"bench store: {rounds} rounds of 20 items of ~3 kB, one commit each")
    with tempfile.TemporaryDirectory() as tmp:
        for name, url in (("sqlite", ""), ("postgresql", store_url)):
            if name == "postgresql" and not url:
                print("  postgresql: not measured (give --store-url postgresql://…/emptydb)")
                continue
            store = open_store(url, Path(tmp))
            try:
                p50, p99, replay, replayed = _measure(store, rounds)
            finally:
                store.close()
            print(
                f"  {name}: round committed p50 {p50:.2f} ms, p99 {p99:.2f} ms; "
                f"replay of {replayed} items {replay * 1000:.0f} ms"
            )
