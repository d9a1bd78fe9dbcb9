"""SIGKILL either hub of a federated pair while durable items flow: after each comes back,
every marker the sending hub stored is held by the receiving hub exactly once (the
benchmark's own check, `commonsky bench federation`, at a small size; real processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from commonsky.bench.federation import run


@pytest.mark.slow
async def test_durable_items_survive_sigkill_of_either_hub(tmp_path: Path) -> None:
    figures = await run(tmp_path, count=200, rate=400.0, markers=60)
    assert figures["one_hub"]["delivered"] == 200
    assert figures["two_hubs"]["delivered"] == 200
    assert figures["durable_stored_by_sender"] >= 60  # all of the first batch, some of the second
    assert figures["durable_lost"] == 0
    assert figures["durable_applied_twice"] == 0
    assert figures["resume_after_receiver_kill_s"] is not None
