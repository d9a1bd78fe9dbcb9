"""Benchmarks report the CPU time a shared VM's hypervisor took from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from commonsky.bench import machine


def test_steal_is_the_share_of_all_cpu_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stat = tmp_path / "stat"
    monkeypatch.setattr(machine, "_STAT", stat)
    stat.write_text("cpu  100 0 50 800 0 0 0 50 0 0\ncpu0 1 2 3\n")
    with machine.steal() as stolen:
        # 400 more ticks in all, 40 of them stolen.
        stat.write_text("cpu  300 0 100 910 0 0 0 90 0 0\ncpu0 1 2 3\n")
    assert stolen.percent == pytest.approx(10.0)
    assert "10.0 %" in stolen.describe() and "other tenants" in stolen.describe()


@pytest.mark.parametrize("text", ["", "intr 1 2 3\n", "cpu 1 2\n", None])
def test_steal_is_unknown_where_the_kernel_does_not_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | None
) -> None:
    stat = tmp_path / "stat"
    if text is not None:
        stat.write_text(text)
    monkeypatch.setattr(machine, "_STAT", stat)
    with machine.steal() as stolen:
        pass
    assert stolen.percent is None
    assert "not reported" in stolen.describe()


def test_steal_on_this_machine_is_a_share() -> None:
    with machine.steal() as stolen:
        sum(range(100_000))
    assert stolen.percent is None or 0.0 <= stolen.percent <= 100.0
