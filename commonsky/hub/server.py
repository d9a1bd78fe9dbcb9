"""Run a hub: store, policy, listeners, HTTP — and shut them down in order.

Shutdown (uvicorn's habit, written out): stop accepting → give connections
`timeout_shutdown_s` to flush their outboxes → close them → stop HTTP → close the store last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn

from commonsky.config import HubConfig, parse_hostport
from commonsky.http.app import build_app
from commonsky.policy import Policy
from commonsky.services import Services
from commonsky.store import open_store

from .core import Hub
from .heap import settle_heap
from .listeners import TakListener
from .quarantine import FILE_NAME as QUARANTINE_FILE
from .quarantine import Quarantine

log = logging.getLogger("commonsky.server")


def hub_secret(data_dir: Path) -> bytes:
    """A per-hub secret for opaque generalized uids; made once, kept in data_dir."""
    path = data_dir / "keys" / "hub-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(secrets.token_bytes(32))
        path.chmod(0o600)
    return path.read_bytes()


class HubServer:
    def __init__(self, config: HubConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        data_dir = config.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.store = open_store(str(config.settings.store_url), data_dir)
        self.hub = Hub(
            Policy(config.parties, config.agreements),
            self.store,
            config.settings,
            hub_secret(data_dir),
            clock=clock,
            quarantine=Quarantine(data_dir / QUARANTINE_FILE),
        )
        self.services = Services.build(self.hub, data_dir)
        if len(self.hub.quarantine):
            log.warning(
                "start-up: %d stored items quarantined (left out, kept in the store); see %s",
                len(self.hub.quarantine),
                self.hub.quarantine.path,
            )
        self.listeners = [TakListener(self.hub, lc) for lc in config.listeners]
        self.http_host, self.http_port = parse_hostport(str(config.settings.http), "http")
        self._uvicorn: uvicorn.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.hub.call_soon = asyncio.get_running_loop().call_soon
        for listener in self.listeners:
            await listener.start()
        app = build_app(self.services)
        config = uvicorn.Config(
            app,
            host=self.http_host,
            port=self.http_port,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        self._uvicorn = uvicorn.Server(config)
        # The hub owns SIGINT/SIGTERM (and shuts down in order); uvicorn must not take them.
        self._uvicorn.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        self._tasks.append(asyncio.create_task(self._uvicorn.serve()))
        self._tasks.append(asyncio.create_task(self._housekeeping()))
        while not self._uvicorn.started:
            if self._tasks[0].done():
                self._tasks[0].result()
                raise OSError(f"HTTP server on {self.http_host}:{self.http_port} did not start")
            await asyncio.sleep(0.01)
        servers = self._uvicorn.servers
        if servers:
            self.http_port = servers[0].sockets[0].getsockname()[1]
        settle_heap()  # everything built so far lives as long as the hub (see heap.py)

    async def _housekeeping(self) -> None:
        """Once a second: deadlines and expiries; prune and checkpoints less often."""
        settings = self.config.settings
        checkpoint_every = settings.get_float("timeout_checkpoint_s")
        loop = asyncio.get_running_loop()
        last_prune = last_checkpoint = loop.time()
        last_tick = loop.time()
        while True:
            await asyncio.sleep(0.05)
            now = loop.time()
            try:
                # Track screening runs in small slices between relaying; the rest once a second.
                self.services.screen()
                if now - last_tick < 1.0:
                    continue
                last_tick = now
                self.services.tick()
                if now - last_prune >= 5.0:
                    self.hub.prune()
                    last_prune = now
                recorder = self.services.recorder
                if recorder is not None and now - last_checkpoint >= checkpoint_every:
                    recorder.ledger.checkpoint()
                    last_checkpoint = now
            except Exception:  # our bug: log it loudly, keep the hub serving
                log.exception("housekeeping failed")

    def port(self, kind: str) -> int:
        return next(listener.port for listener in self.listeners if listener.config.kind == kind)

    async def stop(self) -> None:
        for listener in self.listeners:
            await listener.stop_accepting()
        deadline = self.config.settings.get_float("timeout_shutdown_s")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(deadline):
                while any(len(c.outbox) for c in self.hub.all_connections()):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)  # outboxes drain through their own writers
        for conn in list(self.hub.all_connections()):
            conn.close("shutdown")
        for listener in self.listeners:
            tasks = list(listener.tasks)
            if tasks:
                await asyncio.wait(tasks, timeout=deadline)
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        for task in self._tasks[1:]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.services.recorder is not None:
            self.services.recorder.ledger.checkpoint()
        self.services.close()
        self.store.close()


async def serve_forever(config: HubConfig, stop: asyncio.Event) -> None:
    server = HubServer(config)
    await server.start()
    log.info("hub serving; HTTP on %s:%d", server.http_host, server.http_port)
    try:
        await stop.wait()
    finally:
        await server.stop()
