# Rule: the index only narrows; it never decides. A query returns every filed key whose cap
# and time interval could meet the query's (and some that cannot): the exact checks are the
# engine's.
#
# A hierarchical grid. Every item has a cap (centre + angular radius) and a time interval. It
# is filed at the spatial level whose cells (ECEF cubes, 10 km * 2^L) are at least its
# diameter and the temporal level whose buckets (15 min * 4^M) are at least its duration, so
# it touches at most 8 cells x 2 buckets; a query walks the occupied levels.
# Insert-and-check is O(items sharing those cells), not O(n).

from __future__ import annotations

import math
from typing import Protocol

from commonsky.geo import EARTH_R_M, FloatArray

Key = tuple[str, str]  # (party, uid)


class Filed(Protocol):
    """What the index needs of a record (the engine's _Rec): it files the record's slot."""

    slot: int
    centre: FloatArray
    ang: float
    t_lo: float
    t_hi: float
    cells: list[tuple[int, ...]]


SPACE_BASE_M = 10_000.0
TIME_BASE_S = 900.0
# Steps 2 and 4 (were 4 and 8): at 100,000 stored volumes the coarser levels returned ~700
# candidates for a 30 km volume, most hours or 100 km away; these halve that (bench p99).
SPACE_STEP, SPACE_LEVELS = 2, 16  # the top level's cells (655,360 km) span the earth
TIME_STEP, TIME_LEVELS = 4, 14  # longer than the top level (1,900 years): filed as always
ALWAYS = -1


class _Index:
    def __init__(self) -> None:
        self.cells: dict[tuple[int, ...], set[int]] = {}  # cell -> slots filed there
        self.levels: dict[tuple[int, int], set[tuple[int, ...]]] = {}
        # (sl, tl, ix, iy, iz) -> the occupied time buckets there: most cells of a query's
        # cube are off the earth's surface or empty, and are passed over in one look-up.
        self.columns: dict[tuple[int, ...], set[int]] = {}

    @staticmethod
    def _space_level(ang: float) -> int:
        size = 2 * ang * EARTH_R_M
        lvl = 0
        while SPACE_BASE_M * SPACE_STEP**lvl < size and lvl < SPACE_LEVELS:
            lvl += 1
        return lvl

    @staticmethod
    def _time_level(t_lo: float, t_hi: float) -> int:
        if not (math.isfinite(t_lo) and math.isfinite(t_hi)):
            return ALWAYS
        lvl = 0
        while TIME_BASE_S * TIME_STEP**lvl < t_hi - t_lo:
            lvl += 1
            if lvl >= TIME_LEVELS:
                return ALWAYS
        return lvl

    @staticmethod
    def _ranges(
        p: tuple[float, ...], chord: float, sl: int, tl: int, t_lo: float, t_hi: float
    ) -> tuple[list[range], range]:
        """Cell ranges on each axis around the point p (metres, ECEF) and time buckets."""
        size = SPACE_BASE_M * SPACE_STEP**sl
        floor = math.floor
        axes = [range(floor((v - chord) / size), floor((v + chord) / size) + 1) for v in p]
        if tl == ALWAYS:
            return axes, range(0, 1)
        b = TIME_BASE_S * TIME_STEP**tl
        lo = -(2**62) if not math.isfinite(t_lo) else floor(t_lo / b)
        hi = 2**62 if not math.isfinite(t_hi) else floor(t_hi / b)
        return axes, range(lo, hi + 1)

    @staticmethod
    def _where(centre: FloatArray, ang: float) -> tuple[tuple[float, ...], float]:
        """The cap's centre in metres as plain floats (numpy scalars are slow in the loops
        below), and the chord its radius spans."""
        chord = 2 * EARTH_R_M * math.sin(min(ang, math.pi) / 2) + 1.0
        return tuple((centre * EARTH_R_M).tolist()), chord

    def insert(self, rec: Filed) -> None:
        sl = self._space_level(rec.ang)
        tl = self._time_level(rec.t_lo, rec.t_hi)
        axes, times = self._ranges(*self._where(rec.centre, rec.ang), sl, tl, rec.t_lo, rec.t_hi)
        occupied = self.levels.setdefault((sl, tl), set())
        rec.cells = []
        for ix in axes[0]:
            for iy in axes[1]:
                for iz in axes[2]:
                    for tb in times:
                        cell = (sl, tl, ix, iy, iz, tb)
                        self.cells.setdefault(cell, set()).add(rec.slot)
                        occupied.add(cell)
                        self.columns.setdefault(cell[:5], set()).add(tb)
                        rec.cells.append(cell)

    def delete(self, rec: Filed) -> None:
        for cell in rec.cells:
            members = self.cells.get(cell)
            if members is None:
                continue
            members.discard(rec.slot)
            if not members:
                del self.cells[cell]
                self.levels[(cell[0], cell[1])].discard(cell)
                column = self.columns[cell[:5]]
                column.discard(cell[5])
                if not column:
                    del self.columns[cell[:5]]
        rec.cells = []

    def query(self, centre: FloatArray, ang: float, t_lo: float, t_hi: float) -> set[int]:
        """The slots of every record whose cap and time could meet these (and some more)."""
        found: set[int] = set()
        p, chord = self._where(centre, ang)
        for (sl, tl), occupied in self.levels.items():
            if not occupied:
                continue
            axes, times = self._ranges(p, chord, sl, tl, t_lo, t_hi)
            n = len(axes[0]) * len(axes[1]) * len(axes[2]) * len(times)
            if n > len(occupied):  # cheaper to scan what is there
                for cell in occupied:
                    if (
                        cell[2] in axes[0]
                        and cell[3] in axes[1]
                        and cell[4] in axes[2]
                        and cell[5] in times
                    ):
                        found |= self.cells[cell]
                continue
            columns, cells = self.columns, self.cells
            for ix in axes[0]:
                for iy in axes[1]:
                    for iz in axes[2]:
                        tbs = columns.get((sl, tl, ix, iy, iz))
                        if tbs is None:
                            continue
                        for tb in tbs if len(tbs) <= len(times) else times:
                            if tb in times and tb in tbs:
                                found |= cells[(sl, tl, ix, iy, iz, tb)]
        return found
