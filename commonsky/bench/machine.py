"""What the machine did to a benchmark while it ran: CPU time the hypervisor gave to others.

On a shared VM the same code runs up to ~1.7x slower while other tenants are busy; the
kernel counts that as *steal* time (`/proc/stat`). The benchmarks print it beside their
figures, so a run taken while the cores were being lent out can be told from a regression.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_STAT = Path("/proc/stat")


def _cpu_times() -> list[int] | None:
    """The aggregate `cpu` line: user nice system idle iowait irq softirq steal (ticks)."""
    try:
        first = _STAT.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if first[:1] != ["cpu"] or len(first) < 9:
        return None
    return [int(v) for v in first[1:9]]


@dataclass
class Steal:
    """Share of all CPU time (every core) taken by the hypervisor during the block, in %;
    None where the kernel does not say (not Linux)."""

    percent: float | None = None

    def describe(self) -> str:
        if self.percent is None:
            return "CPU steal: not reported by this system"
        note = " — other tenants slowed this run" if self.percent >= 2.0 else ""
        return f"CPU stolen by the hypervisor during the run: {self.percent:.1f} %{note}"


@contextlib.contextmanager
def steal() -> Iterator[Steal]:
    out = Steal()
    before = _cpu_times()
    try:
        yield out
    finally:
        after = _cpu_times()
        if before is not None and after is not None:
            delta = [b - a for a, b in zip(before, after, strict=True)]
            total = sum(delta)
            out.percent = 100.0 * delta[7] / total if total > 0 else 0.0
