"""An in-memory hub with every desk, a fake clock and one recording connection per party."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from commonsky.config import config_from_dict
from commonsky.hub.connection import MemoryPeer
from commonsky.hub.core import Connection, Hub
from commonsky.hub.outbox import Outbox
from commonsky.model import CotEvent, Point
from commonsky.policy import Policy
from commonsky.protocol.cot import parse_event
from commonsky.services import Services
from commonsky.store.sqlite import SQLiteStore

T0 = 1_800_000_000.0


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    hub: Hub
    services: Services
    clock: Clock
    outboxes: dict[str, Outbox]
    conns: dict[str, Connection]
    received: dict[str, list[CotEvent]] = field(default_factory=dict)

    def take(self, party: str) -> list[CotEvent]:
        """Everything delivered to `party` since the last call, decoded from the wire bytes."""
        out = [parse_event(p.rendered.wire(p.variant, "xml")) for p in self.outboxes[party].take()]
        self.received.setdefault(party, []).extend(out)
        return out

    def send(self, party: str, event: CotEvent) -> Any:
        return self.hub.accept(party, f"{party}-client", event, self.conns[party])


def make_world(
    tmp_path: Path,
    agreements: list[dict[str, Any]],
    parties: tuple[str, ...] = ("USA", "RUS", "JPN", "KOR"),
    server: dict[str, Any] | None = None,
    countries: dict[str, str] | None = None,
    now: float = T0,
    live_follows: bool = False,
) -> World:
    """`live_follows`: a cluster core's takeover, live items restored next (`Hub.restored`)."""
    config = config_from_dict(
        {
            "server": {"data_dir": str(tmp_path), **(server or {})},
            "party": [
                {"id": p, **({"country": countries[p]} if p in (countries or {}) else {})}
                for p in parties
            ],
            "agreement": agreements,
        }
    )
    clock = Clock(now)
    store = SQLiteStore(tmp_path)
    hub = Hub(
        Policy(config.parties, config.agreements), store, config.settings, b"s" * 32, clock=clock
    )
    services = Services.build(hub, tmp_path, live_follows=live_follows)
    outboxes, conns = {}, {}
    for party in parties:
        outboxes[party] = Outbox(10_000, 10_000)
        conns[party] = Connection(
            party,
            f"{party}-client",
            "test",
            outboxes[party],
            MemoryPeer(),
            id=f"conn-{party}",
        )
        hub.attach(conns[party])
    return World(hub, services, clock, outboxes, conns)


def event(
    uid: str,
    cot_type: str,
    lat: float = 35.0,
    lon: float = 38.0,
    detail: str = "",
    stale_s: float = 600.0,
    now: float = T0,
    hae: float = 9999999.0,
    speed: float | None = None,
    course: float | None = None,
) -> CotEvent:
    extra = ""
    if speed is not None and course is not None:
        extra = f'<track speed="{speed}" course="{course}"/>'
    text = (
        f'<event version="2.0" uid="{uid}" type="{cot_type}" time="{_t(now)}" start="{_t(now)}"'
        f' stale="{_t(now + stale_s)}" how="m-g"><point lat="{lat}" lon="{lon}" hae="{hae}"'
        f' ce="10" le="10"/><detail>{detail}{extra}</detail></event>'
    )
    return parse_event(text.encode())


def _t(epoch: float) -> str:
    from commonsky.times import format_time

    return format_time(epoch)


def chat(uid: str, text: str, to: str, now: float = T0) -> CotEvent:
    return event(
        uid,
        "b-t-f",
        detail=f'<__chat chatroom="hotline" senderCallsign="OPS"/>'
        f'<marti><dest party="{to}"/></marti><remarks>{text}</remarks>',
        stale_s=86400.0,
        now=now,
    )


def receipt(uid: str, message_id: str, now: float = T0) -> CotEvent:
    return event(
        uid,
        "b-t-f-r",
        detail=f'<__chatreceipt messageId="{message_id}"/>'
        f'<link uid="{message_id}" relation="p-p"/>',
        now=now,
    )


def square(lon: float, lat: float, size: float) -> list[tuple[float, float]]:
    return [(lon, lat), (lon + size, lat), (lon + size, lat + size), (lon, lat + size), (lon, lat)]


def drawing(
    uid: str,
    ring: list[tuple[float, float]],
    floor_m: float = 0.0,
    ceiling_m: float = 10000.0,
    kind: str = "operating-area",
    now: float = T0,
    stale_s: float = 7200.0,
) -> CotEvent:
    links = "".join(f'<link point="{lat},{lon}"/>' for lon, lat in ring)
    ext = (
        f'<csky_airspace kind="{kind}" floor_m="{floor_m}" ceiling_m="{ceiling_m}"'
        f' start="{now}" end="{now + stale_s}"/>'
    )
    return event(
        uid, "u-d-f", lat=ring[0][1], lon=ring[0][0], detail=links + ext, now=now, stale_s=stale_s
    )


def site(uid: str, lon: float, lat: float, radius_m: float, now: float = T0) -> CotEvent:
    return event(
        uid,
        "u-d-p",
        lat=lat,
        lon=lon,
        detail=f'<csky_airspace item="site" radius_m="{radius_m}"/>',
        now=now,
        stale_s=86400.0,
    )


__all__ = [
    "T0",
    "Clock",
    "Point",
    "World",
    "chat",
    "drawing",
    "event",
    "make_world",
    "receipt",
    "site",
    "square",
]
