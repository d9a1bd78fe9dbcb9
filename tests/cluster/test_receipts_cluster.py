"""GeoChat receipts through a cluster (tests/integration/test_receipts.py for one process):
the sender's device on edge A goes offline, the recipient on edge B reads, the sender comes
back on edge B and gets each receipt once; the recipient, back after acknowledging, is not
given the message again.

The fuzz bench's parties and agreements (`commonsky.bench.hubproc.hub_config`): KOR and RUS
share the hotline both ways in full. Traffic in the corpus's shapes (the helpers of the
single-process test). Every wait is a barrier: a track of the party that everything queued
before it precedes (one stream, applied in order; a party's connections get its tracks)."""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from typing import Any

from commonsky.bench.cluster import Client, Cluster, track, until
from tests.integration.test_receipts import device, geochat, receipt


def _events(client: Client, kind: str, text: str) -> list[bytes]:
    return [e for e in client.events if f'type="{kind}"'.encode() in e and text.encode() in e]


def _as_received(raw: bytes) -> dict[str, Any]:
    root = ET.fromstring(raw[raw.index(b"<event") :])
    detail = root.find("detail")
    assert detail is not None
    return {"uid": root.get("uid"), "detail": ET.tostring(detail, "unicode")}


async def _settled(client: Client, watcher: Client) -> list[bytes]:
    """Everything the core queued to `client` for what it sent so far: `client` sends a
    track, `watcher` (its party, another connection) sees it, then sends one that `client`
    sees; returns what `client` had received before that."""
    mine, theirs = f"t-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    await client.send(track(mine, time.time()))
    await until(lambda: watcher.got(mine) >= 1, f"{watcher.party} sees {mine}")
    await watcher.send(track(theirs, time.time()))
    await until(lambda: client.got(theirs) >= 1, f"{client.party} sees {theirs}")
    return client.events[: next(i for i, e in enumerate(client.events) if theirs.encode() in e)]


async def test_a_receipt_crosses_edges_to_the_sender_back_on_another_edge(
    cluster: Cluster,
) -> None:
    a, b = await cluster.core_and_two_edges()
    kor_watch = await Client("KOR", b["KOR"]).connect()
    rus_watch = await Client("RUS", a["RUS"]).connect()
    sender = await Client("KOR", a["KOR"]).connect()
    await sender.send(device("KOR-DEV", "TIGER 1"))
    recipient = await Client("RUS", b["RUS"]).connect()
    await recipient.send(device("RUS-DEV", "BEAR 1"))
    await _settled(sender, kor_watch)
    await _settled(recipient, rus_watch)  # (BEAR 1 is known: the message is routed to RUS)
    mid = str(uuid.uuid4())
    await sender.send(geochat("KOR-DEV", "TIGER 1", "RUS::RUS-DEV", "BEAR 1", mid))
    await until(lambda: bool(_events(recipient, "b-t-f", mid)), "the recipient gets the message")
    got = _as_received(_events(recipient, "b-t-f", mid)[0])
    await sender.close()  # (offline; the core may learn it after the receipts came)
    await recipient.send(receipt(got, "RUS-DEV", "BEAR 1", "b-t-f-d"))
    await recipient.send(receipt(got, "RUS-DEV", "BEAR 1", "b-t-f-r"))
    await until(
        lambda: len(_events(kor_watch, "b-t-f-r", f'uid="{mid}"')) >= 1, "KOR has the receipts"
    )
    # The sender's device comes back on the other edge: both receipts, once each.
    back = await Client("KOR", b["KOR"]).connect()
    await back.send(device("KOR-DEV", "TIGER 1"))
    await until(
        lambda: bool(_events(back, "b-t-f-r", f'uid="{mid}"')), "the sender's device gets them"
    )
    before = await _settled(back, kor_watch)
    for kind in ("b-t-f-d", "b-t-f-r"):
        answers = [
            e for e in before if f'type="{kind}"'.encode() in e and f'uid="{mid}"'.encode() in e
        ]
        assert len(answers) == 1, (kind, back.uids())
        assert b'uid="RUS::RUS-DEV"' in answers[0]  # (from the device it wrote to)
    # The recipient acknowledged it: back on the other edge, it is not given it again.
    await recipient.close()
    again = await Client("RUS", a["RUS"]).connect()
    await again.send(device("RUS-DEV", "BEAR 1"))
    before = await _settled(again, rus_watch)
    assert not [e for e in before if b'type="b-t-f"' in e and mid.encode() in e], again.uids()
    for client in (kor_watch, rus_watch, recipient, back, again):
        await client.close()
