"""Clients that are alive stay connected; protobuf nobody negotiated is refused by name
(issue #12 fault 7). Real sockets, with timeouts made short."""

from __future__ import annotations

import asyncio
import logging

import pytest
import takproto

from commonsky.protocol.session import TakSession
from tests.integration.test_tak_tcp import FULL_TRACKS, metric, track


async def test_a_client_that_is_sent_traffic_is_not_closed_as_idle(make_hub) -> None:
    """A stationary ATAK says nothing for minutes while it hears traffic (it pings only
    after 15 s of silence); here timeout_idle_s is 1.5 s and it says nothing for 4 s."""
    async with make_hub([FULL_TRACKS], server={"timeout_idle_s": 1.5}) as hub:
        usa, jpn = await hub.connect_all(("USA", "JPN"))  # JPN only listens
        loop = asyncio.get_running_loop()
        end, n = loop.time() + 4.0, 0
        while loop.time() < end:
            usa.send(track(f"T{n}"))
            await jpn.wait_for(lambda e, n=n: e["uid"] == f"USA::T{n}")
            n += 1
            await asyncio.sleep(0.1)
        assert await metric(hub, "commonsky_connections_closed_total", reason="idle") == 0
        usa.send(track("last"))  # the listener is still connected: it still receives
        await jpn.wait_for(lambda e: e["uid"] == "USA::last")


async def test_a_client_with_nothing_moving_either_way_is_closed_as_idle(make_hub) -> None:
    async with make_hub([FULL_TRACKS], server={"timeout_idle_s": 0.3}) as hub:
        silent = await hub.connect("RUS")  # nobody shares with RUS: nothing reaches it
        with pytest.raises(ConnectionError):
            await silent.collect(3.0)
        assert await metric(hub, "commonsky_connections_closed_total", reason="idle") == 1


async def test_a_newline_after_each_event_is_not_a_partial_event(make_hub) -> None:
    """A client that ends every event with a newline (or sends the next declaration early)
    keeps sending for longer than timeout_partial_event_s and is never closed for it."""
    async with make_hub([FULL_TRACKS], server={"timeout_partial_event_s": 0.3}) as hub:
        usa, jpn = await hub.connect_all(("USA", "JPN"))
        for n in range(12):
            usa.send(track(f"N{n}").removeprefix(b'<?xml version="1.0"?>') + b"\n")
            if n % 2:
                usa.send(b'<?xml version="1.0" encoding="UTF-8"?>\n')
            await jpn.wait_for(lambda e, n=n: e["uid"] == f"USA::N{n}")
            await asyncio.sleep(0.06)
        assert await metric(hub, "commonsky_refusals_total", reason="partial_event") == 0
        assert await metric(hub, "commonsky_connections_closed_total") == 0


async def test_protobuf_sent_without_negotiation_is_refused_by_name(
    make_hub, caplog: pytest.LogCaptureFixture
) -> None:
    """pytak with TAK_PROTO=1 sends stream protobuf at once, without t-x-takp-q."""
    async with make_hub([FULL_TRACKS]) as hub:
        eager, usa, jpn = await hub.connect_all(("USA", "USA", "JPN"))
        caplog.set_level(logging.WARNING, "commonsky.listener")
        eager.send(bytes(takproto.xml2proto(track("eager"), takproto.TAKProtoVer.STREAM)))
        with pytest.raises(ConnectionError):
            await eager.collect(3.0)
        assert await metric(hub, "commonsky_refusals_total", reason="proto_not_negotiated") == 1
        assert any("proto_not_negotiated" in r.getMessage() for r in caplog.records)
        usa.send(track("after"))  # others are unaffected, and nothing of it was relayed
        await jpn.wait_for(lambda e: e["uid"] == "USA::after")
        assert [e["uid"] for e in jpn.items()] == ["USA::after"]


async def test_a_message_begun_after_others_is_held_to_the_partial_timer(make_hub) -> None:
    """The read loop's timer is armed for the idle deadline (minutes); a message begun and
    not finished must bring it forward to timeout_partial_event_s, however many complete
    messages came first."""
    settings = {"timeout_idle_s": 60.0, "timeout_partial_event_s": 0.3}
    async with make_hub([FULL_TRACKS], server=settings) as hub:
        slow, jpn = await hub.connect_all(("USA", "JPN"))
        for n in range(3):
            slow.send(track(f"W{n}"))
            await jpn.wait_for(lambda e, n=n: e["uid"] == f"USA::W{n}")
        slow.send(track("stalled")[:-20])
        with pytest.raises(ConnectionError):
            await slow.collect(5.0)
        assert await metric(hub, "commonsky_refusals_total", reason="partial_event") == 1
        assert await metric(hub, "commonsky_connections_closed_total", reason="idle") == 0


async def test_a_timeout_error_of_the_hubs_own_is_not_taken_for_the_idle_timer(
    make_hub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The read loop's timer spans the handling of what was read: a TimeoutError raised by
    that handling is a fault of ours (logged, counted, the connection closed), not the
    timer's (which would drop the rest of the read without a word)."""
    async with make_hub([FULL_TRACKS]) as hub:
        usa, jpn = await hub.connect_all(("USA", "JPN"))
        receive_data = TakSession.receive_data

        def failing(self, data, now, clock):  # type: ignore[no-untyped-def]
            if b"boom" in data:
                raise TimeoutError("a fault inside the hub")
            return receive_data(self, data, now, clock)

        monkeypatch.setattr(TakSession, "receive_data", failing)
        caplog.set_level(logging.ERROR, "commonsky.listener")
        usa.send(track("boom"))
        with pytest.raises(ConnectionError):
            await usa.collect(5.0)
        assert await metric(hub, "commonsky_internal_errors_total") == 1
        assert any("reading failed" in r.getMessage() for r in caplog.records)
        usa2 = await hub.connect("USA")  # the others are unaffected
        usa2.send(track("after"))
        await jpn.wait_for(lambda e: e["uid"] == "USA::after")
