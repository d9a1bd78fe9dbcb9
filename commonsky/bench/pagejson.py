"""`python -m commonsky.bench.pagejson`: the map page's JSON of one airspace drawing, its
drawing read again (as before the hub handed the desk's reading over) against the
deconfliction desk's reading handed over (`hub/pagejson.py`), alternating in one run.

Timed with `timeit`: the best of 5 repeats of 2,000 calls, per call, for a 32-vertex polygon
volume and a 4-vertex one; `geometry` alone and the whole `item_json`.
"""

from __future__ import annotations

import math
import timeit
from collections.abc import Callable

from commonsky.desks.drawings import airspace_from_cot
from commonsky.hub.pagejson import airspace_geometry
from commonsky.hub.render import item_json
from commonsky.model import Category, CotEvent, Item, Point

NOW = 1_800_000_000.0


def drawing_event(vertices: int) -> CotEvent:
    """A polygon volume of `vertices` corners (a regular one, radius 0.3°) as TAK draws it."""
    ring = [
        (38.0 + 0.3 * math.cos(2 * math.pi * i / vertices),
         34.0 + 0.3 * math.sin(2 * math.pi * i / vertices))
        for i in range(vertices)
    ]  # fmt: skip
    ring.append(ring[0])
    links = "".join(f'<link point="{lat},{lon}"/>' for lon, lat in ring)
    ext = (
        f'<csky_airspace kind="strike-area" floor_m="3000" ceiling_m="9000" start="{NOW}"'
        f' end="{NOW + 7200}"/>'
    )
    detail = links + ext + "<remarks>r</remarks>"
    return CotEvent("u1", "u-d-f", NOW, NOW, NOW + 7200, "h-e", Point(34.0, 38.0), detail)


def cases(vertices: int) -> list[tuple[str, Callable[[], object]]]:
    """The four timed calls for one drawing: (name, call)."""
    event = drawing_event(vertices)
    item = Item("USA", "u", Category.AIRSPACE, event, NOW)
    shape = airspace_from_cot(event)
    return [
        ("geometry, read again", lambda: airspace_geometry(event)),
        ("geometry, the desk's reading", lambda: airspace_geometry(event, shape)),
        ("item_json, read again", lambda: item_json(item, event)),
        ("item_json, the desk's reading", lambda: item_json(item, event, shape)),
    ]


def main(rounds: int = 3, number: int = 2000) -> None:
    for vertices in (32, 4):
        timed = cases(vertices)
        print(f"{vertices}-vertex polygon volume, µs per call (best of 5 x {number}):")
        for _ in range(rounds):  # alternating, so the machine's load falls on each alike
            figures = [
                min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6
                for _, call in timed
            ]
            line = "; ".join(f"{n} {f:.1f}" for (n, _), f in zip(timed, figures, strict=True))
            print("  " + line)


if __name__ == "__main__":
    main()
