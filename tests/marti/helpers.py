"""A hub with its TAK side over TLS: tak-tls, enroll and marti listeners, and a CA for them.

pytak's enrollment client always calls port 8446 (`crypto_classes.py`), so the hub under test
binds a loopback address of its own (127.a.b.c: the whole 127/8 is this machine) where 8446
is free, and its CA's server certificate names that address.
"""

from __future__ import annotations

import contextlib
import errno
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from commonsky.config import HubConfig, config_from_dict
from commonsky.pki import init_ca, issue_client
from tests.conftest import OPERATOR_TOKEN, PARTIES, RunningHub, running_hub, token_of

ENROLL_PORT = 8446


def free_loopback(port: int = ENROLL_PORT) -> str:
    """A 127.x.y.z address where `port` can be bound now."""
    for _ in range(200):
        host = f"127.{random.randint(1, 254)}.{random.randint(0, 254)}.{random.randint(1, 254)}"
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                    continue
                raise
            return host
    raise RuntimeError(f"no loopback address with port {port} free")


def make_ca(root: Path, host: str) -> Path:
    ca = root / "ca"
    if not (ca / "ca.pem").exists():
        init_ca(ca, server_names=[host])
    return ca


def client_cert(ca: Path, party: str, name: str, out: Path) -> tuple[Path, Path]:
    issue_client(ca, party, name, out)
    return out / f"{name}.pem", out / f"{name}-key.pem"


def marti_config(
    root: Path,
    host: str,
    ca: Path,
    agreements: list[dict[str, Any]] | None = None,
    server: dict[str, Any] | None = None,
    enroll_port: int = 0,
) -> HubConfig:
    listeners: list[dict[str, Any]] = [
        {"kind": "tak-tcp", "bind": "127.0.0.1:0", "party": p} for p in PARTIES
    ]
    listeners += [
        {"kind": "tak-tls", "bind": f"{host}:0", "ca": str(ca)},
        {"kind": "enroll", "bind": f"{host}:{enroll_port}", "ca": str(ca)},
        {"kind": "marti", "bind": f"{host}:0", "ca": str(ca)},
    ]
    data = {
        "server": {
            "data_dir": str(root / "hub"),
            "http": "127.0.0.1:0",
            "operator_token": OPERATOR_TOKEN,
            **(server or {}),
        },
        "listener": listeners,
        "party": [{"id": p, "token": token_of(p)} for p in PARTIES],
        "agreement": agreements or [],
    }
    return config_from_dict(data, "test")


@contextlib.asynccontextmanager
async def marti_hub(
    root: Path,
    agreements: list[dict[str, Any]] | None = None,
    server: dict[str, Any] | None = None,
    enroll_port: int = 0,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[tuple[RunningHub, str, Path]]:
    host = free_loopback(enroll_port or ENROLL_PORT)
    ca = make_ca(root, host)
    config = marti_config(root, host, ca, agreements, server, enroll_port)
    async with running_hub(config, clock=clock) as hub:
        yield hub, host, ca


def https(
    hub: RunningHub, host: str, ca: Path, kind: str, cert: tuple[Path, Path] | None = None
) -> httpx.AsyncClient:
    context = ssl.create_default_context(cafile=str(ca / "ca.pem"))
    if cert is not None:
        context.load_cert_chain(*cert)
    return httpx.AsyncClient(
        base_url=f"https://{host}:{hub.server.port(kind)}", verify=context, timeout=30
    )
