"""The `commonsky` command: one Typer app, sub-apps per concern.

Every failure an operator can cause (bad flag, bad file, bad config) ends as one line on
stderr and exit status 2; tracebacks are kept for our own bugs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import typer

# Typer vendors its own Click; its exception classes live here.
from typer._click import exceptions as click

from commonsky.alerts import cli as alerts_cli
from commonsky.conformance import cli as conformance_cli
from commonsky.deconflict import cli as deconflict_cli
from commonsky.errors import UsageError
from commonsky.ledger import cli as ledger_cli
from commonsky.marti import cli as marti_cli
from commonsky.settings import SETTINGS, flag_name

app = typer.Typer(
    name="commonsky",
    help="CommonSky hub: share the sky between parties under agreements.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks (print figures; never part of the test suite).")
app.add_typer(bench_app, name="bench")
app.add_typer(deconflict_cli.app, name="deconflict")
app.add_typer(ledger_cli.app, name="ledger")
app.add_typer(alerts_cli.app, name="alerts")
app.command("conformance")(conformance_cli.conformance)
app.command("enroll")(marti_cli.enroll)
app.add_typer(marti_cli.evidence_app, name="evidence")


ca_app = typer.Typer(help="The hub's certificate authority.", no_args_is_help=True)
cert_app = typer.Typer(help="Client certificates for TAK users.", no_args_is_help=True)
app.add_typer(ca_app, name="ca")
app.add_typer(cert_app, name="cert")
cert_app.command("revoke")(marti_cli.revoke)


def _settings_epilog() -> str:
    lines = [
        "Any \\[server] setting can also be given as a flag or a COMMONSKY_* variable "
        "(flag > variable > file > default):\n\n"
    ]
    for setting in SETTINGS:
        lines.append(
            f"{flag_name(setting.name)} {setting.type.__name__.upper()}"
            f" (default {setting.default}): {setting.help}\n\n"
        )
    return "".join(lines)


def _setting_flags(args: list[str]) -> dict[str, str]:
    """Parse `--limit-queue-tracks 100` / `--timeout-idle-s=30` against the settings table."""
    known = {flag_name(s.name): s.name for s in SETTINGS}
    out: dict[str, str] = {}
    rest = list(args)
    while rest:
        flag = rest.pop(0)
        name, eq, value = flag.partition("=")
        if name not in known:
            raise UsageError(f"no such option: {name}")
        if not eq:
            if not rest:
                raise UsageError(f"option {name} needs a value")
            value = rest.pop(0)
        out[known[name]] = value
    return out


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog=_settings_epilog(),
)
def serve(
    ctx: typer.Context,
    config: Annotated[Path, typer.Option("--config", help="Hub configuration file (TOML).")],
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    init: Annotated[
        bool,
        typer.Option(
            "--init",
            help="Make the ledger, store or hub key afresh when they are missing (or bind them "
            "as they are when they do not match) in a data_dir that has run a hub before.",
        ),
    ] = False,
) -> None:
    """Run a hub until Ctrl-C (or SIGTERM)."""
    from commonsky.config import load_config
    from commonsky.hub.server import serve_forever

    _logging(log_level)
    hub_config = load_config(config, _setting_flags(list(ctx.args)))
    asyncio.run(_until_signal(lambda stop: serve_forever(hub_config, stop, init=init)))


@app.command()
def demo(
    duration: Annotated[
        float | None,
        typer.Option(
            help="Stop after this many seconds and exit (0 when every check judged held). "
            "Without it: play to the end, then keep serving the map until Ctrl-C."
        ),
    ] = None,
    speed: Annotated[
        float, typer.Option(help="Time compression: 10 plays the 30-minute scenarios in ~3 min.")
    ] = 10.0,
    http: Annotated[str, typer.Option(help="HOST:PORT of the live map.")] = "127.0.0.1:8080",
    data_dir: Annotated[
        Path, typer.Option(help="The demo's folder, emptied at each start (made if missing).")
    ] = Path("var/demo"),
    screenshots: Annotated[
        bool, typer.Option(help="Screenshots of each scenario at the end (needs chromium).")
    ] = True,
    federated: Annotated[
        bool,
        typer.Option(
            "--federated",
            help="Play Korea on three sovereign hubs (JPN, KOR, USA) linked over TAK "
            "Federation v2; the map is JPN's hub at --http.",
        ),
    ] = False,
    scenario: Annotated[
        str | None,
        typer.Option(
            help="Play this one situation (syria, korea, ukraine). With --federated: korea "
            "(default) on three hubs, or syria on the coalition's hub and Russia's, which "
            "deconflict privately (no hub holds both sides' plans).",
        ),
    ] = None,
) -> None:
    """Play three situations (Syria, Korea, Ukraine) through a real hub and check them.

    Prints the map's address, a sign-in link and the TAK port of every party, then a
    summary (DATA_DIR/summary.json); tokens in DATA_DIR/tokens.json.
    """
    from commonsky.demo.main import run_demo

    if speed <= 0 or (duration is not None and duration <= 0):
        raise UsageError("--speed and --duration must be positive")
    _logging("warning")

    async def play(stop: asyncio.Event) -> dict[str, object]:
        return await run_demo(
            data_dir,
            http,
            speed,
            duration,
            stop=stop,
            screenshots=screenshots,
            federated=federated,
            scenario=scenario,
        )

    summary = asyncio.run(_until_signal_result(play))
    print(f"summary written to {data_dir / 'summary.json'}")
    if not summary["all_held"]:
        sys.exit(1)


@ca_app.command("init")
def ca_init(
    dir: Annotated[Path, typer.Option("--dir", help="Folder for ca.pem, ca-key.pem, server.pem.")],
    name: Annotated[
        list[str] | None,
        typer.Option(
            "--server-name", help="Extra DNS name or IP for the hub's server certificate."
        ),
    ] = None,
) -> None:
    """Create a hub CA and the hub's TLS server certificate."""
    from commonsky.hub.datadir import private_dir
    from commonsky.pki import init_ca

    private_dir(dir)  # it holds the CA's private key
    init_ca(dir, server_names=name or [])
    print(f"CA and server certificate written to {dir}")


@cert_app.command("issue")
def cert_issue(
    ca: Annotated[Path, typer.Option("--ca", help="CA folder made by `ca init`.")],
    party: Annotated[str, typer.Option("--party", help="Party id: becomes the subject O.")],
    name: Annotated[str, typer.Option("--name", help="User or device: becomes the subject CN.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the PEM and PKCS#12 files.")],
    p12: Annotated[
        str,
        typer.Option(
            "--p12",
            help="PKCS#12 form. 'compatible' (default): SHA-1 MAC and 3DES bags, which ATAK "
            "on Android 12 and older TAK tooling import. 'modern': SHA-256 MAC and AES-256 "
            "bags, for newer clients only.",
        ),
    ] = "compatible",
    atak_default_password: Annotated[
        bool,
        typer.Option(
            "--atak-default-password",
            help="Protect the bundles with ATAK's public default 'atakatak' instead of a new "
            "random password (anyone with the file can then open it).",
        ),
    ] = False,
    package: Annotated[
        bool,
        typer.Option(
            "--package",
            help="Also write OUT/NAME.zip, the TAK connection data package ATAK and WinTAK "
            "import, and OUT/NAME-enroll.zip (truststore only: the device enrolls).",
        ),
    ] = False,
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            help="Host the packages connect to (default: the server certificate's first "
            "non-loopback name).",
        ),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="The hub's tak-tls port.")] = 8089,
) -> None:
    """Issue a client certificate for a TAK user: PEM files, a PKCS#12 bundle and a
    truststore. Their password is random, printed once and stored nowhere."""
    from commonsky.hub.datadir import private_dir
    from commonsky.pki import ATAK_DEFAULT_PASSWORD, P12Form, issue_client

    try:
        form = P12Form(p12)
    except ValueError:
        raise UsageError(f"--p12 {p12!r}: use compatible or modern") from None
    private_dir(out)  # it holds the user's private key
    files, password = issue_client(
        ca, party, name, out, form, ATAK_DEFAULT_PASSWORD if atak_default_password else None
    )
    if package:
        files += marti_cli.write_packages(ca, out, name, password, host, port)
    for path in files:
        print(path)
    print(f"PKCS#12 form: {form.value}")
    if atak_default_password:
        print(f"PKCS#12 password: {password} (ATAK's public default: not a secret)")
    else:
        print(f"PKCS#12 password (shown once, stored nowhere): {password}")


def _logging(level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise UsageError(f"--log-level {level!r} is not debug, info, warning or error")
    logging.basicConfig(level=numeric, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def _until_signal(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(stop)


@bench_app.command("relay")
def bench_relay(
    receivers: Annotated[int, typer.Option(help="Receiving TAK connections.")] = 60,
    senders: Annotated[int, typer.Option(help="Sending TAK connections.")] = 10,
    rate: Annotated[int, typer.Option(help="Messages per second offered in total.")] = 1000,
    duration: Annotated[float, typer.Option(help="Seconds of load per system.")] = 10.0,
    parties: Annotated[int, typer.Option(help="Parties in the agreement ring.")] = 6,
) -> None:
    """Hub vs a policy-free asyncio relay, same load, same run: throughput, latency, CPU, RSS."""
    from rich.console import Console
    from rich.table import Table

    from commonsky.bench.relay import bench_relay as run

    if min(receivers, senders, rate, parties) < 1 or duration <= 0:
        raise UsageError("--receivers, --senders, --rate, --parties and --duration must be > 0")
    hub, relay = run(receivers, senders, rate, duration, parties)
    rows = [hub.row(), relay.row()]
    table = Table(
        title=f"bench relay: {receivers} receivers, {senders} senders, {rate} msg/s "
        f"offered, {duration:g} s, {os.cpu_count()} cores"
    )
    table.add_column("measure")
    for row in rows:
        table.add_column(str(row["system"]), justify="right")
    for key in list(rows[0])[1:]:
        table.add_row(
            key,
            *(f"{row[key]:.3f}" if isinstance(row[key], float) else str(row[key]) for row in rows),
        )
    Console(width=100).print(table)
    h, r = rows
    throughput = float(h["delivered msg/s"]) / float(r["delivered msg/s"])
    print(f"throughput ratio hub/relay = {throughput:.3f}  (target >= 0.8)")
    print(
        f"p99 ratio hub/relay = {float(h['p99 ms']) / max(1e-9, float(r['p99 ms'])):.2f}"
        f"  (target <= 2)"
    )
    print(
        f"hub RSS = {hub.rss_mb:.0f} MB (target <= 300); unexpected deliveries = "
        f"{hub.unexpected} (target 0)"
    )


@bench_app.command("fuzz")
def bench_fuzz(
    inputs: Annotated[int, typer.Option(help="Mutated messages to send in all.")] = 1_000_000,
    restarts: Annotated[int, typer.Option(help="Times the hub is restarted midway.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the mutations (a run replays).")] = 1,
    corpus: Annotated[
        Path | None, typer.Option(help="Folder of real CoT events (*.xml) to seed from.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the hub's data, log and the report.")
    ] = None,
    hub_log_level: Annotated[str, typer.Option(help="The hub's --log-level.")] = "warning",
) -> None:
    """Mutated TAK (XML, protobuf) and API input against a real hub restarted midway; prints
    the figures (also in OUT/fuzz-report.json); exit 1 when a must-hold figure fails."""
    import importlib.util

    if importlib.util.find_spec("websockets") is None:  # its WebSocket receivers need it
        raise UsageError("bench fuzz needs the dev extras: pip install -e '.[dev]'")
    from commonsky.bench.fuzz import fuzz

    if inputs <= 0 or restarts < 0:
        raise UsageError("--inputs must be positive and --restarts not negative")
    if corpus is not None and not corpus.is_dir():
        raise UsageError(f"--corpus {corpus}: not a folder")
    out = out or Path("var/fuzz") / time.strftime("%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out}: not empty (each run starts from an empty hub)")
    figures = fuzz(inputs, restarts, seed, corpus, out, hub_log_level)
    for name, value in figures.items():
        print(f"{name:40} {value}")
    if not figures["passed"]:
        raise typer.Exit(1)


@bench_app.command("kill9")
def bench_kill9(
    runs: Annotated[int, typer.Option(help="Times the hub is killed under load.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the kill moments.")] = 1,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the hub's data, log and the report.")
    ] = None,
) -> None:
    """Kill -9 the hub under load RUNS times on the same data; every item it acknowledged
    must be in the store afterwards. Prints the figures (also in OUT/kill9.json); exit 1 when
    an acknowledged item was lost or the hub did not start again."""
    from commonsky.bench.kill9 import kill9

    if runs <= 0:
        raise UsageError("--runs must be positive")
    out = out or Path("var/kill9") / time.strftime("%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out}: not empty (the runs start from an empty hub)")
    figures = kill9(runs, out, seed)
    for name, value in figures.items():
        if name != "per_run":
            print(f"{name:40} {value}")
    if not figures["passed"]:
        raise typer.Exit(1)


@bench_app.command("federation")
def bench_federation(
    count: Annotated[int, typer.Option(help="Tracks sent in each of the two runs.")] = 5000,
    rate: Annotated[float, typer.Option(help="Tracks a second.")] = 500.0,
    markers: Annotated[int, typer.Option(help="Durable markers sent around each kill.")] = 300,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the hubs' data, logs and the report.")
    ] = None,
) -> None:
    """Two hubs on loopback (federated over TAK Federation v2) against one hub, same load,
    same run: items/s and latency p50/p99 end to end; then the receiving hub and the sending
    hub are each killed with SIGKILL and started again: resume time, durable items lost
    (must be 0) and applied twice (must be 0). Exit 1 when one is not 0."""
    from commonsky.bench.federation import federation

    if count <= 0 or rate <= 0 or markers <= 0:
        raise UsageError("--count, --rate and --markers must be positive")
    out = out or Path("var/bench-federation") / time.strftime("%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out}: not empty (the runs start from empty hubs)")
    figures = federation(out, count, rate, markers)
    for name, value in figures.items():
        print(f"{name:40} {value}")
    if not figures["passed"]:
        raise typer.Exit(1)


async def _until_signal_result(
    run: Callable[[asyncio.Event], Awaitable[dict[str, object]]],
) -> dict[str, object]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await run(stop)


#: `commonsky bench NAME` -> (module, function). Imported only when `bench` is asked for, so
#: the product never loads benchmark code (nor what it needs beyond the core dependencies).
BENCHES: dict[str, tuple[str, str]] = {
    "deconflict": ("commonsky.deconflict.cli", "bench"),
    "ledger": ("commonsky.ledger.cli", "bench"),
    "api": ("commonsky.web.bench", "bench"),
    "map": ("commonsky.web.bench_map", "bench"),
    "warnings": ("commonsky.bench.warnings", "bench"),
    "store": ("commonsky.bench.store", "bench"),
    "hotline": ("commonsky.bench.hotline", "bench"),
    "marti": ("commonsky.bench.marti", "bench"),
    "private-deconflict": ("commonsky.bench.private_deconflict", "bench"),
}


def _missing_extra(name: str, exc: ImportError) -> Callable[..., None]:
    def command(ctx: typer.Context) -> None:
        raise UsageError(
            f"commonsky bench {name} needs the bench extra ({exc}): pip install 'commonsky[bench]'"
        )

    command.__doc__ = f"(unavailable: {exc.name or exc} is not installed)"
    return command


def _register_benches() -> None:
    import importlib

    for name, (module_name, attr) in BENCHES.items():
        try:
            function = getattr(importlib.import_module(module_name), attr)
        except ImportError as exc:
            bench_app.command(
                name, context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
            )(_missing_extra(name, exc))
            continue
        bench_app.command(name)(function)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["bench"]:
        _register_benches()
    try:
        status = app(args=args, prog_name="commonsky", standalone_mode=False)
        # Without standalone mode Click hands back typer.Exit codes instead of exiting.
        if isinstance(status, int) and status:
            sys.exit(status)
    except UsageError as exc:
        print(f"commonsky: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except click.NoArgsIsHelpError as exc:
        # No command given: show help, like --help, with the usage status.
        print(exc.ctx.get_help() if exc.ctx else "", file=sys.stderr)
        sys.exit(2)
    except click.UsageError as exc:
        print(f"commonsky: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("commonsky: aborted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as exc:
        print(f"commonsky: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(2)
