"""Command-line entry points for the alerts package (filled in by its issue)."""

from __future__ import annotations

import typer

app = typer.Typer(help="alerts commands", no_args_is_help=True)
