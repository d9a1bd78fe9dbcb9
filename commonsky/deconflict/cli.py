# Rule: the deconflict commands are thin: read and check input (every refusal one line naming
# file, line, column and value, raised as UsageError), call the pure core, print.
#
# `tracks` screens a traffic snapshot offline (its benchmark is commonsky/bench/deconflict.py).

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from commonsky.deconflict import cpa
from commonsky.errors import UsageError

app = typer.Typer(
    help="Offline conflict screening of a traffic snapshot (CSV).",
    no_args_is_help=True,
)

COLUMNS = ("id", "lat", "lon", "alt_m", "gs_mps", "trk_deg", "vs_mps")
# Accepted ranges per numeric column: (low, high), both inclusive.
_RANGES: dict[str, tuple[float, float]] = {
    "lat": (-90.0, 90.0),
    "lon": (-180.0, 180.0),
    "alt_m": (-1_000.0, 100_000.0),
    "gs_mps": (0.0, 3_000.0),
    "trk_deg": (-360.0, 360.0),
    "vs_mps": (-1_000.0, 1_000.0),
}


def read_tracks(path: Path) -> tuple[list[str], cpa.Kinematics]:
    """Parse a traffic CSV (header row, columns COLUMNS in any order; extra columns ignored)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        raise UsageError(f"{path}: empty file, expected a header row {','.join(COLUMNS)}")
    header = [h.strip() for h in header]
    for col in COLUMNS:
        if col not in header:
            raise UsageError(f"{path}:1: missing column {col!r} (header: {','.join(header)})")
    where = {col: header.index(col) for col in COLUMNS}
    ids: list[str] = []
    seen: dict[str, int] = {}
    values: dict[str, list[float]] = {col: [] for col in _RANGES}
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise UsageError(f"{path}:{lineno}: {len(row)} fields, header has {len(header)}")
        uid = row[where["id"]].strip()
        if not uid:
            raise UsageError(f"{path}:{lineno}: column 'id': empty")
        if uid in seen:
            raise UsageError(f"{path}:{lineno}: column 'id': {uid!r} repeats line {seen[uid]}")
        seen[uid] = lineno
        ids.append(uid)
        for col, (low, high) in _RANGES.items():
            raw = row[where[col]].strip()
            try:
                value = float(raw)
            except ValueError:
                raise UsageError(
                    f"{path}:{lineno}: column {col!r}: {raw!r} is not a number"
                ) from None
            if not math.isfinite(value):
                raise UsageError(f"{path}:{lineno}: column {col!r}: {raw!r} is not finite")
            if not low <= value <= high:
                raise UsageError(
                    f"{path}:{lineno}: column {col!r}: {raw!r} is outside [{low:g}, {high:g}]"
                )
            values[col].append(value)
    k = cpa.kinematics(
        values["lat"],
        values["lon"],
        values["alt_m"],
        values["gs_mps"],
        values["trk_deg"],
        values["vs_mps"],
    )
    return ids, k


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise UsageError(f"option {name}: {value!r} must be a positive number")


@app.command("tracks")
def tracks(
    file: Annotated[Path, typer.Argument(help="CSV with columns " + ",".join(COLUMNS))],
    rpz_m: Annotated[float, typer.Option("--rpz-m", help="horizontal minimum, m")] = cpa.RPZ_M,
    hpz_m: Annotated[float, typer.Option("--hpz-m", help="vertical minimum, m")] = cpa.HPZ_M,
    lookahead_s: Annotated[
        float, typer.Option("--lookahead-s", help="look-ahead horizon, s")
    ] = cpa.LOOKAHEAD_S,
) -> None:
    """Screen a traffic snapshot; print id1,id2,tcpa_s,dcpa_m for every conflicting pair."""
    _positive("--rpz-m", rpz_m)
    _positive("--hpz-m", hpz_m)
    _positive("--lookahead-s", lookahead_s, allow_zero=True)
    ids, k = read_tracks(file)
    result = cpa.screen(k, rpz_m, hpz_m, lookahead_s)
    rows = []
    for i, j, tcpa, dcpa in zip(
        result.i.tolist(),
        result.j.tolist(),
        result.tcpa_s.tolist(),
        result.dcpa_m.tolist(),
        strict=True,
    ):
        a, b = sorted((ids[i], ids[j]))
        rows.append((a, b, tcpa, dcpa))
    rows.sort()
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(("id1", "id2", "tcpa_s", "dcpa_m"))
    for a, b, tcpa, dcpa in rows:
        out.writerow((a, b, f"{tcpa:.2f}", f"{dcpa:.1f}"))
    sys.stdout.flush()
