"""A latency probe for benches: when an item passes each station of its path, by its bench
sequence number (`<bench s="N"/>` in the event, `bench/relay.py`).

Off unless the environment names a folder in COMMONSKY_PROBE when the process starts
(`bench/hops.py` sets it for the processes it starts). Off, a call site costs one attribute
read (`if probe.ON:`); nothing else runs. On, each stamp is a line `station, seq, where,
seconds` (`time.perf_counter`: CLOCK_MONOTONIC on Linux, one clock for every process of the
machine), written to `<folder>/<pid>.tsv` by a thread of its own every 0.2 s and at exit —
never by the event loop whose latency is measured.
"""

from __future__ import annotations

import atexit
import os
import re
import threading
import time
from collections import deque
from pathlib import Path

_FOLDER = os.environ.get("COMMONSKY_PROBE", "")
ON = bool(_FOLDER)
_SEQ_BYTES = re.compile(rb'<bench s="(\d+)"/>')
_SEQ_TEXT = re.compile(r'<bench s="(\d+)"/>')
_lines: deque[str] = deque()  # (appended by the loop, taken by the writer thread: thread-safe)
_lock = threading.Lock()

# The stations of an item's path through a cluster, in order (`bench/hops.py`).
STATIONS = ("sent", "edge_accept", "stream_ack", "core_apply", "core_publish", "edge_receive",
            "client_write", "client_read")  # fmt: skip


def stamp(station: str, data: bytes | str, where: str = "") -> None:
    """Note that every bench item in `data` (bytes on the wire, or an event's detail) passed
    `station` now, at `where` (an edge's name, a port)."""
    now = f"{time.perf_counter():.6f}"
    found = _SEQ_BYTES.findall(data) if isinstance(data, bytes) else _SEQ_TEXT.findall(data)
    if found:
        seqs = [s.decode() if isinstance(s, bytes) else s for s in found]
        _lines.extend([f"{station}\t{s}\t{where}\t{now}\n" for s in seqs])


def _write() -> None:
    with _lock:
        lines = [_lines.popleft() for _ in range(len(_lines))]
        if lines:
            with (Path(_FOLDER) / f"{os.getpid()}.tsv").open("a") as out:
                out.writelines(lines)


def _writer() -> None:
    while True:
        time.sleep(0.2)
        _write()


def read(folder: Path) -> list[tuple[int, str, int, str, float]]:
    """Every stamp written to `folder` by the processes probed: (pid, station, seq, where,
    seconds)."""
    stamps = []
    for path in sorted(folder.glob("*.tsv")):
        pid = int(path.stem)
        for line in path.read_text().splitlines():
            station, seq, where, at = line.split("\t")
            stamps.append((pid, station, int(seq), where, float(at)))
    return stamps


if ON:
    Path(_FOLDER).mkdir(parents=True, exist_ok=True)
    threading.Thread(target=_writer, name="probe", daemon=True).start()
    atexit.register(_write)
