"""Deconfliction: airspace items, their conflicts, and the notices each party may receive.

Everything here is pure (no sockets, time passed in); the hub owns I/O and who sees what.
Layers, lowest first: `shapes` (typed, checked airspace items) and `formats` (GeoJSON and KML
to items) over `commonsky.geo`; `cpa` (closest point of approach); `records`, `tracks`,
`index` and `table` (the engine's parts, handed a `PairRules` rather than the engine);
`engine` (incremental detection); `notice` (what one party is told of a conflict).
"""

from __future__ import annotations

from commonsky.deconflict.engine import ConflictEngine
from commonsky.deconflict.formats import item_from, parse_geojson, parse_kml
from commonsky.deconflict.notice import Notice, notice_for
from commonsky.deconflict.records import (
    LINE_REACH_M,
    Conflict,
    ConflictChange,
    ConflictKind,
    PairRules,
    Side,
    Track,
)
from commonsky.deconflict.shapes import (
    Circle,
    Corridor,
    GeometryError,
    Item,
    Line,
    Point,
    Polygon,
    Shape,
    Site,
    TooManyFeatures,
    Volume,
    flight_level,
)

__all__ = [
    "LINE_REACH_M",
    "Circle",
    "Conflict",
    "ConflictChange",
    "ConflictEngine",
    "ConflictKind",
    "Corridor",
    "GeometryError",
    "Item",
    "Line",
    "Notice",
    "PairRules",
    "Point",
    "Polygon",
    "Shape",
    "Side",
    "Site",
    "TooManyFeatures",
    "Track",
    "Volume",
    "flight_level",
    "item_from",
    "notice_for",
    "parse_geojson",
    "parse_kml",
]
