"""The core's lease: one core at a time, by a NATS KV `create` on a bucket with a TTL.

The rule (docs/architecture.md, "Cluster"): a process may apply the stream to the hub only
while it holds the lease. `acquire` waits until a `create` of the key succeeds (it fails while
another holder's entry exists); `hold` renews it every ttl/3 with an update that names the
revision it last wrote, so two holders can never both renew; an entry not renewed for the
bucket's TTL (`max_age`) is removed by the server, and a waiting process's `create` then wins.

A holder that cannot renew (NATS unreachable, or the revision moved: someone else holds it)
sets `lost` and stops: its owner must stop applying at once. A renewal is given up locally
once the TTL since the last successful one has nearly passed, so a partitioned core stops
before a standby can have taken over (clock rates, not clock values, are compared). What a
stale core might still do in that margin is made harmless by the database, not by the lease:
its writer row (store/postgres.py `claim`: a stale core's writes fail) and the core's
exactly-once table. The lease is a liveness device, those the safety ones.

Each holding has an `epoch`: the KV revision its `create` wrote, which grows with every new
holder (a fencing token for logs and metrics).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # nats-py is the optional `cluster` extra (commonsky.cluster.require_nats)
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

log = logging.getLogger("commonsky.cluster")

#: How much of the TTL a holder keeps in hand: it gives up when this part remains unrenewed.
_MARGIN = 0.2


class Lease:
    """One contender for `key` in the KV bucket `bucket` (created with `max_age = ttl_s`;
    found with another, refused: `_bucket`).

    `holder` names this process in the entry (for operators: `nats kv get`). Not
    thread-safe; one task calls acquire, then hold, then release."""

    def __init__(self, js: JetStreamContext, *, bucket: str, key: str = "core", holder: str,
                 ttl_s: float, cluster: str = "") -> None:  # fmt: skip
        if ttl_s < 1.0:
            raise ValueError("a lease's ttl_s must be at least 1 second")
        self._js = js
        self.bucket = bucket
        # (the cluster's name, for a refusal's line; default: the bucket's, `<name>_lease`)
        self.cluster = cluster or bucket.removesuffix("_lease")
        self.key = key
        self.holder = holder
        self.ttl_s = ttl_s
        self.epoch = 0  # the revision of this holding's create; 0 while not held
        self._revision = 0
        self._renewed = 0.0  # time.monotonic() of the last successful write
        self._kv: KeyValue | None = None
        self.lost = asyncio.Event()

    @property
    def held(self) -> bool:
        return self.epoch != 0 and not self.lost.is_set()

    async def _bucket(self) -> KeyValue:
        """The bucket, made when missing; one found with another TTL (another run's
        lease_ttl_s) or in memory raises JetStreamMismatch (one line: nats_io.lease_bucket):
        renewing on `ttl_s` against another TTL could lose the lease unawares."""
        if self._kv is None:
            from .nats_io import lease_bucket

            self._kv = await lease_bucket(self._js, self.cluster, self.bucket, self.ttl_s)
        return self._kv

    async def try_acquire(self) -> bool:
        """One attempt: True when this process now holds the lease."""
        from nats.js.errors import KeyWrongLastSequenceError

        kv = await self._bucket()
        try:
            revision = await kv.create(self.key, self.holder.encode())
        except KeyWrongLastSequenceError:
            return False  # another holder's entry is there (until it expires or is released)
        self.epoch = self._revision = revision
        self._renewed = time.monotonic()
        self.lost.clear()
        log.info("lease %s/%s taken by %s (epoch %d)", self.bucket, self.key, self.holder, revision)
        return True

    async def acquire(self, poll_s: float | None = None,
                      ready: Callable[[], Awaitable[bool]] | None = None) -> None:  # fmt: skip
        """Wait until this process holds the lease. The server removes a dead holder's entry
        after the TTL; until then, try again every `poll_s` (default a quarter of the TTL).

        `ready`: whether this process could serve now (a core: its database answers), asked
        when the lease is free; while it says no, the lease is left to another process (one
        line when that starts, one when it ends). NATS away (restarting, say) is waited out
        the same way: the process stands by until it is back."""
        poll = poll_s if poll_s is not None else self.ttl_s / 4
        from nats.errors import Error as NatsError

        waiting: str | None = None  # why this process is not taking the lease now
        # Polled: an entry the server expires (max_age) leaves no marker a watcher would see.
        while True:
            why: str | None = None
            try:
                if ready is not None and not await self.free():
                    pass  # (held: nothing to decide yet)
                elif ready is not None and not await ready():
                    why = "the lease is free, but this process cannot serve (its database)"
                elif await self.try_acquire():
                    if waiting is not None:
                        log.warning("lease %s/%s: %s no longer", self.bucket, self.key, waiting)
                    return
            except (TimeoutError, NatsError, OSError) as exc:
                why = f"NATS unavailable ({type(exc).__name__}: {str(exc)[:200]})"
            if why is not None and waiting is None:
                log.warning("lease %s/%s: %s; not taking it, trying again every %.2g s",
                            self.bucket, self.key, why, poll)  # fmt: skip
            elif why is None and waiting is not None:
                log.warning("lease %s/%s: %s no longer", self.bucket, self.key, waiting)
            waiting = why
            await asyncio.sleep(poll)

    async def free(self) -> bool:
        """Whether nobody holds the lease now (its entry is absent, deleted or expired)."""
        from nats.js.errors import KeyNotFoundError

        kv = await self._bucket()
        try:
            await kv.get(self.key)
        except KeyNotFoundError:  # (KeyDeletedError is one)
            return True
        return False

    async def renew(self) -> bool:
        """One renewal; False (and `lost` set) when the lease is no longer this process's."""
        from nats.errors import Error as NatsError
        from nats.js.errors import KeyWrongLastSequenceError

        if not self.held:
            return False
        kv = await self._bucket()
        try:
            self._revision = await kv.update(self.key, self.holder.encode(), last=self._revision)
        except KeyWrongLastSequenceError:
            return self._lose("the entry moved on: another process holds the lease")
        except (TimeoutError, NatsError, OSError) as exc:
            # NATS away (or slow): the lease is lost only once the TTL has nearly run out
            # without a successful renewal.
            if self._expiring():
                return self._lose(f"{type(exc).__name__}: {exc}")
            log.warning("lease %s/%s: renewal failed, retrying: %s", self.bucket, self.key, exc)
            return True
        self._renewed = time.monotonic()
        return True

    def _expiring(self) -> bool:
        return time.monotonic() - self._renewed >= self.ttl_s * (1 - _MARGIN)

    def _lose(self, why: str) -> bool:
        log.warning("lease %s/%s lost by %s (epoch %d): %s", self.bucket, self.key,
                    self.holder, self.epoch, why)  # fmt: skip
        self.lost.set()
        return False

    async def hold(self) -> None:
        """Renew every ttl/3 until the lease is lost or this task is cancelled. Also gives the
        lease up locally when the TTL nearly passes without a renewal (a slow or cut link)."""
        while self.held:
            try:
                await asyncio.wait_for(self.lost.wait(), timeout=self.ttl_s / 3)
                return
            except TimeoutError:
                pass
            if self._expiring():
                self._lose("not renewed within the TTL")
                return
            await self.renew()

    async def release(self) -> None:
        """Give the lease up now (a clean shutdown), so a standby need not wait for the TTL."""
        from nats.errors import Error as NatsError

        if not self.held:
            return
        self.lost.set()
        try:
            kv = await self._bucket()
            await kv.delete(self.key, last=self._revision)
        except (TimeoutError, NatsError, OSError) as exc:
            log.info("lease %s/%s: release failed (it expires after the TTL): %s",
                     self.bucket, self.key, exc)  # fmt: skip
        self.epoch = 0
