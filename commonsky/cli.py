"""The `commonsky` command: one Typer app, sub-apps per concern.

Every failure an operator can cause (bad flag, bad file, bad config) ends as one line on
stderr and exit status 2; tracebacks are kept for our own bugs.
"""

from __future__ import annotations

import sys

import typer

# Typer vendors its own Click; its exception classes live here.
from typer._click import exceptions as click

from commonsky.alerts import cli as alerts_cli
from commonsky.deconflict import cli as deconflict_cli
from commonsky.errors import UsageError
from commonsky.ledger import cli as ledger_cli

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


def _register_optional_commands() -> None:
    # Benchmarks and commands contributed by the feature packages, when they define them.
    for module, bench_name in ((deconflict_cli, "deconflict"), (ledger_cli, "ledger"),
                               (alerts_cli, "warnings")):
        bench = getattr(module, "bench", None)
        if bench is not None:
            bench_app.command(bench_name)(bench)


_register_optional_commands()


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, standalone_mode=False)
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
