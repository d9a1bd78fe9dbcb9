# Rule: a region is warned only when a threat's predicted area actually touches it. Regions are
# polygons from GeoJSON (ids are the operator's, e.g. ISO 3166-2), and the only questions asked
# of them are geometric: "does this impact ellipse touch you?" and "does this path corridor
# reach you, and when first?". A missile whose predicted path stays over the sea away from a
# prefecture must not warn it (the J-Alert false alarm of November 2022).
#
# The built-in `regions.geojson` is hand-drawn and APPROXIMATE (see its `_comment`): fine for
# exercises and tests, to be replaced by an authoritative file via `RegionRegistry.load`.

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt
from shapely import STRtree, prepare
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from commonsky.errors import UsageError
from commonsky.geo import corridor_pieces


class _Polygon(msgspec.Struct, tag_field="type", tag="Polygon"):
    coordinates: list[list[list[float]]]


class _MultiPolygon(msgspec.Struct, tag_field="type", tag="MultiPolygon"):
    coordinates: list[list[list[list[float]]]]


class _Props(msgspec.Struct, forbid_unknown_fields=False):
    id: str
    name: str
    kind: str
    country: str = ""


class _Feature(msgspec.Struct, forbid_unknown_fields=False):
    type: Literal["Feature"]
    properties: _Props
    geometry: _Polygon | _MultiPolygon


class _Collection(msgspec.Struct, forbid_unknown_fields=False):
    type: Literal["FeatureCollection"]
    features: list[_Feature]


class Region:
    """One warnable area: id (geocode value), name, kind (prefecture, province, oblast, ...)."""

    __slots__ = ("country", "geometry", "id", "kind", "name")

    def __init__(self, id: str, name: str, kind: str, country: str, geometry: BaseGeometry) -> None:
        self.id = id
        self.name = name
        self.kind = kind
        self.country = country
        self.geometry = geometry
        prepare(geometry)

    def __repr__(self) -> str:
        return f"Region({self.id!r}, {self.name!r}, {self.kind!r})"

    def outlines(self) -> list[list[tuple[float, float]]]:
        """Exterior rings as closed (lat, lon) lists — the CAP polygon order."""
        polys = self.geometry.geoms if isinstance(self.geometry, MultiPolygon) else [self.geometry]
        return [[(lat, lon) for lon, lat in p.exterior.coords] for p in polys]


def _polygon(rings: list[list[list[float]]], where: str) -> Polygon:
    if not rings or any(len(r) < 4 for r in rings):
        raise UsageError(f"{where}: a polygon ring needs at least 4 positions")
    for ring in rings:
        for pos in ring:
            if len(pos) < 2 or not (-180 <= pos[0] <= 180 and -90 <= pos[1] <= 90):
                raise UsageError(f"{where}: position {pos} is not [lon, lat]")
    return Polygon(rings[0], holes=rings[1:])


def _feature_geometry(f: _Feature, where: str) -> BaseGeometry:
    g = f.geometry
    try:
        if isinstance(g, _Polygon):
            geom: BaseGeometry = _polygon(g.coordinates, where)
        else:
            geom = MultiPolygon([_polygon(p, where) for p in g.coordinates])
    except (TypeError, ValueError, IndexError) as exc:
        raise UsageError(f"{where}: bad coordinates ({exc})") from None
    if not geom.is_valid:
        raise UsageError(f"{where}: invalid geometry: {explain_validity(geom)}")
    return geom


class RegionRegistry:
    """The regions a warning engine may address, looked up by id or by geometry."""

    def __init__(self, regions: Sequence[Region]) -> None:
        self._by_id: dict[str, Region] = {}
        for r in regions:
            if r.id in self._by_id:
                raise UsageError(f"duplicate region id {r.id!r}")
            self._by_id[r.id] = r
        # Indexed in id order, so a tree index is also a position in id order.
        self._sorted = [self._by_id[k] for k in sorted(self._by_id)]
        self._tree = STRtree([r.geometry for r in self._sorted])

    @classmethod
    def from_geojson(cls, data: bytes, source: str = "<geojson>") -> RegionRegistry:
        try:
            fc = msgspec.json.decode(data, type=_Collection)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise UsageError(f"{source}: {exc}") from None
        regions = []
        for i, f in enumerate(fc.features):
            where = f"{source}: features[{i}] ({f.properties.id!r})"
            if not f.properties.id.strip():
                raise UsageError(f"{where}: empty id")
            regions.append(
                Region(
                    f.properties.id,
                    f.properties.name,
                    f.properties.kind,
                    f.properties.country,
                    _feature_geometry(f, where),
                )
            )
        return cls(regions)

    @classmethod
    def load(cls, path: str | Path) -> RegionRegistry:
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise UsageError(f"{p}: cannot read region file ({exc.strerror})") from None
        return cls.from_geojson(data, str(p))

    @classmethod
    def builtin(cls) -> RegionRegistry:
        data = importlib.resources.files("commonsky.alerts").joinpath("regions.geojson")
        return cls.from_geojson(data.read_bytes(), "regions.geojson")

    def __iter__(self) -> Iterator[Region]:
        return iter(self._sorted)

    def __len__(self) -> int:
        return len(self._by_id)

    def __getitem__(self, region_id: str) -> Region:
        return self._by_id[region_id]

    def touched_by(self, area: BaseGeometry) -> list[Region]:
        """Regions whose polygon intersects `area` (lon/lat), sorted by id."""
        hits = self._tree.query(area, predicate="intersects")
        return [self._sorted[i] for i in sorted(int(i) for i in hits)]

    def along_path(
        self, path: Sequence[tuple[datetime, float, float, float]]
    ) -> list[tuple[Region, datetime]]:
        """Regions reached by a corridor along `path` and the first time each is reached.

        `path` is (time, lat, lon, half-width m) samples in time order; between samples the
        corridor is the hull of the two discs. Sorted by time of reach, then id.
        """
        return [(self._sorted[i], path[first][0]) for i, first, _last in self.reached(path)]

    def reached(
        self, path: Sequence[tuple[datetime, float, float, float]]
    ) -> list[tuple[int, int, int]]:
        """(region index, first piece, last piece) for each region the corridor along `path`
        touches, sorted by first piece then id; piece i spans path[i] to path[i + 1]."""
        if not path:
            return []
        pieces = corridor_pieces([p[2] for p in path], [p[1] for p in path], [p[3] for p in path])
        return self.reached_by(pieces)

    def reached_by(self, pieces: npt.NDArray[np.object_]) -> list[tuple[int, int, int]]:
        """`reached` for corridor pieces already built (one corridor, many registries)."""
        piece_idx, region_idx = self._tree.query(pieces, predicate="intersects")
        span: dict[int, tuple[int, int]] = {}
        for piece, region in zip(piece_idx.tolist(), region_idx.tolist(), strict=True):
            lo, hi = span.get(region, (piece, piece))
            span[region] = (min(lo, piece), max(hi, piece))
        return sorted(((r, lo, hi) for r, (lo, hi) in span.items()), key=lambda x: (x[1], x[0]))

    def region_at(self, index: int) -> Region:
        """The region `reached` calls `index`."""
        return self._sorted[index]
