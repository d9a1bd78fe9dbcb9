"""Entries in the picture bucket that an edge cannot read — not msgpack, JSON, another shape
or version of `PictureEntry`, an unknown category, XML that is not one event — are left out
of a late joiner's picture with one line, and every other entry is still replayed
(picture_kv.read_picture; before, one such entry lost the whole read: with no core, a late
joiner got nothing). The edge names them in its Attach (`unread`): the core sends the item
whose entry was damaged, once, even though the edge read past its revision."""

from __future__ import annotations

import contextlib
import logging
import time

import msgspec
import pytest
from nats.aio.client import Client as Nats
from nats.js.errors import NoKeysError

from commonsky.bench.cluster import Client, Cluster, marker, track, until, until_async
from commonsky.cluster.edge import EdgeHub, page_replay
from commonsky.cluster.picture_kv import read_entry
from commonsky.cluster.wire import PictureEntry, encode, picture_key
from commonsky.policy import Policy
from commonsky.settings import defaults

GOOD = PictureEntry("USA", "u1", "airspace", 1.0, 2e9, True, b'<event uid="u1"></event>')

GARBAGE = {
    "not msgpack": b"\xc1\xc1\xc1",
    "JSON": b'{"party": "USA", "uid": "x"}',
    "a map": encode({"party": "USA"}),
    "too few fields": encode(["USA", "u1", "track"]),
    "another version": encode([*msgspec.to_builtins(GOOD), 1, "x", "extra", 9]),
    "a field of another type": encode(["USA", "u1", "track", "soon", 2e9, True, b"<e/>"]),
    "an unknown category": encode(msgspec.structs.replace(GOOD, category="weather")),
    "no XML": encode(msgspec.structs.replace(GOOD, xml=b"")),
    "two events": encode(
        msgspec.structs.replace(GOOD, xml=b'<event uid="a"></event><event uid="forged"></event>')
    ),
    "not an event": encode(msgspec.structs.replace(GOOD, xml=b"<html/>")),
}


@pytest.mark.parametrize("value", GARBAGE.values(), ids=list(GARBAGE))
def test_an_unreadable_entry_is_a_value_error(value: bytes) -> None:
    with pytest.raises(ValueError, match="not a picture entry"):
        read_entry(value)


def test_the_core_s_entries_read() -> None:
    assert read_entry(encode(GOOD)) == GOOD
    declared = msgspec.structs.replace(GOOD, xml=b'<?xml version="1.0"?>\n' + GOOD.xml)
    assert read_entry(encode(declared)) == declared


async def test_a_late_joiner_gets_every_readable_entry_and_the_core_the_rest(
    cluster: Cluster, nc: Nats, cluster_name: str
) -> None:
    core = await cluster.core()
    edge, ports = await cluster.edge()
    usa = await Client("USA", ports["USA"]).connect()
    now = time.time()
    for uid in ("m-good", "m-damaged"):
        await usa.send(marker(uid, now))
    await usa.send(track("t-live", now))
    kv = await nc.jetstream().key_value(f"{cluster_name}_picture")
    keys = {uid: picture_key("USA", ("USA", uid)) for uid in ("m-good", "m-damaged", "t-live")}

    async def written() -> bool:
        with contextlib.suppress(NoKeysError):
            return set(keys.values()) <= set(await kv.keys())
        return False

    await until_async(written, "the core wrote the three entries")
    # The damaged item's entry, and entries no core wrote, under USA's prefix.
    await kv.put(keys["m-damaged"], GARBAGE["JSON"])
    for n, value in enumerate(GARBAGE.values()):
        await kv.put(f"USA.garbage{n}", value)
    # A late joiner with the core up: the bucket's good entries from the edge, the damaged
    # one's item from the core (it wrote that key at a revision the edge read past).
    late = await Client("USA", ports["USA"]).connect()
    for uid in keys:
        await until(lambda u=uid: late.got(f'uid="{u}"') >= 1, f"the late joiner gets {uid}")
    # ... and with no core: the good ones still.
    core.kill()
    alone = await Client("USA", ports["USA"]).connect()
    await until(lambda: alone.got('uid="m-good"') >= 1, "with no core: the good marker")
    await until(lambda: alone.got('uid="t-live"') >= 1, "with no core: the live track")
    barrier = await Client("USA", ports["USA"]).connect()  # (a read after `late`'s and alone's)
    await until(lambda: barrier.got('uid="m-good"') >= 1, "a third read")
    assert alone.got('uid="m-damaged"') == 0
    for uid in keys:
        assert late.got(f'uid="{uid}"') == 1, (uid, late.uids())
    assert alone.got('uid="forged"') == 0 and late.got('uid="forged"') == 0
    # One line per read that met them, naming how many and the first.
    lines = [line for line in edge.text().splitlines() if "unreadable, left out" in line]
    assert len(lines) == 3, lines
    assert all(f"{len(GARBAGE) + 1} entries of USA" in line for line in lines), lines
    assert "Traceback" not in edge.text()
    for client in (usa, late, alone, barrier):
        await client.close()


def test_a_map_page_s_unreadable_entries_are_one_line(caplog: pytest.LogCaptureFixture) -> None:
    """A map page's picture is made into JSON at the edge (`page_replay`): entries whose XML
    does not parse are left out in one line for the read, not one each."""
    hub = EdgeHub("e1", Policy([], []), defaults())
    good = msgspec.structs.replace(GOOD, uid="m-1", xml=marker("m-1", time.time()))
    bad = msgspec.structs.replace(GOOD, xml=b'<event uid="u1"><point lat="x"/></event>')
    with caplog.at_level(logging.ERROR, logger="commonsky.cluster"):
        made = page_replay(hub, [bad, good, bad, bad])
    assert [p.rendered.item.key for p in made] == [("USA", "m-1")]
    lines = [r.getMessage() for r in caplog.records if "unreadable as JSON" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("edge: 3 picture entries"), lines
