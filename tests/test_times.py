"""The one time module: RFC 3339 in, epoch seconds out, and back; no zone means UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commonsky import times


def test_zones() -> None:
    assert times.parse_time("2026-01-02T03:04:05Z") == 1767323045.0
    assert times.parse_time("2026-01-02T04:04:05+01:00") == 1767323045.0
    # No zone is UTC, whatever the machine's own zone.
    assert times.parse_time("2026-01-02T03:04:05") == 1767323045.0
    naive = datetime(2026, 1, 2, 3, 4, 5)
    assert times.epoch_of(naive) == 1767323045.0
    assert times.epoch_of(naive.replace(tzinfo=timezone(timedelta(hours=-5)))) == 1767341045.0


@pytest.mark.parametrize("text", ["", "yesterday", " 2026-01-02T03:04:05Z", "2026-13-01T00:00:00Z"])
def test_not_a_time(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        times.parse_time(text)


@given(st.integers(min_value=0, max_value=253402300799 * 10**6))
def test_round_trip(micros: int) -> None:
    epoch = micros / 1e6
    text = times.format_time(epoch)
    assert text.endswith("Z")
    assert abs(times.parse_time(text) - epoch) < 1e-6
    assert times.utc(epoch).tzinfo is UTC
