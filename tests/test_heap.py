"""The benchmarks run the hub's code with the collector as `commonsky serve` sets it, and
must leave the collector as they found it (they also run inside the test session)."""

from __future__ import annotations

import gc

import pytest

from commonsky.hub.heap import THRESHOLDS, server_heap


def test_server_heap_sets_then_restores_the_collector() -> None:
    gc.unfreeze()  # a hub started earlier in this test session may have frozen its heap
    before = gc.get_threshold()
    kept = [object() for _ in range(10)]
    with server_heap():
        assert gc.get_threshold() == THRESHOLDS
        assert gc.get_freeze_count() > 0  # what existed is out of the collector's way
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    assert len(kept) == 10


def test_server_heap_leaves_a_frozen_heap_frozen() -> None:
    gc.freeze()  # as a hub started in this process leaves it
    try:
        with server_heap():
            pass
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_server_heap_restores_the_collector_after_an_error() -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), server_heap():
        raise RuntimeError("boom")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
