"""`commonsky demo --federated`: Korea on three sovereign hubs (JPN, KOR, USA), each its
own process, linked bilaterally over TAK Federation v2; the same checks as on one hub,
every hub's ledger, and the receipts proven across them."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from rich.console import Console

from commonsky.demo.main import run_demo


@pytest.mark.slow
def test_korea_holds_its_checks_on_three_federated_hubs(tmp_path: Path) -> None:
    console = Console(width=160, record=True)
    summary = asyncio.run(
        run_demo(
            tmp_path,
            "127.0.0.1:0",
            speed=60.0,
            duration=None,
            screenshots=False,
            console=console,
            federated=True,
        )
    )
    (korea,) = summary["scenarios"]
    failed = [f"{c['name']} — {c['observed']}" for c in korea["checks"] if not c["held"]]
    assert not failed, failed
    assert korea["leaks"] == 0 and korea["launch_events"] >= 4
    federated = summary["federated"]
    assert federated["hubs"] == {"jpn": ["JPN"], "kor": ["KOR"], "usa": ["USA"]}
    # JPN's and KOR's launch reports reached the US hub, each acknowledged with a receipt
    # that proves offline against the US hub's own ledger
    proven = federated["receipts_proven"]
    assert proven["jpn->usa"] >= 2 and proven["kor->usa"] >= 2
    for name in ("jpn", "kor", "usa"):
        assert (tmp_path / f"hub-{name}" / "hub.sqlite3").exists()  # three data folders
        assert "[[federate]]" in (tmp_path / "hubs" / f"{name}.toml").read_text()
    # Three hubs, each its own OS process (`commonsky serve --config`), none left running.
    pids = federated["processes"]
    assert len(set(pids.values())) == 3 and os.getpid() not in pids.values()
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
