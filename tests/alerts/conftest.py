from __future__ import annotations

import pytest

from commonsky.alerts.regions import RegionRegistry


@pytest.fixture(scope="session")
def regions() -> RegionRegistry:
    return RegionRegistry.builtin()
