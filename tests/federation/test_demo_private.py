"""`commonsky demo --federated --scenario syria`: the coalition's hub (USA, GBR, FRA) and
Russia's (RUS, SYR), no hub holding both sides' plans, deconflicting privately over their
TAK Federation v2 link (issue #18). Every conflict the single hub raises between the sides
is raised on both hubs, with the same overlap; the independent check of each hub's store and
received pieces finds nothing of the other's plans outside the cells that met; the checks
the two hubs cannot meet by design are shown as not judged, with why — never as held."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from rich.console import Console

from commonsky.demo.main import run_demo


@pytest.mark.slow
def test_syria_on_two_rival_hubs_deconflicts_privately(tmp_path: Path) -> None:
    console = Console(width=160, record=True)
    summary = asyncio.run(
        run_demo(
            tmp_path,
            "127.0.0.1:0",
            speed=20.0,
            duration=None,
            screenshots=False,
            console=console,
            federated=True,
            scenario="syria",
        )
    )
    (syria,) = summary["scenarios"]
    judged = [c for c in syria["checks"] if "status" not in c]
    failed = [f"{c['name']} — {c['observed']}" for c in judged if not c["held"]]
    assert not failed, failed
    assert syria["all_held"] and summary["all_held"]
    by_kind = {c["kind"]: c for c in judged}
    # The main job's own checks were judged (not left out), and held.
    assert by_kind["private_conflicts"]["observed"].startswith("6/6 ")
    assert by_kind["private_leaks"]["held"] and by_kind["private_threads"]["held"]
    # Only the checks the layout names are left unjudged, each with its reason.
    unjudged = [c for c in syria["checks"] if "status" in c]
    assert len(unjudged) == 8 and all(c["why"] for c in unjudged)
    federated = summary["federated"]
    assert federated["hubs"] == {"coalition": ["USA", "GBR", "FRA"], "russia": ["RUS", "SYR"]}
    private = federated["private"]
    for hub in ("coalition", "russia"):
        assert private[hub]["others_plans_stored"] == []
        assert private[hub]["received_outside_cells_m2"] < 1.0
        ((_link, rounds),) = private[hub]["rounds"].items()
        assert rounds.get("done", 0) >= 2, rounds  # at start, then on the strike plan
    # Receipts across the two ledgers prove what each sent and the other acknowledged.
    assert federated["receipts_proven"]["coalition->russia"] > 0
    assert federated["receipts_proven"]["russia->coalition"] > 0
