"""Play scenarios through one real hub: real listeners, real clients, the real HTTP API.

All scenarios share one hub (as an exercise would): their parties and agreements are merged
into one configuration, each party gets a TAK listener (and TLS certificates when its
clients use TLS) and an API token. Every scenario then plays its own timeline at `speed`
times real time, and its checks are judged from what the clients received and what the hub
recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import math
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec

from commonsky import times
from commonsky.alerts.simulate import Ballistic, radar_report
from commonsky.config import HubConfig, config_from_dict
from commonsky.demo.clients import SimClient, tls_context
from commonsky.demo.clock import ScenarioClock
from commonsky.demo.scenario import AirspaceSpec, HotlineSpec, PhotoSpec, Scenario, TrackSpec
from commonsky.geo import GEOD
from commonsky.hub.datadir import private_dir
from commonsky.model import CotEvent, Point
from commonsky.pki import init_ca, issue_client
from commonsky.protocol.cot import new_event, quote
from commonsky.server import HubServer

log = logging.getLogger("commonsky.demo")
THREAD_ACK_AFTER_S = 20.0


@dataclass
class Played:
    """What happened while a scenario played, for the checks and the summary."""

    scenario: Scenario
    sent_tracks: dict[tuple[str, float], float] = field(default_factory=dict)  # (uid, t) -> wall
    items_sent: int = 0
    report_posts: list[float] = field(default_factory=list)
    api_errors: list[str] = field(default_factory=list)
    photos: list[tuple[str, str, str]] = field(default_factory=list)  # (party, name, sha256)
    finished: bool = False


class Runner:
    def __init__(self, scenarios: list[Scenario], data_dir: Path, http: str, speed: float) -> None:
        self.scenarios = scenarios
        self.data_dir = data_dir
        self.http = http
        self.speed = speed
        self.tokens: dict[str, str] = {}
        self.clients: dict[str, SimClient] = {}
        self.played: dict[str, Played] = {s.name: Played(s) for s in scenarios}
        self.server: HubServer | None = None
        self.clock = ScenarioClock(speed)
        self.start_wall = 0.0  # scenario time 0, on the scenario clock
        self._acked_threads: set[tuple[str, str]] = set()
        self.api: httpx.AsyncClient | None = None
        self.ready = asyncio.Event()  # the hub serves and every participant is connected

    # ---- set-up -------------------------------------------------------------------------

    def config(self) -> HubConfig:
        return config_from_dict(self.config_data(), "demo scenarios")

    def config_data(self) -> dict[str, Any]:
        """The hub configuration as data (a federated run splits it between hubs)."""
        parties: dict[str, dict[str, Any]] = {}
        agreements: list[dict[str, Any]] = []
        for scenario in self.scenarios:
            for party in scenario.party:
                self.tokens.setdefault(party.id, secrets.token_urlsafe(18))
                parties.setdefault(
                    party.id,
                    {
                        "id": party.id,
                        "name": party.name or party.id,
                        "token": self.tokens[party.id],
                    },
                )
            for agreement in scenario.agreement:
                entry = dict(agreement, name=f"{scenario.name}: {agreement['name']}")
                # Scenario-relative validity (`valid_from_s`) becomes wall-clock time.
                for key in ("valid_from", "valid_until"):
                    relative = entry.pop(f"{key}_s", None)
                    if relative is not None:
                        entry[key] = datetime.fromtimestamp(self.wall(relative), UTC)
                agreements.append(entry)
        listeners: list[dict[str, Any]] = [
            {"kind": "tak-tcp", "bind": "127.0.0.1:0", "party": p} for p in parties
        ]
        listeners.append(
            {"kind": "tak-tls", "bind": "127.0.0.1:0", "ca": str(self.data_dir / "ca")}
        )
        if any(s.photo for s in self.scenarios):  # evidence goes up through the Marti API
            listeners.append(
                {"kind": "marti", "bind": "127.0.0.1:0", "ca": str(self.data_dir / "ca")}
            )
        return {
            "server": {
                "data_dir": str(self.data_dir / "hub"),
                "http": self.http,
                "timeout_checkpoint_s": 10.0,
            },
            "listener": listeners,
            "party": list(parties.values()),
            "agreement": agreements,
        }

    def _pki(self) -> None:
        ca = self.data_dir / "ca"
        if not (ca / "ca.pem").exists():
            private_dir(ca)  # the CA's private key and the clients' keys live under it
            init_ca(ca)
        for scenario in self.scenarios:
            for client in scenario.client:
                if client.transport.startswith("tls"):
                    out = ca / "clients" / client.party
                    if not (out / f"{client.id}.pem").exists():
                        issue_client(ca, client.party, client.id, out)

    async def connect(self) -> None:
        assert self.server is not None
        ca = self.data_dir / "ca"
        for scenario in self.scenarios:
            for spec in scenario.client:
                client = SimClient(spec.id, spec.party, spec.transport)
                if spec.transport.startswith("tls"):
                    context = tls_context(ca, ca / "clients" / spec.party, spec.id)
                    await client.open(self.server.port("tak-tls"), context)
                else:
                    port = next(
                        ln.port for ln in self.server.listeners if ln.config.party == spec.party
                    )
                    await client.open(port, None)
                client.listeners.append(self._maybe_ack_thread)
                client.clock = self.clock
                self.clients[spec.id] = client

    # ---- the run ------------------------------------------------------------------------

    async def run(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._pki()
        # Scenario time 0 is fixed before the configuration is built, because agreements
        # may name scenario-relative validity windows; set-up happens inside the lead time.
        self.start_wall = self.clock() + 3.0 * self.speed
        self.server = HubServer(self.config(), clock=self.clock)
        await self.server.start()
        await self.connect()
        self.api = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.server.http_port}", timeout=10
        )
        self.ready.set()
        await asyncio.gather(*(self.play(s) for s in self.scenarios))

    def map_url(self) -> str:
        """The live map's address as a browser on this machine reaches it."""
        assert self.server is not None
        host = self.server.http_host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.server.http_port}/"

    async def stop(self) -> None:
        if self.api is not None:
            await self.api.aclose()
        for client in self.clients.values():
            await client.close()
        if self.server is not None:
            await self.server.stop()

    def wall(self, t: float) -> float:
        """Scenario second `t` on the scenario clock (which the hub runs on too)."""
        return self.start_wall + t

    async def sleep_until(self, t: float) -> None:
        await asyncio.sleep(self.clock.wall_delay(self.wall(t)))

    async def play(self, scenario: Scenario) -> None:
        played = self.played[scenario.name]
        steps: list[tuple[float, int, Any]] = []
        order = 0
        for track in scenario.track:
            first, last = track.path[0][0], track.path[-1][0]
            t = first
            while t <= last:
                steps.append((t, order, ("track", track)))
                order += 1
                t += scenario.tick_s
        for area in scenario.airspace:
            steps.append((area.at, order, ("airspace", area)))
            if area.withdraw_at is not None:
                steps.append((area.withdraw_at, order + 1, ("withdraw", area)))
            order += 2
        for message in scenario.hotline:
            steps.append((message.at, order, ("hotline", message)))
            order += 1
        for photo in scenario.photo:
            steps.append((photo.at, order, ("photo", photo)))
            order += 1
        launch_times = self._launch_times(scenario)
        for launch in scenario.launch:
            steps.append((launch.at, order, ("launch", launch)))
            order += 1
        for t, _, (kind, spec) in sorted(steps, key=lambda s: (s[0], s[1])):
            await self.sleep_until(t)
            try:
                if kind == "track":
                    self._send_track(played, spec, t)
                elif kind == "airspace":
                    await self._send_airspace(played, spec, withdraw=False)
                elif kind == "withdraw":
                    await self._send_airspace(played, spec, withdraw=True)
                elif kind == "hotline":
                    await self._send_hotline(played, spec)
                elif kind == "photo":
                    await self._send_photo(played, spec)
                else:
                    await self._send_launch(played, scenario, spec, launch_times[spec.missile])
            except (httpx.HTTPError, ConnectionError) as exc:
                played.api_errors.append(f"t={t:.0f} {kind}: {exc}")
        await self.sleep_until(scenario.duration_s)
        played.finished = True

    # ---- participants' actions ----------------------------------------------------------

    def _send_track(self, played: Played, spec: TrackSpec, t: float) -> None:
        lat, lon, alt, speed, course = interpolate(spec.path, t)
        now = self.clock()
        detail = (
            f'<contact callsign="{quote(spec.callsign)}"/>'
            f'<track speed="{speed:.1f}" course="{course:.1f}"/>'
        )
        event = CotEvent(
            uid=spec.uid,
            type=spec.type,
            time=now,
            start=now,
            stale=now + max(60.0, 6 * played.scenario.tick_s),
            how="m-g",
            point=Point(lat, lon, alt, 50.0, 50.0),
            detail=detail,
            callsign=spec.callsign,
        )
        self.clients[spec.client].send(event)
        played.sent_tracks[(spec.uid, round(now, 3))] = time.time()
        played.items_sent += 1

    async def _send_airspace(self, played: Played, spec: AirspaceSpec, withdraw: bool) -> None:
        played.items_sent += 1
        now = self.clock()
        props: dict[str, Any] = {"uid": spec.uid, "item": spec.item, "callsign": spec.uid}
        if spec.kind:
            props["kind"] = spec.kind
        if spec.item != "line":
            props.update(floor_m=spec.floor_m, ceiling_m=spec.ceiling_m)
        if spec.item == "volume":
            props.update(start=self.wall(spec.start), end=self.wall(spec.end))
        if spec.item == "line":
            props.update(left_party=spec.left_party, right_party=spec.right_party)
        geometry: dict[str, Any]
        if spec.polygon:
            geometry = {"type": "Polygon", "coordinates": [[list(p) for p in spec.polygon]]}
        elif spec.circle:
            geometry = {"type": "Point", "coordinates": [spec.circle[0], spec.circle[1]]}
            props["radius_m"] = spec.circle[2]
        else:
            geometry = {"type": "LineString", "coordinates": [list(p) for p in spec.line or []]}
        if spec.client and not withdraw:
            from commonsky.http.routes.airspace import feature_event

            feature = {"type": "Feature", "geometry": geometry, "properties": props}
            from commonsky.deconflict.formats import parse_geojson

            (shape,) = parse_geojson(msgspec.json.encode(feature))
            self.clients[spec.client].send(feature_event(feature, shape, now))
            return
        if withdraw:
            # Withdrawal: the same uid again, already stale — what ATAK does on delete.
            party = self.clients[spec.client].party if spec.client else spec.api
            event = new_event(spec.uid, "u-d-f", now, now, Point(0.0, 0.0))
            if spec.client:
                self.clients[spec.client].send(event)
            else:
                await self._post(party, "/api/cot", content=_xml(event))
            return
        feature = {"type": "Feature", "geometry": geometry, "properties": props}
        await self._post(spec.api, "/api/airspace", json=feature)

    async def _send_hotline(self, played: Played, spec: HotlineSpec) -> None:
        played.items_sent += 1
        from commonsky.desks.geochat import chat_event

        uid = f"GeoChat.{played.scenario.name}.{int(spec.at)}"
        if spec.client:
            client = self.clients[spec.client]
            event = chat_event(uid, spec.text, self.clock(), [spec.to], sender=client.id)
            client.send(event)
            sender = client.party
        else:
            await self._post(
                spec.api, "/api/hotline/send", json={"to": spec.to, "text": spec.text, "uid": uid}
            )
            sender = spec.api
        asyncio.get_running_loop().call_later(
            spec.ack_after_s / self.speed,
            lambda: asyncio.ensure_future(self._ack(spec, f"{sender}::{uid}")),
        )

    async def _ack(self, spec: HotlineSpec, message_id: str) -> None:
        try:
            if spec.ack_api or not spec.ack_client:
                await self._post(spec.to, f"/api/hotline/{message_id}/ack", json={})
            else:
                self.clients[spec.ack_client].send(read_receipt(message_id, self.clock()))
        except (httpx.HTTPError, ConnectionError) as exc:
            log.warning("ack of %s failed: %s", message_id, exc)

    def _maybe_ack_thread(self, client: SimClient, event: CotEvent) -> None:
        # A duty officer of each party acknowledges the hub's conflict threads.
        if event.type == "b-t-f" and event.uid.startswith("HUB::thread-"):
            key = (client.party, event.uid)
            if key in self._acked_threads:
                return
            self._acked_threads.add(key)
            asyncio.get_running_loop().call_later(
                THREAD_ACK_AFTER_S / self.speed,
                lambda: client.send(read_receipt(event.uid, self.clock())),
            )

    def _launch_times(self, scenario: Scenario) -> dict[str, float]:
        """Each missile's launch time such that no report describes its own future."""
        times: dict[str, float] = {}
        for report in scenario.launch:
            latest = self.wall(report.at) - report.end_s
            times[report.missile] = min(times.get(report.missile, latest), latest)
        return times

    async def _send_launch(
        self, played: Played, scenario: Scenario, spec: Any, launch_wall: float
    ) -> None:
        import numpy as np

        missile = next(m for m in scenario.missile if m.id == spec.missile)
        truth = Ballistic(
            lat=missile.lat,
            lon=missile.lon,
            launch_time=datetime.fromtimestamp(launch_wall, UTC),
            azimuth_deg=missile.azimuth_deg,
            range_m=missile.range_m,
            apogee_m=missile.apogee_m,
        )
        report = radar_report(
            truth,
            spec.party,
            f"{scenario.name}-{spec.party}-{int(spec.at)}",
            spec.start_s,
            spec.end_s,
            spec.step_s,
            spec.sigma_h_m,
            spec.sigma_v_m,
            np.random.default_rng(spec.seed),
        )
        played.items_sent += 1
        played.report_posts.append(self.clock())
        await self._post(spec.party, "/api/launch", content=msgspec.json.encode(report))

    async def _send_photo(self, played: Played, spec: PhotoSpec) -> None:
        """Render the photograph and upload it as its party's device would (ATAK's
        multipart `assetfile` to /Marti/sync/missionupload, with the client's certificate)."""
        from commonsky.evidence.render import aerial_geotiff, aerial_jpeg

        assert self.server is not None
        party = next(c.party for c in played.scenario.client if c.id == spec.client)
        west, south, east, north = spec.box
        taken = times.parse_time(spec.captured)
        spots = [
            (lon, lat)
            for track in played.scenario.track
            for _, lat, lon, _ in track.path[:1]
            if west <= lon <= east and south <= lat <= north
        ]
        if spec.form == "geotiff":
            data = aerial_geotiff(west, south, east, north, taken, spec.seed, spots)
        else:
            data = aerial_jpeg((south + north) / 2, (west + east) / 2, taken, spec.seed)
        ca = self.data_dir / "ca"
        context = tls_context(ca, ca / "clients" / party, spec.client)
        digest = hashlib.sha256(data).hexdigest()
        async with httpx.AsyncClient(
            base_url=f"https://127.0.0.1:{self.server.port('marti')}", verify=context, timeout=30
        ) as client:
            answer = await client.post(
                f"/Marti/sync/missionupload?hash={digest}&filename={spec.name}"
                f"&creatorUid={spec.client}",
                files={"assetfile": (spec.name, data, "application/octet-stream")},
            )
        if answer.status_code != 200:
            played.api_errors.append(f"photo {spec.name}: {answer.status_code} {answer.text}")
            return
        played.photos.append((party, spec.name, digest))

    async def _post(self, party: str, path: str, **kwargs: Any) -> httpx.Response:
        assert self.api is not None
        response = await self.api.post(
            path, headers={"Authorization": f"Bearer {self.tokens[party]}"}, **kwargs
        )
        if response.status_code >= 400:
            raise httpx.HTTPError(f"{path} as {party}: {response.status_code} {response.text}")
        return response


def interpolate(
    path: list[tuple[float, float, float, float]], t: float
) -> tuple[float, float, float, float, float]:
    """Position at `t` along (t, lat, lon, alt) waypoints, with ground speed and course."""
    for (t0, la0, lo0, al0), (t1, la1, lo1, al1) in itertools.pairwise(path):
        if t0 <= t <= t1:
            azimuth, _back, length = GEOD.inv(lo0, la0, lo1, la1)
            f = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
            lon, lat, back = GEOD.fwd(lo0, la0, azimuth, length * f)
            speed = length / (t1 - t0) if t1 > t0 else 0.0
            course = (back + 180.0 + 360.0) % 360.0  # the forward azimuth where it is now
            return lat, lon, al0 + (al1 - al0) * f, speed, course
    _, la, lo, al = path[-1]
    return la, lo, al, 0.0, 0.0


def read_receipt(message_id: str, now: float) -> CotEvent:

    return CotEvent(
        uid=message_id,  # ATAK's: a receipt's uid is the message id it answers (routing reads it)
        type="b-t-f-r",
        time=now,
        start=now,
        stale=now + 3600.0,
        how="h-g-i-g-o",
        point=Point(0.0, 0.0),
        detail=f'<__chatreceipt messageId="{quote(message_id)}"/>'
        f'<link uid="{quote(message_id)}" relation="p-p"/>',
    )


def _xml(event: CotEvent) -> bytes:
    from commonsky.protocol.cot import encode_event

    return encode_event(event)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def deliveries(clients: dict[str, SimClient], parties: set[str]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for client in clients.values():
        if client.party in parties:
            counts[client.party] += sum(
                1 for r in client.received if not r.event.type.startswith("t-x-takp")
            )
    return dict(counts)
