"""The hotline desk's own notices for a sender whose device is offline (hub/receipts.py).

A duty officer's message is acknowledged while its device is offline: the hub's notice
("JPN acknowledged …", a `b-t-f-r` of the hub's) is held and given to that device when it
reports itself again — once, routing asked again — and after a restart too. Real sockets,
the corpus's TAK shapes (the helpers of test_receipts.py: ATAK's direct message, position
report and receipts); the recipient acknowledges through the API. Absence is judged before a
barrier (`fresh`), never by waiting.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import RunningHub, base_config, running_hub, token_of
from tests.integration.test_receipts import (
    AGREEMENTS,
    device,
    fresh,
    offline,
    online,
    receipt,
    sent,
)


def acks(events: list[dict[str, Any]], mid: str = "") -> list[dict[str, Any]]:
    """The hub's acknowledgement notices among `events` (naming message `mid`, if given)."""
    return [
        e
        for e in events
        if e["type"] == "b-t-f-r" and str(e["uid"]).startswith("HUB::ack-") and mid in e["detail"]
    ]


async def ack(hub: RunningHub, party: str, mid: str) -> dict[str, Any]:
    """`party` acknowledges through the API the message whose id contains `mid`."""
    async with httpx.AsyncClient(
        base_url=hub.http, headers={"Authorization": f"Bearer {token_of(party)}"}
    ) as api:
        (message,) = [m for m in (await api.get("/api/hotline")).json() if mid in m["id"]]
        r = await api.post(f"/api/hotline/{message['id']}/ack")
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result


async def test_an_ack_while_the_sender_is_offline_is_given_when_its_device_returns(
    make_hub: Callable[..., Any],
) -> None:
    async with make_hub(AGREEMENTS) as hub:
        usa = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        jpn = await online(hub, "JPN", "EUD-7", "RED FOX 1")
        kor = await online(hub, "KOR", "KOR-DEV", "TIGER 1")
        mid, _got = await sent(hub, usa, jpn)
        await offline(hub, usa)
        await ack(hub, "JPN", mid)
        # Another device of USA's, and the other parties' devices: not theirs.
        other = await online(hub, "USA", "USA-DEV-2", "EAGLE 3")
        assert acks(await fresh(hub, other, other)) == []
        assert acks(await fresh(hub, jpn, jpn)) == []
        assert acks(await fresh(hub, kor, kor)) == []
        # The sender's device comes back: the notice, once, naming its message.
        back = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        (notice,) = acks(await fresh(hub, back, back))
        assert f"JPN acknowledged GeoChat.USA-DEV.RED FOX 1.{mid}" in notice["detail"]
        assert hub.hub.receipts.notices() == 0
        # Reporting again (a new callsign), a new session, the other device: never again.
        back.send(device("USA-DEV", "EAGLE 2 ACTUAL"))
        assert acks(await fresh(hub, back, back)) == []
        await offline(hub, back)
        again = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        assert acks(await fresh(hub, again, again)) == []
        assert acks(await fresh(hub, other, other)) == []
        from commonsky.hub.receipts import owed_key  # (here: new with the fix)

        assert hub.hub.store.meta(owed_key(("USA", "USA-DEV"))) == "0"


async def test_online_the_notice_comes_once_and_only_the_missed_one_is_held(
    make_hub: Callable[..., Any],
) -> None:
    async with make_hub(AGREEMENTS) as hub:
        usa = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        jpn = await online(hub, "JPN", "EUD-7", "RED FOX 1")
        first, got = await sent(hub, usa, jpn)
        second, _ = await sent(hub, usa, jpn)
        # Online: acknowledged by a read receipt, then through the API — one notice each.
        jpn.send(receipt(got, "EUD-7", "RED FOX 1", "b-t-f-r"))
        await ack(hub, "JPN", second)
        live = await fresh(hub, usa, usa, jpn)
        assert len(acks(live, first)) == 1 and len(acks(live, second)) == 1, live
        third, _ = await sent(hub, usa, jpn)
        await offline(hub, usa)
        await ack(hub, "JPN", third)
        # Back: only the notice it missed.
        back = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        before = await fresh(hub, back, back)
        assert [n["uid"] for n in acks(before)] == [n["uid"] for n in acks(before, third)]
        assert len(acks(before, third)) == 1, before
        assert hub.hub.receipts.notices() == 0  # (nothing held: the live ones never were)


async def test_a_notice_held_for_an_api_sender_goes_to_its_party_only(
    make_hub: Callable[..., Any],
) -> None:
    """A message sent through the API names no device: its notices are for its party, held
    while no connection of the party is there, given to the first device that reports."""
    async with make_hub(AGREEMENTS) as hub:
        jpn = await online(hub, "JPN", "EUD-7", "RED FOX 1")
        kor = await online(hub, "KOR", "KOR-DEV", "TIGER 1")
        uid = f"GeoChat.api.{uuid.uuid4().hex[:12]}"
        async with httpx.AsyncClient(
            base_url=hub.http, headers={"Authorization": f"Bearer {token_of('USA')}"}
        ) as api:
            r = await api.post("/api/hotline/send", json={"to": "JPN", "text": "Hold", "uid": uid})
            assert r.status_code == 201, r.text
        await jpn.wait_for(lambda e: uid in str(e["uid"]))
        await ack(hub, "JPN", uid)
        assert acks(await fresh(hub, jpn, jpn)) == []
        assert acks(await fresh(hub, kor, kor)) == []
        usa = await online(hub, "USA", "USA-DEV-9", "EAGLE 9")
        assert len(acks(await fresh(hub, usa, usa), uid)) == 1
        mate = await online(hub, "USA", "USA-DEV-10", "EAGLE 10")
        assert acks(await fresh(hub, mate, mate)) == []


async def test_a_held_notice_outlives_a_restart(tmp_path: Path) -> None:
    config = base_config(tmp_path, AGREEMENTS)
    async with running_hub(config) as hub:
        usa = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        jpn = await online(hub, "JPN", "EUD-7", "RED FOX 1")
        given, _ = await sent(hub, usa, jpn)
        await ack(hub, "JPN", given)  # (online: given live, not again after the restart)
        await usa.wait_for(lambda e: bool(acks([e], given)))
        mid, _ = await sent(hub, usa, jpn)
        await offline(hub, usa)
        await ack(hub, "JPN", mid)
    async with running_hub(config) as hub:
        jpn = await online(hub, "JPN", "EUD-7", "RED FOX 1")
        assert acks(await fresh(hub, jpn, jpn)) == []
        back = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        before = await fresh(hub, back, back)
        assert len(acks(before, mid)) == 1 and acks(before, given) == [], before
        assert hub.hub.receipts.notices() == 0
    async with running_hub(config) as hub:  # given: not owed after another restart
        back = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        assert acks(await fresh(hub, back, back)) == []


async def test_an_escalation_while_the_sender_is_offline_is_given_when_it_returns(
    make_hub: Callable[..., Any],
) -> None:
    """A deadline's escalation notice (a `b-t-f` of the hub's, addressed to the sender's
    device) is durable: kept in the picture and given when the device reports itself."""
    agreements = [dict(AGREEMENTS[0], ack_deadline_s=1), *AGREEMENTS[1:]]
    async with make_hub(agreements) as hub:
        usa = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        jpn = await online(hub, "JPN", "EUD-7", "RED FOX 1")
        mid, _ = await sent(hub, usa, jpn)
        await offline(hub, usa)
        copies = await jpn.wait_for(lambda e: e["type"] == "b-t-f" and mid in str(e["uid"]))
        assert copies  # (the first; the escalation re-sends it)
        await jpn.wait_for(
            lambda e: sum(x["type"] == "b-t-f" and mid in str(x["uid"]) for x in jpn.events) >= 2
        )
        back = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        before = await fresh(hub, back, back)
        told = [e for e in before if "ESCALATION" in e["detail"] and mid in e["detail"]]
        assert len(told) == 1, before


async def test_held_notices_are_bounded_per_party_the_oldest_going_first(
    make_hub: Callable[..., Any], monkeypatch: Any
) -> None:
    from commonsky.hub import receipts  # (here: the bound is new with the fix)

    monkeypatch.setattr(receipts, "NOTICES_PER_PARTY", 2)
    async with make_hub(AGREEMENTS) as hub:
        usa = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        jpn = await online(hub, "JPN", "EUD-7", "RED FOX 1")
        mids = [(await sent(hub, usa, jpn))[0] for _ in range(3)]
        await offline(hub, usa)
        for mid in mids:
            await ack(hub, "JPN", mid)
        assert hub.hub.receipts.notices() == 2 and hub.hub.receipts.notices_dropped == 1
        back = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        before = await fresh(hub, back, back)
        assert [len(acks(before, mid)) for mid in mids] == [0, 1, 1], before
