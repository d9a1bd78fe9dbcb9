"""A cluster whose processes carry TAK's HTTP side (issue 19): each edge its own marti,
enroll and tak-tls ports (so a test picks the edge it talks to), each core the same listeners
on ports of its own that it must not bind (role "core": the edges serve them), advertising
the first edge's marti port (the content URLs a core writes name where clients reach it)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

import httpx

from commonsky.bench.cluster import Cluster, HubText
from commonsky.bench.hubproc import hub_config

HOST = "127.0.0.1"
KINDS = ("marti", "enroll", "tak-tls")


class TakPorts:
    """The marti, enroll and tak-tls ports of each process, by its `[server] http` port."""

    def __init__(self, cluster: Cluster, ca: Path, server: str = "",
                 base: HubText = hub_config) -> None:  # fmt: skip
        self.port = cluster.port  # (held until the cluster stops: Cluster.port)
        self.ca, self.server, self.base = ca, server, base
        self.by_http: dict[int, dict[str, int]] = {}
        self.first = {kind: self.port() for kind in KINDS}  # (the first edge's)
        self.advertise = f"{HOST}:{self.first['marti']}"  # (every core advertises it)

    def text(self) -> HubText:
        def text(data_dir: Path, http: int, ports: dict[str, int], extra: str) -> str:
            # (Role "all" binds its core's ports itself: as an edge's, no advertise.)
            edge = data_dir.name.startswith(("data-edge-", "data-all-"))
            if http not in self.by_http:
                first = edge and self.first not in self.by_http.values()
                self.by_http[http] = self.first if first else {k: self.port() for k in KINDS}
            own = self.by_http[http]
            listeners = ""
            for kind, port in own.items():
                listeners += f'\n[[listener]]\nkind = "{kind}"\nbind = "{HOST}:{port}"\n'
                listeners += f'ca = "{self.ca}"\n'
                if kind == "marti" and not edge:
                    listeners += f'advertise = "{self.advertise}"\n'
            return self.base(data_dir, http, ports, extra + self.server) + listeners

        return text


def tak_cluster(cluster: Cluster, ca: Path, server: str = "",
                base: HubText = hub_config) -> TakPorts:  # fmt: skip
    """`cluster` with TAK's HTTP side (`server`: more `[server]` lines) on `base`'s parties
    and agreements; the first edge started has the marti port the cores advertise."""
    ports = TakPorts(cluster, ca, server, base)
    cluster.base = ports.text()
    return ports


def client(
    ports: dict[str, int], ca: Path, kind: str, cert: tuple[Path, Path] | None = None
) -> httpx.AsyncClient:
    """An HTTPS client of one process's `kind` listener (a TAK client's TLS: the hub CA
    trusted, its own certificate presented when `cert`)."""
    context = ssl.create_default_context(cafile=str(ca / "ca.pem"))
    if cert is not None:
        context.load_cert_chain(*cert)
    return httpx.AsyncClient(base_url=f"https://{HOST}:{ports[kind]}", verify=context,
                             timeout=60)  # fmt: skip


async def refused_connection(port: int) -> bool:
    """Whether nothing listens on HOST:`port` (the connection is refused)."""
    try:
        _, writer = await asyncio.open_connection(HOST, port)
    except ConnectionRefusedError:
        return True
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return False
