"""`commonsky demo`: play the seed situations, check them, summarise, keep serving the map."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from commonsky.demo.checks import summarize
from commonsky.demo.runner import Runner
from commonsky.demo.scenario import BUILT_IN, load
from commonsky.errors import UsageError
from commonsky.hub.datadir import exclusive_lock, private_dir, release_lock, write_private
from commonsky.ledger.export import export, verify

log = logging.getLogger("commonsky.demo")
SHOT_PARTIES = {"syria": ["USA", "RUS"], "korea": ["JPN", "KOR"], "ukraine": ["UKR", "DEU"]}
DEMO_MARK = ".commonsky-demo"
LOCK = "demo.lock"
#: Checks that must hold at every moment, so they are judged even when a run stops early;
#: every other check waits for something the timeline makes happen.
ALWAYS = {"not_delivered", "notice_hides", "no_leaks", "no_cap_alert", "ledger"}


def fresh_folder(data_dir: Path) -> tuple[Path, int]:
    """Lock `data_dir` for this demo and empty it: every run starts clean (a second run on
    the old data doubled the ledger and raised escalations of the first run's messages).
    A folder holding files the demo did not make is refused, never emptied. Returns the
    folder's absolute path and the lock's file descriptor (held until `release_lock`)."""
    data_dir = data_dir.absolute()

    def others() -> list[Path]:
        if not data_dir.is_dir():
            return []
        return sorted(p for p in data_dir.iterdir() if p.name not in (LOCK, DEMO_MARK))

    def refuse_foreign(entries: list[Path]) -> None:
        if entries and not (data_dir / DEMO_MARK).exists():
            raise UsageError(
                f"--data-dir {data_dir} holds files the demo did not make ({entries[0].name}…);"
                " the demo empties its folder at each start, so give it an empty or new one"
            )

    refuse_foreign(others())  # before touching anything of someone else's
    private_dir(data_dir)
    fd = exclusive_lock(
        data_dir / LOCK,
        f"--data-dir {data_dir} is in use by another demo",
        "stop it first, or give this one another --data-dir",
    )
    entries = others()
    try:
        refuse_foreign(entries)
    except UsageError:
        release_lock(fd)
        raise
    for path in entries:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    (data_dir / DEMO_MARK).write_text(
        "Made by `commonsky demo`, which empties this folder at the start of each run.\n"
    )
    return data_dir, fd


async def run_demo(
    data_dir: Path,
    http: str,
    speed: float,
    duration: float | None,
    names: tuple[str, ...] = BUILT_IN,
    stop: asyncio.Event | None = None,
    screenshots: bool = True,
    console: Console | None = None,
    federated: bool = False,
    scenario: str | None = None,
) -> dict[str, Any]:
    """Play `names` through one hub at `speed` (with `federated`: `scenario` — Korea by
    default, or Syria with private deconfliction — on its linked hubs, see federated.py;
    without it, `scenario` plays that one alone); check, summarise (DATA_DIR/summary.json),
    take screenshots, then — with `stop` and no `duration` — keep serving until `stop` is
    set. Raises UsageError (one line) for an operator's mistake (busy port, folder)."""
    from commonsky.demo.federated import LAYOUTS, FederatedRunner

    console = console or Console()
    scenarios, scenario = _scenarios(names, federated, scenario)
    data_dir, lock = fresh_folder(data_dir)
    runner: Runner
    if federated:
        assert scenario is not None
        layout = LAYOUTS[scenario]
        runner = FederatedRunner(scenarios, data_dir, http, speed, layout)
    else:
        runner = Runner(scenarios, data_dir, http, speed)
    started = time.time()
    try:
        await _play(runner, scenarios, duration, started, data_dir, screenshots, console)
        await asyncio.sleep(min(2.0, 20.0 / speed))  # let the last deliveries land
        summary = await _summary(runner, scenarios, data_dir, speed, started)
        if screenshots:
            summary["screenshots"] = await take_screenshots(runner, data_dir, console)
        (data_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        print_summary(console, summary)
        if stop is not None and duration is None:
            console.print(
                f"Serving the map at {runner.map_url()} — Ctrl-C to stop "
                f"(sign-in links above and in {data_dir / 'tokens.json'})."
            )
            await stop.wait()
        return summary
    finally:
        await runner.stop()
        release_lock(lock)


def _scenarios(
    names: tuple[str, ...], federated: bool, scenario: str | None
) -> tuple[list[Any], str | None]:
    """The scenarios to play and the one scenario asked for (federated: Korea by default);
    UsageError for a scenario that cannot be played so."""
    from commonsky.demo.federated import LAYOUTS

    if federated:
        scenario = scenario or "korea"
        if scenario not in LAYOUTS:
            raise UsageError(
                f"--scenario {scenario!r}: on federated hubs: {', '.join(sorted(LAYOUTS))}"
            )
    if scenario is not None:
        if scenario not in BUILT_IN:
            raise UsageError(f"--scenario {scenario!r}: one of {', '.join(BUILT_IN)}")
        names = (scenario,)
    scenarios = [load(n) for n in names]
    if federated and not LAYOUTS[names[0]].photos:
        scenarios = [
            msgspec.structs.replace(s, photo=[], check=[c for c in s.check if c.kind != "evidence"])
            for s in scenarios
        ]
    return scenarios, scenario


async def _play(
    runner: Runner,
    scenarios: list[Any],
    duration: float | None,
    started: float,
    data_dir: Path,
    screenshots: bool,
    console: Console,
) -> None:
    """Play the scenarios to their end (or for `duration` seconds of wall time) with a
    progress bar each, telling where to look once the hub is up; re-raises what the play
    raised."""
    play = asyncio.create_task(runner.run())
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        bars = {s.name: progress.add_task(s.title, total=s.duration_s) for s in scenarios}
        told = False
        while not play.done():
            if duration is not None and time.time() - started > duration:
                break
            if not told and runner.ready.is_set():
                told = True
                write_tokens(runner, data_dir)
                print_where(console, runner, data_dir, screenshots)
            elapsed = runner.clock() - runner.start_wall if runner.start_wall else 0
            for s in scenarios:
                progress.update(bars[s.name], completed=min(s.duration_s, max(0, elapsed)))
            await asyncio.sleep(0.25)
    # The scenarios are over: from here the clock runs in real time, so the final picture
    # stays on the map (and in the screenshots) instead of going stale at `speed`.
    from commonsky.demo.federated import FederatedRunner

    if not isinstance(runner, FederatedRunner):  # (its hubs' clocks relax by themselves)
        runner.clock.relax()
    if not play.done():
        play.cancel()
    await asyncio.gather(play, return_exceptions=True)
    if play.done() and not play.cancelled() and play.exception() is not None:
        raise play.exception()  # type: ignore[misc]


async def _summary(
    runner: Runner, scenarios: list[Any], data_dir: Path, speed: float, started: float
) -> dict[str, Any]:
    """The run's summary (summary.json without the screenshots): each scenario's checks,
    the ledger's, and for federated hubs their links, receipts and processes."""
    from commonsky.demo.federated import (
        FederatedRunner,
        check_ledgers,
        private_checks,
        private_summary,
        unjudge,
    )

    assert runner.server is not None
    played_s = max(0.0, (runner.clock() - runner.start_wall)) if runner.start_wall else 0.0
    unfinished = [s.name for s in scenarios if not runner.played[s.name].finished]
    if isinstance(runner, FederatedRunner):
        await runner.collect()  # each hub's answers, over its HTTP API
        ledger_ok = await check_ledgers(runner, data_dir)
    else:
        ledger_ok = check_ledger(runner, data_dir)
    results = [summarize(runner, runner.played[s.name], ledger_ok) for s in scenarios]
    if isinstance(runner, FederatedRunner) and runner.layout.terms:
        for result, s in zip(results, scenarios, strict=True):
            result["checks"] += private_checks(runner, s)
            unjudge(runner, result)
    if unfinished:
        for result in results:
            if result["name"] in unfinished:
                not_reached(result)
    summary: dict[str, Any] = {
        "speed": speed,
        "scenarios": results,
        "all_held": all(r["all_held"] for r in results),
    }
    if isinstance(runner, FederatedRunner):
        summary["federated"] = {
            "hubs": {name: list(parties) for name, parties in runner.layout.hubs.items()},
            "links": [f"{a}->{b}" for a, b in runner.layout.links],
            "receipts_proven": runner.proven,
            "processes": {name: p.pid for name, p in runner.procs.items()},
        }
        if runner.layout.terms:
            summary["federated"]["private"] = private_summary(runner)
    if unfinished:
        summary["stopped_early_s"] = round(time.time() - started, 1)
        summary["scenario_time_s"] = round(min(played_s, max(s.duration_s for s in scenarios)))
    return summary


def not_reached(result: dict[str, Any]) -> None:
    """A scenario stopped before its end: checks that wait for its timeline are not judged
    (status "not reached"); the ones that must hold at every moment still are."""
    for check in result["checks"]:
        if check["kind"] not in ALWAYS and not check["held"]:
            check["status"] = "not reached"
    judged = [c for c in result["checks"] if c.get("status") != "not reached"]
    result["all_held"] = all(c["held"] for c in judged)
    result["stopped_early"] = True


def write_tokens(runner: Runner, data_dir: Path) -> Path:
    """DATA_DIR/tokens.json, private (0600): each party's API token."""
    path = data_dir / "tokens.json"
    write_private(path, json.dumps(runner.tokens, indent=2).encode() + b"\n")
    return path


def print_where(console: Console, runner: Runner, data_dir: Path, screenshots: bool) -> None:
    """Where to look while the demo plays: the map, a sign-in link per party, its TAK port."""
    assert runner.server is not None
    base = runner.map_url()
    console.print(f"[bold]Map[/bold] {base} — tokens in {data_dir / 'tokens.json'}")
    console.print("Sign in as a party with its link; its TAK clients connect to tcp 127.0.0.1:PORT")
    tls = next((ln.port for ln in runner.server.listeners if ln.config.kind == "tak-tls"), None)
    own_tls = getattr(runner, "tls_port_of", None)  # (federated: each party's own hub)
    for party in sorted(runner.tokens):
        port = next((ln.port for ln in runner.server.listeners if ln.config.party == party), None)
        tak = f"tcp {port}" if port else ""
        if own_tls is not None:
            tak += f", tls {own_tls(party)}"
        url = runner.map_url_of(party) if hasattr(runner, "map_url_of") else base
        console.print(f"  {party:<4} {url}#token={runner.tokens[party]}  {tak}", soft_wrap=True)
    if tls and own_tls is not None:
        console.print(
            "  TAK over TLS: each party on its own hub's tls port (above), with its "
            f"certificate from {data_dir / 'ca' / 'clients'}/PARTY/"
        )
    elif tls:
        console.print(
            f"  TAK over TLS, any party: tls://127.0.0.1:{tls}, with its certificate from "
            f"{data_dir / 'ca' / 'clients'}/PARTY/"
        )
    if screenshots:
        console.print(f"  Screenshots at the end: {data_dir / 'screenshots'}/")


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


async def take_screenshots(runner: Runner, data_dir: Path, console: Console) -> list[str]:
    """Each scenario's final state as two of its parties see it, framed on the scenario."""
    from commonsky.web.shots import screenshot, screenshots_unavailable

    why = screenshots_unavailable()
    if why is not None:
        console.print(f"No screenshots: {why}.")
        return []
    assert runner.server is not None
    base = f"http://127.0.0.1:{runner.server.http_port}"
    paths = []
    own_map = getattr(runner, "map_url_of", None)  # (federated: each party on its own hub)
    for scenario in runner.scenarios:
        for party in SHOT_PARTIES.get(scenario.name, []):
            if party not in runner.tokens:
                continue
            path = data_dir / "screenshots" / f"{scenario.name}-{party}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                url = own_map(party).rstrip("/") if own_map is not None else base
                await asyncio.wait_for(
                    screenshot(url, runner.tokens[party], path, bbox=scenario.extent()), 40
                )
                paths.append(str(path))
            except Exception as exc:  # the map is a view, not a check: report and go on
                console.print(f"Screenshot of {scenario.name} for {party} failed: {exc}")
    return paths


def _ms(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    """The summary table (wrapped to the terminal's width) and every check's outcome."""
    early = summary.get("stopped_early_s")
    title = f"CommonSky demo — speed x{summary['speed']:g}"
    if early is not None:
        title += f" — stopped early at {early:g} s"
    # No rules between columns: the table fits an 80-column terminal (and wraps in a smaller).
    table = Table(title=title, box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    for column, justify in (
        ("scenario", "left"),
        ("items", "right"),
        ("notices", "right"),
        ("threads\nacked", "right"),
        ("launch\nevents", "right"),
        ("CAP\nalerts", "right"),
        ("ms p50\n/ p99", "right"),
        ("leaks", "right"),
        ("ledger", "left"),
        ("checks\nheld", "right"),
    ):
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    # One client per party serves every scenario the party is in, so its deliveries cannot
    # be told apart by scenario: mark such parties rather than count them as if they could.
    seen: dict[str, int] = {}
    for s in summary["scenarios"]:
        for party in s["deliveries"]:
            seen[party] = seen.get(party, 0) + 1
    shared = {p for p, n in seen.items() if n > 1}
    for s in summary["scenarios"]:
        held = sum(c["held"] for c in s["checks"])
        judged = sum(c.get("status") != "not reached" for c in s["checks"])
        ledger = next(c["held"] for c in s["checks"] if c["kind"] == "ledger")
        table.add_row(
            s["name"],
            str(s["items_sent"]),
            str(s["conflict_notices"]),
            f"{s['conflicts_acknowledged']}/{s['conflict_threads']}",
            str(s["launch_events"]),
            str(s["alerts"]),
            f"{_ms(s['latency_ms']['p50'], 0)}/{_ms(s['latency_ms']['p99'], 0)}",
            str(s["leaks"]),
            "ok" if ledger else "FAILED",
            f"{held}/{judged}" + ("+" if judged < len(s["checks"]) else ""),
        )
    console.print(table)
    console.print("Deliveries per party:")
    for s in summary["scenarios"]:
        counts = ", ".join(
            f"{p} {n}{'*' if p in shared else ''}" for p, n in sorted(s["deliveries"].items())
        )
        console.print(f"  {s['name']}: {counts}")
    if shared:
        console.print(
            f"* {', '.join(sorted(shared))}: in several scenarios; the count is of everything "
            "its client received, in all of them."
        )
    if any(c.get("status") == "not reached" for s in summary["scenarios"] for c in s["checks"]):
        console.print("+ some checks not reached (the run stopped early): listed below.")
    for s in summary["scenarios"]:
        for check in s["checks"]:
            if check.get("status") == "not reached":
                mark = "[yellow]not reached[/yellow]"
            else:
                mark = "[green]held[/green]  " if check["held"] else "[red]FAILED[/red]"
            console.print(f"{mark} {s['name']}: {check['name']} — {check['observed']}")
    if early is not None:
        console.print(
            f"Stopped early at {early:g} s (--duration), {summary['scenario_time_s']} s into "
            "the scenarios: checks that wait for the rest of the timeline were not judged."
        )
