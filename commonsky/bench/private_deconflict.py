"""`commonsky bench private-deconflict`: what a private round costs beside a plain exchange.

For each size N, two hubs each hold N cells (tokens in the shape the cells make:
`v:<h3 cell>:<band>:<slot>`), `--overlap` of them shared. The private round is the real one
(round.py: commitments, ECDH-PSI both ways through openmined-psi, bytes carried in memory);
its time is the compute of both sides, serialised in this one process, and each side's own
share is shown. Beside it, in the same run, the plain exchange of the same cells that a
trusting pair would do: each side sends its sorted cells (msgpack) and intersects. Bytes are
what each side puts on the wire (whole messages). The machine's load and CPU steal are
printed with the figures: on a shared 2-core machine they move the times, not the bytes.
"""

from __future__ import annotations

import os
import random
import time
from typing import Annotated

import msgspec
import typer

from commonsky.errors import UsageError, finite_flags

T0 = 1_800_000_000.0


def _tokens(n: int, shared: int, seed: int) -> tuple[list[str], list[str]]:
    import h3

    # Enough H3 cells at level 6 around Palmyra for both sets (x 4 bands x 2 slots).
    need = (2 * n - shared) // 8 + 2
    k = 1
    while 3 * k * (k + 1) + 1 < need:
        k += 1
    cells = sorted(h3.grid_disk(h3.latlng_to_cell(34.55, 38.27, 6), k))
    every = [f"v:{c}:{b}:{s}" for c in cells for b in range(2, 6) for s in (3_000_000, 3_000_001)]
    random.Random(seed).shuffle(every)
    a = every[:n]
    b = a[:shared] + every[n : 2 * n - shared]
    return a, b


def _private(a: list[str], b: list[str]) -> dict[str, float]:
    from commonsky.privdeconf.cells import CellSet
    from commonsky.privdeconf.round import PrivateRound, Role
    from commonsky.privdeconf.terms import Terms

    terms = Terms(max_cells=max(len(a), len(b)), min_interval_s=0)
    spent = {"initiator": 0.0, "responder": 0.0}

    def side(role: Role, mine: list[str], peer: str) -> PrivateRound:
        return PrivateRound(
            role=role,
            terms=terms,
            holdings=[],
            peer=peer,
            peer_parties=[peer],
            secret=os.urandom(32),
            now=T0,
            cells=CellSet([], frozenset(mine)),
        )

    ini, res = side("initiator", a, "B"), side("responder", b, "A")
    began = time.perf_counter()
    t = time.perf_counter()
    inbox = [ini.open()]
    spent["initiator"] += time.perf_counter() - t
    to_res = True
    while inbox:
        who = res if to_res else ini
        out: list[bytes] = []
        for data in inbox:
            t = time.perf_counter()
            out += who.receive(data)
            spent[who.role] += time.perf_counter() - t
        inbox, to_res = out, not to_res
    total = time.perf_counter() - began
    assert ini.result is not None and res.result is not None, (ini.figures, res.figures)
    fi, fr = ini.result.figures, res.result.figures
    return {
        "s": total,
        "ini_s": spent["initiator"],
        "res_s": spent["responder"],
        "a_sent": fi.bytes_sent,
        "b_sent": fr.bytes_sent,
        "a_psi": fi.psi_bytes_sent,
        "b_psi": fr.psi_bytes_sent,
        "found_a": fi.intersection,
        "found_b": fr.intersection,
    }


def _plain(a: list[str], b: list[str]) -> dict[str, float]:
    encode, decode = msgspec.msgpack.encode, msgspec.msgpack.Decoder(list[str]).decode
    began = time.perf_counter()
    wire_a, wire_b = encode(sorted(a)), encode(sorted(b))
    found_a = len(set(a) & set(decode(wire_b)))
    found_b = len(set(b) & set(decode(wire_a)))
    return {
        "s": time.perf_counter() - began,
        "a_sent": len(wire_a),
        "b_sent": len(wire_b),
        "found_a": found_a,
        "found_b": found_b,
    }


def bench(
    cells: Annotated[
        str, typer.Option(help="Cells each side holds, one round per size (comma-separated).")
    ] = "1000,10000",
    overlap: Annotated[float, typer.Option(help="Share of the cells both sides hold.")] = 0.1,
) -> None:
    """Private round (ECDH-PSI both ways) vs plain exchange: time and bytes on the wire."""
    from commonsky.bench.machine import steal
    from commonsky.privdeconf import psi

    try:
        sizes = [int(x) for x in cells.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--cells {cells!r} is not a comma-separated list of counts") from None
    finite_flags(overlap=overlap)
    if not sizes or min(sizes) <= 0 or not 0.0 <= overlap <= 1.0:
        raise UsageError("--cells must be counts > 0 and --overlap between 0 and 1")
    if not psi.available():
        raise UsageError(f"commonsky bench private-deconflict needs openmined-psi: {psi.INSTALL}")
    load = os.getloadavg()
    print(
        f"bench private-deconflict: openmined-psi ECDH-PSI (P-256, GCS setup, fpr {psi.FPR:g}) "
        f"both ways, {overlap:.0%} of the cells shared; load average {load[0]:.1f} "
        f"(1 min) on {os.cpu_count()} cores before the run"
    )
    with steal() as stolen:
        for n in sizes:
            a, b = _tokens(n, int(n * overlap), n)
            p, q = _private(a, b), _plain(a, b)
            print(
                f"  {n} cells each side: private round {p['s']:.2f} s of compute (initiator "
                f"{p['ini_s']:.2f} s, responder {p['res_s']:.2f} s), on the wire "
                f"{p['a_sent'] / 1024:.0f} KiB + {p['b_sent'] / 1024:.0f} KiB "
                f"(PSI {p['a_psi'] / 1024:.0f} + {p['b_psi'] / 1024:.0f} KiB); "
                f"each learns {p['found_a']:.0f} / {p['found_b']:.0f} shared"
            )
            print(
                f"  {'':{len(str(n))}} plain exchange of the same cells: {q['s'] * 1000:.1f} ms, "
                f"{q['a_sent'] / 1024:.0f} KiB + {q['b_sent'] / 1024:.0f} KiB; "
                f"{q['found_a']:.0f} / {q['found_b']:.0f} shared; private/plain bytes "
                f"{(p['a_sent'] + p['b_sent']) / (q['a_sent'] + q['b_sent']):.1f}x"
            )
    load = os.getloadavg()
    print(f"  load average {load[0]:.1f} (1 min) after the run; {stolen.describe()}")
