"""`commonsky bench memory`: what it reads (/proc status, /metrics), what it sends, what it
reports. The measurement itself is a benchmark, never a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from commonsky.bench.memory import (
    TARGET_MB_PER_1000,
    TRACKS_PARTY,
    Figures,
    memory_config,
    memory_plan,
    metric_sum,
    status_mb,
    track_events,
)
from commonsky.config import load_config
from commonsky.protocol.cot import parse_event

STATUS = """Name:\tpython
VmPeak:\t  500000 kB
VmHWM:\t  180000 kB
VmRSS:\t  122880 kB
Threads:\t4
"""

METRICS = """# HELP commonsky_connections Open TAK connections.
# TYPE commonsky_connections gauge
commonsky_connections{listener="tak-tcp",party="P0"} 500.0
commonsky_connections{listener="tak-tcp",party="P1"} 499.0
commonsky_connections{listener="tak-tcp",party="TRACKS"} 0.0
# HELP commonsky_items_in Items accepted from parties.
# TYPE commonsky_items_in counter
commonsky_items_in_total{category="track",party="TRACKS"} 7000.0
commonsky_items_in_created{category="track",party="TRACKS"} 1.7e9
commonsky_items_in_total{category="position",party="TRACKS"} 3000.0
commonsky_items_in_total{category="track",party="P0"} 5.0
"""


def test_status_fields_are_read_in_megabytes() -> None:
    assert status_mb(STATUS, "VmRSS") == pytest.approx(122880 * 1024 / 1e6)
    assert status_mb(STATUS, "VmHWM") == pytest.approx(180000 * 1024 / 1e6)


@pytest.mark.parametrize(
    ("text", "message"), [("Name:\tx\n", "no VmRSS"), ("VmRSS:\t12 MB\n", "unit 'MB'")]
)
def test_a_missing_or_odd_status_field_is_an_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        status_mb(text, "VmRSS")


def test_metric_sums_select_by_sample_name_and_labels() -> None:
    assert metric_sum(METRICS, "commonsky_connections") == 999
    assert metric_sum(METRICS, "commonsky_items_in_total", {"party": TRACKS_PARTY}) == 10_000
    # (the counter's _created sample is not a count)
    assert metric_sum(METRICS, "commonsky_items_in_total") == 10_005
    assert metric_sum(METRICS, "commonsky_items_in_total", {"party": "P9"}) == 0
    assert metric_sum("", "commonsky_connections") == 0


def test_figures_report_the_cost_per_1000_connections_and_per_track() -> None:
    figures = Figures(
        connections=10_000,
        tracks=10_000,
        baseline_mb=110.0,
        idle_mb=210.0,
        tracks_mb=260.0,
        peak_mb=261.0,
        open_s=5.0,
        fill_s=1.0,
    )
    assert figures.per_1000_idle_mb == pytest.approx(10.0)
    assert figures.track_kb == pytest.approx(5.0)
    rows = {name: (value, target) for name, value, target in figures.rows()}
    assert rows["per 1,000 idle connections (MB)"] == ("10.00", f"<= {TARGET_MB_PER_1000:g} (ok)")
    assert rows["10,000 live tracks (MB)"][0] == "50.0"
    assert figures.as_dict()["per_1000_idle_mb"] == 10.0
    over = Figures(1000, 1, 100.0, 131.0, 131.0, 131.0, 1.0, 1.0)
    assert dict((n, t) for n, _, t in over.rows())["per 1,000 idle connections (MB)"].endswith(
        "(MISSED)"
    )


@pytest.mark.parametrize(("n", "parts"), [(1, 1), (7, 3), (1201, 4), (50_000, 5)])
def test_tracks_are_distinct_valid_and_dealt_to_every_sender(n: int, parts: int) -> None:
    # Checked on a sample (every index is computed the same way): first, last and a stride.
    chunks = track_events(n, parts, 1_800_000_000.0)
    assert len(chunks) == parts
    events = [e + b"</event>" for c in chunks for e in c.split(b"</event>") if e]
    assert len(events) == n
    sample = events[:: max(1, n // 40)] + events[-1:]
    parsed = [parse_event(e) for e in sample]
    assert all(-90 <= e.point.lat <= 90 and -180 <= e.point.lon <= 180 for e in parsed)
    assert all(e.stale > e.time for e in parsed)
    uids = [e.split(b'uid="', 1)[1].split(b'"', 1)[0] for e in events]
    assert len(set(uids)) == n


def test_the_config_is_a_valid_hub_config_with_room_for_the_connections(
    tmp_path: Path,
) -> None:
    plan = memory_plan(3)
    path = tmp_path / "hub.toml"
    path.write_text(memory_config(plan, tmp_path / "data", 18080, 10_000))
    config = load_config(path)
    assert [lc.party for lc in config.listeners] == ["P0", "P1", "P2", TRACKS_PARTY]
    assert config.agreements == ()  # nobody receives the tracks but their own party
    assert config.settings.limit_connections >= 10_000
    assert config.settings.limit_connections_per_party >= 10_000
    assert config.settings.timeout_idle_s > 600  # idle clients here never ping
    assert str(config.settings.operator_token)
