"""The callsign directory is open before the hub's start catches up (hub/withdraw.py
`catch_up`): a delete owed for an item addressed to a callsign is owed to the party whose
device uses it — after a single hub's restart, and after a cluster core's takeover (the
directory in PostgreSQL, hub/shared.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from commonsky.config import config_from_dict
from commonsky.hub.connection import MemoryPeer
from commonsky.hub.core import Connection, Hub
from commonsky.hub.outbox import Outbox
from commonsky.model import CotEvent, Point
from commonsky.protocol.refs import link_target
from commonsky.server import HubServer
from tests.conftest import base_config, token_of
from tests.store.conftest import postgres_url  # noqa: F401 (fixture)

MARKERS = {"name": "markers", "from": "USA", "to": ["JPN"], "categories": ["marker"]}
DEVICE = '<contact callsign="BRAVO-1" endpoint="*:-1:stcp"/><takv platform="ATAK-CIV"/>'


def event(uid: str, cot_type: str, **kw: Any) -> CotEvent:
    now = time.time()
    return CotEvent(uid=uid, type=cot_type, time=now, start=now, stale=now + 3600,
                    how="h-g-i-g-o", point=Point(35.0, 35.0), **kw)  # fmt: skip


def deleted_while_away(hub: Hub) -> None:
    """JPN's device BRAVO-1 reports itself and goes away; USA sends a marker to BRAVO-1,
    then deletes it: nobody of JPN's was there to be given the delete."""
    hub.accept("JPN", "j", event("ANDROID-B", "a-f-G-U-C", callsign="BRAVO-1", detail=DEVICE))
    hub.accept("USA", "u", event("M1", "b-m-p-s-m", dest_callsigns=("BRAVO-1",)))
    assert "JPN" in hub.route(hub.durable[("USA", "M1")].item, time.time())  # (by BRAVO-1)
    link = '<link uid="M1" relation="none" type="b-m-p-s-m"/><__forcedelete/>'
    hub.accept("USA", "u", event("del-M1", "t-x-d-d", detail=link))


def given(hub: Hub, party: str) -> list[tuple[str, str | None]]:
    """What a client of `party` connecting now is given first: (type, linked uid)."""
    box = Outbox(1000, 1000)
    hub.attach(Connection(party, party, "test", box, MemoryPeer(), id=f"{party}-back"))
    events = [hub.naming.event(p.rendered, p.variant) for p in box.take()]
    return [(e.type, link_target(e)) for e in events]


async def test_a_restart_owes_the_delete_to_the_callsigns_party(tmp_path: Path) -> None:
    config = base_config(tmp_path, [MARKERS])
    first = HubServer(config, init=True)
    try:
        deleted_while_away(first.hub)
    finally:
        first._release()
    second = HubServer(config)
    try:
        assert given(second.hub, "JPN") == [("t-x-d-d", "USA::M1")]
    finally:
        second._release()


async def test_a_cluster_cores_takeover_owes_it_too(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    data: dict[str, Any] = {
        "server": {"data_dir": str(tmp_path / "a"), "http": "127.0.0.1:0",
                   "store_url": postgres_url},
        "party": [{"id": p, "token": token_of(p)} for p in ("USA", "JPN")],
        "agreement": [MARKERS],
        "cluster": {"nats_url": "nats://127.0.0.1:4222", "role": "core", "name": "dirfix"},
    }  # fmt: skip
    first = HubServer(config_from_dict(data, "test"), init=True, writer="a epoch 1")
    try:
        deleted_while_away(first.hub)
    finally:
        first._release()
    data["server"]["data_dir"] = str(tmp_path / "b")
    second = HubServer(config_from_dict(data, "test"), writer="b epoch 2")
    try:
        assert given(second.hub, "JPN") == [("t-x-d-d", "USA::M1")]
    finally:
        second._release()
