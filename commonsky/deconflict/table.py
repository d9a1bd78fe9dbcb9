# Rule: the engine's stored records as numpy columns, one row ("slot") per record, so that the
# first, exact rejections of an insert-and-check (kind, party, time, altitude, caps apart) run
# over all the index's candidates at once instead of one Python object at a time. The index
# files slots (small ints, cheaper to hash and merge than (party, uid) keys). Slots of removed
# records are reused; the columns grow by doubling, so memory stays linear in what is stored.

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from commonsky.deconflict.records import ItemType, _Rec
from commonsky.geo import FloatArray

KINDS: dict[ItemType, int] = {"volume": 0, "line": 1, "site": 2, "track": 3}
IntArray = npt.NDArray[np.int64]


class SlotTable:
    def __init__(self, capacity: int = 1024) -> None:
        self.recs: list[_Rec | None] = []
        self._free: list[int] = []
        self._parties: dict[str, int] = {}
        # Volumes: start, end, floor, ceiling, cap radius, cap centre x y z (as _Rec.box).
        self.box: FloatArray = np.full((capacity, 8), np.nan)
        self.kind = np.full(capacity, -1, dtype=np.int8)
        self.party = np.full(capacity, -1, dtype=np.int32)

    def party_code(self, party: str) -> int:
        return self._parties.setdefault(party, len(self._parties))

    def add(self, rec: _Rec) -> None:
        """Give `rec` a slot (rec.slot) and write its row."""
        if self._free:
            slot = self._free.pop()
            self.recs[slot] = rec
        else:
            slot = len(self.recs)
            self.recs.append(rec)
            if slot == len(self.kind):
                self._grow()
        rec.slot = slot
        self.kind[slot] = KINDS[rec.item]
        self.party[slot] = self.party_code(rec.key[0])
        if rec.box:
            self.box[slot] = rec.box

    def remove(self, rec: _Rec) -> None:
        slot = rec.slot
        self.recs[slot] = None
        self.kind[slot] = -1
        self.party[slot] = -1
        self.box[slot] = np.nan
        self._free.append(slot)

    def _grow(self) -> None:
        n = len(self.kind)
        self.box = np.concatenate([self.box, np.full((n, 8), np.nan)])
        self.kind = np.concatenate([self.kind, np.full(n, -1, dtype=np.int8)])
        self.party = np.concatenate([self.party, np.full(n, -1, dtype=np.int32)])

    def volumes_near(self, slots: IntArray, rec: _Rec, now: float) -> tuple[list[_Rec], list[_Rec]]:
        """Of the candidate `slots` (rec's own excluded by the caller): other parties' volumes
        that pass the exact first tests against volume `rec` (`box_overlaps`, as
        `_volume_batch` applies them: nothing that could conflict is dropped), and every
        record of another kind."""
        kind = self.kind[slots]
        rest = [self.rec(s) for s in slots[kind != KINDS["volume"]].tolist()]
        vols = slots[(kind == KINDS["volume"]) & (self.party[slots] != self.party_code(rec.key[0]))]
        if not len(vols):
            return [], rest
        *_, meet = box_overlaps(self.box[vols], rec, now)
        return [self.rec(s) for s in vols[meet].tolist()], rest

    def rec(self, slot: int) -> _Rec:
        rec = self.recs[slot]
        assert rec is not None, f"slot {slot} is filed in the index but empty"
        return rec


def box_overlaps(
    a: FloatArray, x: _Rec, now: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """Volume boxes `a` (rows laid out as _Rec.box) against volume x: the shared window
    (start, end) and band (floor, ceiling), and whether each pair passes the exact first
    tests — they overlap in time and altitude, the window is not over, the caps meet."""
    t_lo, t_hi, floor, ceiling = x.box[:4]
    start, end = np.maximum(a[:, 0], t_lo), np.minimum(a[:, 1], t_hi)
    low, high = np.maximum(a[:, 2], floor), np.minimum(a[:, 3], ceiling)
    apart = np.arccos(np.clip(a[:, 5:8] @ x.centre, -1.0, 1.0)) > x.ang + a[:, 4]
    return start, end, low, high, (start < end) & (end > now) & (low < high) & ~apart
