"""`commonsky bench ledger`: batched appends/s, inclusion and consistency proof times, and
how long an export takes to write and to verify, at a million entries by default."""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from commonsky.errors import UsageError
from commonsky.ledger import export as ledger_export
from commonsky.ledger import keys
from commonsky.ledger.entry import EntryFields
from commonsky.ledger.log import DB_NAME, Ledger

if TYPE_CHECKING:  # (rich is imported when the bench runs)
    from rich.table import Table


def _bench_fields(i: int, signer: tuple[str, Any] | None) -> EntryFields:
    payload = {"category": "launch", "uid": f"bench-{i}", "lat_e7": 351234567, "lon_e7": 1391234}
    sig = keys.sign_payload(signer[1], signer[0], payload) if signer else None
    return EntryFields("item", 1_700_000_000_000_000 + i, "USA", ["JPN", "USA"], payload, sig)


def bench(
    entries: Annotated[int, typer.Option("--entries", min=1, help="log size")] = 1_000_000,
    batch: Annotated[int, typer.Option("--batch", min=1, help="entries per transaction")] = 1000,
    signed_every: Annotated[
        int, typer.Option("--signed-every", min=0, help="every Nth entry party-signed (0: none)")
    ] = 100,
    proofs: Annotated[int, typer.Option("--proofs", min=1, help="proofs to time")] = 2000,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="work here (default: a temp dir)")
    ] = None,
) -> None:
    """Ledger figures: batched appends/s, proof time and export verification time."""
    from rich.console import Console

    with tempfile.TemporaryDirectory(prefix="commonsky-bench-") as tmp:
        work = data_dir if data_dir is not None else Path(tmp)
        if (work / DB_NAME).exists():
            raise UsageError(f"{work}: already holds a ledger; give an empty --data-dir")
        figures = _measure(work, entries, batch, signed_every, proofs)
    Console().print(_table(figures, entries, batch))


@dataclass
class _Figures:
    append_s: float  # seconds appending, all batches
    proof_s: list[float]  # each inclusion proof's seconds
    consistency_s: list[float]  # each consistency proof's seconds
    export_s: float
    verify_s: float
    signed: int  # originator signatures the verification checked


def _measure(work: Path, entries: int, batch: int, signed_every: int, proofs: int) -> _Figures:
    """Append `entries` in batches into a new ledger in `work`, time proofs on it, export
    it and verify the export (RuntimeError if it does not verify)."""
    signer = ("USA", Ed25519PrivateKey.generate())
    ledger = Ledger.open(work)
    append_s = 0.0
    for lo in range(0, entries, batch):
        # Built outside the clock: the hub has its fields (and parties their signatures)
        # before it appends; the ledger's own work, including checking those, is timed.
        fields = [
            _bench_fields(i, signer if signed_every and i % signed_every == 0 else None)
            for i in range(lo, min(lo + batch, entries))
        ]
        t0 = time.perf_counter()
        ledger.append_many(fields)
        append_s += time.perf_counter() - t0
    cp = ledger.checkpoint()
    rng = random.Random(1)
    times = []
    for _ in range(proofs):
        seq = rng.randrange(entries)
        t = time.perf_counter()
        ledger.inclusion_proof(seq, cp.size)
        times.append(time.perf_counter() - t)
    ctimes = []
    for _ in range(max(1, proofs // 10)):
        old = rng.randrange(1, entries + 1)
        t = time.perf_counter()
        ledger.consistency_proof(old, cp.size)
        ctimes.append(time.perf_counter() - t)
    out = work / "bench-export.jsonl"
    t0 = time.perf_counter()
    ledger_export.export(ledger, out, checkpoint=cp)
    export_s = time.perf_counter() - t0
    ledger.close()
    t0 = time.perf_counter()
    result = ledger_export.verify(out)
    verify_s = time.perf_counter() - t0
    if not result.ok:
        raise RuntimeError(f"bench export does not verify: {result.describe()}")
    return _Figures(append_s, times, ctimes, export_s, verify_s, result.signed)


def _table(figures: _Figures, entries: int, batch: int) -> Table:
    """The figures against their targets (docs/performance.md)."""
    from rich.table import Table

    times = sorted(figures.proof_s)
    proof_mean_ms = statistics.fmean(times) * 1e3
    proof_p99_ms = times[int(0.99 * (len(times) - 1))] * 1e3
    rate = entries / figures.append_s
    scale = entries / 1_000_000
    verify_s = figures.verify_s
    table = Table(title=f"ledger: {entries:,} entries, batches of {batch}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("ok")
    rows = [
        ("appends/s (batched)", f"{rate:,.0f}", ">= 20,000", rate >= 20_000),
        ("inclusion proof, mean", f"{proof_mean_ms:.3f} ms", "<= 1 ms", proof_mean_ms <= 1),
        ("inclusion proof, p99", f"{proof_p99_ms:.3f} ms", "", proof_p99_ms <= 1),
        (
            "consistency proof, mean",
            f"{statistics.fmean(figures.consistency_s) * 1e3:.3f} ms",
            "",
            True,
        ),
        ("export (write)", f"{figures.export_s:.2f} s", "", True),
        (
            f"verify export ({figures.signed} signatures)",
            f"{verify_s:.2f} s",
            f"<= {10 * scale:.1f} s",
            verify_s <= 10 * scale,
        ),
    ]
    for name, value, target, ok in rows:
        table.add_row(name, value, target, "yes" if ok else "NO")
    return table
