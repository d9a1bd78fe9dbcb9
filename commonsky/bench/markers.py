"""Bench: removing delete markers from a KV bucket (cluster/markers.py), against NATS.

A bucket like the picture bucket (history=1, on disk) gets `--values` values written first
(durable items: old), `--markers` keys written then deleted (tracks gone), then `--recent`
values (live items, rewritten since). One sweep (`Sweeper.sweep`, every marker older than
now) runs while the loop is sampled every 5 ms (its longest stall: how long the core could
not run) and a JetStream publish goes every 10 ms (its longest acknowledgement: how long
the core's own writes waited behind the removals). With `--nats-py`, nats-py's
`KeyValue.purge_deletes(olderthan=-1)` instead, for comparison.

    python -m commonsky.bench.markers [--markers 50000] [--nats-url nats://127.0.0.1:4222]

Prints one line of figures; the bucket is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid

import nats
from nats.js.api import KeyValueConfig, StorageType, StreamConfig

from commonsky.cluster.config import nats_options
from commonsky.cluster.markers import Sweeper


async def _fill(js: nats.js.JetStreamContext, bucket: str, args: argparse.Namespace) -> None:
    value = b"v" * 400  # (a rendered entry's order of size)
    writes: list[tuple[str, bytes, dict[str, str] | None]]
    writes = [(f"d{i}", value, None) for i in range(args.values)]
    writes += [(f"t{i}", value, None) for i in range(args.markers)]
    writes += [(f"t{i}", b"", {"KV-Operation": "DEL"}) for i in range(args.markers)]
    writes += [(f"r{i}", value, None) for i in range(args.recent)]
    for at in range(0, len(writes), 5000):
        acks = [await js.publish_async(f"$KV.{bucket}.USA.{key}", data, headers=headers)
                for key, data, headers in writes[at : at + 5000]]  # fmt: skip
        await asyncio.gather(*acks)


async def run(args: argparse.Namespace) -> str:
    nc = await nats.connect(**nats_options(args.nats_url, "--nats-url"))
    js = nc.jetstream()
    bucket = f"bench{uuid.uuid4().hex[:8]}"
    probe = f"{bucket}_probe"
    try:
        kv = await js.create_key_value(
            config=KeyValueConfig(bucket=bucket, history=1, storage=StorageType.FILE)
        )
        await js.add_stream(StreamConfig(name=probe, subjects=[probe], max_msgs=1000))
        await _fill(js, bucket, args)
        before = (await js.stream_info(f"KV_{bucket}")).state.messages
        stall = ack = 0.0
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal stall
            while not done.is_set():
                at = time.perf_counter()
                await asyncio.sleep(0.005)
                stall = max(stall, time.perf_counter() - at - 0.005)

        async def publish() -> None:
            nonlocal ack
            while not done.is_set():
                at = time.perf_counter()
                await js.publish(probe, b"x")
                ack = max(ack, time.perf_counter() - at)
                await asyncio.sleep(0.01)

        # (Quiet figures first: the same probes without a sweep.)
        tasks = [asyncio.create_task(sample()), asyncio.create_task(publish())]
        await asyncio.sleep(1.0)
        done.set()
        await asyncio.gather(*tasks)
        quiet_stall, quiet_ack, stall, ack = stall, ack, 0.0, 0.0
        done.clear()
        tasks = [asyncio.create_task(sample()), asyncio.create_task(publish())]
        at = time.perf_counter()
        if args.nats_py:
            await kv.purge_deletes(olderthan=-1)
            removed = args.markers
        else:
            removed = await Sweeper(js, [(bucket, kv)], age=0.0).sweep()
        took = time.perf_counter() - at
        done.set()
        await asyncio.gather(*tasks)
        after = (await js.stream_info(f"KV_{bucket}")).state.messages
        how = "nats-py purge_deletes" if args.nats_py else "Sweeper.sweep"
        return (
            f"{how}: {removed} markers removed in {took:.2f} s ({removed / took:,.0f}/s); "
            f"bucket {before} -> {after} messages; loop's longest stall {stall * 1000:.1f} ms "
            f"(quiet {quiet_stall * 1000:.1f} ms); longest publish ack {ack * 1000:.1f} ms "
            f"(quiet {quiet_ack * 1000:.1f} ms)"
        )
    finally:
        for stream in (f"KV_{bucket}", probe):
            with contextlib.suppress(Exception):  # (never made)
                await js.delete_stream(stream)
        await nc.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markers", type=int, default=50_000)
    parser.add_argument("--values", type=int, default=10_000)
    parser.add_argument("--recent", type=int, default=5_000)
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--nats-py", action="store_true", help="nats-py's purge_deletes")
    print(asyncio.run(run(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
