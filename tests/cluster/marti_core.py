"""A cluster core with its Marti and enrollment listeners, in this process (HubServer as
cluster/run.py builds it once it holds the lease: no TAK listeners), for the tests of what
the cores share of TAK's HTTP side (issue 19)."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from commonsky.config import HubConfig, config_from_dict
from commonsky.server import HubServer
from tests.cluster.conftest import NATS_URL
from tests.conftest import PARTIES, RunningHub, token_of
from tests.marti.helpers import https

HOST = "127.0.0.1"


def core_data(folder: Path, store_url: str, ca: Path, server: dict[str, Any] | None = None,
              name: str = "marti") -> dict[str, Any]:  # fmt: skip
    return {
        "server": {"data_dir": str(folder), "http": f"{HOST}:0", "store_url": store_url,
                   **(server or {})},
        "listener": [{"kind": "enroll", "bind": f"{HOST}:0", "ca": str(ca)},
                     {"kind": "marti", "bind": f"{HOST}:0", "ca": str(ca)}],
        "party": [{"id": p, "token": token_of(p)} for p in PARTIES],
        "agreement": [],
        "cluster": {"nats_url": NATS_URL, "role": "core", "name": name},
    }  # fmt: skip


def core_config(folder: Path, store_url: str, ca: Path, **kw: Any) -> HubConfig:
    return config_from_dict(core_data(folder, store_url, ca, **kw), "test")


@contextlib.asynccontextmanager
async def core(config: HubConfig, writer: str, init: bool = False) -> AsyncIterator[RunningHub]:
    """A serving core: the database's writer `writer`, its listeners bound."""
    server = HubServer(config, init=init, writer=writer)
    await server.start()
    try:
        yield RunningHub(server)
    finally:
        await server.stop()


def marti(hub: RunningHub, ca: Path, cert: tuple[Path, Path]) -> httpx.AsyncClient:
    return https(hub, HOST, ca, "marti", cert)


def enroll(hub: RunningHub, ca: Path) -> httpx.AsyncClient:
    return https(hub, HOST, ca, "enroll")


def csr(party: str, user: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    names = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user),
                       x509.NameAttribute(NameOID.ORGANIZATION_NAME, party)])  # fmt: skip
    request = x509.CertificateSigningRequestBuilder().subject_name(names).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM)


def basic(user: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


def toml(data: dict[str, Any]) -> str:
    """`data` (core_data's shape) as a config file."""
    lines = ["[server]", *(f"{k} = {json.dumps(v)}" for k, v in data["server"].items())]
    for listener in data["listener"]:
        lines += ["[[listener]]", *(f"{k} = {json.dumps(v)}" for k, v in listener.items())]
    for party in data["party"]:
        lines += ["[[party]]", f"id = {json.dumps(party['id'])}",
                  f"token = {json.dumps(party['token'])}"]  # fmt: skip
    lines += ["[cluster]", *(f"{k} = {json.dumps(v)}" for k, v in data["cluster"].items())]
    return "\n".join(lines) + "\n"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "commonsky", *args], capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def issue_token(config_file: Path, party: str, user: str) -> str:
    """`commonsky enroll --config FILE`: the token it prints."""
    made = cli("enroll", "--config", str(config_file), "--party", party, "--user", user)
    assert made.returncode == 0, made.stdout + made.stderr
    [line] = made.stdout.strip().splitlines()
    return line.split(" ")[0].removeprefix("token=")


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as db:
        return db.execute(query).fetchall()


def counts(url: str) -> dict[str, int]:
    """Rows of each Marti table of the database."""
    tables = ("commonsky_file", "commonsky_file_blob", "commonsky_file_chunk",
              "commonsky_enroll_token")  # fmt: skip
    out = {}
    for table in tables:
        exists = rows(url, f"SELECT to_regclass('{table}') IS NOT NULL")[0][0]
        out[table] = int(rows(url, f"SELECT COUNT(*) FROM {table}")[0][0]) if exists else 0
    return out


def sqlite_files(folder: Path) -> list[str]:
    """The one-process Marti files a core's folder must not hold (the folder must exist)."""
    assert folder.is_dir(), folder
    return sorted(p.name for p in folder.glob("*.sqlite3"))
