"""`commonsky serve` with `[cluster]`: the edge, the core, or both in one process.

- Edge: the TAK listeners of the config on an `EdgeHub` (edge.py), `[server] http` (the
  map, its live feed, the API forwarded to the core: edge_http.py) and the marti and enroll
  listeners (forwarded to the core: edge_marti.py); no data folder, no store. (Role "all":
  its core binds marti and enroll itself, as before.)
- Core: takes its own data folder, waits for the lease (lease.py), claims the database's
  writer (store/postgres.py `claim`), then runs the hub as `HubServer` does — PostgreSQL
  store, ledger, the hub's keys and secret (all in the database: hub/shared.py), desks, its
  own HTTP for operators (with role "all" on a loopback port of its own: `[server] http` is
  the edge's) — without the TAK listeners, fed by the stream (core.py), answering the edges'
  API, Marti and enrolment calls (core_http.py); role "core" binds no marti or enroll port
  (its apps answer only what the edges forward). Each core has its own data folder: what
  the next core needs is in PostgreSQL and NATS. Losing the lease or the store, or finding
  another writer, stops the process at once (exit status 75): a standby takes over from the
  stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import secrets
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

import msgspec

from commonsky.clock import hub_clock
from commonsky.config import HubConfig
from commonsky.errors import UsageError
from commonsky.hub.core import Hub
from commonsky.hub.datadir import DataDir
from commonsky.hub.listeners import TakListener, tls_context
from commonsky.policy import Policy
from commonsky.revocation import Revocations

from . import require_nats
from .edge import EdgeHub, EdgeLink
from .edge_http import EdgeHttp
from .edge_long import serve_core_marti
from .edge_marti import EdgeTakHttp, tak_faces
from .forward import Forwarder
from .nats_io import (
    connect,
    ensure_stream,
    lease_bucket,
    live_bucket,
    picture_bucket,
    starting,
)
from .stream_acks import StreamAcks
from .trust import beyond_nats
from .wire import Names

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.kv import KeyValue

    from commonsky.server import HubServer

    from .config import ClusterSettings
    from .core_http import CoreFace


log = logging.getLogger("commonsky.cluster")

FAIL_STOP = 75  # exit status of a core that stopped to let a standby take over
_RELEASE_S = 3.0  # a core stopping hands its lease back within this, or leaves it to the TTL


class EdgeServer:
    """One edge: its TAK listeners and its link to the cluster."""

    def __init__(self, config: HubConfig) -> None:
        assert config.cluster is not None
        self.config = config
        # `<edge>.<run>`: the name its NATS user's permissions give (wire.py), and this run.
        self.id = f"{config.cluster.edge_name}.{os.getpid()}-{secrets.token_hex(2)}"
        s = config.settings
        clock = hub_clock(s.clock_rate, s.clock_origin, s.clock_until)
        self.hub = EdgeHub(self.id, Policy(config.parties, config.agreements), s, clock)
        tak = [lc for lc in config.listeners if lc.kind in ("tak-tcp", "tak-tls")]
        # tak-tls: the CA's CRL (one `Revocations` per CA folder), as the single process does;
        # a bad CRL stops the edge at start (UsageError, one line).
        crls: dict[Path, Revocations] = {}
        for lc in tak:
            if lc.kind == "tak-tls" and lc.ca is not None and Path(lc.ca) not in crls:
                crls[Path(lc.ca)] = Revocations(Path(lc.ca))
        # Edges share their listeners' ports (SO_REUSEPORT) with the other edges on the host.
        self.listeners = [
            TakListener(
                cast(Hub, self.hub),
                lc,
                tls_context(lc) if lc.kind == "tak-tls" else None,
                crls.get(Path(lc.ca)) if lc.kind == "tak-tls" and lc.ca is not None else None,
                reuse_port=True,
            )
            for lc in tak
        ]
        self.http = EdgeHttp(self.hub, config)  # map, live feed, API forwarded (edge_http.py)
        # Marti and enrolment, forwarded (edge_marti.py); role "all": its core binds them.
        runs_core = config.cluster.runs_core
        self.tak_http = EdgeTakHttp(self.hub, config, crls) if not runs_core else None
        if runs_core:  # (its core holds long items too and answers their fetch: core_long.py)
            serve_core_marti(self.hub.wires.held, config)
        self.nc: Client | None = None
        self.link: EdgeLink | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        assert self.config.cluster is not None
        names = Names(self.config.cluster.name)
        inbox = names.edge_inbox(self.config.cluster.edge_name)
        self.nc = await connect(self.config.cluster, f"edge {self.id}", inbox)
        await fits_nats(self.config, self.nc)
        js = self.nc.jetstream()
        async with starting(self.config.cluster, self.nc, "an edge"):
            await ensure_stream(js, names)
            kv = await picture_bucket(js, names)
        loop = asyncio.get_running_loop()
        self.hub.wires.call_soon = loop.call_soon
        self.hub.wires.call_later = loop.call_later  # (flush rounds: hub/connections.py)
        acks = StreamAcks(self.nc)  # (what the edge publishes with: lighter than js's own)
        await acks.start()
        self.link = EdgeLink(self.hub, self.nc, js, kv, names, acks)
        await self.link.start()
        await self.http.start(self.nc, names)  # (first: a busy port stops the edge early)
        http = [listener.name for listener in self.listeners]
        if self.tak_http is not None:
            forwarder = Forwarder(self.nc, names, self.config.cluster.lease_ttl_s, self.hub.metrics)
            await self.tak_http.start(forwarder)
            http += [listener.name for listener in self.tak_http.listeners]
        for listener in self.listeners:
            await listener.start()
        self._ticker = asyncio.create_task(self._tick())
        ports = ", ".join([*http, f"http:{self.http.host}:{self.http.port}"])
        log.info("cluster edge %s ready (%s)", self.id, ports)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                for listener in self.listeners:
                    listener.drop_revoked()  # a CRL that changed ends sessions already open
                self.hub.logs.flush()
            except Exception:
                self.hub.metrics.internal_error("edge_tick")
                log.exception("edge %s: housekeeping failed", self.id)

    async def stop(self) -> None:
        for listener in self.listeners:
            await listener.stop_accepting()
        await self.http.stop()
        if self.tak_http is not None:
            await self.tak_http.stop()
        if self.link is not None:
            await self.link.stop()
        for conn in list(self.hub.wires):
            conn.close("shutdown")
        for listener in self.listeners:
            if listener.tasks:
                await asyncio.wait(list(listener.tasks), timeout=5.0)
        if self._ticker is not None:
            self._ticker.cancel()
        if self.nc is not None:
            await self.nc.close()


async def serve_core(config: HubConfig, stop: asyncio.Event, init: bool = False) -> None:
    """The core role: wait for the lease, then serve until `stop`. Exits the process
    (FAIL_STOP) when the lease or the store is lost."""
    holder = f"{socket.gethostname()}-{os.getpid()}"
    # The folder is this core's alone: taken now, so a second core given the same one stops
    # at its start (one line), not at the takeover it stood by for.
    folder = DataDir(config.data_dir, str(config.settings.store_url), init, shared=True)
    folder.open()
    try:
        await _serve_core(config, stop, init, folder, holder)
    finally:
        folder.close()


async def _serve_core(
    config: HubConfig, stop: asyncio.Event, init: bool, folder: DataDir, holder: str
) -> None:
    from commonsky.http.app import build_app
    from commonsky.store.postgres import answers  # (psycopg: the `cluster` extra)

    from .core import ClusterCore
    from .core_http import CoreHttp
    from .identity import bind_name
    from .keeper import LeaseKeeper

    cluster = config.cluster
    assert cluster is not None
    names = Names(cluster.name)
    url = str(config.settings.store_url)
    nc = await _reach(config, init, folder, holder)
    js = nc.jetstream()
    kv, live = await _core_streams(cluster, nc, names)
    # (The lease is taken only while the database answers: a standby that cannot use it
    # would take the lease and fail at the takeover, or serve without a store.)
    lease = LeaseKeeper(cluster, names.lease, holder, functools.partial(answers, url), _stuck)
    for line in unadvertised(config):
        log.warning("%s", line)
    log.info("cluster core %s: standing by for the lease", holder)
    acquiring = asyncio.create_task(lease.acquire())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not acquiring.done():
        await lease.release()
        acquiring.cancel()
        await nc.close()
        return
    stopping.cancel()
    acquiring.result()
    others = tuple(lc for lc in config.listeners if lc.kind not in ("tak-tcp", "tak-tls"))
    config = dataclasses.replace(config, listeners=others)
    if cluster.runs_edge:  # (role "all": `[server] http` is the edge's; the core's is private)
        settings = msgspec.structs.replace(config.settings, http="127.0.0.1:0")
        config = dataclasses.replace(config, settings=settings)
    writer = f"{holder} epoch {lease.epoch}"
    try:
        server = await _build(config, init, writer, folder)
        await bind_name(js, names, server.hub_id)
        await server.start()
    except BaseException:
        # Refused at the takeover (the database, the folder, a port): hand the lease back at
        # once, so the next standby need not wait out its TTL.
        await lease.release()
        await nc.close()
        raise
    core = ClusterCore(server.hub, nc, js, kv, names, live)
    await core.start()
    lease.watch(names.stream, names.consumer)  # (a core stuck from now on stops: stall.py)
    http = CoreHttp(build_app(server.services), nc, names, server.hub.metrics,
                    lambda: lease.held, _core_faces(server))  # fmt: skip
    await http.start()  # (the edges' API calls: core_http.py)
    # (Role "all": its own HTTP port is private, the map and API are the edge's `http`.)
    where = (
        "the edge's" if cluster.runs_edge else f"on http://{server.http_host}:{server.http_port}/"
    )
    log.info("cluster core %s serving (epoch %d); map and API %s", holder, lease.epoch, where)
    why = await _first(stop, lease.lost, core)
    if why is not None:
        # Nothing more may leave this process: a standby applies the stream from here. The
        # lease is handed back on the way (bounded: a lease lost, or NATS away, is not), so
        # that a standby need not wait out its TTL.
        log.critical("cluster core %s stopping at once: %s", holder, why)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(lease.release(), _RELEASE_S)
        logging.shutdown()
        os._exit(FAIL_STOP)
    await http.stop()
    await core.stop()
    await server.stop()
    await lease.release()
    await nc.close()


def _stuck() -> None:
    """The lease's thread, once it gave the lease back because the core applied nothing
    for `stall_s` (stall.py; its line said so): the process stops — at once if its loop does
    not do it first (`lease.lost`, above): that loop may be what is stuck."""
    time.sleep(_RELEASE_S)
    logging.shutdown()
    os._exit(FAIL_STOP)


async def _core_streams(
    cluster: ClusterSettings, nc: Client, names: Names
) -> tuple[KeyValue, KeyValue]:
    """The inbound stream, the picture and live buckets (made, or checked when found: a
    wrong one is refused, js_shape.py), and the lease bucket checked — at start, so that a
    bucket of another TTL is refused before standing by. Closes `nc` when it raises."""
    js = nc.jetstream()
    try:
        async with starting(cluster, nc, "a core"):
            await ensure_stream(js, names)
            kv = await picture_bucket(js, names)
            live = await live_bucket(js, names)
            await lease_bucket(js, names.name, names.lease, cluster.lease_ttl_s)
    except BaseException:
        await nc.close()
        raise
    return kv, live


async def _reach(config: HubConfig, init: bool, folder: DataDir, holder: str) -> Client:
    """The core's NATS connection, once NATS and then its database answered. The database
    is looked at too (reading only): a standby would otherwise wait for the lease with a
    store_url it cannot use, or one of another cluster or hub, and fail only at the takeover
    it waited for; and the hub it holds must be the one the cluster's name is bound to on
    this NATS server (identity.py). Raises UsageError (one line)."""
    from commonsky.hub.core_state import look_at_database
    from commonsky.store.base import redacted
    from commonsky.store.postgres import probe  # (psycopg: the `cluster` extra)

    from .identity import check_name

    cluster = config.cluster
    assert cluster is not None
    nc = await connect(cluster, f"core {holder}", Names(cluster.name).core_inbox)
    await fits_nats(config, nc)
    try:
        url = str(config.settings.store_url)
        hub_id = folder.manifest["hub_id"] if folder.manifest else None
        look = look_at_database(redacted(url), cluster.name, folder.path, hub_id, init)
        held = await asyncio.to_thread(probe, url, 5.0, look)
        async with starting(cluster, nc, "a core"):
            await check_name(nc.jetstream(), Names(cluster.name), held)  # (identity.py)
    except BaseException:
        await nc.close()
        raise
    return nc


async def fits_nats(config: HubConfig, nc: Client) -> None:
    """UsageError (one line; the connection closed) when the largest event the
    configuration accepts cannot cross the NATS server (`trust.beyond_nats`)."""
    why = beyond_nats(config.settings, nc.max_payload)
    if why is not None:
        await nc.close()
        raise UsageError(why)


def _core_faces(server: HubServer) -> dict[str, CoreFace]:
    """The marti and enroll apps the server built, by face name (edge_marti.tak_faces)."""
    from .core_http import CertCheck, CoreFace

    faces: dict[str, CoreFace] = {}
    for name, lc in tak_faces(server.config.listeners):
        listener = next(h for h in server.http_listeners if h.config is lc)
        check = CertCheck(Path(str(lc.ca))) if lc.kind == "marti" else None
        faces[name] = CoreFace(listener.app, check, "https")
    return faces


async def _build(config: HubConfig, init: bool, writer: str, folder: DataDir) -> HubServer:
    """The hub (store loaded, desks rebuilt: seconds on a large store; a folder's tokens and
    files from before moved into the database), built off the event loop while the lease
    keeps being renewed. (Nothing in it is bound to its thread: a core's Marti and
    enrolment stores are PostgreSQL connections, marti/pgfiles.py and pgtokens.py.)"""
    from commonsky.server import HubServer

    s = config.settings
    clock = hub_clock(s.clock_rate, s.clock_origin, s.clock_until)
    assert config.cluster is not None
    # Role "core": the marti and enroll ports are the edges' (edge_marti.py); "all": its own.
    build = functools.partial(HubServer, config, clock, init, writer=writer, folder=folder,
                              bind_tak_http=config.cluster.runs_edge)  # fmt: skip
    return await asyncio.to_thread(build)


def unadvertised(config: HubConfig) -> list[str]:
    """One line per marti listener whose file-transfer URLs a role-"core" process would write
    from its own bind address: it binds no Marti port (the edges do), so without `advertise`
    the URL in every `b-f-t-r` offer and upload answer names this host, where a client can
    fetch only if an edge runs here too (edges on other machines: set `advertise` to the
    address clients reach the edges at)."""
    cluster = config.cluster
    if cluster is None or cluster.runs_edge:
        return []
    return [
        f"[[listener]] #{index + 1} (marti, port {lc.port}) has no advertise: file URLs name "
        f"this core's host, where it binds no Marti port; set advertise to the HOST:PORT "
        f"clients reach the edges at ($.listener[{index}].advertise)"
        for index, lc in enumerate(config.listeners)
        if lc.kind == "marti" and not lc.advertise
    ]


async def _first(stop: asyncio.Event, lost: asyncio.Event, core: object) -> str | None:
    """None once `stop` is set; why the core must stop, if that comes first."""
    from .core import ClusterCore

    assert isinstance(core, ClusterCore)
    waits = {
        asyncio.create_task(stop.wait()): "stop",
        asyncio.create_task(lost.wait()): "the lease was lost",
        asyncio.create_task(core.wait_failed()): "failed",
    }
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    task = next(iter(done))
    if waits[task] == "stop":
        return None
    if waits[task] == "failed":
        return f"{task.result()}"
    return waits[task]


async def serve_cluster(config: HubConfig, stop: asyncio.Event, init: bool = False) -> None:
    """`commonsky serve` with `[cluster]`: the configured role until `stop`."""
    require_nats()
    cluster = config.cluster
    assert cluster is not None
    edge = EdgeServer(config) if cluster.runs_edge else None
    if edge is not None:
        await edge.start()
    try:
        if cluster.runs_core:
            await serve_core(config, stop, init)
        else:
            await stop.wait()
    finally:
        if edge is not None:
            await edge.stop()
