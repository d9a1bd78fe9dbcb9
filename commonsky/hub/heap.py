"""How the hub process treats Python's garbage collector once it is up.

Everything built while starting (modules, policy, regions, the replayed picture) lives as
long as the hub, so it is frozen out of the collector's way; young objects are collected
less often (each message makes a few short-lived ones). Full collections traversing the
whole start-up heap were the hub's latency outliers under load: 25-50 ms pauses in `bench
warnings`, each one queueing the next few reports.

`commonsky serve` calls `settle_heap()` once started; the benchmarks time the hub's code
under `server_heap()`, the same settings undone afterwards (they also run inside tests).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

THRESHOLDS = (20_000, 50, 100)


def settle_heap() -> None:
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


@contextlib.contextmanager
def server_heap() -> Iterator[None]:
    """`settle_heap()` for the duration of the block, then the collector as it was."""
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    settle_heap()
    try:
        yield
    finally:
        if not frozen:  # (a hub started in this process froze it for good: leave that be)
            gc.unfreeze()
        gc.set_threshold(*before)
