"""GeoChat receipts for a sender that is offline, and replays a device already acknowledged.

Real TAK traffic shapes over real sockets against a real hub: the direct message is the
corpus's ATAK capture (`050-b-t-f-node-CoT-cot-test.xml`), the receipts the corpus's
delivered (`035-b-t-f-d…`, `__chatreceipt`) and read (`036-b-t-f-r…`, `__chat`) events,
each with this test's devices, ids and times, and built from what the recipient actually
received (the way ATAK answers). A device reports itself with the corpus's ATAK position
report (`004-a-f-G-U-C…`). Absence is judged before a barrier (`received_before_barrier`:
a track every connection of the party gets, queued after everything routed before it).

- A receipt that comes while the sender's device is offline is held and given to that device
  when it reports itself again — once per session.
- A message its addressee acknowledged with a receipt is not replayed to that device; without
  a receipt it is (the safe side).
- Hostile receipts (unknown ids, another party's ids, a party that was never sent the
  message, floods) reach nobody they should not, hold bounded memory, harm nothing stored.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from commonsky.bench.cluster import until
from tests.conftest import RunningHub, TakClient, base_config, running_hub, token_of

DATA = Path(__file__).parents[1] / "corpus" / "data"
HOTLINE = ["track", "hotline"]
AGREEMENTS = [
    {"name": "US-JP", "from": "USA", "to": ["JPN"], "categories": HOTLINE},
    {"name": "JP-US", "from": "JPN", "to": ["USA"], "categories": HOTLINE},
    # KOR may send USA hotline traffic, but USA sends KOR nothing: KOR is never sent a message.
    {"name": "KR-US", "from": "KOR", "to": ["USA"], "categories": HOTLINE},
]


def _corpus(name: str) -> ET.Element:
    return ET.fromstring(next(DATA.glob(f"{name}*.xml")).read_bytes())


def _retimed(event: ET.Element, stale_s: float = 86400.0) -> bytes:
    now = datetime.now(UTC)
    for attr, moment in (
        ("time", now),
        ("start", now),
        ("stale", now + timedelta(seconds=stale_s)),
    ):
        event.set(attr, moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z")
    return ET.tostring(event)


def _el(event: ET.Element, path: str) -> ET.Element:
    node = event.find(path)
    assert node is not None, path
    return node


def device(uid: str, callsign: str) -> bytes:
    """ATAK's report of itself (corpus 004), as device `uid` with `callsign`."""
    event = _corpus("004-a-f-G-U-C")
    event.set("uid", uid)
    _el(event, "detail/contact").set("callsign", callsign)
    _el(event, "detail/uid").set("Droid", callsign)
    return _retimed(event, 600)


def geochat(sender: str, callsign: str, to: str, to_callsign: str, mid: str) -> bytes:
    """ATAK's direct message (corpus 050) from device `sender` to contact `to` (its uid as
    the sender knows it), addressed to its callsign, with message id `mid`."""
    event = _corpus("050-b-t-f")
    event.set("uid", f"GeoChat.{sender}.{to_callsign}.{mid}")
    chat = _el(event, "detail/__chat")
    chat.attrib.update(chatroom=to_callsign, id=to, senderCallsign=callsign, messageId=mid)
    _el(chat, "chatgrp").attrib.update(uid0=sender, uid1=to, id=to)
    _el(event, "detail/link").set("uid", sender)
    remarks = _el(event, "detail/remarks")
    remarks.attrib.update(source=f"BAO.F.ATAK.{sender}", to=to)
    remarks.text = "Confirm your aircraft stay west of the line"
    _el(event, "detail/__serverdestination").set("destinations", f"192.0.2.131:4242:tcp:{sender}")
    _el(event, "detail/marti/dest").set("callsign", to_callsign)
    return _retimed(event)


def receipt(
    got: dict[str, Any], me: str, my_callsign: str, kind: str, uid: str = "", answer: str = ""
) -> bytes:
    """ATAK's answer to the message `got` (as this device received it): delivered (corpus
    035) or read (corpus 036), naming the message id as given (or `answer`), the sender as
    the conversation. Its uid is that id (ATAK) unless `uid` says otherwise (node-CoT's
    delivered receipt: `<id>.d`)."""
    message = ET.fromstring(got["detail"])
    mid = answer or _el(message, "__chat").get("messageId", "")
    sender = _el(message, "link").get("uid", "")
    event = _corpus("035-b-t-f-d" if kind == "b-t-f-d" else "036-b-t-f-r")
    event.set("uid", uid or mid)
    chat = _el(event, "detail/__chatreceipt" if kind == "b-t-f-d" else "detail/__chat")
    chat.attrib.update(messageId=mid, id=sender, chatroom=my_callsign, senderCallsign=my_callsign)
    _el(chat, "chatgrp").attrib.update(uid0=me, uid1=sender, id=sender)
    _el(event, "detail/link").set("uid", me)
    return _retimed(event)


def receipts_for(events: list[dict[str, Any]], mid: str) -> list[str]:
    """The types of the TAK receipts answering `mid` among `events` (not the hub's notices)."""
    return [e["type"] for e in events if e["type"] in ("b-t-f-d", "b-t-f-r") and e["uid"] == mid]


# Each client with how many of its events `fresh` has judged (the client is kept: an id is
# never taken for a later client's).
_read: dict[int, tuple[TakClient, int]] = {}


async def fresh(hub: RunningHub, observer: TakClient, *senders: TakClient) -> list[dict[str, Any]]:
    """What `observer` received since its connection or the last call's barrier, and before
    a new barrier (`RunningHub.received_before_barrier`), once `senders` are all taken in."""
    client, start = _read.get(id(observer), (observer, 0))
    assert client is observer
    before = {id(e) for e in await hub.received_before_barrier(observer, *senders)}
    events = observer.events
    barrier = max(i for i, e in enumerate(events) if str(e["uid"]).startswith("barrier-"))
    _read[id(observer)] = (observer, barrier + 1)
    return [e for e in events[start:barrier] if id(e) in before]


async def online(hub: RunningHub, party: str, uid: str, callsign: str) -> TakClient:
    client = await hub.connect(party, settle=0)
    client.send(device(uid, callsign))
    await client.sync()
    return client


async def offline(hub: RunningHub, client: TakClient) -> None:
    """Close `client` and wait until the hub has let its connection go."""
    before = len(list(hub.hub.all_connections()))
    await client.close()
    hub.clients.remove(client)
    await until(lambda: len(list(hub.hub.all_connections())) < before, "the hub lets it go", 10)


async def hotline(hub: RunningHub) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(
        base_url=hub.http, headers={"Authorization": f"Bearer {token_of('USA')}"}
    ) as api:
        history: list[dict[str, Any]] = (await api.get("/api/hotline")).json()
    return history


async def sent(hub: RunningHub, usa: TakClient, jpn: TakClient) -> tuple[str, dict[str, Any]]:
    """EAGLE 2 (USA) writes to RED FOX 1 (JPN); returns the message id and what JPN got."""
    mid = str(uuid.uuid4())
    usa.send(geochat("USA-DEV", "EAGLE 2", "JPN::EUD-7", "RED FOX 1", mid))
    got = await jpn.wait_for(lambda e: e["type"] == "b-t-f" and mid in str(e["uid"]))
    return mid, got


async def test_a_receipt_for_an_offline_sender_is_given_when_its_device_comes_back(
    make_hub: Callable[..., Any],
) -> None:
    async with make_hub(AGREEMENTS) as hub:
        usa = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        jpn = await online(hub, "JPN", "EUD-7", "RED FOX 1")
        mid, got = await sent(hub, usa, jpn)
        await offline(hub, usa)
        jpn.send(receipt(got, "EUD-7", "RED FOX 1", "b-t-f-d"))
        jpn.send(receipt(got, "EUD-7", "RED FOX 1", "b-t-f-r"))
        await jpn.sync()
        (message,) = [m for m in await hotline(hub) if m["to"] == ["JPN"]]
        assert list(message["acks"]) == ["JPN"]  # recorded (it was, before the fix too)
        # The sender's device comes back: it gets both, under its own message id, once.
        back = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        before = await fresh(hub, back, back)
        assert receipts_for(before, mid) == ["b-t-f-d", "b-t-f-r"], before
        delivered = next(e for e in before if e["uid"] == mid)
        assert 'uid="JPN::EUD-7"' in delivered["detail"]  # (from the device it knows)
        # Another device of the sender's party reporting on another connection is not the
        # sender's device: nothing for it.
        other = await online(hub, "USA", "USA-DEV-2", "EAGLE 3")
        assert receipts_for(await fresh(hub, other, other), mid) == []
        # Its device reporting again, under a new callsign, is the same session: not again.
        back.send(device("USA-DEV", "EAGLE 2 ACTUAL"))
        assert receipts_for(await fresh(hub, back, back), mid) == []
        # A new session of the sender's device gets them again (nothing acknowledges a
        # receipt; ATAK applies one as a status).
        await offline(hub, back)
        again = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        assert receipts_for(await fresh(hub, again, again), mid) == [
            "b-t-f-d",
            "b-t-f-r",
        ]


async def test_nothing_is_given_twice_in_one_session(
    make_hub: Callable[..., Any],
) -> None:
    async with make_hub(AGREEMENTS) as hub:
        usa = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        jpn = await online(hub, "JPN", "EUD-7", "RED FOX 1")
        mid, got = await sent(hub, usa, jpn)
        jpn.send(receipt(got, "EUD-7", "RED FOX 1", "b-t-f-d"))
        await usa.wait_for(lambda e: e["type"] == "b-t-f-d" and e["uid"] == mid)
        usa.send(device("USA-DEV", "EAGLE 2 ACTUAL"))  # (its device again, a new callsign)
        assert receipts_for(await fresh(hub, usa, usa, jpn), mid) == ["b-t-f-d"]
        # Nor the message to its addressee's connection, when a second device reports on it.
        jpn.send(device("EUD-7-RADIO", "RED FOX 1 RADIO"))
        await fresh(hub, jpn, jpn)
        copies = [e for e in jpn.events if e["type"] == "b-t-f" and mid in str(e["uid"])]
        assert len(copies) == 1, jpn.items()  # (the one it got live, before the barrier)


async def test_node_cot_delivered_receipt_reaches_the_sender(
    make_hub: Callable[..., Any],
) -> None:
    """node-CoT's delivered receipt (corpus 035) takes `<id>.d` as its uid: the id it
    answers is its `__chatreceipt@messageId`, held and given like ATAK's."""
    async with make_hub(AGREEMENTS) as hub:
        usa = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        jpn = await online(hub, "JPN", "EUD-7", "RED FOX 1")
        mid, got = await sent(hub, usa, jpn)
        await offline(hub, usa)
        given = _el(ET.fromstring(got["detail"]), "__chat").get("messageId", "")
        jpn.send(receipt(got, "EUD-7", "RED FOX 1", "b-t-f-d", uid=f"{given}.d"))
        await jpn.sync()
        back = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        before = await fresh(hub, back, back)
        assert [e["uid"] for e in before if e["type"] == "b-t-f-d"] == [f"{mid}.d"], before


async def test_a_message_its_device_acknowledged_is_not_replayed_to_it(
    make_hub: Callable[..., Any],
) -> None:
    async with make_hub(AGREEMENTS) as hub:
        usa = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        jpn = await online(hub, "JPN", "EUD-7", "RED FOX 1")
        mid, got = await sent(hub, usa, jpn)

        def copies(events: list[dict[str, Any]]) -> int:
            return sum(e["type"] == "b-t-f" and mid in str(e["uid"]) for e in events)

        # Gone before it answered: the message is replayed when it reports itself again
        # (nothing proves it arrived).
        await offline(hub, jpn)
        jpn = await online(hub, "JPN", "EUD-7", "RED FOX 1")
        assert copies(await fresh(hub, jpn, jpn)) == 1
        # It answers with ATAK's delivered receipt: from then on, never replayed to it.
        jpn.send(receipt(got, "EUD-7", "RED FOX 1", "b-t-f-d"))
        await usa.wait_for(lambda e: e["type"] == "b-t-f-d" and e["uid"] == mid)
        await offline(hub, jpn)
        jpn = await online(hub, "JPN", "EUD-7", "RED FOX 1")
        assert copies(await fresh(hub, jpn, jpn)) == 0
        # Another JPN device using that callsign has given no receipt: it gets it.
        twin = await online(hub, "JPN", "EUD-7-TABLET", "RED FOX 1")
        assert copies(await fresh(hub, twin, twin)) == 1


async def test_hostile_receipts_reach_nobody_and_hold_bounded_memory(
    make_hub: Callable[..., Any],
) -> None:
    from commonsky.hub.receipts import PER_PARTY  # (here: the module is new with the fix)

    async with make_hub(AGREEMENTS) as hub:
        usa = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        jpn = await online(hub, "JPN", "EUD-7", "RED FOX 1")
        kor = await online(hub, "KOR", "KOR-DEV", "TIGER 1")
        kor_mate = await online(hub, "KOR", "KOR-DEV-2", "TIGER 2")
        mid, got = await sent(hub, usa, jpn)
        # KOR writes to USA too (KR-US): a message JPN was never sent.
        kmid = str(uuid.uuid4())
        kor.send(geochat("KOR-DEV", "TIGER 1", "USA::USA-DEV", "EAGLE 2", kmid))
        await usa.wait_for(lambda e: e["type"] == "b-t-f" and kmid in str(e["uid"]))
        jpn.send(receipt(got, "EUD-7", "RED FOX 1", "b-t-f-d"))  # the one true receipt
        await jpn.sync()
        await offline(hub, usa)
        # KOR was never sent USA's message; it answers it anyway.
        forged = dict(got, detail=got["detail"].replace("EUD-7", "KOR-DEV"))
        kor.send(receipt(forged, "KOR-DEV", "TIGER 1", "b-t-f-r"))
        # Ids that name no message, a handle, a shared name, KOR's message JPN never had.
        for bogus in ("USA::no-such-message", "USA::g-0123456789abcdef", "All Chat Rooms",
                      f"KOR::{kmid}"):  # fmt: skip
            jpn.send(receipt(got, "EUD-7", "RED FOX 1", "b-t-f-r", answer=bogus))
        # JPN floods receipts naming the message, from devices it makes up.
        for n in range(5 * PER_PARTY):
            jpn.send(receipt(got, f"EUD-FAKE-{n}", "RED FOX 1", "b-t-f-d", uid=f"{mid}-{n}"))
        await kor.sync()
        await jpn.sync()
        assert len(hub.hub.receipts) == PER_PARTY  # bounded, whatever JPN sends
        assert hub.hub.receipts.dropped == 4 * PER_PARTY + 1
        # Nothing recorded for KOR, nor for the bogus ids; JPN's acknowledgement stands.
        (message,) = [m for m in await hotline(hub) if m["to"] == ["JPN"]]
        assert list(message["acks"]) == ["JPN"] and message["read"] == {}, message
        # The sender's device comes back: JPN's true receipt (and what the bound kept of
        # JPN's flood: its own word about its own devices), nothing of KOR's, no bogus id.
        back = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        before = await fresh(hub, back, back, kor, jpn)
        answers = [e for e in before if e["type"] in ("b-t-f-d", "b-t-f-r")]
        assert len(answers) == PER_PARTY
        assert all(f'messageId="{mid}"' in e["detail"] for e in answers), answers
        assert answers[0]["uid"] == mid and 'uid="JPN::EUD-7"' in answers[0]["detail"]
        assert not [e for e in answers if "KOR-DEV" in e["detail"]], answers
        # KOR's answers stayed inside KOR; KOR got none of JPN's receipts.
        seen = await fresh(hub, kor_mate, kor, jpn)
        kor_answers = [e for e in seen if e["type"] in ("b-t-f-d", "b-t-f-r")]
        assert kor_answers and all('uid="KOR-DEV"' in e["detail"] for e in kor_answers)


async def test_a_held_receipt_outlives_a_restart(tmp_path: Path) -> None:
    """The receipts are stored (the ledger's record); a restart holds them again for the
    sender's device, and what they prove: the acknowledging device is not given the message
    again either."""
    config = base_config(tmp_path, AGREEMENTS)
    async with running_hub(config) as hub:
        usa = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        jpn = await online(hub, "JPN", "EUD-7", "RED FOX 1")
        mid, got = await sent(hub, usa, jpn)
        await offline(hub, usa)
        jpn.send(receipt(got, "EUD-7", "RED FOX 1", "b-t-f-d"))
        await jpn.sync()
    async with running_hub(config) as hub:
        back = await online(hub, "USA", "USA-DEV", "EAGLE 2")
        assert receipts_for(await fresh(hub, back, back), mid) == ["b-t-f-d"]
        jpn = await online(hub, "JPN", "EUD-7", "RED FOX 1")
        before = await fresh(hub, jpn, jpn)
        assert not [e for e in before if e["type"] == "b-t-f" and mid in str(e["uid"])], before
