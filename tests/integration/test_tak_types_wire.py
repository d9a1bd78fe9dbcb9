"""Real TAK traffic of the everyday types between two parties over TCP (issue #12 faults
4, 5, 8 and 9): it crosses under an agreement naming its category, is relayed as written,
replayed to a late joiner unless it is a message, and shown in /api/items."""

from __future__ import annotations

import asyncio
import re
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from commonsky.model import Category
from tests.conftest import TakClient, token_of
from tests.integration.test_tak_tcp import track

CORPUS = Path("/work/shared/tak-corpus")
_TIME = re.compile(rb"""(time|start|stale)=(['"])([0-9T:.\-]+Z)\2""")

ALL = [
    {
        "name": f"{a} to {b}, everything",
        "from": a,
        "to": [b],
        "categories": [c.value for c in Category],
        "disclosure": "full",
    }
    for a, b in (("USA", "JPN"), ("JPN", "USA"))
]


def retimed(name: str) -> bytes:
    """A corpus file moved to now by one offset, as a client replaying it would."""
    data = (CORPUS / name).read_bytes()
    times = {m.group(1): m.group(3) for m in _TIME.finditer(data)}
    sent = datetime.fromisoformat(times[b"time"].decode().replace("Z", "+00:00")).timestamp()
    offset = time.time() - sent

    def shift(match: re.Match[bytes]) -> bytes:
        moment = datetime.fromisoformat(match.group(3).decode().replace("Z", "+00:00"))
        moved = datetime.fromtimestamp(moment.timestamp() + offset, UTC)
        stamp = moved.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return match.group(1) + b"=" + match.group(2) + stamp.encode() + match.group(2)

    return _TIME.sub(shift, data)


def corpus(prefix: str) -> str:
    (name,) = [p.name for p in CORPUS.glob(f"{prefix}-*.xml")]
    return name


# corpus file -> (type, replayed to a late joiner)
FILES = {
    "024": ("b-m-p-s-m", True),  # spot marker
    "066": ("b-m-p-s-p-op", True),  # observation post
    "065": ("b-m-p-w-GOTO", True),  # waypoint
    "027": ("u-rb-a", True),  # range & bearing line
    "025": ("u-r-b-bullseye", True),
    "020": ("u-d-f-m", True),  # telestration
    "143": ("b-i-v", True),  # video feed
    "072": ("b-r-f-h-c", True),  # CASEVAC
    "037": ("b-a-o", True),  # emergency
    "067": ("overhead_marker", True),  # a type no table names: `other`, live
    "012": ("b-f-t-r", False),  # file-transfer request: a message
    "055": ("b-f-t-a", False),  # its acknowledgement, NaN in <point>
}


async def barrier(sender: TakClient, receiver: TakClient, uid: str, seen_as: str) -> None:
    sender.send(track(uid))
    await receiver.wait_for(lambda e: e["uid"] == seen_as)


async def test_everyday_types_cross_are_relayed_as_written_and_replayed(make_hub) -> None:
    async with make_hub(ALL) as hub:
        usa, jpn = await hub.connect_all(("USA", "JPN"))
        # The video feed (143) and the acknowledgement (055) are addressed by callsign to
        # users that are, here, JPN's: they announce themselves first, as a device does (its
        # self-report carries its contact endpoint; hub/directory.py).
        for n, callsign in enumerate(("GRANITE1", "MAPLE MAPLE IRIS3")):
            own = track(f"JPN-{n}", callsign=callsign)
            jpn.send(own.replace(b"<contact ", b'<contact endpoint="*:-1:stcp" '))
            await usa.wait_for(lambda e, n=n: e["uid"] == f"JPN::JPN-{n}")
        sent = {}
        for number, (cot_type, _) in FILES.items():
            data = retimed(corpus(number))
            uid = re.search(rb"""uid=(['"])([^'"]+)\1""", data)
            assert uid is not None
            sent[cot_type] = uid.group(2).decode()
            usa.send(data)
        await barrier(usa, jpn, "after-all", "USA::after-all")
        got = {e["type"]: e for e in jpn.items()}
        for cot_type, uid in sent.items():
            assert got[cot_type]["uid"] == f"USA::{uid}", cot_type
        assert got["b-f-t-a"]["hae"] != got["b-f-t-a"]["hae"]  # NaN is relayed as NaN
        # A late joiner of the other party gets the picture, not the messages.
        late = await hub.connect("JPN")
        await barrier(usa, late, "after-late", "USA::after-late")
        replayed = {e["type"] for e in late.items()} - {"a-f-A-M-F"}
        # The video feed is addressed to GRANITE1's device, which the late joiner is not: it
        # is replayed only to the device that reports that callsign (hub/directory.py).
        kept = {t for t, again in FILES.values() if again} - {"b-i-v"}
        assert replayed == kept, replayed ^ kept


async def raw_events(client: TakClient, until_uid: str) -> list[ET.Element]:
    """Events as the bytes came (not through the test client's summary), up to a barrier."""
    frames: list[ET.Element] = []
    buffer = b""
    while not any(f.get("uid") == until_uid for f in frames):
        chunk = await asyncio.wait_for(client.reader.read(65536), 5.0)
        assert chunk, "closed by hub"
        buffer += chunk
        while (end := buffer.find(b"</event>")) >= 0:
            frames.append(ET.fromstring(buffer[: end + 8].strip()))
            buffer = buffer[end + 8 :]
    return frames


async def test_a_relay_invents_no_how_and_keeps_an_empty_access(make_hub) -> None:
    async with make_hub(ALL) as hub:
        usa, jpn = await hub.connect_all(("USA", "JPN"))
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        usa.send(
            f'<event version="2.0" uid="SPOT-1" type="b-m-p-s-m" time="{now}" start="{now}"'
            f' stale="2099-01-01T00:00:00Z" access=""><point lat="35.0" lon="135.0"'
            f' hae="9999999.0" ce="9999999.0" le="9999999.0"/><detail>'
            f"<precisionlocation altsrc='???'/></detail></event>".encode()
        )
        usa.send(track("b1"))
        frames = await raw_events(jpn, "USA::b1")
        (marker,) = [f for f in frames if f.get("uid") == "USA::SPOT-1"]
        assert "how" not in marker.attrib and marker.get("access") == ""
        assert marker.get("time") == marker.get("start") == now  # microseconds kept
        location = marker.find("detail/precisionlocation")
        assert location is not None and location.attrib == {"altsrc": "???"}
        async with httpx.AsyncClient(
            base_url=hub.http, headers={"Authorization": f"Bearer {token_of('JPN')}"}
        ) as api:
            (item,) = (await api.get("/api/items", params={"category": "marker"})).json()
        assert item["how"] is None and item["access"] == "" and item["start"] == item["time"]
        moment = datetime.fromisoformat(now.replace("Z", "+00:00")).timestamp()
        assert item["time"] == pytest.approx(moment, abs=1e-6)
