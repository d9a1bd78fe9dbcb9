# Rule: the terms of private deconfliction are read once, checked completely, and the two
# hubs' terms are compared before any cell is computed. Terms that decide what a cell IS
# (grid level, time slot, altitude band, the separation minima, a line's reach) must be equal
# on both sides, or the cells would not match and conflicts would be missed silently: a round
# with different grids is refused, naming the term. Terms that decide how much is revealed
# take the stricter side: `count` if either side says count, the geometry step only if both
# allow it. Each side enforces its own cap and rate on the other.

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from commonsky.deconflict import cpa
from commonsky.deconflict.records import LINE_REACH_M
from commonsky.errors import CommonSkyError, UsageError

Reveal = Literal["cells", "count"]

#: The `[[federate]]` keys this module reads (CONTRACT.md "Interfaces being added" fixes the
#: first five; the rest are ours, with defaults).
KEYS = (
    "deconflict",
    "grid_level",
    "time_slot_s",
    "altitude_band_m",
    "reveal",
    "geometry",
    "rpz_m",
    "hpz_m",
    "line_reach_m",
    "max_cells",
    "min_interval_s",
    "pad",
    "round_every_s",
)


class Terms(msgspec.Struct, frozen=True, kw_only=True):
    """One hub's terms for private deconfliction with one peer hub.

    - `grid_level`: H3 resolution, 0-15 (5: cells ~252 km² with ~9.9 km edges; 6: ~36 km²,
      ~3.7 km; 7: ~5.2 km², ~1.4 km). The level is the leak: a match says "here, to a cell".
    - `time_slot_s`, `altitude_band_m`: the time and height of a cell (slot k is
      [k·time_slot_s, (k+1)·time_slot_s) in epoch seconds; band k likewise in metres).
    - `reveal`: `cells` (each side learns which of its own cells the other occupies) or
      `count` (only how many; no geometry step).
    - `geometry`: whether the geometry step (pieces clipped to the cells that meet) may follow.
    - `rpz_m`, `hpz_m`: horizontal / vertical separation minima (the deconfliction engine's
      defaults: 5 NM, 1,000 ft); every item is dilated by half of them (see cells.py).
    - `line_reach_m`: how deep each side of a deconfliction line reaches (the engine's
      `line_reach_m`, default deconflict.records.LINE_REACH_M).
    - `max_cells`: the most cells either side may submit in one round (own and peer's).
    - `min_interval_s`: rounds with this peer no more often than this (own and peer's).
    - `pad`: pad our submitted set with dummies up to `max_cells`, so its size says nothing.
    - `round_every_s`: a round with this peer at least this often (hub seconds), besides the
      rounds that follow a change of either side's plans (federation/private.py).
    """

    grid_level: int = 6
    time_slot_s: float = 900.0
    altitude_band_m: float = 1000.0
    reveal: Reveal = "cells"
    geometry: bool = True
    rpz_m: float = cpa.RPZ_M
    hpz_m: float = cpa.HPZ_M
    line_reach_m: float = LINE_REACH_M  # must be the engine's, for the two to agree
    max_cells: int = 50_000
    min_interval_s: float = 60.0
    pad: bool = False
    round_every_s: float = 300.0

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem is not None:
            key, reason = problem
            raise TermsError(key, reason)

    def grid(self) -> tuple[Any, ...]:
        """What defines a cell; must be equal on both sides of a round."""
        return (  # floats as floats: the grid is hashed into commitments (repr(300) != 300.0)
            int(self.grid_level),
            float(self.time_slot_s),
            float(self.altitude_band_m),
            float(self.rpz_m),
            float(self.hpz_m),
            float(self.line_reach_m),
        )


GRID_NAMES = ("grid_level", "time_slot_s", "altitude_band_m", "rpz_m", "hpz_m", "line_reach_m")


class TermsError(CommonSkyError, ValueError):
    """Terms refused (the configuration's or the peer's: HTTP 400); `key` names the term at
    fault, `why` what is wrong with it."""

    http_status = 400
    reason = "privdeconf_terms"

    def __init__(self, key: str, why: str) -> None:
        super().__init__(f"{key}: {why}")
        self.key = key
        self.why = why


def _positive(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _problem(t: Terms) -> tuple[str, str] | None:
    if isinstance(t.grid_level, bool) or not 0 <= t.grid_level <= 15:
        return "grid_level", f"{t.grid_level!r} is not an H3 resolution (0-15)"
    for key in ("time_slot_s", "altitude_band_m", "line_reach_m", "round_every_s"):
        if not _positive(getattr(t, key)):
            return key, f"{getattr(t, key)!r} is not a positive number"
    for key in ("rpz_m", "hpz_m", "min_interval_s"):
        v = getattr(t, key)
        if not (math.isfinite(v) and v >= 0):
            return key, f"{v!r} is not a number >= 0"
    if t.max_cells < 1:
        return "max_cells", f"{t.max_cells!r} is not a positive count"
    if t.reveal not in ("cells", "count"):
        return "reveal", f"{t.reveal!r} is not 'cells' or 'count'"
    return None


def from_federate(table: Mapping[str, Any], where: str = "[[federate]]") -> Terms | None:
    """The terms a `[[federate]]` table carries: None without `deconflict`, else `Terms`.

    Raises UsageError naming `where`, the key and the value (`deconflict` must be "private";
    unknown keys are left to the federation's own parser)."""
    mode = table.get("deconflict")
    if mode is None:
        return None
    if mode != "private":
        raise UsageError(f'{where} deconflict = {mode!r}: the only mode is "private"')
    given = {k: table[k] for k in KEYS[1:] if k in table}
    try:
        return msgspec.convert(given, Terms)
    except msgspec.ValidationError as exc:  # (a TermsError from __post_init__ arrives as one)
        raise UsageError(f"{where}: {exc}") from None


class Agreed(msgspec.Struct, frozen=True):
    """What both sides' terms allow in one round."""

    reveal: Reveal
    geometry: bool


def agree(own: Terms, grid: tuple[Any, ...], reveal: str, geometry: bool) -> Agreed | str:
    """The stricter of our terms and the peer's (its grid, reveal and geometry flag), or the
    reason there is no round: a term that defines cells differs."""
    for name, mine, theirs in zip(GRID_NAMES, own.grid(), grid, strict=False):
        if mine != theirs:
            return f"{name} differs: ours {mine!r}, the peer's {theirs!r}"
    if len(grid) != len(GRID_NAMES):
        return f"the peer's grid has {len(grid)} terms, not {len(GRID_NAMES)}"
    both_cells = own.reveal == "cells" and reveal == "cells"
    return Agreed("cells" if both_cells else "count", both_cells and own.geometry and geometry)
