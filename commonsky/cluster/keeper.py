"""The core's lease (lease.py), kept on its own thread, event loop and NATS connection.

Why not on the core's loop: a core catching up on a backlog (after a takeover, or under more
load than it carries) keeps its loop busy and its NATS connection full of picture writes
and deliveries; a renewal queued behind them came too late and the lease went to a standby —
which then did the same. On its own thread and connection a renewal waits for neither. A
core whose loop is slow still holds the lease: it is alive and making progress; one that
dies stops renewing, and a standby takes over after the TTL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable

from .config import ClusterSettings
from .nats_io import connect
from .wire import Names

log = logging.getLogger("commonsky.cluster")


class LeaseKeeper:
    """`acquire()` waits until this process holds the lease; `lost` (an event of the caller's
    loop) is set when it is lost; `release()` gives it up."""

    def __init__(self, cluster: ClusterSettings, bucket: str, holder: str,
                 ready: Callable[[], bool] | None = None) -> None:  # fmt: skip
        """`ready`: whether this process could serve now, asked (on a thread of its own) when
        the lease is free (`Lease.acquire`); blocking is fine, a few seconds at most."""
        self.cluster, self.bucket, self.holder = cluster, bucket, holder
        self.ready = ready
        self.lost = asyncio.Event()
        self.epoch = 0
        self._acquired: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._release = threading.Event()
        self._done = threading.Event()
        self._caller: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)

    @property
    def held(self) -> bool:
        return self.epoch != 0 and not self.lost.is_set()

    async def acquire(self) -> None:
        self._caller = asyncio.get_running_loop()
        self._thread.start()
        self.epoch = await asyncio.wrap_future(self._acquired)

    async def release(self) -> None:
        self._release.set()
        await asyncio.to_thread(self._done.wait, 10.0)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # (NATS gone at start, say): the caller must not wait
            if not self._acquired.done():
                self._acquired.set_exception(exc)
            self._lose()
        finally:
            self._done.set()

    def _lose(self) -> None:
        if self._caller is not None:
            self._caller.call_soon_threadsafe(self.lost.set)

    async def _main(self) -> None:
        from .lease import Lease

        nc = await connect(
            self.cluster, f"lease {self.holder}", Names(self.cluster.name).core_inbox
        )
        try:
            lease = Lease(nc.jetstream(), bucket=self.bucket, holder=self.holder,
                          ttl_s=self.cluster.lease_ttl_s, cluster=self.cluster.name)  # fmt: skip
            ready = self.ready

            async def usable() -> bool:
                assert ready is not None
                return await asyncio.to_thread(ready)

            acquiring = asyncio.create_task(lease.acquire(ready=usable if ready else None))
            while not acquiring.done():  # (a standby told to stop stops waiting)
                if self._release.is_set():
                    acquiring.cancel()
                    return
                await asyncio.sleep(0.05)
            acquiring.result()
            self._acquired.set_result(lease.epoch)
            holding = asyncio.create_task(lease.hold())
            # (`_release` is a threading.Event, set from the caller's thread: polled.)
            while not lease.lost.is_set() and not self._release.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if self._release.is_set():
                holding.cancel()
                await lease.release()
            else:
                self._lose()
        finally:
            await nc.close()
