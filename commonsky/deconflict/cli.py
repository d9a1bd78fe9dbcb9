"""Command-line entry points for the deconflict package (filled in by its issue)."""

from __future__ import annotations

import typer

app = typer.Typer(help="deconflict commands", no_args_is_help=True)
