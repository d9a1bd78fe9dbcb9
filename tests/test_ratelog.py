"""Rate-limited log lines: a few per reason and key per window, the rest counted and said."""

from __future__ import annotations

import logging

import pytest

from commonsky.ratelog import MAX_KEYS, RateLimitedLog


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_per_key_and_per_reason_limits_with_a_summary(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    log = logging.getLogger("test.ratelog")
    clock = FakeClock()
    limited = RateLimitedLog(per_key=2, per_reason=3, window_s=10.0, clock=clock)
    for i in range(50):
        limited.log(log, logging.WARNING, "bad_xml", "conn-1", "refused %d", i)
    assert messages(caplog) == ["refused 0", "refused 1"]
    limited.log(log, logging.WARNING, "bad_xml", "conn-2", "other %d", 0)
    limited.log(log, logging.WARNING, "bad_xml", "conn-3", "third %d", 0)  # reason is full
    assert messages(caplog)[-1] == "other 0"
    clock.now = 11.0
    limited.flush()
    said = messages(caplog)[3:]
    assert "(49 more bad_xml lines suppressed in the last 10 s)" in said
    assert "(48 more bad_xml conn-1 lines suppressed in the last 10 s)" in said
    assert "(1 more bad_xml conn-3 lines suppressed in the last 10 s)" in said
    caplog.clear()
    limited.log(log, logging.WARNING, "bad_xml", "conn-1", "refused %d", 99)  # a new window
    assert messages(caplog) == ["refused 99"]


def test_keys_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    log = logging.getLogger("test.ratelog")
    limited = RateLimitedLog(per_key=1, per_reason=10**9, clock=FakeClock())
    for i in range(MAX_KEYS + 50):
        limited.log(log, logging.INFO, "idle", f"conn-{i}", "x")
    assert len(limited._keys) <= MAX_KEYS + 1
