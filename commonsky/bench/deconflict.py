"""`commonsky bench deconflict`: CPA screening against the all-pairs baseline, and volume
insert-and-check at scale, printed against their targets."""

from __future__ import annotations

import gc
import statistics
import time
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from commonsky.deconflict import cpa
from commonsky.deconflict.engine import ConflictEngine
from commonsky.deconflict.shapes import Polygon, Volume, flight_level
from commonsky.hub.heap import server_heap


def _traffic(n: int, seed: int) -> cpa.Kinematics:
    """n airliners in a 4 x 6 degree box: 200-260 m/s, FL200-FL400; 70 % level, the rest
    climbing or descending at 2.5-15 m/s."""
    rng = np.random.default_rng(seed)
    climbing = rng.random(n) >= 0.7
    vs = np.where(climbing, rng.uniform(2.5, 15.0, n) * rng.choice([-1.0, 1.0], n), 0.0)
    return cpa.kinematics(
        rng.uniform(40.0, 44.0, n),
        rng.uniform(10.0, 16.0, n),
        rng.uniform(flight_level(200), flight_level(400), n),
        rng.uniform(200.0, 260.0, n),
        rng.uniform(0.0, 360.0, n),
        vs,
    )


def _timed(fn: object, runs: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _volumes(eng: ConflictEngine, n: int, seed: int, crowded: bool) -> list[float]:
    """Insert n volumes, timing each insert-and-check; returns latencies in seconds."""
    rng = np.random.default_rng(seed)
    lat_ms: list[float] = []
    for k in range(n):
        party = ("USA", "RUS", "TUR", "SYR")[k % 4]
        if crowded:  # 1 km x 1 km near Palmyra, 10-minute slots over a week
            lon, lat, half = 38.27 + rng.uniform(0, 0.009), 34.55 + rng.uniform(0, 0.009), 0.0005
            start = float(rng.integers(0, 1008)) * 600.0
            dur = 600.0
        else:  # across a 20 x 20 degree region, 2-30 km across, 1-4 h in a day
            lon, lat = rng.uniform(25.0, 45.0), rng.uniform(25.0, 45.0)
            half = rng.uniform(0.01, 0.14)
            start, dur = float(rng.uniform(0, 86_400)), float(rng.uniform(3_600, 14_400))
        floor = float(rng.uniform(0, 12_000))
        ring = ((lon - half, lat - half), (lon + half, lat - half), (lon + half, lat + half),
                (lon - half, lat + half))  # fmt: skip
        v = Volume(
            shape=Polygon(ring=ring),
            floor_m=floor,
            ceiling_m=floor + float(rng.uniform(300, 3000)),
            start_s=start,
            end_s=start + dur,
        )
        t = time.perf_counter()
        eng.upsert_volume(party, f"v{k}", v, now=0.0)
        lat_ms.append(time.perf_counter() - t)
    return lat_ms


def _screening_rows(table: Table, n: int, naive_n: int, runs: int) -> None:
    """CPA screening of n tracks, and of naive_n against the all-pairs baseline."""
    k = _traffic(n, 1)
    med, res = _timed(lambda: cpa.screen(k), runs)
    assert isinstance(res, cpa.PairResult)
    ok = "ok" if med <= 0.25 else "MISSED"
    table.add_row(f"screen {n:,} tracks (4x6 deg)", f"{med * 1e3:.0f} ms, {len(res.i):,} pairs",
                  f"<= 250 ms ({ok})")  # fmt: skip
    ks = _traffic(naive_n, 2)
    fast_s, fres = _timed(lambda: cpa.screen(ks), runs)
    naive_s, nres = _timed(lambda: cpa.screen_all_pairs(ks), 1)
    assert isinstance(fres, cpa.PairResult)
    assert isinstance(nres, cpa.PairResult)
    same = set(zip(fres.i.tolist(), fres.j.tolist(), strict=True)) == set(
        zip(nres.i.tolist(), nres.j.tolist(), strict=True)
    )
    table.add_row(f"  same {naive_n:,} tracks: broad phase", f"{fast_s * 1e3:.1f} ms", "")
    table.add_row(f"  same {naive_n:,} tracks: all pairs (naive)",
                  f"{naive_s * 1e3:.0f} ms, {len(nres.i):,} pairs, "
                  f"{'identical' if same else 'DIFFERENT'}",
                  f"~{naive_s * (n / naive_n) ** 2:.1f} s at {n:,} (n^2)")  # fmt: skip


def bench(
    n: Annotated[int, typer.Option(help="tracks screened")] = 10_000,
    naive_n: Annotated[int, typer.Option(help="tracks for the all-pairs baseline")] = 2_000,
    runs: Annotated[int, typer.Option(help="screenings timed (median)")] = 5,
    volumes: Annotated[int, typer.Option(help="stored volumes")] = 100_000,
    crowded: Annotated[int, typer.Option(help="volumes in one 1 km2 area")] = 10_000,
) -> None:
    """Deconfliction figures: CPA screening, and volume insert-and-check at scale."""
    from commonsky.bench.machine import steal  # benchmark code only when benchmarking

    console = Console()
    table = Table(title="commonsky bench deconflict")
    for col in ("case", "figure", "target"):
        table.add_column(col)
    _screening_rows(table, n, naive_n, runs)
    gc.collect()  # each case starts clean: nothing the screening left is in the way
    eng = ConflictEngine()
    with steal() as stolen, server_heap():  # the collector as `commonsky serve` runs it
        t0 = time.perf_counter()
        lat = _volumes(eng, volumes, 3, crowded=False)
        wall = time.perf_counter() - t0
    last = np.array(lat[-10_000:]) * 1e3
    p99 = float(np.percentile(last, 99))
    table.add_row(f"{volumes:,} volumes: insert-and-check (last 10k)",
                  f"p50 {np.percentile(last, 50):.2f} ms, p99 {p99:.2f} ms",
                  f"p99 <= 2 ms ({'ok' if p99 <= 2 else 'MISSED'})")  # fmt: skip
    table.add_row("  writes/s (incl. building + validating each volume)",
                  f"{volumes / wall:,.0f}", "")  # fmt: skip
    with server_heap():
        t0 = time.perf_counter()
        lat = _volumes(eng, crowded, 4, crowded=True)
        wall = time.perf_counter() - t0
    arr = np.array(lat) * 1e3
    table.add_row(f"+{crowded:,} volumes in 1 km2 (10-min slots, 1 week)",
                  f"p50 {np.percentile(arr, 50):.2f} ms, p99 {np.percentile(arr, 99):.2f} ms",
                  "")  # fmt: skip
    table.add_row("  writes/s", f"{crowded / wall:,.0f}",
                  f">= 1,000 ({'ok' if crowded / wall >= 1000 else 'MISSED'})")  # fmt: skip
    table.add_row("conflicts held", f"{len(eng.conflicts()):,}", "")
    console.print(table)
    console.print(f"{stolen.describe()} (100,000 volumes case)")
