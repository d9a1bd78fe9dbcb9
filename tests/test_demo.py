"""The main job: all three seed situations, played at high speed through the real system."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from rich.console import Console

from commonsky.demo.main import print_summary, run_demo


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


def test_summary_marks_parties_whose_deliveries_span_scenarios() -> None:
    def scenario(name: str, deliveries: dict[str, int]) -> dict[str, object]:
        return {
            "name": name,
            "items_sent": 3,
            "deliveries": deliveries,
            "conflict_notices": 0,
            "conflicts_acknowledged": 0,
            "conflict_threads": 0,
            "launch_events": 0,
            "alerts": 0,
            "latency_ms": {"p50": 1.0, "p99": 2.0},
            "leaks": 0,
            "checks": [{"name": "ledger", "kind": "ledger", "held": True, "observed": "ok"}],
        }

    console = Console(width=200, record=True)
    print_summary(
        console,
        {
            "speed": 60.0,
            "scenarios": [
                scenario("syria", {"USA": 40, "RUS": 7}),
                scenario("korea", {"USA": 40, "JPN": 5}),
            ],
        },
    )
    text = console.export_text()
    assert "USA 40*" in text and "RUS 7," in text and "RUS 7*" not in text
    assert "JPN 5*" not in text
    assert "* USA: in several scenarios" in text
