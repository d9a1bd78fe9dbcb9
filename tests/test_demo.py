"""The main job: all three seed situations, played at high speed through the real system."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
from pathlib import Path

import pytest
from rich.console import Console

from commonsky.demo.main import DEMO_MARK, fresh_folder, print_summary, run_demo
from commonsky.errors import UsageError
from commonsky.hub.datadir import release_lock


@pytest.mark.slow
def test_all_three_scenarios_hold_their_checks(tmp_path: Path) -> None:
    console = Console(width=160, record=True)
    summary = asyncio.run(
        run_demo(
            tmp_path, "127.0.0.1:0", speed=60.0, duration=None, screenshots=False, console=console
        )
    )
    failed = [
        f"{s['name']}: {c['name']} — {c['observed']}"
        for s in summary["scenarios"]
        for c in s["checks"]
        if not c["held"]
    ]
    assert not failed, failed
    assert [s["name"] for s in summary["scenarios"]] == ["syria", "korea", "ukraine"]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["all_held"] is True
    for scenario in on_disk["scenarios"]:
        assert scenario["leaks"] == 0
        assert all(isinstance(c["held"], bool) for c in scenario["checks"])
    syria = on_disk["scenarios"][0]
    assert syria["conflict_threads"] >= 1 and syria["conflicts_acknowledged"] >= 1
    korea = on_disk["scenarios"][1]
    assert korea["alerts"] >= 3 and korea["warning_latency_s"] < 1.0
    assert "verified" in console.export_text()
    assert "stopped_early_s" not in on_disk
    tokens = tmp_path / "tokens.json"
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    assert set(json.loads(tokens.read_text())) >= {"USA", "RUS", "JPN", "UKR"}


@pytest.mark.slow
def test_a_run_shorter_than_the_scenarios_stops_early_without_failing(tmp_path: Path) -> None:
    console = Console(width=80, record=True)
    summary = asyncio.run(
        run_demo(
            tmp_path, "127.0.0.1:0", speed=20.0, duration=6.0, screenshots=False, console=console
        )
    )
    text = console.export_text()
    assert summary["all_held"] is True and summary["stopped_early_s"] >= 6.0
    statuses = [c.get("status") for s in summary["scenarios"] for c in s["checks"]]
    assert "not reached" in statuses
    # What must hold at every moment was judged, and held.
    judged = [c for s in summary["scenarios"] for c in s["checks"] if not c.get("status")]
    assert {"no_leaks", "ledger"} <= {c["kind"] for c in judged}
    assert all(c["held"] for c in judged)
    assert "FAILED" not in text and "stopped early at" in text
    # Where to look was said: the map, a sign-in link and a TAK port per party.
    assert "#token=" in text and "tcp 127.0.0.1:PORT" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_each_run_starts_from_a_clean_folder(tmp_path: Path) -> None:
    folder, lock = fresh_folder(tmp_path / "demo")
    (folder / "hub").mkdir()
    (folder / "hub" / "ledger.sqlite3").write_text("the last run's")
    (folder / "summary.json").write_text("{}")
    with pytest.raises(UsageError, match="in use by another demo"):
        fresh_folder(folder)
    release_lock(lock)
    again, lock = fresh_folder(folder)
    release_lock(lock)
    assert sorted(p.name for p in again.iterdir()) == sorted([DEMO_MARK, "demo.lock"])


def test_a_folder_the_demo_did_not_make_is_never_emptied(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(UsageError, match="holds files the demo did not make"):
        fresh_folder(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert not (tmp_path / DEMO_MARK).exists()


def test_a_busy_map_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UsageError, match=f"port {port} is already in use"):
            asyncio.run(run_demo(tmp_path, f"127.0.0.1:{port}", 20.0, 5.0, screenshots=False))


def test_summary_marks_parties_whose_deliveries_span_scenarios() -> None:
    def scenario(name: str, deliveries: dict[str, int]) -> dict[str, object]:
        return {
            "name": name,
            "items_sent": 3,
            "deliveries": deliveries,
            "conflict_notices": 0,
            "conflicts_acknowledged": 0,
            "conflict_threads": 0,
            "launch_events": 0,
            "alerts": 0,
            "latency_ms": {"p50": 1.0, "p99": 2.0},
            "leaks": 0,
            "checks": [{"name": "ledger", "kind": "ledger", "held": True, "observed": "ok"}],
        }

    console = Console(width=200, record=True)
    print_summary(
        console,
        {
            "speed": 60.0,
            "scenarios": [
                scenario("syria", {"USA": 40, "RUS": 7}),
                scenario("korea", {"USA": 40, "JPN": 5}),
            ],
        },
    )
    text = console.export_text()
    assert "USA 40*" in text and "RUS 7," in text and "RUS 7*" not in text
    assert "JPN 5*" not in text
    assert "* USA: in several scenarios" in text


def test_the_summary_says_not_judged_not_failed() -> None:
    """A check a federated layout cannot meet by design is printed with its status and why,
    never as FAILED, and is not counted as judged; a check that failed still says FAILED."""
    checks = [
        {"name": "ledger", "kind": "ledger", "held": True, "observed": "ok"},
        {"name": "sees the area", "kind": "x", "held": False, "observed": "0 deliveries",
         "status": "not judged on these hubs", "why": "the area stays on its own hub"},
        {"name": "broke", "kind": "y", "held": False, "observed": "0 of 3"},
    ]  # fmt: skip
    summary = {
        "speed": 10.0,
        "scenarios": [
            {
                "name": "syria", "items_sent": 1, "deliveries": {}, "conflict_notices": 0,
                "conflicts_acknowledged": 0, "conflict_threads": 0, "launch_events": 0,
                "alerts": 0, "latency_ms": {"p50": 1.0, "p99": 2.0}, "leaks": 0,
                "checks": checks,
            }
        ],
    }  # fmt: skip
    console = Console(width=200, record=True)
    print_summary(console, summary)
    text = console.export_text()
    assert "not judged on these hubs syria: sees the area — the area stays on its own hub" in text
    assert "FAILED syria: broke — 0 of 3" in text and "FAILED syria: sees" not in text
    assert "1/2+" in text  # held of judged; "+": some not judged


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--speed", "nan"], "--speed nan: must be over 0"),
        (["--speed", "inf"], "--speed inf: must be over 0"),
        (["--speed", "2e6"], "--speed 2000000.0: must be over 0 and at most 1e+06"),
        (["--speed", "0"], "--speed 0.0: must be over 0"),
        (["--duration", "nan"], "--duration nan: must be a positive number"),
        (["--duration", "inf"], "--duration inf: must be a positive number"),
        (["--duration", "-1"], "--duration -1.0: must be a positive number"),
    ],
)
def test_demo_refuses_a_speed_or_duration_it_cannot_play(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], said: str
) -> None:
    """One line naming the flag — not a traceback (nan, inf), not a run without an end."""
    from commonsky.cli import main

    with pytest.raises(SystemExit) as caught:
        main(["demo", "--data-dir", str(tmp_path / "d"), "--no-screenshots", *args])
    err = capsys.readouterr().err
    assert caught.value.code == 2 and said in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "d").exists()
