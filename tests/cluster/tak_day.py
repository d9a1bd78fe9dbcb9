"""What a TAK user does every day, as ATAK sends it, for a cluster's end-to-end tests
(test_tak_day.py): three parties — ALPHA and BRAVO share every category both ways in full,
CHARLIE is given ALPHA's tracks and nothing else — and the events of the corpus
(tests/corpus/data) made current: devices' position reports, markers and their deletion,
a route, an emergency and its cancel, GeoChat (group, direct) and its receipts.

Clients are `conformance.client.Peer`s: a TAK stream read by the standard library and
takproto, TAK Protocol v1 negotiated with the edge when asked. `Day.sync` is the barrier
every wait is: a track from every client, seen by those it is given to, then one ALPHA
track every client sees: whatever was sent before it was applied, and what the core queued
for a client before it, the client has read."""

from __future__ import annotations

import contextlib
import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from commonsky.bench.hubproc import OPERATOR, HubProcess
from commonsky.bench.ports import HeldPorts
from commonsky.conformance.client import Peer, Received, connect
from commonsky.model import Category

DATA = Path(__file__).parents[1] / "corpus" / "data"
PARTIES = ("ALPHA", "BRAVO", "CHARLIE")
HOST = "127.0.0.1"
# Whose tracks each party's clients are given (its own, and under the agreements).
SEEN_BY = {"ALPHA": PARTIES, "BRAVO": ("ALPHA", "BRAVO"), "CHARLIE": ("CHARLIE",)}
WAIT = 60.0  # seconds any one wait may take on a loaded 2-core machine


def day_config(data_dir: Path, http: int, ports: dict[str, int], extra: str = "") -> str:
    """The three parties (a TCP listener each) and their agreements (`cluster.HubText`)."""
    lines = [f'[server]\ndata_dir = "{data_dir}"\nhttp = "{HOST}:{http}"\n'
             f'operator_token = "{OPERATOR}"\n{extra}']  # fmt: skip
    for party in PARTIES:
        lines.append(f'[[listener]]\nkind = "tak-tcp"\nbind = "{HOST}:{ports[party]}"\n'
                     f'party = "{party}"\n[[party]]\nid = "{party}"\n'
                     f'token = "day-token-{party.lower()}-0123456789"\n')  # fmt: skip
    every = json.dumps([c.value for c in Category])
    for name, src, dst, categories in (
        ("alpha-bravo", "ALPHA", "BRAVO", every),
        ("bravo-alpha", "BRAVO", "ALPHA", every),
        ("alpha-charlie", "ALPHA", "CHARLIE", '["track"]'),
    ):
        lines.append(f'[[agreement]]\nname = "{name}"\nfrom = "{src}"\nto = ["{dst}"]\n'
                     f'categories = {categories}\ndisclosure = "full"\n')  # fmt: skip
    return "\n".join(lines)


@contextlib.asynccontextmanager
async def single_hub(folder: Path, ca: Path) -> AsyncIterator[tuple[dict[str, int], int]]:
    """`commonsky serve` alone (no `[cluster]`) on the same parties and agreements, with a
    `marti` listener of `ca`: its TAK ports by party and its Marti port."""
    with HeldPorts() as held:
        ports = {party: held.port() for party in PARTIES}
        http, marti = held.port(), held.port()
        config = folder / "single.toml"
        config.write_text(day_config(folder / "single", http, ports) + f'\n[[listener]]\n'
                          f'kind = "marti"\nbind = "{HOST}:{marti}"\nca = "{ca}"\n')  # fmt: skip
        hub = HubProcess(config, folder / "single.log", http, "info")
        try:
            await hub.start()
            yield ports, marti
        finally:
            hub.stop()


def _corpus(prefix: str) -> ET.Element:
    return ET.fromstring(next(DATA.glob(f"{prefix}*.xml")).read_bytes())


def _el(event: ET.Element, path: str) -> ET.Element:
    node = event.find(path)
    assert node is not None, path
    return node


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _current(event: ET.Element, stale_s: float = 86400.0) -> bytes:
    now = datetime.now(UTC)
    event.set("time", _stamp(now))
    event.set("start", _stamp(now))
    event.set("stale", _stamp(now + timedelta(seconds=stale_s)))
    return ET.tostring(event)


def device(uid: str, callsign: str, lat: float) -> bytes:
    """ATAK's report of itself (corpus 004) as device `uid`, at latitude `lat` (apart from
    the others': no conflict notices between the parties' devices)."""
    event = _corpus("004-a-f-G-U-C")
    event.set("uid", uid)
    _el(event, "detail/contact").set("callsign", callsign)
    _el(event, "detail/uid").set("Droid", callsign)
    _el(event, "point").set("lat", str(lat))
    return _current(event, 600)


def track(uid: str, lat: float, lon: float) -> bytes:
    """A ground unit's position (a track: ALPHA's reach CHARLIE)."""
    now = datetime.now(UTC)
    return (
        f'<event version="2.0" uid="{uid}" type="a-f-G-E-S" time="{_stamp(now)}" '
        f'start="{_stamp(now)}" stale="{_stamp(now + timedelta(seconds=600))}" how="m-g">'
        f'<point lat="{lat}" lon="{lon}" hae="0" ce="10" le="10"/><detail>'
        f'<contact callsign="{uid}"/></detail></event>'
    ).encode()


def spot(uid: str, owner: str, lat: float = 9.956) -> bytes:
    """ATAK's spot marker (corpus 024) dropped by device `owner`."""
    event = _corpus("024-b-m-p-s-m")
    event.set("uid", uid)
    _el(event, "point").set("lat", str(lat))
    _el(event, "detail/link").set("uid", owner)
    _el(event, "detail/contact").set("callsign", uid)
    return _current(event)


def route(uid: str) -> bytes:
    """ATAK's route (corpus 028)."""
    event = _corpus("028-b-m-r")
    event.set("uid", uid)
    return _current(event)


def delete(target: str, uid: str = "") -> bytes:
    """ATAK's delete of the item `target` (as the sender knows it): `t-x-d-d`."""
    now = datetime.now(UTC)
    return (
        f'<event version="2.0" uid="{uid or uuid.uuid4()}" type="t-x-d-d" time="{_stamp(now)}" '
        f'start="{_stamp(now)}" stale="{_stamp(now + timedelta(seconds=20))}" '
        'how="h-g-i-g-o"><point lat="0" lon="0" hae="9999999" ce="9999999" le="9999999"/>'
        f'<detail><link uid="{target}" relation="none" type="none"/><__forcedelete/>'
        "</detail></event>"
    ).encode()


def emergency(dev: str, callsign: str, cancel: bool = False) -> bytes:
    """The 911 alert of device `dev` (corpus 031: `b-a-o-tbl`), or its cancel (`b-a-o-can`,
    the same uid)."""
    event = _corpus("031-b-a-o-tbl")
    event.set("uid", f"{dev}-9-1-1")
    _el(event, "detail/link").set("uid", dev)
    _el(event, "detail/contact").set("callsign", callsign)
    alert = _el(event, "detail/emergency")
    if cancel:
        event.set("type", "b-a-o-can")
        alert.attrib.clear()
        alert.set("cancel", "true")
    alert.text = callsign
    return _current(event, 600)


def group_chat(sender: str, callsign: str, mid: str) -> bytes:
    """ATAK's message to All Chat Rooms (corpus 011) from device `sender`."""
    event = _corpus("011-b-t-f")
    event.set("uid", f"GeoChat.{sender}.All Chat Rooms.{mid}")
    chat = _el(event, "detail/__chat")
    chat.attrib.update(senderCallsign=callsign, messageId=mid)
    _el(chat, "chatgrp").set("uid0", sender)
    _el(event, "detail/link").set("uid", sender)
    _el(event, "detail/remarks").set("source", f"BAO.F.ATAK.{sender}")
    return _current(event)


def message_id(received: Received) -> str:
    """The `__chat messageId` of a GeoChat as its recipient got it (either wire)."""
    view = received.view
    assert view is not None and view.detail is not None, received.error
    for node in view.detail.children:
        if node.tag == "__chat":
            return node.attrib["messageId"]
    raise AssertionError(f"no __chat in {received.uid}")


def _named(uid: str) -> Callable[[Received], bool]:
    """Whether an item is `uid`, under whichever party's name."""
    return lambda received: received.uid.endswith(uid)


class Day:
    """The clients of a day, by name, and the barrier they share."""

    def __init__(self) -> None:
        self.peers: dict[str, Peer] = {}
        self.read: dict[str, int] = {}  # how many of its items `new` has given, per client
        self.round = 0

    async def join(self, name: str, party: str, port: int, proto: bool) -> Peer:
        now = _stamp(datetime.now(UTC))
        self.peers[name] = await connect(party, port, proto, WAIT, now)
        self.read[name] = 0
        return self.peers[name]

    def send(self, name: str, xml: bytes) -> None:
        self.peers[name].send_event(xml)

    async def sync(self) -> None:
        """The barrier. Every client sends a track of its own, and waits for those of the
        others it is given (a connection's events are applied in order, and the core writes
        to a client in order: what each sent before, the others entitled to it have read);
        then one ALPHA track every client sees — CHARLIE too, after everything BRAVO sent
        was applied."""
        self.round += 1
        senders = [*self.peers.items(), ("last", self._alpha())]
        for phase in (senders[:-1], senders[-1:]):
            for at, (name, sender) in enumerate(phase):
                uid = f"sync-{name}-{self.round}"
                sender.send_event(track(uid, -80 + self.round * 0.5, at * 20.0))
                for peer in self.peers.values():
                    if peer is not sender and peer.party in SEEN_BY[sender.party]:
                        await peer.wait_for(_named(uid), WAIT)

    def _alpha(self) -> Peer:
        return next(peer for peer in self.peers.values() if peer.party == "ALPHA")

    def new(self, name: str) -> list[str]:
        """What client `name` got since the last call, as "type uid" (the barriers and the
        hub's own notices left out), in order."""
        items = self.peers[name].items
        fresh, self.read[name] = items[self.read[name] :], len(items)
        return [f"{r.type} {r.uid}" for r in fresh if "sync-" not in r.uid
                and not r.uid.startswith("HUB::")]  # fmt: skip

    def got(self, name: str, kind: str, uid: str) -> Received:
        """The one item of `kind` and `uid` client `name` got (AssertionError otherwise)."""
        found = [r for r in self.peers[name].items if r.type == kind and r.uid == uid]
        assert len(found) == 1, (name, kind, uid, [f"{r.type} {r.uid}" for r in found])
        return found[0]

    async def close(self) -> None:
        for peer in self.peers.values():
            await peer.close()
