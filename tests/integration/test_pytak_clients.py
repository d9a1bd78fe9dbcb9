"""Issue 12 faults 1, 2, 3 and 6 driven by pytak, a real TAK client, over the TCP listener.

Each client is a `pytak.CLITool` (its own TX and RX workers, its `t-x-d-d` hello on start);
the events it sends are built with pytak's XML helpers in the shapes ATAK writes, and each
answer is built from what the client actually received, the way ATAK would build it.
Absence is checked with a barrier: something the client is entitled to, sent after.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from configparser import ConfigParser

import httpx
import pytak

from tests.conftest import RunningHub, token_of
from tests.integration.test_fuzz_counting import until
from tests.integration.test_tak_tcp import metric

ALLIES = [
    {"name": n, "from": a, "to": [b], "categories": ["track", "airspace", "hotline"]}
    for n, a, b in (("US-JP", "USA", "JPN"), ("JP-US", "JPN", "USA"))
]


class Pytak:
    """A pytak client: queue bytes to send, read the events its RX worker hands over."""

    def __init__(self, hub: RunningHub, party: str) -> None:
        config = ConfigParser()
        config["client"] = {"COT_URL": f"tcp://127.0.0.1:{hub.tcp_port(party)}"}
        self.tool = pytak.CLITool(config["client"])
        self.events: list[ET.Element] = []
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Pytak:
        await self.tool.setup()
        self.task = asyncio.create_task(self.tool.run())
        return self

    def send(self, event: ET.Element) -> None:
        self.tool.tx_queue.put_nowait(pytak.serialize_cot(event))

    async def wait_for(
        self, predicate: Callable[[ET.Element], bool], timeout: float = 5.0
    ) -> ET.Element:
        async with asyncio.timeout(timeout):
            while True:
                for e in self.events:
                    if predicate(e):
                        self.events.remove(e)
                        return e
                data = await self.tool.rx_queue.get()
                self.events.append(ET.fromstring(data.strip()))

    async def stop(self) -> None:
        """Cancel the tool and its workers, and close the socket its TX worker holds."""
        workers = [getattr(f, "_pytak_worker", None) for f in self.tool.running_tasks]
        for future in [*self.tool.running_tasks, *([self.task] if self.task else [])]:
            future.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await future
        for worker in workers:
            writer = getattr(worker, "writer", None)
            if isinstance(writer, asyncio.StreamWriter):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()


def sa(uid: str, callsign: str) -> ET.Element:
    """A device's report of itself, as ATAK sends it (contact endpoint, group, takv)."""
    event = pytak.gen_cot_xml(lat=35.0, lon=135.0, uid=uid, cot_type="a-f-G-U-C", stale=600)
    assert event is not None
    detail = event.find("detail")
    assert detail is not None
    ET.SubElement(detail, "contact", endpoint="*:-1:stcp", callsign=callsign)
    ET.SubElement(detail, "__group", name="Cyan", role="Team Member")
    ET.SubElement(detail, "takv", platform="ATAK-CIV", version="4.6.0.5", device="x", os="34")
    return event


def chat(sender: str, callsign: str, to: str, to_callsign: str | None, text: str) -> ET.Element:
    """A GeoChat as ATAK's GeoChatService writes it; to a contact (`to` = its uid as the
    sender knows it) with the `<marti><dest callsign>` a server contact gets, or to a room."""
    mid = str(uuid.uuid4())
    event = pytak.gen_cot_xml(lat=35.0, lon=135.0, uid=f"GeoChat.{sender}.{to}.{mid}")
    assert event is not None
    event.set("type", "b-t-f")
    detail = event.find("detail")
    assert detail is not None
    room = to_callsign or to
    chat_el = ET.SubElement(
        detail, "__chat", id=to, chatroom=room, messageId=mid, senderCallsign=callsign
    )
    ET.SubElement(chat_el, "chatgrp", id=to, uid0=sender, uid1=to)
    ET.SubElement(detail, "link", uid=sender, type="a-f-G-U-C", relation="p-p")
    remarks = ET.SubElement(detail, "remarks", source=f"BAO.F.ATAK.{sender}")
    remarks.text = text
    if to_callsign is not None:
        remarks.set("to", to)
        ET.SubElement(ET.SubElement(detail, "marti"), "dest", callsign=to_callsign)
    return event


def receipt(received: ET.Element, me: str, my_callsign: str, kind: str) -> ET.Element:
    """ATAK's answer to a one-to-one chat (GeoChatService.sendStatusMessage): uid = the
    message id it was given, the sender as the conversation, a link to this device."""
    chat_el = received.find("detail/__chat")
    link = received.find("detail/link")
    assert chat_el is not None and link is not None
    mid, sender = chat_el.get("messageId", ""), link.get("uid", "")
    event = pytak.gen_cot_xml(lat=35.0, lon=135.0, uid=mid)
    assert event is not None
    event.set("type", kind)
    detail = event.find("detail")
    assert detail is not None
    name = "__chatreceipt" if kind == "b-t-f-d" else "__chat"
    el = ET.SubElement(detail, name, id=sender, messageId=mid, senderCallsign=my_callsign)
    ET.SubElement(el, "chatgrp", id=sender, uid0=me, uid1=sender)
    ET.SubElement(detail, "link", uid=me, type="a-f-G-U-C", relation="p-p")
    return event


def drawing(uid: str) -> ET.Element:
    event = pytak.gen_cot_xml(lat=35.0, lon=135.0, uid=uid, cot_type="u-d-r", stale=3600)
    assert event is not None
    detail = event.find("detail")
    assert detail is not None
    for lat, lon in ((35.0, 135.0), (35.0, 135.5), (35.5, 135.5), (35.5, 135.0)):
        ET.SubElement(detail, "link", point=f"{lat},{lon}")
    return event


def delete(target: str) -> ET.Element:
    event = pytak.gen_cot_xml(lat=35.0, lon=135.0, uid=f"del-{uuid.uuid4().hex[:6]}")
    assert event is not None
    event.set("type", "t-x-d-d")
    detail = event.find("detail")
    assert detail is not None
    ET.SubElement(detail, "link", uid=target, relation="none", type="none")
    ET.SubElement(detail, "__forcedelete")
    return event


def attr(e: ET.Element, path: str, name: str) -> str | None:
    node = e.find(f"detail/{path}")
    return node.get(name) if node is not None else None


async def test_chats_with_spaces_to_a_room_and_to_another_partys_contact(make_hub) -> None:
    async with make_hub(ALLIES) as hub:
        usa = await Pytak(hub, "USA").start()
        jpn = await Pytak(hub, "JPN").start()
        try:
            jpn.send(sa("EUD-7", "RED FOX 1"))
            usa.send(sa("USA-DEV", "EAGLE 2"))
            await usa.wait_for(lambda e: e.get("uid") == "JPN::EUD-7")
            # Fault 1 and 6: a room message (a uid with spaces) crosses the agreement.
            usa.send(chat("USA-DEV", "EAGLE 2", "All Chat Rooms", None, "Roger"))
            room = await jpn.wait_for(lambda e: "All Chat Rooms" in str(e.get("uid")))
            assert str(room.get("uid")).startswith("GeoChat.USA::USA-DEV.All Chat Rooms.USA::")
            # Fault 2: a chat to JPN's contact reaches it under JPN's own names.
            usa.send(chat("USA-DEV", "EAGLE 2", "JPN::EUD-7", "RED FOX 1", "Confirm"))
            got = await jpn.wait_for(lambda e: attr(e, "__chat", "id") == "EUD-7")
            assert attr(got, "__chat/chatgrp", "uid1") == "EUD-7"
            assert attr(got, "link", "uid") == "USA::USA-DEV"
            # Fault 6: ATAK's delivered receipt acknowledges the hotline message.
            jpn.send(receipt(got, "EUD-7", "RED FOX 1", "b-t-f-d"))
            mid = str(attr(got, "__chat", "messageId")).removeprefix("USA::")
            back = await usa.wait_for(lambda e: e.get("uid") == mid)
            assert back.get("type") == "b-t-f-d" and attr(back, "link", "uid") == "JPN::EUD-7"
            async with httpx.AsyncClient(
                base_url=hub.http, headers={"Authorization": f"Bearer {token_of('USA')}"}
            ) as api:
                history = (await api.get("/api/hotline")).json()
            (message,) = [m for m in history if m["to"] == ["JPN"]]
            assert list(message["acks"]) == ["JPN"] and message["pending"] == []
            assert await metric(hub, "commonsky_refusals_total") == 0  # hellos included
        finally:
            await usa.stop()
            await jpn.stop()


async def test_a_delete_is_applied_and_a_foreign_one_refused(make_hub) -> None:
    async with make_hub(ALLIES) as hub:
        usa = await Pytak(hub, "USA").start()
        jpn = await Pytak(hub, "JPN").start()
        try:
            usa.send(drawing("AREA-9"))
            await jpn.wait_for(lambda e: e.get("uid") == "USA::AREA-9")
            # JPN may not delete USA's area, whatever name it uses.
            jpn.send(delete("USA::AREA-9"))
            usa.send(drawing("BARRIER-1"))
            await jpn.wait_for(lambda e: e.get("uid") == "USA::BARRIER-1")
            assert await metric(hub, "commonsky_refusals_total", reason="delete_not_owner") == 1
            # Nor through the API.
            async with httpx.AsyncClient(
                base_url=hub.http, headers={"Authorization": f"Bearer {token_of('JPN')}"}
            ) as api:
                refused = await api.post("/api/cot", content=pytak.serialize_cot(delete("AREA-9")))
                assert refused.status_code == 201  # JPN's own AREA-9: there is none, no harm
                refused = await api.post(
                    "/api/cot", content=pytak.serialize_cot(delete("USA::AREA-9"))
                )
            assert refused.status_code == 400 and "only USA" in refused.json()["error"]
            assert ("USA", "AREA-9") in hub.hub.durable
            # USA may.
            usa.send(delete("AREA-9"))
            gone = await jpn.wait_for(lambda e: e.get("uid", "").startswith("USA::del-"))
            assert (gone.get("type"), attr(gone, "link", "uid")) == ("t-x-d-d", "USA::AREA-9")
            async with httpx.AsyncClient(
                base_url=hub.http, headers={"Authorization": f"Bearer {token_of('JPN')}"}
            ) as api:
                items = (await api.get("/api/items")).json()
            assert [i["uid"] for i in items] == ["USA::BARRIER-1"]
        finally:
            await usa.stop()
            await jpn.stop()


async def test_deleting_and_moving_another_partys_shapes_never_costs_the_connection(
    make_hub,
) -> None:
    """ATAK's user tidies the shared map: deletes and moves (resends under the uid it was
    given) another party's shapes, many more times than `limit_refusals_before_close`. Each
    is refused and counted; the connection stays, and what it sends next still flows."""
    async with make_hub(ALLIES, server={"limit_refusals_before_close": 3}) as hub:
        usa = await Pytak(hub, "USA").start()
        jpn = await Pytak(hub, "JPN").start()
        try:
            usa.send(drawing("AREA-9"))
            await jpn.wait_for(lambda e: e.get("uid") == "USA::AREA-9")
            for _ in range(4):
                jpn.send(delete("USA::AREA-9"))
                jpn.send(drawing("USA::AREA-9"))  # moved on JPN's map, sent as it knows it
            jpn.send(sa("JPN-DEV", "RED FOX 1"))
            await usa.wait_for(lambda e: e.get("uid") == "JPN::JPN-DEV")
            assert await metric(hub, "commonsky_refusals_total", reason="delete_not_owner") == 4
            assert await metric(hub, "commonsky_refusals_total", reason="uid_spoof") == 4
            assert await metric(hub, "commonsky_connections_closed_total") == 0
            assert ("USA", "AREA-9") in hub.hub.durable
        finally:
            await usa.stop()
            await jpn.stop()


async def test_a_client_off_line_when_a_shape_was_deleted_takes_it_off_when_back(
    make_hub,
) -> None:
    """JPN's tablet is off while USA deletes its area: back on line, JPN's replay no longer
    names the area, and only a delete takes it off the map it kept (owed: hub/withdraw.py)."""
    async with make_hub(ALLIES) as hub:
        usa = await Pytak(hub, "USA").start()
        jpn = await Pytak(hub, "JPN").start()
        try:
            usa.send(drawing("AREA-9"))
            await jpn.wait_for(lambda e: e.get("uid") == "USA::AREA-9")
            await jpn.stop()
            usa.send(delete("AREA-9"))
            usa.send(drawing("BARRIER-1"))
            await until(lambda: ("USA", "BARRIER-1") in hub.hub.durable)  # (applied in order)
            assert ("USA", "AREA-9") not in hub.hub.durable
        finally:
            await usa.stop()
        back = await Pytak(hub, "JPN").start()
        try:
            await back.wait_for(lambda e: e.get("uid") == "USA::BARRIER-1")  # (its replay)
            deletes = [e for e in back.events if e.get("type") == "t-x-d-d"]
            assert [attr(e, "link", "uid") for e in deletes] == ["USA::AREA-9"]
            assert not [e for e in back.events if e.get("uid") == "USA::AREA-9"]
        finally:
            await back.stop()
