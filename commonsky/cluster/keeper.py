"""The core's lease (lease.py), kept on its own thread, event loop and NATS connection.

Why not on the core's loop: a core catching up on a backlog (after a takeover, or under more
load than it carries) keeps its loop busy and its NATS connection full of picture writes
and deliveries; a renewal queued behind them came too late and the lease went to a standby —
which then did the same. On its own thread and connection a renewal waits for neither. A
core whose loop is slow still holds the lease: it is alive and making progress; one that
dies stops renewing, and a standby takes over after the TTL. One that is stuck — alive,
applying nothing — gives the lease back and stops once `watch` named its consumer (stall.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .config import ClusterSettings
from .nats_io import connect
from .stall import STALL_CHECK_S, Progress, look
from .wire import Names

if TYPE_CHECKING:
    from nats.aio.client import Client

log = logging.getLogger("commonsky.cluster")


class LeaseKeeper:
    """`acquire()` waits until this process holds the lease; `lost` (an event of the caller's
    loop) is set when it is lost; `release()` gives it up; `watch(stream, consumer)` keeps it
    only while the core applies the stream (stall.py)."""

    def __init__(self, cluster: ClusterSettings, bucket: str, holder: str,
                 ready: Callable[[], bool] | None = None,
                 stuck: Callable[[], None] | None = None) -> None:  # fmt: skip
        """`ready`: whether this process could serve now, asked (on a thread of its own) when
        the lease is free (`Lease.acquire`); blocking is fine, a few seconds at most.
        `stuck`: called on the lease's thread once the lease was given back because the core
        applied nothing for `stall_s` (`lost` is set too, but the loop that would see it may
        be what is stuck): it stops the process (run.py)."""
        self.cluster, self.bucket, self.holder = cluster, bucket, holder
        self.ready = ready
        self.stuck = stuck
        self._watched: tuple[str, str] | None = None
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

    def watch(self, stream: str, consumer: str) -> None:
        """From now on, the lease is given back when the durable `consumer` of `stream` has
        messages waiting and its acknowledgement floor stays still for `stall_s` (stall.py).
        Called once the core consumes (before, the consumer is the last core's)."""
        self._watched = (stream, consumer)  # (read by the lease's thread: one assignment)

    async def release(self) -> None:
        self._release.set()
        await asyncio.to_thread(self._done.wait, 10.0)

    def _run(self) -> None:
        stuck = False
        try:
            stuck = asyncio.run(self._main())
        except BaseException as exc:  # (NATS gone at start, say): the caller must not wait
            if not self._acquired.done():
                self._acquired.set_exception(exc)
            self._lose()
        finally:
            self._done.set()
        if stuck and self.stuck is not None:
            self.stuck()

    def _lose(self) -> None:
        if self._caller is not None:
            self._caller.call_soon_threadsafe(self.lost.set)

    async def _main(self) -> bool:
        """Hold the lease until released or lost; True when it was given back because the
        core is stuck."""
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
                    return False
                await asyncio.sleep(0.05)
            acquiring.result()
            self._acquired.set_result(lease.epoch)
            holding = asyncio.create_task(lease.hold())
            progress = Progress(self.cluster.stall_s)
            looked = time.monotonic()
            # (`_release` is a threading.Event, set from the caller's thread: polled.)
            while not lease.lost.is_set() and not self._release.is_set():
                await asyncio.sleep(0.05)
                if self._watched is None or time.monotonic() - looked < STALL_CHECK_S:
                    continue
                looked = time.monotonic()
                if await self._stuck(nc, progress):
                    holding.cancel()
                    await lease.release()
                    self._lose()
                    return True
            if self._release.is_set():
                holding.cancel()
                await lease.release()
            else:
                self._lose()
        finally:
            await nc.close()
        return False

    async def _stuck(self, nc: Client, progress: Progress) -> bool:
        """One look at the watched consumer; True (and the line that says so) when the core
        has applied nothing for `stall_s` while messages waited."""
        assert self._watched is not None
        seen = await look(nc.jetstream(), *self._watched)
        if seen is None:
            progress.unseen()
            return False
        mark, waiting = seen
        stuck = progress.seen(mark, waiting, time.monotonic())
        if stuck is None:
            return False
        log.critical("cluster core %s: %d stream messages have waited %.0f s with none "
                     "applied (its consumer's floor still at %d); it is stuck: giving the "
                     "lease back and stopping ([cluster] stall_s = %g)", self.holder,
                     waiting, stuck, mark[1], self.cluster.stall_s)  # fmt: skip
        return True
