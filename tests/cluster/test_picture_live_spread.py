"""Live items' bucket writes are spread over the core's upkeep rounds (cluster/spread.py).

Before, the core wrote every changed live item's picture entries and live record at once,
every LIVE_EVERY_S (~300 KV writes per bucket in one burst at 1,000 msg/s with 50
receivers), and a full pass (`reconcile`, every 5 s) wrote them all again: the inbound
stream queued behind those bursts, the cluster's worst p99. Now each upkeep round writes
a share — for N changed at once, at most ceil(N / 8) keys a round — and every key still
lands in both buckets within LIVE_EVERY_S of its change. Against the NATS server the other
cluster tests use; the rounds run on a clock of the test's own (no waiting)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client

from commonsky.cluster.live_kv import LiveKeeper, live_key
from commonsky.cluster.nats_io import live_bucket, picture_bucket
from commonsky.cluster.picture_kv import PictureWriter, read_entry
from commonsky.cluster.spread import LIVE_EVERY_S, ROUND_S, LiveSpread
from commonsky.cluster.stream_acks import StreamAcks
from commonsky.cluster.wire import Names, picture_key
from tests.conftest import RunningHub
from tests.integration.test_tak_tcp import track

TRACKS = 40
ROUNDS = round(LIVE_EVERY_S / ROUND_S)  # (8: the share of a burst is ceil(N / 8))


class Counting:
    """StreamAcks, remembering the subjects published since `taken`."""

    def __init__(self, acks: StreamAcks) -> None:
        self.acks = acks
        self.subjects: list[str] = []

    async def publish_async(self, subject: str, data: bytes, headers: Any) -> Any:
        self.subjects.append(subject)
        return await self.acks.publish_async(subject, data, headers)

    def taken(self) -> list[str]:
        subjects, self.subjects = self.subjects, []
        return subjects


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110  (a barrier on the hub's state)
            await asyncio.sleep(0.01)


async def test_a_burst_of_live_changes_is_written_a_share_a_round_and_in_time(
    make_hub: Callable[..., Any], nc: Client, cluster_name: str
) -> None:
    names = Names(cluster_name)
    js = nc.jetstream()
    kv, live = await picture_bucket(js, names), await live_bucket(js, names)
    acks = StreamAcks(nc)
    await acks.start()
    stream = Counting(acks)
    clock = [1_000.0]
    running: RunningHub
    async with make_hub() as running:
        hub = running.server.hub
        keeper = LiveKeeper(hub, live, names.live)
        writer = PictureWriter(hub, kv, hub.clock, stream, names.picture, keeper,
                               timer=lambda: clock[0])  # fmt: skip
        writer.full = False  # (only what is noted from here on)
        client = await running.connect("USA")
        keys = [("USA", f"T-SPREAD-{n}") for n in range(TRACKS)]
        for _, uid in keys:
            client.send(track(uid))
        await until(lambda: all(k in hub.picture.live for k in keys))
        subject_key = {f"$KV.{names.live}.{live_key(k)}": k for k in keys}
        for key in keys:
            for party in hub.policy.parties:
                subject_key[f"$KV.{names.picture}.{picture_key(party, key)}"] = key

        # A full pass checks every key, but leaves these to their rounds (no burst).
        writer.reconcile()
        await writer.flush(live=False)
        assert [s for s in stream.taken() if s in subject_key] == []

        share = math.ceil(TRACKS / ROUNDS)
        written: set[tuple[str, str]] = set()
        for n in range(ROUNDS):  # (the rounds at +0 s .. +1.75 s: within LIVE_EVERY_S)
            clock[0] = 1_000.0 + n * ROUND_S
            await writer.flush()
            this_round = {subject_key[s] for s in stream.taken() if s in subject_key}
            assert len(this_round) <= share, f"round {n}: {len(this_round)} keys"
            written |= this_round
        assert written == set(keys)

        # Each in both buckets, the version the hub holds.
        for key in keys:
            seq = hub.picture.live[key].item.seq
            for party in writer._wanted(key, hub.clock()):
                entry = read_entry((await kv.get(picture_key(party, key))).value or b"")
                assert (entry.uid, entry.seq) == (key[1], seq)
            assert (await live.get(live_key(key))).value
        assert writer.dirty_live.quota(clock[0]) == 0


@settings(max_examples=200, deadline=None)
@given(
    notes=st.lists(st.tuples(st.integers(0, 30), st.floats(0, 10, allow_nan=False)), max_size=300),
    late=st.lists(st.floats(0, ROUND_S * 0.5), min_size=1, max_size=8),
)
def test_every_key_is_handed_out_within_live_every_s(
    notes: list[tuple[int, float]], late: list[float]
) -> None:
    """Property: with rounds every ROUND_S (each up to half a round late), a key is handed
    out no later than LIVE_EVERY_S after its first change not handed out yet; and a round
    never hands out more than the keys due."""
    now = [0.0]
    spread: LiveSpread[int] = LiveSpread(lambda: now[0])
    pending: dict[int, float] = {}  # key -> its first change not handed out yet
    notes = sorted(notes, key=lambda n: n[1])
    at, n = 0, 0
    while at < len(notes) or pending:
        round_at = n * ROUND_S + late[n % len(late)]
        while at < len(notes) and notes[at][1] < round_at:
            key, when = notes[at]
            now[0] = when
            spread.note(key)
            pending.setdefault(key, when)
            at += 1
        now[0] = round_at
        due = len(spread)
        out = spread.share()
        assert len(out) <= due and len(set(out)) == len(out)
        for key in out:
            assert round_at - pending.pop(key) <= LIVE_EVERY_S, (key, round_at)
        assert set(pending) == set(spread.batch_of)
        n += 1


@given(burst=st.integers(1, 2_000))
def test_a_burst_is_written_evenly(burst: int) -> None:
    """N keys changed at once go ceil(N / 8) a round (the last round less), all within
    LIVE_EVERY_S — not N at once."""
    now = [5.0]
    spread: LiveSpread[int] = LiveSpread(lambda: now[0])
    for key in range(burst):
        spread.note(key)
    sizes = []
    while len(spread):
        sizes.append(len(spread.share()))
        now[0] += ROUND_S
    assert max(sizes) == math.ceil(burst / ROUNDS)
    assert len(sizes) <= ROUNDS and sum(sizes) == burst
