"""Addressing across a cluster: a client that reports its device at once — as ATAK does, its
position right after connecting — gets what waits addressed to that device's callsign, as
from the single process (`Hub._register`: what waits is given at a device's first report).

Found by the corpus played through a cluster (`test_corpus_cluster.py`: a late joiner
announcing the callsign a `<marti><dest callsign=…>` names never got the message). The edge
learns the device from the report while it reads the client's picture, so the `Attach` it
publishes afterwards carries the device; the core took it as known, and the report itself
(behind the `Attach` in the stream) then found nothing new to give."""

from __future__ import annotations

import time

from commonsky.bench.cluster import Client, Cluster, track, until
from commonsky.times import format_time


def addressed_marker(uid: str, callsign: str, now: float) -> bytes:
    return (
        f'<event version="2.0" uid="{uid}" type="b-m-p-s-m" time="{format_time(now)}" '
        f'start="{format_time(now)}" stale="{format_time(now + 3600)}" how="h-g-i-g-o">'
        '<point lat="35" lon="139" hae="0" ce="10" le="10"/><detail>'
        f'<contact callsign="{uid}"/><marti><dest callsign="{callsign}"/></marti>'
        "</detail></event>"
    ).encode()


def device_report(uid: str, callsign: str, now: float) -> bytes:
    """A device's own position report (a contact endpoint: the hub learns its callsign)."""
    return (
        f'<event version="2.0" uid="{uid}" type="a-f-G-U-C" time="{format_time(now)}" '
        f'start="{format_time(now)}" stale="{format_time(now + 60)}" how="m-g">'
        '<point lat="-60" lon="-150" hae="0" ce="10" le="10"/><detail>'
        f'<contact callsign="{callsign}" endpoint="*:-1:stcp"/></detail></event>'
    ).encode()


async def test_a_device_reported_at_once_gets_what_waits_addressed_to_it(
    cluster: Cluster,
) -> None:
    a, b = await cluster.core_and_two_edges()
    sender = await Client("USA", a["USA"]).connect()
    watcher = await Client("USA", b["USA"]).connect()
    await sender.send(addressed_marker("for-late-device", "LATE-DEVICE", time.time()))
    # The core applied the marker once the watcher (same party, not addressed) has the
    # track sent after it: one stream, in order.
    await sender.send(track("after-the-marker", time.time()))
    await until(lambda: watcher.got("after-the-marker") >= 1, "the watcher sees the track")
    assert watcher.got("for-late-device") == 0, watcher.uids()  # (addressed to a device)
    late = await Client("USA", b["USA"]).connect()
    await late.send(device_report("late-device-uid", "LATE-DEVICE", time.time()))
    await until(lambda: late.got("for-late-device") >= 1, "the late device gets the marker")
    await sender.send(track("after-the-report", time.time()))
    await until(lambda: late.got("after-the-report") >= 1, "the late device sees the track")
    assert late.got("for-late-device") == 1, late.uids()  # (once)
    for client in (sender, watcher, late):
        await client.close()
