"""The `commonsky` command: one Typer app, sub-apps per concern.

Every failure an operator can cause (bad flag, bad file, bad config) ends as one line on
stderr and exit status 2; tracebacks are kept for our own bugs.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import logging
import math
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

# Typer vendors its own Click; its exception classes live here.
from typer import _click as click
from typer._click import exceptions as click_errors
from typer.core import TyperGroup

from commonsky.conformance import cli as conformance_cli
from commonsky.errors import UsageError
from commonsky.marti import cli as marti_cli
from commonsky.settings import SETTINGS, env_name, flag_name
from commonsky.stopsignal import StopRequest

#: Command groups whose modules load the numerical and cryptographic libraries (numpy,
#: pyproj, the fusion and ledger code): NAME -> (module, Typer app, help). Imported when
#: the group is run or asked for its help, never for `commonsky --help` or `serve`, so
#: every start of the command line pays only for what it runs (importing this module: 0.87 s
#: -> 0.11 s, same machine and load).
LAZY_GROUPS: dict[str, tuple[str, str, str]] = {
    "deconflict": (
        "commonsky.deconflict.cli",
        "app",
        "Offline conflict screening of a traffic snapshot (CSV).",
    ),
    "ledger": (
        "commonsky.ledger.cli",
        "app",
        "The hub's signed record: export, verify, inclusion and consistency proofs.",
    ),
    "alerts": (
        "commonsky.alerts.cli",
        "app",
        "Public warnings: the warnable regions, CAP 1.2 validation.",
    ),
}


class LazyGroup(TyperGroup):
    """The top-level group: LAZY_GROUPS are listed from the table and built on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.commands, *(n for n in LAZY_GROUPS if n not in self.commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY_GROUPS:
            module, attribute, _ = LAZY_GROUPS[cmd_name]
            holder = typer.Typer(rich_markup_mode=None, add_completion=False)
            holder.add_typer(getattr(importlib.import_module(module), attribute), name=cmd_name)
            group = typer.main.get_command(holder)
            assert isinstance(group, TyperGroup)
            self.commands[cmd_name] = group.commands[cmd_name]
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name)
            if command is None:
                rows.append((name, LAZY_GROUPS[name][2]))
            elif not command.hidden:
                rows.append((name, command.get_short_help_str(formatter.width - 20)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


app = typer.Typer(
    name="commonsky",
    help="CommonSky hub: share the sky between parties under agreements.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain Click help: every flag name whole at any width (rich cut the settings' long
    # names to fit 80 columns), and `[server]` is text, not markup.
    rich_markup_mode=None,
    cls=LazyGroup,
)
bench_app = typer.Typer(help="Benchmarks (print figures; never part of the test suite).")
app.add_typer(bench_app, name="bench")
app.command("conformance")(conformance_cli.conformance)
app.command("enroll")(marti_cli.enroll)
app.add_typer(marti_cli.evidence_app, name="evidence")


ca_app = typer.Typer(help="The hub's certificate authority.", no_args_is_help=True)
cert_app = typer.Typer(help="Client certificates for TAK users.", no_args_is_help=True)
app.add_typer(ca_app, name="ca")
app.add_typer(cert_app, name="cert")
cert_app.command("revoke")(marti_cli.revoke)


def with_setting_options(command: Callable[..., None]) -> Callable[..., None]:
    """`command` with one option per row of the settings table (`--limit-queue-tracks INT`),
    so every setting shows in `--help` with its meaning and default. A flag not given is
    None and leaves the variable, file or default in force; the values given reach
    `command` as one `overrides` mapping, checked by `Settings.resolve` like the file's."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "overrides"]
    generated = []
    for setting in SETTINGS:
        kind = setting.type if setting.type in (int, float) else str  # choices: checked later
        shown = '""' if setting.default == "" else setting.default  # as TOML writes it
        option = typer.Option(
            flag_name(setting.name),
            help=f"{setting.help} [default: {shown}; {env_name(setting.name)}]",
            show_default=False,
            metavar=setting.type_name,
        )
        generated.append(
            inspect.Parameter(
                setting.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[kind | None, option],
            )
        )

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        overrides = {s.name: kwargs.pop(s.name) for s in SETTINGS}
        command(**kwargs, overrides=overrides)

    parameters = [*own, *generated]
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    del wrapper.__wrapped__  # Typer reads the signature above, not the command's own
    return wrapper


@app.command()
@with_setting_options
def serve(
    config: Annotated[Path, typer.Option("--config", help="Hub configuration file (TOML).")],
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    init: Annotated[
        bool,
        typer.Option(
            "--init",
            help="Make the ledger, store or hub key afresh when they are missing (or bind them "
            "as they are when they do not match) in a data_dir that has run a hub before. "
            "A [cluster]: the first core starts with --init (it makes the hub's keys in the "
            "database), every later core and every edge without.",
        ),
    ] = False,
    *,
    overrides: Mapping[str, Any],
) -> None:
    """Run a hub until Ctrl-C (or SIGTERM).

    Every [server] setting of the config file is also a flag (below, after --init) and a
    COMMONSKY_* variable: flag > variable > file > default.

    One hub on several processes: a [cluster] table with nats_url = "nats://HOST:4222"
    (NATS with JetStream), role = "edge" (TAK listeners and the map), "core" (the hub's
    rules and state; one serves, the others stand by) or "all", and name (default
    "commonsky": one per cluster), with [server] store_url = "postgresql://..." on the
    cores; the first core starts once with --init. A serving core that applies nothing
    while messages wait for stall_s seconds (default 60) stops, and a standby takes over.

    The NATS link across machines: nats_url = "tls://USER:PASSWORD@HOST:4222" (each
    process its own NATS user; / ? # [ ] @ % and spaces in it percent-encoded, as
    urllib.parse.quote(PASSWORD, safe="") writes them; the password is never printed),
    edge = "NAME" (an edge's name, the one its user's permissions give), nats_ca (the CA
    of the server's certificate), nats_cert and nats_key (this process's client
    certificate);
    docs/nats-permissions.conf is the server's side (README, "Configuration";
    docs/architecture.md, "Cluster" and "The NATS link").
    """
    request = StopRequest()
    request.install()  # first: a signal during the imports and the start is a clean stop
    from commonsky import eventloop
    from commonsky.config import load_config
    from commonsky.server import serve_forever

    _logging(log_level)
    hub_config = load_config(config, overrides)
    tak_tls = any(listener.kind == "tak-tls" for listener in hub_config.listeners)
    loop = eventloop.resolve(hub_config.settings.loop, tak_tls)
    serve = serve_forever
    if hub_config.cluster is not None:  # an edge, a core, or both (commonsky/cluster/run.py)
        from commonsky.cluster.run import serve_cluster as serve
    if request.stopped_early():
        return
    eventloop.run(_until_signal(lambda stop: serve(hub_config, stop, init=init), request), loop)


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
            "Federation v2 (or --scenario syria on two); each hub its own process. The map "
            "at --http is JPN's hub (Syria: the coalition's); every party's own hub's map "
            "is in its sign-in line.",
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
    request = StopRequest()
    request.install()  # first: a signal during the imports and the start is a clean stop
    from commonsky.demo.main import run_demo
    from commonsky.settings import CLOCK_RATE_MAX, parse_hostport

    parse_hostport(http, "--http")  # (before the demo's folder is emptied)

    # (written so that nan fails too: every comparison with nan is false)
    if not 0 < speed <= CLOCK_RATE_MAX:
        raise UsageError(f"--speed {speed!r}: must be over 0 and at most {CLOCK_RATE_MAX:g}")
    if duration is not None and not 0 < duration < math.inf:
        raise UsageError(f"--duration {duration!r}: must be a positive number of seconds")
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

    if request.stopped_early():
        return
    summary = asyncio.run(_until_signal_result(play, request))
    print(f"summary written to {data_dir / 'summary.json'}")
    if not summary["all_held"]:
        sys.exit(1)


@ca_app.command("init")
def ca_init(
    dir: Annotated[Path, typer.Option("--dir", help="Folder for ca.pem, ca-key.pem, server.pem.")],
    name: Annotated[
        list[str] | None,
        typer.Option(
            "--server-name",
            metavar="<name>",
            help="Extra DNS name or IP for the hub's server certificate (repeat for more).",
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
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="The hub's tak-tls port.")
    ] = 8089,
) -> None:
    """Issue a client certificate for a TAK user: PEM files, a PKCS#12 bundle and a
    truststore. Their password is random, printed once and stored nowhere."""
    from commonsky.hub.datadir import private_dir
    from commonsky.pki import ATAK_DEFAULT_PASSWORD, P12Form, check_host, issue_client

    try:
        form = P12Form(p12)
    except ValueError:
        raise UsageError(f"--p12 {p12!r}: use compatible or modern") from None
    if host is not None:
        check_host("--host", host)
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


async def _until_signal(
    run: Callable[[asyncio.Event], Awaitable[None]], request: StopRequest
) -> None:
    stop = asyncio.Event()
    request.attach(stop)
    await run(stop)


async def _until_signal_result(
    run: Callable[[asyncio.Event], Awaitable[dict[str, object]]], request: StopRequest
) -> dict[str, object]:
    stop = asyncio.Event()
    request.attach(stop)
    return await run(stop)


#: `commonsky bench NAME` -> (module, function). Imported only when `bench` is asked for, so
#: the product never loads benchmark code (nor what it needs beyond the core dependencies).
BENCHES: dict[str, tuple[str, str]] = {
    "relay": ("commonsky.bench.commands", "relay"),
    "fuzz": ("commonsky.bench.commands", "fuzz"),
    "kill9": ("commonsky.bench.commands", "kill9"),
    "federation": ("commonsky.bench.commands", "federation"),
    "cluster-capacity": ("commonsky.bench.commands", "cluster_capacity"),
    "deconflict": ("commonsky.bench.deconflict", "bench"),
    "ledger": ("commonsky.bench.ledger", "bench"),
    "api": ("commonsky.bench.api", "bench"),
    "map": ("commonsky.bench.map", "bench"),
    "warnings": ("commonsky.bench.warnings", "bench"),
    "store": ("commonsky.bench.store", "bench"),
    "hotline": ("commonsky.bench.hotline", "bench"),
    "marti": ("commonsky.bench.marti", "bench"),
    "private-deconflict": ("commonsky.bench.private_deconflict", "bench"),
    "memory": ("commonsky.bench.memory", "bench"),
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
    except click_errors.NoArgsIsHelpError as exc:
        # No command given: show help, like --help, with the usage status.
        print(exc.ctx.get_help() if exc.ctx else "", file=sys.stderr)
        sys.exit(2)
    except click_errors.UsageError as exc:
        print(f"commonsky: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("commonsky: aborted", file=sys.stderr)
        sys.exit(130)
    except click_errors.ClickException as exc:
        print(f"commonsky: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(2)
