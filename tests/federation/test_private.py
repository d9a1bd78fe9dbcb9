"""Private deconfliction between two real hubs over their federation link (issue #18).

The coalition's hub (USA) dials Russia's (RUS); both `[[federate]]`s say `deconflict =
"private"`. Each hub holds only its own party's plans: a round over the link (real mutual
TLS, real gRPC) finds the Palmyra overlap on both hubs, each tells its own duty officers
(conflicts-only) and opens its own hotline thread; neither hub's store ever holds the
other's volumes, even where an agreement would share them in full. Hostile input over the
link — bytes no round can decode, an oversized message, a peer faster than the agreed
rate — is refused with a logged reason and counted, and nothing stored is harmed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from commonsky.federation.mapping import receive
from commonsky.federation.private import PrivateLink
from commonsky.federation.private_wire import Chunk, chunk_message
from commonsky.model import Category

from ..conftest import OPERATOR_TOKEN, token_of
from .hubs import ca_dir, cot, hub, hub_config
from .takpeer import TakClient

TERMS = {
    "deconflict": "private",
    "grid_level": 5,
    "time_slot_s": 600,
    "altitude_band_m": 3000,
    "reveal": "cells",
}
AGREEMENTS = [
    # Even a full agreement for airspace does not send plans over a private link.
    {"name": "US-RU areas", "from": "USA", "to": ["RUS"], "categories": ["airspace"]},
    {
        "name": "RU-US areas, conflicts only",
        "from": "RUS",
        "to": ["USA"],
        "categories": ["airspace", "site"],
        "disclosure": "conflicts-only",
    },
    {"name": "US-RU hotline", "from": "USA", "to": ["RUS"], "categories": ["hotline"]},
    {"name": "RU-US hotline", "from": "RUS", "to": ["USA"], "categories": ["hotline"]},
]
PALMYRA = [[38.05, 34.75], [38.55, 34.75], [38.55, 34.40], [38.05, 34.40], [38.05, 34.75]]
FAR_EAST = [[40.6, 36.1], [41.0, 36.1], [41.0, 35.8], [40.6, 35.8], [40.6, 36.1]]


async def _until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 (polling state in a test)
            await asyncio.sleep(0.05)


def _configs(tmp_path: Path, ru_port: int | None, ru_terms: dict[str, Any], co_terms=None):  # type: ignore[no-untyped-def]
    ru = hub_config(
        tmp_path,
        "ru",
        ["RUS"],
        [{"name": "coalition", "parties": ["USA"], "peer": "co", "terms": ru_terms}],
        AGREEMENTS,
    )
    co = hub_config(
        tmp_path,
        "co",
        ["USA"],
        [
            {
                "name": "russia",
                "parties": ["RUS"],
                "peer": "ru",
                "connect": f"127.0.0.1:{ru_port}" if ru_port else None,
                "terms": co_terms or TERMS,
            }
        ],
        AGREEMENTS,
    )
    return co, ru


async def _volume(base: str, party: str, uid: str, ring: list[list[float]], t0: float, t1: float):  # type: ignore[no-untyped-def]
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "uid": uid,
            "item": "volume",
            "kind": "reservation",
            "floor_m": 6000,
            "ceiling_m": 12000,
            "start": t0,
            "end": t1,
        },
    }
    async with httpx.AsyncClient(base_url=base, timeout=10) as api:
        r = await api.post(
            "/api/airspace",
            json=feature,
            headers={"Authorization": f"Bearer {token_of(party)}"},
        )
        assert r.status_code < 300, r.text


def _notices(running: Any, party: str) -> list[Any]:
    desk = running.server.services.airspace
    return [n for (_cid, p), n in desk.notices.items() if p == party]


def _plink(running: Any) -> PrivateLink:
    (plink,) = running.server.federation.private.links.values()
    return plink  # type: ignore[no-any-return]


def _ledger_kinds(running: Any) -> list[str]:
    return [e.kind for e in running.server.services.recorder.ledger.entries()]


async def test_two_hubs_find_their_overlap_without_holding_each_others_plans(
    tmp_path: Path,
) -> None:
    now = time.time()
    _, ru_config = _configs(tmp_path, None, dict(TERMS, min_interval_s=0))
    async with hub(ru_config) as ru:
        co_config, _ = _configs(
            tmp_path, ru.server.port("federation"), TERMS, dict(TERMS, min_interval_s=0)
        )
        async with hub(co_config) as co:
            await _volume(co.http, "USA", "US-PALMYRA", PALMYRA, now, now + 600)
            await _volume(co.http, "USA", "US-FAR-EAST", FAR_EAST, now, now + 3600)
            await _volume(ru.http, "RUS", "RU-PALMYRA", PALMYRA, now + 300, now + 1800)
            await _until(lambda: _notices(co, "USA") and _notices(ru, "RUS"))
            (us,), (rus,) = _notices(co, "USA"), _notices(ru, "RUS")
            # The same conflict (one id on both hubs), the overlap's heights and times,
            # nothing of the other's item.
            assert us.conflict_id == rus.conflict_id
            assert (us.floor_m, us.ceiling_m) == (rus.floor_m, rus.ceiling_m) == (6000, 12000)
            assert us.start_s == pytest.approx(now + 300, abs=0.01)
            assert us.end_s == pytest.approx(now + 600, abs=0.01)
            assert us.other_uid is None and rus.other_uid is None
            assert us.other_kind is None and rus.other_kind is None
            assert (us.own_uid, us.other_party) == ("US-PALMYRA", "RUS")
            assert (rus.own_uid, rus.other_party) == ("RU-PALMYRA", "USA")
            assert us.thread and rus.thread
            # Each hub opened its own thread for its own party, under the same conflict id.
            assert co.server.services.airspace.threads[us.conflict_id]
            assert ru.server.services.airspace.threads[rus.conflict_id]
            # Neither store holds any of the other's plans (the full agreement notwithstanding).
            for running, other in ((co, "RUS"), (ru, "USA")):
                held = [
                    r.item
                    for r in running.hub.durable.values()
                    if r.item.party == other and r.item.category in (Category.AIRSPACE,)
                ]
                assert held == []
            # Commitments before rounds, the rounds' records after, in each ledger.
            for running in (co, ru):
                kinds = _ledger_kinds(running)
                assert "pd-commit" in kinds and "pd-round" in kinds
                assert kinds.index("pd-commit") < kinds.index("pd-round")
                figures = _plink(running).figures[-1]
                assert figures["outcome"] == "done" and figures["intersection"] > 0
            # A peer's signed head reached each side (receipts recorded in both ledgers).
            assert "fed-receipt" in _ledger_kinds(ru) and "fed-receipt" in _ledger_kinds(co)
            # The figures are metered on both hubs.
            for running in (co, ru):
                op = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
                async with httpx.AsyncClient(base_url=running.http, headers=op) as api:
                    text = (await api.get("/metrics")).text
                assert "commonsky_privdeconf_rounds_total{link=" in text
                assert 'outcome="done"' in text
                assert "commonsky_privdeconf_cells{" in text
            # The coalition withdraws its window: the next round clears the conflict on both.
            async with httpx.AsyncClient(base_url=co.http, timeout=10) as api:
                from commonsky.model import Point
                from commonsky.protocol.cot import encode_event, new_event

                t = time.time()
                gone = encode_event(new_event("US-PALMYRA", "u-d-f", t, t, Point(0.0, 0.0)))
                r = await api.post(
                    "/api/cot",
                    content=gone,
                    headers={"Authorization": f"Bearer {token_of('USA')}"},
                )
                assert r.status_code < 300, r.text
            await _until(lambda: not _notices(co, "USA") and not _notices(ru, "RUS"))


async def test_hostile_input_over_the_link_is_refused_and_harms_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    now = time.time()
    # Russia's hub accepts a round at most once an hour; the coalition's would go faster.
    _, ru_config = _configs(tmp_path, None, dict(TERMS, min_interval_s=3600, max_cells=2000))
    async with hub(ru_config) as ru:
        co_config, _ = _configs(
            tmp_path, ru.server.port("federation"), TERMS, dict(TERMS, min_interval_s=0)
        )
        async with hub(co_config) as co:
            await _volume(co.http, "USA", "US-PALMYRA", PALMYRA, now, now + 600)
            await _volume(ru.http, "RUS", "RU-PALMYRA", PALMYRA, now + 300, now + 1800)
            await _until(lambda: _notices(co, "USA") and _notices(ru, "RUS"))
            before = sorted(ru.server.services.airspace.notices)
            stored = {k: r.item.event for k, r in ru.hub.durable.items() if r.item.party == "RUS"}
            fed = ru.server.federation
            link = co.server.federation.links["russia"]
            refused = lambda reason: fed.refused.get(("coalition", reason), 0)  # noqa: E731

            # 1. Bytes no round can decode, as a round message of a new round.
            link.send(chunk_message(Chunk("bogus", 0, 1, b"\x93not a round"), time.time()))
            await _until(lambda: refused("bad_privdeconf") == 1)
            # 2. A message declared larger than our max_cells allows.
            link.send(chunk_message(Chunk("big", 0, 10**6, b"x" * 10), time.time()))
            await _until(lambda: refused("privdeconf_too_large") == 1)
            # 3. A chunk whose payload is not a chunk at all.
            bad = chunk_message(Chunk("x"), time.time())
            bad.event.binary.data = b"\xff\x00garbage"
            link.send(bad)
            await _until(lambda: refused("bad_privdeconf") == 2)
            # 4. Relayed notices: one for a party Russia's hub does not hold, and one that is
            # not a notice at all.
            from commonsky.deconflict.notice import Notice

            stray = Notice(
                conflict_id="c1",
                kind="line-crossing",
                recipient="USA",
                own_uid="x",
                own_item="volume",
                other_party="USA",
                geometry=None,
                floor_m=0.0,
                ceiling_m=1.0,
                start_s=now,
                end_s=now + 60,
            )
            for data in (msgspec.json.encode(stray), b"{not json"):
                notice = Chunk("", notice=data, action="raised")
                link.send(chunk_message(notice, time.time()))
            await _until(lambda: refused("privdeconf_notice") == 2)
            # 5. The coalition asks for another round at once: Russia's rate refuses it,
            # both hubs log why, and the conflict found before stands.
            _plink(co).wanted = True
            await _until(lambda: _plink(co).rounds.get("refused", 0) >= 1)
            await _until(lambda: _plink(ru).rounds.get("refused", 0) >= 1)
            assert "min_interval_s = 3600" in (_plink(co).figures[-1]["refused"] or "")
            text = caplog.text
            assert "refused (bad_privdeconf)" in text
            assert "refused (privdeconf_too_large)" in text
            assert "rate: the last round began" in text
            assert "refused (privdeconf_notice): a notice for none of our parties" in text
            # Nothing stored harmed: the notices and Russia's own plans are as they were.
            assert sorted(ru.server.services.airspace.notices) == before
            after = {k: r.item.event for k, r in ru.hub.durable.items() if r.item.party == "RUS"}
            assert after == stored
            assert ru.server.federation.links["coalition"].up


async def test_a_tak_server_peer_never_sees_a_round(tmp_path: Path) -> None:
    """A `[[federate]]` configured private whose peer turns out to be a TAK Server (no
    CommonSky identity): no round message ever reaches it, and its link works as before."""
    config = hub_config(
        tmp_path,
        "co",
        ["USA"],
        [{"name": "tak", "parties": ["RUS"], "peer": "tak", "terms": TERMS}],
        [*AGREEMENTS, {"name": "t", "from": "USA", "to": ["RUS"], "categories": ["track"]}],
    )
    async with hub(config) as co:
        fed = co.server.federation
        client = TakClient(
            f"127.0.0.1:{co.server.port('federation')}",
            ca_dir(tmp_path, "tak"),
            (ca_dir(tmp_path, "co") / "ca.pem").read_bytes(),
        )
        usa = await co.connect("USA")
        try:
            await client.connect()
            await _until(lambda: fed.links["tak"].up)
            plink = _plink(co)
            now = time.time()
            await _volume(co.http, "USA", "US-PALMYRA", PALMYRA, now, now + 600)
            # Barrier: the link's worker has looked at least twice since our plans changed
            # (each time it would have asked a CommonSky peer for a round)...
            polls = plink.polls
            await _until(lambda: plink.polls >= polls + 2)
            # ...then an entitled track; everything the peer got before it is checked.
            usa.send(cot("us-1"))
            seen = []
            while True:
                message = await client.next_event()
                seen.append(message)
                got = receive(message).event if message.HasField("event") else None
                if got is not None and got.uid == "USA::us-1":
                    break
            assert not any(m.event.type.startswith("t-x-csky-pd") for m in seen)
            assert plink.rounds == {} and plink.bytes_sent == 0
            assert not any(m.event.type == "u-d-f" for m in seen)  # plans stay home
        finally:
            await client.close()


async def test_an_api_acknowledgement_reaches_the_senders_hub(tmp_path: Path) -> None:
    """A hotline message crosses the link; its recipient acknowledges it through the API on
    its own hub; the sender's hub records the acknowledgement (a read receipt crossed)."""
    _, ru_config = _configs(tmp_path, None, TERMS)
    async with hub(ru_config) as ru:
        co_config, _ = _configs(tmp_path, ru.server.port("federation"), TERMS)
        async with hub(co_config) as co:
            await _until(lambda: co.server.federation.links["russia"].up)
            usa = {"Authorization": f"Bearer {token_of('USA')}"}
            rus = {"Authorization": f"Bearer {token_of('RUS')}"}
            async with httpx.AsyncClient(base_url=co.http, headers=usa, timeout=10) as api:
                r = await api.post(
                    "/api/hotline/send", json={"to": "RUS", "text": "hi", "uid": "m1"}
                )
                assert r.status_code == 201, r.text
            key = ("USA", "m1")
            await _until(lambda: ru.server.services.hotline.find(key) is not None)
            async with httpx.AsyncClient(base_url=ru.http, headers=rus, timeout=10) as api:
                r = await api.post("/api/hotline/USA::m1/ack", json={})
                assert r.status_code == 200, r.text
            sent = co.server.services.hotline
            await _until(lambda: "RUS" in getattr(sent.find(key), "acks", {}))
