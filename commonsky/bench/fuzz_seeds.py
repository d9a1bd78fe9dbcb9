"""The seeds `commonsky bench fuzz` mutates (fuzz_inputs.py): real TAK traffic and our own
message kinds.

Seeds are real TAK traffic (a corpus folder of one `<event>` per `.xml` file, its times moved
to now by one offset, as a client replaying it would) and our own message kinds: hotline
GeoChat and read receipts, airspace drawings (polygon, rectangle, circle, route, site) with
the `csky_airspace` extension, launch reports (`b-l-r` carrying JSON), own and hostile tracks,
deletes and pings; for the API (`ApiSeeds`) the same kinds as JSON (GeoJSON, KML, launch
reports).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree

from commonsky.protocol.cot import parse_time
from commonsky.times import format_time

PARTIES = ("USA", "JPN", "KOR", "RUS")
# DTDs, entities and the network refused: seeds and mutations are hostile by design.
PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def stamp(epoch: float) -> str:
    return format_time(epoch)


def _event(
    uid: str,
    cot_type: str,
    now: float,
    stale_s: float,
    detail: str,
    lat: float = 30.5,
    lon: float = 30.5,
    hae: float = 1000.0,
) -> bytes:
    return (
        f'<event version="2.0" uid="{uid}" type="{cot_type}" time="{stamp(now)}" '
        f'start="{stamp(now)}" stale="{stamp(now + stale_s)}" how="m-g">'
        f'<point lat="{lat}" lon="{lon}" hae="{hae}" ce="10" le="10"/>'
        f"<detail>{detail}</detail></event>"
    ).encode()


def launch_report(now: float, report_id: str, party: str = "USA") -> dict[str, Any]:
    """A valid launch report (as JSON) for a launch 200 s before `now`."""
    from datetime import UTC, datetime, timedelta

    import msgspec
    import numpy as np

    from commonsky.alerts.simulate import Ballistic, radar_report

    t0 = datetime.fromtimestamp(now, UTC) - timedelta(seconds=200)
    truth = Ballistic(39.0, 125.7, t0, 80.0, 1e6, 5e5)
    rng = np.random.default_rng(len(report_id))
    report = radar_report(truth, party, report_id, 30, 150, 10, 300.0, 300.0, rng)
    raw: dict[str, Any] = msgspec.to_builtins(report)
    return raw


def own_seeds(now: float) -> list[bytes]:
    """Our message kinds as CoT XML."""
    ring = "".join(
        f'<link point="{la},{lo}"/>'
        for lo, la in ((30, 30), (30.4, 30), (30.4, 30.4), (30, 30.4), (30, 30))
    )
    ext = f'<csky_airspace floor_m="0" ceiling_m="9000" start="{now}" end="{now + 600}"/>'
    report = json.dumps(launch_report(now, "fz-r1"))
    return [
        _event(
            "GeoChat.fz-1",
            "b-t-f",
            now,
            600,
            '<__chat chatroom="hotline" '
            'senderCallsign="OPS"/><marti><dest party="RUS"/></marti><remarks>hi</remarks>',
        ),
        _event(
            "fz-ack",
            "b-t-f-r",
            now,
            60,
            '<__chatreceipt messageId="USA::GeoChat.fz-1"/>'
            '<link uid="USA::GeoChat.fz-1" relation="p-p"/>',
        ),
        _event("fz-area", "u-d-f", now, 600, ring + ext),
        _event("fz-rect", "u-d-r", now, 600, ring.replace('<link point="30,30"/>', "", 1)),
        _event(
            "fz-circle",
            "u-d-c-c",
            now,
            600,
            '<shape><ellipse major="5000" minor="5000"/></shape>' + ext,
        ),
        _event("fz-route", "b-m-r", now, 600, '<link point="30,30"/><link point="31,31"/>'),
        _event("fz-site", "u-d-p", now, 600, '<csky_airspace item="site" radius_m="3000"/>'),
        _event(
            "fz-line",
            "u-d-f",
            now,
            600,
            '<link point="29,29"/><link point="32,32"/>'
            '<csky_airspace item="line" left_party="USA" right_party="RUS"/>',
        ),
        _event("fz-report", "b-l-r", now, 600, f"<csky_launch>{report}</csky_launch>"),
        _event(
            "fz-f16",
            "a-f-A-M-F",
            now,
            120,
            '<contact callsign="VIPER"/><track speed="230" course="90"/>',
            hae=9000.0,
        ),
        _event(
            "fz-missile",
            "a-h-A-W-M-S-B",
            now,
            120,
            '<track speed="2000" course="120"/>',
            lat=38.0,
            lon=126.0,
            hae=50000.0,
        ),
        _event("fz-f16", "t-x-d-d", now, 10, '<link uid="fz-f16" relation="p-p"/>'),
        _event("ping", "t-x-c-t", now, 10, ""),
    ]


_TIME_NAMES = ("time", "start", "stale")


def corpus_seeds(folder: Path, now: float) -> list[bytes]:
    """The corpus' events with their times moved to now by one offset each."""
    out = []
    for path in sorted(folder.glob("*.xml")):
        data = path.read_bytes()
        try:
            root = etree.fromstring(data, PARSER)
            times = {n: parse_time(root.get(n) or root.get("time"), n) for n in _TIME_NAMES}
        except Exception:  # the corpus' oddities are kept as seeds for byte mutations anyway
            out.append(data)
            continue
        shift = now - times["time"]
        for name, value in times.items():
            root.set(name, stamp(max(0.0, value + shift)))
        if not str(root.get("type", "")).startswith("b-t-f"):  # chats keep theirs
            root.set("uid", f"fz-c{len(out) % 8}")  # few uids (see UIDS)
        out.append(etree.tostring(root))
    return out


@dataclass
class ApiSeeds:
    geojson: list[dict[str, Any]]
    kml: bytes
    report: dict[str, Any]

    @classmethod
    def make(cls, now: float) -> ApiSeeds:
        def polygon(uid: str, lon: float, **props: Any) -> dict[str, Any]:
            ring = [[lon, 30], [lon + 0.3, 30], [lon + 0.3, 30.3], [lon, 30.3], [lon, 30]]
            return {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "uid": uid,
                    "floor_m": 0,
                    "ceiling_m": 9000,
                    "start": now,
                    "end": now + 600,
                    **props,
                },
            }

        site = {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [30.1, 30.1]},
            "properties": {"uid": "fz-api-site", "item": "site", "radius_m": 2000},
        }
        line = {
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": [[29, 29], [31, 31]]},
            "properties": {
                "uid": "fz-api-line",
                "item": "line",
                "left_party": "USA",
                "right_party": "RUS",
            },
        }
        collection = {
            "type": "FeatureCollection",
            "features": [polygon(f"fz-api-{i}", 30 + i * 0.1) for i in range(3)],
        }
        kml = (
            '<kml xmlns="http://www.opengis.net/kml/2.2"><Document><Placemark><name>fz</name>'
            "<Polygon><outerBoundaryIs><LinearRing><coordinates>30,30 30.2,30 30.2,30.2 30,30.2 "
            "30,30</coordinates></LinearRing></outerBoundaryIs></Polygon><ExtendedData>"
            '<Data name="floor_fl"><value>0</value></Data><Data name="ceiling_fl"><value>100'
            f'</value></Data><Data name="end"><value>{now + 600}</value></Data><Data name="start">'
            f"<value>{now}</value></Data></ExtendedData></Placemark></Document></kml>"
        ).encode()
        return cls(
            [polygon("fz-api-v", 30.0, kind="strike-area"), site, line, collection],
            kml,
            launch_report(now, "fz-api-r"),
        )
