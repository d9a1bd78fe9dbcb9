# Fixtures for the ledger tests: a fresh data dir holding an open ledger.
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from commonsky.ledger.log import Ledger


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.open(tmp_path) as led:
        yield led
