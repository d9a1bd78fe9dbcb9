"""`bench fuzz` judges the hub by what the hub did (#13): a receiver the hub closes is lost,
with its cause, and seen as a close to be matched by the hub's reasons; a receiver that
could not connect from here is neither (reported apart)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from commonsky.bench import fuzz
from commonsky.bench.fuzz import Run, Tally
from commonsky.bench.fuzz_inputs import ApiSeeds, Mutator, own_seeds
from tests.conftest import token_of
from tests.integration.test_tak_tcp import FULL_TRACKS, metric


async def until(probe: Callable[[], Any], timeout: float = 10.0) -> Any:
    """The first truthy value of `probe`, polled (a barrier, never a proof of absence)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not (value := probe()):
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.02)
    return value


def run_against(http: int, tally: Tally) -> Run:
    now = time.time()
    mutator = Mutator(random.Random(1), own_seeds(now))
    return Run(mutator, ApiSeeds.make(now), {}, http, tally, goal=0)


async def test_a_websocket_receiver_the_hub_closes_is_lost_one_never_connected_is_not(
    make_hub, monkeypatch: pytest.MonkeyPatch, held_port: Callable[[], int]
) -> None:
    monkeypatch.setattr(fuzz, "token", token_of)  # (this hub's parties, not the fuzz's)
    async with make_hub([FULL_TRACKS]) as hub:
        tally = Tally()
        run = run_against(hub.server.http_port, tally)
        task = asyncio.create_task(run.websocket("JPN"))
        try:
            conn = await until(
                lambda: next(
                    (c for c in hub.hub.connections.get("JPN", ()) if c.listener == "websocket"),
                    None,
                )
            )
            conn.close("too_slow")  # a close of the hub's, counted with its reason
            await until(lambda: tally.receivers_lost)
            assert tally.receivers_lost_by_cause == {"ws: closed by the hub (1000)": 1}
            assert tally.closed_seen == 1
            closed = await metric(hub, "commonsky_connections_closed_total", reason="too_slow")
            assert closed == tally.closed_seen
        finally:
            run.stopping = True
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # A port nobody listens on (held: bound, not listening, so no other process is given it
    # meanwhile): never connected, nothing of the hub's lost.
    nobody = Tally()
    run = run_against(held_port(), nobody)
    task = asyncio.create_task(run.websocket("JPN"))
    try:
        await until(lambda: nobody.receivers_not_connected)
        assert nobody.receivers_lost == 0 and nobody.closed_seen == 0
    finally:
        run.stopping = True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
