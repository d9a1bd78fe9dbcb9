"""Run a hub: store, policy, listeners, HTTP — and shut them down in order.

The network's composition root, beside `services.py` (the hub and its desks): it builds the
hub core (`hub/`), the desks, the TAK listeners and the HTTP app from one config, and is the
only module that knows all of them. Nothing in `hub/` imports it.

Shutdown (uvicorn's habit, written out): stop accepting → give connections
`timeout_shutdown_s` to flush their outboxes → close them → stop HTTP → close the store last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import secrets
import sqlite3
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from commonsky.config import HubConfig, ListenerConfig
from commonsky.errors import UsageError
from commonsky.eventloop import running_loop_name
from commonsky.http.app import build_app, serve_http
from commonsky.hub.core import Hub
from commonsky.hub.datadir import DataDir, damaged, private_dir, write_private
from commonsky.hub.directory import Directory
from commonsky.hub.heap import settle_heap
from commonsky.hub.listeners import TakListener, bind_http, tls_context
from commonsky.hub.quarantine import FILE_NAME as QUARANTINE_FILE
from commonsky.hub.quarantine import Quarantine
from commonsky.marti.http import HttpListener, build_http_listeners
from commonsky.marti.state import MartiState
from commonsky.policy import Policy
from commonsky.revocation import Revocations
from commonsky.services import Services, open_directory
from commonsky.settings import Settings, parse_hostport
from commonsky.store import Store, open_store

if TYPE_CHECKING:
    from commonsky.federation.bridge import Federation
    from commonsky.hub.core_state import Shared

log = logging.getLogger("commonsky.server")


def hub_secret(data_dir: Path) -> bytes:
    """A per-hub secret for opaque generalized uids; made once (0600, written whole or not at
    all: the data folder's lock keeps a second hub from racing), kept in data_dir."""
    path = data_dir / "keys" / "hub-secret"
    if not path.exists():
        private_dir(path.parent)
        write_private(path, secrets.token_bytes(32))
    secret = path.read_bytes()
    if len(secret) != 32:
        raise UsageError(f"{path}: not a hub secret ({len(secret)} bytes, expected 32)")
    return secret


FD_RESERVE = 256  # HTTP clients, the stores and ledger, logs, the listening sockets


def fd_budget(settings: Settings) -> int:
    """File descriptors the connection limits may need at once."""
    return settings.limit_connections + settings.limit_handshakes + FD_RESERVE


def ensure_fd_budget(settings: Settings) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one, or refuse to start (one line) when even
    the hard limit is below `fd_budget`: a hub that runs out of descriptors cannot accept on
    any listener or serve its API (1,000 idle sockets under `ulimit -n 1024` did just that).
    Returns the soft limit in force."""
    need = fd_budget(settings)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        target = hard if hard != resource.RLIM_INFINITY else max(soft, need)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft != resource.RLIM_INFINITY and soft < need:
        raise UsageError(
            f"open-file limit {soft} is below the {need} the connection limits need "
            f"(limit_connections + limit_handshakes + {FD_RESERVE}); raise `ulimit -n` "
            "or lower limit_connections"
        )
    return int(soft)


class HubServer:
    """One hub: its data folder (locked), store, ledger, listeners and HTTP.

    Everything an operator can get wrong — certificates, the data folder, the store, a busy
    port — raises `UsageError` with one line naming the file or `[[listener]]` and what to
    do; whatever was opened before is closed again, so nothing is left half-started.
    """

    def __init__(
        self,
        config: HubConfig,
        clock: Callable[[], float] = time.time,
        init: bool = False,
        *,
        writer: str | None = None,
        folder: DataDir | None = None,
        bind_tak_http: bool = True,
    ) -> None:
        """`writer`: a cluster core's name as its database's one writer (it holds the
        lease); `folder`: the data folder, opened already (a core takes it before it stands
        by). With `[cluster]`, what the cores share lives in PostgreSQL (hub/shared.py).
        `bind_tak_http=False`: the enroll and marti apps are built but their ports not bound
        (a cluster core of role "core": the edges bind them and forward, cluster/edge_marti.py)."""
        self.config = config
        self.bind_tak_http = bind_tak_http
        ensure_fd_budget(config.settings)
        _warn_without_tokens(config)
        # Certificates first: a mistake there should not touch the data folder.
        tak = [lc for lc in config.listeners if lc.kind in ("tak-tcp", "tak-tls")]
        contexts = _certificates(config, tak)
        self.listeners: list[TakListener] = []
        self.http_listeners: list[HttpListener] = []  # enroll, marti (issue 16)
        self.marti: MartiState | None = None
        self.federation: Federation | None = None  # [[federate]] links (issue 17)
        self.federation_port = 0
        shared_state = config.cluster is not None
        if folder is None:
            folder = DataDir(config.data_dir, str(config.settings.store_url), init, shared_state)
            folder.open()
        self.folder = folder
        self.store: Store | None = None
        self.released = False
        try:
            data_dir = self.folder.path
            self.store = open_store(str(config.settings.store_url), data_dir)
            shared = (
                _open_shared(self.store, init, writer, self.folder, config)
                if config.cluster is not None
                else None
            )
            self.hub = _build_hub(config, self.store, data_dir, shared, clock)
            self.services = _build_services(self.hub, data_dir, shared)
            if len(self.hub.quarantine):
                log.warning(
                    "start-up: %d stored items quarantined (left out, kept in the store); see %s",
                    len(self.hub.quarantine),
                    self.hub.quarantine.path,
                )
            assert self.services.recorder is not None
            self.hub_id = self.folder.bind(self.store, self.services.recorder.ledger)
            self.http_listeners, self.marti = build_http_listeners(
                config.listeners,
                self.services,
                config.settings,
                shared=shared.store if shared is not None else None,
            )
            self.federation = _build_federation(self.hub, config, self.hub_id, self.services)
            crls = self.marti.revocations if self.marti is not None else {}
            self.listeners = [
                TakListener(self.hub, lc, tls, _revocations(crls, lc))
                for lc, tls in zip(tak, contexts, strict=True)
            ]
        except sqlite3.Error as exc:  # (a page damaged where opening the file did not look)
            self._release()
            raise damaged(self.folder.path, exc) from None
        except BaseException:
            self._release()
            raise
        self.http_host, self.http_port = parse_hostport(str(config.settings.http), "http")
        self._uvicorn: uvicorn.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _release(self) -> None:
        """Close what __init__ opened (a failed start, or after stop); once."""
        if self.released:
            return
        self.released = True
        marti = getattr(self, "marti", None)
        if marti is not None:
            marti.close()
        services = getattr(self, "services", None)
        if services is not None:
            services.close()
        if self.store is not None:
            self.store.close()
        self.folder.close()

    async def start(self) -> None:
        """Bind the HTTP port and every listener, then serve. On failure nothing stays open."""
        loop = asyncio.get_running_loop()
        self.hub.call_soon = loop.call_soon
        self.hub.wires.call_later = loop.call_later  # (flush rounds: connections.py)
        try:
            await self._start()
        except BaseException:
            for listener in self.listeners:
                await listener.stop_accepting()
            for http in self.http_listeners:
                await http.stop()
            if self.federation is not None:
                await self.federation.stop()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._release()
            raise

    async def _start(self) -> None:
        where = f"{self.config.source}: [server] http"
        sock = bind_http(self.http_host, self.http_port, where)
        try:
            for listener in self.listeners:
                await listener.start()
            for http in self.http_listeners if self.bind_tak_http else ():
                await http.start()
            if self.federation is not None:
                self.federation_port = await _start_federation(self.federation, self.config)
        except BaseException:
            sock.close()
            raise
        self._uvicorn, serving = await serve_http(
            build_app(self.services), sock, self.config.settings, where
        )
        self._tasks.append(serving)
        self._tasks.append(asyncio.create_task(self._housekeeping()))
        self.http_port = sock.getsockname()[1]
        settle_heap()  # everything built so far lives as long as the hub (see heap.py)

    async def _housekeeping(self) -> None:
        """Once a second: deadlines and expiries; prune and checkpoints less often."""
        settings = self.config.settings
        checkpoint_every = settings.timeout_checkpoint_s
        loop = asyncio.get_running_loop()
        last_prune = last_checkpoint = loop.time()
        last_tick = loop.time()
        left = 0
        while True:
            # (Every 10 ms while a screening round has tracks left: 1 ms slices, each short
            # enough not to show in the relay's tail, and a round still ends soon.)
            await asyncio.sleep(0.01 if left else 0.05)
            now = loop.time()
            try:
                # Track screening runs in small slices between relaying; the rest once a second.
                left = self.services.screen()
                if now - last_tick < 1.0:
                    continue
                last_tick = now
                self.services.tick()
                self.hub.withdrawals.check()  # an agreement's end: off the recipients' maps
                for listener in self.listeners:
                    listener.drop_revoked()  # a CRL that changed ends sessions already open
                self.hub.logs.flush()
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
        if kind == "federation":
            return self.federation_port
        every: list[TakListener | HttpListener] = [*self.listeners, *self.http_listeners]
        return next(listener.port for listener in every if listener.config.kind == kind)

    async def stop(self) -> None:
        if self.released:
            return  # a start that failed has closed everything already
        for listener in self.listeners:
            await listener.stop_accepting()
        for http in self.http_listeners:
            await http.stop()  # (in-flight requests get timeout_shutdown_s to finish)
        if self.federation is not None:
            await self.federation.stop()
        deadline = self.config.settings.timeout_shutdown_s
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
        self._release()


def _build_federation(
    hub: Hub, config: HubConfig, hub_id: str, services: Services
) -> Federation | None:
    if not config.federates:
        for lc in config.listeners:
            if lc.kind == "federation":
                log.warning(
                    "%s: no [[federate]] is declared, so nothing listens on %s:%d (a peer hub "
                    "is accepted only as a [[federate]] table)",
                    lc.where,
                    lc.host,
                    lc.port,
                )
        return None  # (gRPC is not even loaded)
    from commonsky.federation.bridge import build

    return build(hub, config, hub_id, services.recorder, services.airspace)


async def _start_federation(federation: Federation, config: HubConfig) -> int:
    listener = next(lc for lc in config.listeners if lc.kind == "federation")
    settings = config.settings
    try:
        return await federation.start(
            listener.host,
            listener.port,
            settings.timeout_federation_health_s,
            settings.timeout_federation_retry_s,
            settings.timeout_checkpoint_s,
        )
    except OSError as exc:
        raise UsageError(
            f"{listener.where}: bind = {listener.host}:{listener.port}: {exc}"
        ) from None


def _certificates(config: HubConfig, tak: list[ListenerConfig]) -> list[ssl.SSLContext | None]:
    """The TLS contexts of the `tak` listeners (None for tak-tcp). The enroll and marti
    listeners' certificates, and the CRL of each listener that reads one, are checked too:
    all before the data folder is touched (those are built after it). UsageError naming the
    listener."""
    contexts = [tls_context(lc) if lc.kind == "tak-tls" else None for lc in tak]
    for lc in config.listeners:
        if lc.kind in ("enroll", "marti"):
            tls_context(lc)
        if lc.kind in ("tak-tls", "marti") and lc.ca is not None:
            try:
                Revocations(Path(lc.ca))
            except UsageError as exc:
                raise UsageError(f"{lc.where} ({lc.kind}): {exc}") from None
    return contexts


def _revocations(crls: dict[Path, Revocations], lc: ListenerConfig) -> Revocations | None:
    if lc.kind != "tak-tls" or lc.ca is None:
        return None
    return crls.get(Path(lc.ca)) or Revocations(Path(lc.ca))


def _open_shared(
    store: Store, init: bool, writer: str | None, folder: DataDir, config: HubConfig
) -> Shared:
    """A cluster core's shared state (hub/core_state.py), and the folder's enrolment tokens
    and Marti files from before they moved into the database (marti/adopt.py)."""
    from commonsky.hub.core_state import open_shared
    from commonsky.marti.adopt import adopt_marti
    from commonsky.store.postgres import PostgresStore

    assert isinstance(store, PostgresStore)  # ([cluster] requires it: cluster/config.py)
    assert config.cluster is not None
    hub_id = folder.manifest["hub_id"] if folder.manifest else None
    shared = open_shared(store, init, writer, folder.path, config.cluster.name, hub_id)
    adopt_marti(store, folder.path, config.settings, init, time.time())
    return shared


def _build_hub(config: HubConfig, store: Store, data_dir: Path, shared: Shared | None,
               clock: Callable[[], float]) -> Hub:  # fmt: skip
    """The hub, on its callsign directory opened first (its start routes by it)."""
    return Hub(
        Policy(config.parties, config.agreements),
        store,
        config.settings,
        shared.secret if shared is not None else hub_secret(data_dir),
        clock=clock,
        quarantine=Quarantine(data_dir / QUARANTINE_FILE),
        directory=open_directory(Directory(), data_dir, shared),
    )


def _build_services(hub: Hub, data_dir: Path, shared: Shared | None = None) -> Services:
    from commonsky.ledger.keys import KeyFileError
    from commonsky.ledger.log import LedgerError

    try:
        return Services.build(hub, data_dir, shared)
    except (LedgerError, KeyFileError) as exc:
        raise UsageError(f"{exc}; restore it from a backup") from None


def _warn_without_tokens(config: HubConfig) -> None:
    without = [p.id for p in config.parties if not p.token]
    if config.parties and len(without) == len(config.parties):
        log.warning(
            "%s: no [[party]] has a token, so nobody can sign in to the map or the API "
            '(add token = "…", at least 16 characters, to each party that should)',
            config.source,
        )
    elif without:
        log.info("parties without a token (TAK only, no map or API): %s", ", ".join(without))


async def serve_forever(config: HubConfig, stop: asyncio.Event, init: bool = False) -> None:
    """The embedded hub, one process, until `stop` (a config with `[cluster]` is served by
    `commonsky.cluster.run.serve_cluster` instead: the CLI chooses)."""
    from commonsky.clock import hub_clock

    settings = config.settings
    clock = hub_clock(settings.clock_rate, settings.clock_origin, settings.clock_until)
    server = HubServer(config, clock=clock, init=init)
    await server.start()
    log.info(
        "hub serving (hub_id %s); map and API on http://%s:%d/; %s event loop",
        server.hub_id,
        server.http_host,
        server.http_port,
        running_loop_name(),
    )
    try:
        await stop.wait()
    finally:
        await server.stop()
