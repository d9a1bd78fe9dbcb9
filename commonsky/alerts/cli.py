"""Command-line entry points for the alerts package: list regions, check CAP files.

Operator mistakes (missing file, invalid CAP) end as a `UsageError`: one line, exit status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from commonsky.alerts.cap import CapInvalid, validate_cap
from commonsky.alerts.regions import RegionRegistry
from commonsky.errors import UsageError

app = typer.Typer(
    help="Public warnings: the warnable regions, CAP 1.2 validation.", no_args_is_help=True
)


@app.command("regions")
def regions(
    file: Annotated[
        Path | None, typer.Option("--file", help="GeoJSON region file instead of the built-in set")
    ] = None,
) -> None:
    """List the warnable regions: id, kind, name (built-in set unless --file)."""
    registry = RegionRegistry.load(file) if file is not None else RegionRegistry.builtin()
    for r in registry:
        typer.echo(f"{r.id}\t{r.kind}\t{r.name}")


@app.command("cap-check")
def cap_check(file: Annotated[Path, typer.Argument(help="CAP 1.2 XML document")]) -> None:
    """Validate a CAP 1.2 document against CommonSky's schema and rules."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise UsageError(f"{file}: cannot read ({exc.strerror})") from None
    try:
        root = validate_cap(data)
    except CapInvalid as exc:
        raise UsageError(f"{file}: invalid CAP 1.2: {exc}") from None
    ns = "{urn:oasis:names:tc:emergency:cap:1.2}"
    typer.echo(
        f"{file}: valid CAP 1.2 {root.findtext(ns + 'msgType')} {root.findtext(ns + 'identifier')}"
    )
