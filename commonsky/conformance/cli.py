"""`commonsky conformance DIR`: does this hub carry my clients' traffic unchanged?

For TAK administrators: capture what your ATAK, WinTAK or iTAK devices send (one `<event>`
per `.xml` file), point this command at the folder, and read per file whether the hub
accepted it and whether it reached a device of the same party, a device of another party
(under that party's name for the sender's uids) and a client that connects later, unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from commonsky.errors import UsageError, positive_seconds

from . import ALPHA, BRAVO

if TYPE_CHECKING:
    from .play import Delivery, FileResult, Sample

WIRES = ("xml", "protobuf", "both")


def load_samples(folder: Path) -> list[Sample]:
    """Every `*.xml` file of `folder`, read; UsageError (one line) when there is nothing to
    play or a file cannot be read."""
    if not folder.exists():
        raise UsageError(f"{folder}: no such directory")
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a directory")
    paths = sorted(p for p in folder.iterdir() if p.name.endswith(".xml"))
    if not paths:
        raise UsageError(f"{folder}: no *.xml CoT files to play")
    from .play import Sample

    samples = []
    for path in paths:
        try:
            samples.append(Sample.load(path))
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    return samples


async def play_all(
    samples: list[Sample],
    wires: tuple[str, ...],
    timeout: float,
    progress: bool,
    cluster: tuple[str, str] | None = None,
) -> list[FileResult]:
    """Each sample in each wire through its wire's private hub: one process, or with
    `cluster` (NATS URL, PostgreSQL URL) two edges and a core (`targets.cluster_hubs`)."""
    from .play import per_wire
    from .targets import cluster_hubs

    async with contextlib.AsyncExitStack() as stack:
        hubs = None
        if cluster is not None:
            hubs = await stack.enter_async_context(cluster_hubs(*cluster, wires))
        benches = await stack.enter_async_context(per_wire(wires, timeout=timeout, hubs=hubs))
        results: list[FileResult] = []
        total = len(samples) * len(wires)
        for sample in samples:
            for wire in wires:
                if progress:
                    print(
                        f"\r{len(results) + 1}/{total} {sample.name[:60]:60}",
                        end="",
                        file=sys.stderr,
                    )
                results.append(await benches[wire].play(sample, wire))
    if progress:
        print("\r" + " " * 70 + "\r", end="", file=sys.stderr)
    return results


_SHORT = {"xml": "xml", "protobuf": "proto", "late join": "late", "/api/items": "api"}


def _short(receiver: str) -> str:
    """ "BRAVO protobuf" -> "proto", "ALPHA late join" -> "late"."""
    kind = receiver.split(" ", 1)[1]
    return _SHORT.get(kind, kind)


def _cell(deliveries: list[Delivery]) -> Text:
    """ "unchanged" when every receiver of the party is right, else what went wrong where."""
    if all(d.ok for d in deliveries):
        return Text("unchanged", style="green")
    return Text(
        "\n".join(f"{_short(d.receiver)}: {d.status}" for d in deliveries if not d.ok),
        style="red",
    )


def render(results: list[FileResult], console: Console) -> None:
    table = Table(
        title=f"TAK conformance: files sent by {ALPHA}; {ALPHA} and {BRAVO} share everything",
        caption="Receivers in each party: xml and proto (TAK Protocol v1) connected before, "
        "late: one that connects afterwards (gets what persists), api: GET /api/items.",
    )
    both = len({r.wire for r in results}) > 1
    table.add_column("file", no_wrap=True)
    if both:
        table.add_column("sent as")
    table.add_column("type")
    table.add_column("accepted")
    table.add_column(f"within {ALPHA}")
    table.add_column(f"across to {BRAVO}")
    table.add_column("differences", justify="right")
    for r in results:
        if not r.sent:
            accepted = Text("not sent", style="red")
        elif r.accepted:
            accepted = Text("yes", style="green")
        else:
            accepted = Text("refused", style="red")
        findings = r.differences()
        mine = [d for d in r.deliveries if d.receiver.startswith(ALPHA)]
        theirs = [d for d in r.deliveries if d.receiver.startswith(BRAVO)]
        table.add_row(
            r.name,
            *((r.wire,) if both else ()),
            r.type,
            accepted,
            _cell(mine),
            _cell(theirs),
            Text(str(len(findings)), style="red" if findings else "green"),
        )
    console.print(table)
    failing = [r for r in results if not r.ok]
    for r in failing:
        console.print(Text(f"\n{r.name} (sent as {r.wire}, uid {r.uid!r}):", style="bold"))
        for line in r.differences():
            console.print(Text(f"  - {line}"), soft_wrap=True)
    ok = len(results) - len(failing)
    style = "green" if not failing else "red"
    console.print(Text(f"\n{ok} of {len(results)} conform", style=style))


def report(results: list[FileResult]) -> dict[str, object]:
    return {
        "hub": {
            "parties": [ALPHA, BRAVO],
            "sender": ALPHA,
            "agreements": "full disclosure of every category, both ways",
        },
        "files": [r.to_json() for r in results],
        "conforming": sum(r.ok for r in results),
        "total": len(results),
        "ok": all(r.ok for r in results),
    }


def conformance(
    folder: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="Folder of captured CoT: one <event> per *.xml file."),
    ],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON document instead of the table.")
    ] = False,
    wire: Annotated[
        str,
        typer.Option(
            help="Send each file as xml, as TAK protobuf (takproto's conversion, after "
            "negotiating TAK Protocol v1), or both (each wire through its own hub)."
        ),
    ] = "xml",
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for a delivery before calling it lost.")
    ] = 10.0,
    cluster: Annotated[
        str | None,
        typer.Option(
            metavar="NATS_URL",
            help="Play through a cluster instead of one process: two edges and a core "
            "(commonsky serve processes) on this NATS JetStream server; needs --postgres.",
        ),
    ] = None,
    postgres: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="With --cluster: a PostgreSQL server whose user may create databases (one "
            "per wire, dropped afterwards).",
        ),
    ] = None,
) -> None:
    """Play every *.xml CoT file in DIR through a private hub where two parties share
    everything, and print per file: accepted, delivered within the party, delivered to
    the other party (its uids as PARTY::uid, references inside <detail> renamed alike),
    replayed to a client that joins later, shown in /api/items, and every difference.

    Times are moved to now (time, start and stale by one offset).
    Exit status: 0 when every file is accepted and delivered unchanged,
    1 when one is not, 2 for a bad DIR or an unreadable file.
    """
    if wire not in WIRES:
        raise UsageError(f"--wire {wire!r} is not one of {', '.join(WIRES)}")
    positive_seconds("--timeout", timeout)
    if (cluster is None) != (postgres is None):
        raise UsageError("--cluster and --postgres go together")
    samples = load_samples(folder)
    wires = ("xml", "protobuf") if wire == "both" else (wire,)
    progress = not json_out and sys.stderr.isatty()
    where = (cluster, postgres) if cluster is not None and postgres is not None else None
    results = asyncio.run(play_all(samples, wires, timeout, progress, where))
    if json_out:
        print(json.dumps(report(results), indent=2))
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
        render(results, console)
    if not all(r.ok for r in results):
        raise typer.Exit(1)
