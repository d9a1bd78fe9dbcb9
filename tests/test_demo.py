"""The main job: all three seed situations, played at high speed through the real system."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from rich.console import Console

from commonsky.demo.main import run_demo


def test_all_three_scenarios_hold_their_checks(tmp_path: Path) -> None:
    console = Console(width=160, record=True)
    summary = asyncio.run(
        run_demo(
            tmp_path, "127.0.0.1:0", speed=60.0, duration=None, screenshots=False, console=console
        )
    )
    failed = [
        f"{s['name']}: {c['name']} — {c['observed']}"
        for s in summary["scenarios"]
        for c in s["checks"]
        if not c["held"]
    ]
    assert not failed, failed
    assert [s["name"] for s in summary["scenarios"]] == ["syria", "korea", "ukraine"]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["all_held"] is True
    for scenario in on_disk["scenarios"]:
        assert scenario["leaks"] == 0
        assert all(isinstance(c["held"], bool) for c in scenario["checks"])
    syria = on_disk["scenarios"][0]
    assert syria["conflict_threads"] >= 1 and syria["conflicts_acknowledged"] >= 1
    korea = on_disk["scenarios"][1]
    assert korea["alerts"] >= 3 and korea["warning_latency_s"] < 1.0
    assert "verified" in console.export_text()
