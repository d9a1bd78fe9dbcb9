"""Scenarios are data: parties, agreements, participants and a timeline, plus expected outcomes.

A scenario file (TOML) is decoded once into these typed structs (msgspec: errors carry the
path, e.g. `$.track[2].path[0]`). Times are scenario seconds from the start; `--speed`
compresses them. Coordinates are `lat, lon` in track paths (as CoT writes them) and
`[lon, lat]` in areas (as GeoJSON does) — the field names say which.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import msgspec

from commonsky.errors import UsageError

Transport = Literal["tcp", "tcp-proto", "tls", "tls-proto"]


class Party(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    name: str = ""


class Client(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    party: str
    transport: Transport = "tcp"
    callsign: str = ""


class TrackSpec(msgspec.Struct, forbid_unknown_fields=True):
    client: str
    uid: str
    type: str
    callsign: str
    path: list[tuple[float, float, float, float]]  # (t, lat, lon, alt_m)


class AirspaceSpec(msgspec.Struct, forbid_unknown_fields=True):
    at: float
    uid: str
    client: str = ""  # a TAK drawing from this client…
    api: str = ""  # …or GeoJSON through the HTTP API as this party
    item: Literal["volume", "line", "site"] = "volume"
    kind: str | None = None
    polygon: list[tuple[float, float]] | None = None  # [lon, lat]
    circle: tuple[float, float, float] | None = None  # lon, lat, radius_m
    line: list[tuple[float, float]] | None = None
    left_party: str = ""
    right_party: str = ""
    floor_m: float = 0.0
    ceiling_m: float = 15000.0
    start: float = 0.0
    end: float = 86400.0
    withdraw_at: float | None = None


class HotlineSpec(msgspec.Struct, forbid_unknown_fields=True):
    at: float
    to: str
    text: str
    client: str = ""  # GeoChat from this TAK client…
    api: str = ""  # …or through the API as this party
    ack_client: str = ""  # who acknowledges on the other side (a TAK read receipt)…
    ack_api: bool = False  # …or through the API
    ack_after_s: float = 30.0


class MissileSpec(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    lat: float
    lon: float
    azimuth_deg: float
    range_m: float
    apogee_m: float


class LaunchSpec(msgspec.Struct, forbid_unknown_fields=True):
    at: float
    party: str
    missile: str
    start_s: float
    end_s: float
    step_s: float = 10.0
    sigma_h_m: float = 500.0
    sigma_v_m: float = 400.0
    seed: int = 1


class PhotoSpec(msgspec.Struct, forbid_unknown_fields=True):
    """An aerial photograph a party publishes as evidence (rendered by the demo from the
    scenario's own data: the tracks inside `box` are the dark spots), uploaded through the
    Marti API with `client`'s certificate."""

    at: float
    client: str  # a TLS client of the scenario: its certificate uploads
    name: str
    box: tuple[float, float, float, float]  # west, south, east, north (degrees)
    captured: str  # RFC 3339: when it was "taken"
    form: Literal["geotiff", "jpeg"] = "geotiff"
    seed: int = 1


class CheckSpec(msgspec.Struct, forbid_unknown_fields=True):
    kind: str
    name: str
    party: str = ""
    parties: list[str] = []
    uid: str = ""
    other: str = ""
    region: str = ""
    value: float = 0.0
    text: str = ""


class Scenario(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    title: str
    duration_s: float
    party: list[Party]
    agreement: list[dict[str, Any]]
    client: list[Client]
    tick_s: float = 5.0
    track: list[TrackSpec] = []
    airspace: list[AirspaceSpec] = []
    hotline: list[HotlineSpec] = []
    missile: list[MissileSpec] = []
    launch: list[LaunchSpec] = []
    photo: list[PhotoSpec] = []
    check: list[CheckSpec] = []

    def extent(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees around everything the scenario places:
        track paths, airspace, missiles from launch to impact — what its screenshots and
        the demo's map links are framed on."""
        from commonsky.geo import destination

        points: list[tuple[float, float]] = []  # (lon, lat)
        for track in self.track:
            points.extend((lon, lat) for _, lat, lon, _ in track.path)
        for area in self.airspace:
            points.extend(area.polygon or [])
            points.extend(area.line or [])
            if area.circle:
                lon, lat, radius = area.circle
                for azimuth in (0.0, 90.0, 180.0, 270.0):
                    points.append(destination(lon, lat, azimuth, radius))
        for missile in self.missile:
            points.append((missile.lon, missile.lat))
            points.append(
                destination(missile.lon, missile.lat, missile.azimuth_deg, missile.range_m)
            )
        if not points:
            return (-180.0, -60.0, 180.0, 75.0)
        lons, lats = [p[0] for p in points], [p[1] for p in points]
        return (min(lons), min(lats), max(lons), max(lats))


BUILT_IN = ("syria", "korea", "ukraine")


def load(name_or_path: str) -> Scenario:
    if name_or_path in BUILT_IN:
        text = resources.files("commonsky.demo.scenarios").joinpath(f"{name_or_path}.toml")
        raw = text.read_bytes()
        where = f"scenario {name_or_path}"
    else:
        try:
            raw = Path(name_or_path).read_bytes()
        except OSError as exc:
            raise UsageError(f"{name_or_path}: cannot read scenario: {exc.strerror}") from None
        where = name_or_path
    try:
        data = tomllib.loads(raw.decode("utf-8"))
        return msgspec.convert(data, Scenario)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{where}: invalid TOML: {exc}") from None
    except msgspec.ValidationError as exc:
        raise UsageError(f"{where}: {exc}") from None
