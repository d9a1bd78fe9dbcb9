"""An edge's tak-tls listener checks its CA's CRL, as the single process does: a revoked
client certificate is refused at connection, and a session already open ends within a
housekeeping tick once its certificate is revoked."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from nats.aio.client import Client as Nats

from commonsky.bench.cluster import until
from commonsky.cluster.run import EdgeServer
from commonsky.config import config_from_dict
from commonsky.revocation import revoke
from tests.integration.test_tak_tcp import track
from tests.marti.helpers import client_cert, free_loopback, make_ca

from .conftest import NATS_URL

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _tls(host: str, port: int, ca: Path, cert: tuple[Path, Path]) -> Stream:
    context = ssl.create_default_context(cafile=str(ca / "ca.pem"))
    context.load_cert_chain(*cert)
    return await asyncio.open_connection(host, port, ssl=context, server_hostname=host)


async def _closed(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


def _revoked(edge: EdgeServer) -> float:
    return (
        edge.hub.metrics.registry.get_sample_value(
            "commonsky_refusals_total", {"reason": "certificate_revoked"}
        )
        or 0.0
    )


async def test_an_edge_refuses_a_revoked_certificate(
    tmp_path: Path, cluster_name: str, nc: Nats
) -> None:
    host = free_loopback(0)
    ca = make_ca(tmp_path, host)
    lost = client_cert(ca, "USA", "usa-lost", tmp_path / "lost")
    ops = client_cert(ca, "USA", "usa-ops", tmp_path / "ops")
    config = config_from_dict(
        {
            "server": {"store_url": "postgresql://postgres@127.0.0.1:5432/unused"},
            "listener": [{"kind": "tak-tls", "bind": f"{host}:0", "ca": str(ca)}],
            "party": [{"id": "USA"}, {"id": "JPN"}],
            "cluster": {"nats_url": NATS_URL, "role": "edge", "name": cluster_name},
        },
        "test",
    )
    edge = EdgeServer(config)
    await edge.start()
    try:
        port = edge.listeners[0].port
        lost_reader, lost_writer = await _tls(host, port, ca, lost)
        lost_writer.write(track("LOST-1"))
        await lost_writer.drain()
        assert edge.listeners[0].revocations is not None
        revoke(ca, "usa-lost", None)
        # The open session ends within a housekeeping tick ...
        await asyncio.wait_for(_closed(lost_reader), 5)
        assert _revoked(edge) == 1
        # ... a new one with that certificate is refused; another certificate still works.
        again_reader, _ = await _tls(host, port, ca, lost)
        await asyncio.wait_for(_closed(again_reader), 5)
        assert _revoked(edge) == 2
        _, good_writer = await _tls(host, port, ca, ops)
        good_writer.write(track("OPS-1"))
        await good_writer.drain()
        await until(lambda: any(c.user == "usa-ops" for c in edge.hub.by_id.values()),
                    "the other certificate's session is held")  # fmt: skip
        assert _revoked(edge) == 2
        good_writer.close()
    finally:
        await edge.stop()
