"""`commonsky demo`: play the seed situations, check them, summarise, keep serving the map."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from commonsky.demo.checks import summarize
from commonsky.demo.runner import Runner
from commonsky.demo.scenario import BUILT_IN, load
from commonsky.ledger.export import export, verify

log = logging.getLogger("commonsky.demo")
SHOT_PARTIES = {"syria": ["USA", "RUS"], "korea": ["JPN", "KOR"], "ukraine": ["UKR", "DEU"]}


async def run_demo(
    data_dir: Path,
    http: str,
    speed: float,
    duration: float | None,
    names: tuple[str, ...] = BUILT_IN,
    stop: asyncio.Event | None = None,
    screenshots: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    console = console or Console(width=150)
    scenarios = [load(n) for n in names]
    runner = Runner(scenarios, data_dir, http, speed)
    started = time.time()
    try:
        play = asyncio.create_task(runner.run())
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as progress:
            bars = {s.name: progress.add_task(s.title, total=s.duration_s) for s in scenarios}
            while not play.done():
                if duration is not None and time.time() - started > duration:
                    break
                elapsed = runner.clock() - runner.start_wall if runner.start_wall else 0
                for s in scenarios:
                    progress.update(bars[s.name], completed=min(s.duration_s, max(0, elapsed)))
                await asyncio.sleep(0.25)
        # The scenarios are over: from here the clock runs in real time, so the final picture
        # stays on the map (and in the screenshots) instead of going stale at `speed`.
        runner.clock.relax()
        if not play.done():
            play.cancel()
        await asyncio.gather(play, return_exceptions=True)
        if play.done() and not play.cancelled() and play.exception() is not None:
            raise play.exception()  # type: ignore[misc]
        await asyncio.sleep(min(2.0, 20.0 / speed))  # let the last deliveries land
        assert runner.server is not None
        ledger_ok = check_ledger(runner, data_dir)
        results = [summarize(runner, runner.played[s.name], ledger_ok) for s in scenarios]
        summary: dict[str, Any] = {
            "speed": speed,
            "scenarios": results,
            "all_held": all(r["all_held"] for r in results),
        }
        if screenshots:
            summary["screenshots"] = await take_screenshots(runner, data_dir)
        (data_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        print_summary(console, summary)
        if stop is not None and duration is None:
            console.print(f"Serving the map at http://{http}/ — Ctrl-C to stop. Tokens:")
            for party, token in sorted(runner.tokens.items()):
                console.print(f"  {party}: {token}")
            (data_dir / "tokens.json").write_text(json.dumps(runner.tokens, indent=2))
            await stop.wait()
        return summary
    finally:
        await runner.stop()


def check_ledger(runner: Runner, data_dir: Path) -> bool:
    """Export the whole ledger and each party's view; all must verify offline."""
    assert runner.server is not None and runner.server.services.recorder is not None
    ledger = runner.server.services.recorder.ledger
    out = data_dir / "ledger"
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = ledger.checkpoint()
    ok = True
    for party in [None, *sorted(runner.tokens)]:
        path = out / f"{party or 'all'}.jsonl"
        export(ledger, path, party=party, checkpoint=checkpoint)
        result = verify(path)
        if not result.ok:
            log.error("ledger export for %s does not verify: %s", party or "all", result)
            ok = False
    return ok


async def take_screenshots(runner: Runner, data_dir: Path) -> list[str]:
    try:
        from commonsky.web.shots import screenshot
    except ImportError:
        return []
    assert runner.server is not None
    base = f"http://127.0.0.1:{runner.server.http_port}"
    paths = []
    for scenario in runner.scenarios:
        for party in SHOT_PARTIES.get(scenario.name, []):
            if party not in runner.tokens:
                continue
            path = data_dir / "screenshots" / f"{scenario.name}-{party}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                await asyncio.wait_for(screenshot(base, runner.tokens[party], path), 30)
                paths.append(str(path))
            except Exception as exc:  # the map is a view, not a check: report and go on
                log.warning("screenshot of %s for %s failed: %s", scenario.name, party, exc)
    return paths


def _ms(value: float) -> str:
    return (
        "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"
    )


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title=f"CommonSky demo — speed x{summary['speed']:g}")
    for column in (
        "scenario",
        "items",
        "deliveries per party",
        "conflicts (acked)",
        "launch events / alerts",
        "latency p50/p99 ms",
        "leaks",
        "ledger",
        "checks",
    ):
        table.add_column(column)
    # One client per party serves every scenario the party is in, so its deliveries cannot
    # be told apart by scenario: mark such parties rather than count them as if they could.
    seen: dict[str, int] = {}
    for s in summary["scenarios"]:
        for party in s["deliveries"]:
            seen[party] = seen.get(party, 0) + 1
    shared = {p for p, n in seen.items() if n > 1}
    for s in summary["scenarios"]:
        held = sum(c["held"] for c in s["checks"])
        ledger = next(c["held"] for c in s["checks"] if c["kind"] == "ledger")
        table.add_row(
            s["name"],
            str(s["items_sent"]),
            ", ".join(
                f"{p} {n}{'*' if p in shared else ''}" for p, n in sorted(s["deliveries"].items())
            ),
            f"{s['conflict_notices']} notices, {s['conflicts_acknowledged']}/"
            f"{s['conflict_threads']} threads",
            f"{s['launch_events']} / {s['alerts']}",
            f"{_ms(s['latency_ms']['p50'])} / {_ms(s['latency_ms']['p99'])}",
            str(s["leaks"]),
            "verified" if ledger else "FAILED",
            f"{held}/{len(s['checks'])}",
        )
    console.print(table)
    if shared:
        console.print(
            f"* {', '.join(sorted(shared))}: in several scenarios; the count is of everything "
            "its client received, in all of them."
        )
    for s in summary["scenarios"]:
        for check in s["checks"]:
            mark = "[green]held[/green]  " if check["held"] else "[red]FAILED[/red]"
            console.print(f"{mark} {s['name']}: {check['name']} — {check['observed']}")
