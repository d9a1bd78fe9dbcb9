"""Hostile and broken input over real sockets: refused, counted, never relayed, never fatal."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.test_tak_tcp import FULL_TRACKS, PROTO_REQUEST, metric, track

BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    b'<event version="2.0" uid="&lol3;" type="a-f-A" time="2030-01-01T00:00:00Z" '
    b'start="2030-01-01T00:00:00Z" stale="2030-01-01T00:10:00Z" how="m-g">'
    b'<point lat="1" lon="1" hae="0" ce="0" le="0"/><detail/></event>'
)
EXTERNAL_ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    b'<event version="2.0" uid="xxe" type="a-f-A" time="2030-01-01T00:00:00Z" '
    b'start="2030-01-01T00:00:00Z" stale="2030-01-01T00:10:00Z" how="m-g">'
    b'<point lat="1" lon="1" hae="0" ce="0" le="0"/><detail><remarks>&xxe;</remarks>'
    b"</detail></event>"
)
HUGE_ATTRIBUTE = (
    b'<event version="2.0" uid="huge" type="a-f-A" time="2030-01-01T00:00:00Z" '
    b'start="2030-01-01T00:00:00Z" stale="2030-01-01T00:10:00Z" how="m-g" x="'
    + b"A" * (10 * 1024 * 1024)
    + b'"><point lat="1" lon="1" hae="0" ce="0" le="0"/><detail/></event>'
)
BAD_UTF8 = track("utf").replace(b"VIPER", b"VIP\xff\xfeER")
DEEP = (
    b'<event version="2.0" uid="deep" type="a-f-A" time="2030-01-01T00:00:00Z" '
    b'start="2030-01-01T00:00:00Z" stale="2030-01-01T00:10:00Z" how="m-g">'
    b'<point lat="1" lon="1" hae="0" ce="0" le="0"/><detail>'
    + b"<a>" * 100
    + b"</a>" * 100
    + b"</detail></event>"
)
_STROKE = (
    "<!DOCTYPE e [<!ENTITY x 'y'>]><event version='2.0' uid='s' type='u-d-f' "
    "time='2030-01-01T00:00:00Z' start='2030-01-01T00:00:00Z' stale='2030-01-01T00:10:00Z' "
    "how='h-e'><point lat='1' lon='1' hae='0' ce='0' le='0'/><detail>"
    "<link point='1,1'/><link point='1,2'/></detail></event>"
)
# A telestration whose escaped stroke carries a DTD (every receiving client parses it).
STROKE_DTD = (
    b'<event version="2.0" uid="tele" type="u-d-f-m" time="2030-01-01T00:00:00Z" '
    b'start="2030-01-01T00:00:00Z" stale="2030-01-01T00:10:00Z" how="h-e">'
    b'<point lat="0" lon="0" hae="9999999" ce="9999999" le="9999999"/><detail>'
    + f'<link line="{_STROKE.replace("&", "&amp;").replace("<", "&lt;")}"/>'.encode()
    + b"</detail></event>"
)
# A TAK server's mission notice, sent by a client.
MISSION_NOTICE = (
    b'<event version="2.0" uid="m" type="t-x-m-c" time="2030-01-01T00:00:00Z" '
    b'start="2030-01-01T00:00:00Z" stale="2030-01-01T00:10:00Z" how="h-g-i-g-o">'
    b'<point lat="0" lon="0" hae="0" ce="0" le="0"/><detail><mission type="CHANGE" '
    b'name="OPS" guid="x"/></detail></event>'
)
RANDOM_BYTES = bytes(range(256)) * 40 + b"</event>"
NOT_EVENT = b"<html><body>hello</body></html></event>"
CONTROL_IN_UID = track("ctl").replace(b'uid="ctl"', b'uid="c&#9;tl"')  # spaces are fine

CASES = {
    "dtd": BILLION_LAUGHS,
    "external_entity": EXTERNAL_ENTITY,
    "oversized": HUGE_ATTRIBUTE,
    "bad_utf8": BAD_UTF8,
    "too_deep": DEEP,
    "random": RANDOM_BYTES,
    "not_event": NOT_EVENT,
    "control_in_uid": CONTROL_IN_UID,
    "stroke_dtd": STROKE_DTD,
    "mission_notice": MISSION_NOTICE,
}
REASONS = {
    "dtd": "dtd",
    "external_entity": "dtd",
    "oversized": "oversized",
    "bad_utf8": "bad_utf8",
    "too_deep": "too_deep",
    "random": "bad_utf8",
    "not_event": "malformed",
    "control_in_uid": "bad_uid",
    "stroke_dtd": "dtd",
    "mission_notice": "mission_notice",
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_hostile_xml_is_refused_counted_and_not_relayed(make_hub, case: str) -> None:
    async with make_hub([FULL_TRACKS]) as hub:
        bystander_usa, attacker, jpn = await hub.connect_all(("USA", "USA", "JPN"))
        attacker.send(CASES[case])
        attacker.send(track("after-" + case))  # the same connection still works afterwards
        await jpn.wait_for(lambda e: e["uid"] == f"USA::after-{case}")
        received = await hub.received_before_barrier(jpn)
        received += await hub.received_before_barrier(bystander_usa)
        assert all("after-" in e["uid"] for e in received), received
        assert await metric(hub, "commonsky_refusals_total", reason=REASONS[case]) >= 1
        # Another party's connection is unaffected and the hub still serves.
        bystander_usa.send(track("bystander"))
        await jpn.wait_for(lambda e: e["uid"] == "USA::bystander")
        async with httpx.AsyncClient() as client:
            assert (await client.get(hub.http + "/healthz")).status_code == 200


async def test_a_connection_that_keeps_sending_garbage_is_closed(make_hub) -> None:
    async with make_hub([FULL_TRACKS], server={"limit_refusals_before_close": 5}) as hub:
        attacker, jpn = await hub.connect_all(("USA", "JPN"))
        with pytest.raises(ConnectionError):
            for _ in range(50):
                attacker.send(NOT_EVENT)
                await attacker.collect(0.05)
        assert await metric(hub, "commonsky_connections_closed_total", reason="refusals") == 1
        usa = await hub.connect("USA")
        usa.send(track("still-fine"))
        await jpn.wait_for(lambda e: e["uid"] == "USA::still-fine")


async def test_a_connection_our_own_bug_ends_is_closed_with_a_reason(
    make_hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault of ours while reading a connection closes it as `internal_error`, counted and
    logged like every other close of the hub's; the other connections go on."""
    from commonsky.protocol.stream import TakStream

    receive = TakStream.receive_data

    def buggy(self: TakStream, data: bytes, now: float) -> Any:
        if b"BUG-TRIGGER" in data:
            raise AssertionError("a parser bug")
        return receive(self, data, now)

    monkeypatch.setattr(TakStream, "receive_data", buggy)
    async with make_hub([FULL_TRACKS]) as hub:
        victim, jpn = await hub.connect_all(("USA", "JPN"))
        victim.send(track("BUG-TRIGGER"))
        with pytest.raises(ConnectionError):
            await victim.collect(5.0)  # closed by the hub
        assert await metric(hub, "commonsky_connections_closed_total", reason="internal_error") == 1
        assert await metric(hub, "commonsky_internal_errors_total", where="connection") == 1
        usa = await hub.connect("USA")
        usa.send(track("still-fine"))
        await jpn.wait_for(lambda e: e["uid"] == "USA::still-fine")


async def test_slow_sender_that_never_finishes_is_closed(make_hub) -> None:
    async with make_hub([FULL_TRACKS], server={"timeout_partial_event_s": 0.5}) as hub:
        slow, jpn = await hub.connect_all(("USA", "JPN"))
        partial = track("slow")[:-20]
        slow.send(partial[:50])
        with pytest.raises(ConnectionError):
            for piece in range(50, len(partial), 5):
                slow.send(partial[piece : piece + 5])
                await slow.collect(0.1)
        assert await metric(hub, "commonsky_refusals_total", reason="partial_event") == 1
        assert await hub.received_before_barrier(jpn) == []


async def test_bad_protobuf_length_closes_only_that_connection(make_hub) -> None:
    async with make_hub([FULL_TRACKS]) as hub:
        attacker, usa, jpn = await hub.connect_all(("USA", "USA", "JPN"))
        attacker.send(PROTO_REQUEST)
        await attacker.wait_for(lambda e: e["type"] == "t-x-takp-r")
        attacker.send(b"\xbf\xff\xff\xff\xff\x0f" + b"x" * 100)  # 4 GiB length
        with pytest.raises(ConnectionError):
            await attacker.collect(1.0)
        assert await metric(hub, "commonsky_refusals_total", reason="oversized") == 1
        usa.send(track("ok"))
        await jpn.wait_for(lambda e: e["uid"] == "USA::ok")


async def test_garbage_protobuf_payload_is_refused(make_hub) -> None:
    async with make_hub([FULL_TRACKS]) as hub:
        attacker, jpn = await hub.connect_all(("USA", "JPN"))
        attacker.send(PROTO_REQUEST)
        await attacker.wait_for(lambda e: e["type"] == "t-x-takp-r")
        attacker.send(b"\xbf\x05\xff\xff\xff\xff\xff")
        await attacker.sync()  # the hub has read the frame (and refused it)
        assert await metric(hub, "commonsky_refusals_total", reason="bad_protobuf") == 1
        assert await hub.received_before_barrier(jpn) == []
