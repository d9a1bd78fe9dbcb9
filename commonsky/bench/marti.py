"""`commonsky bench marti`: enrollment round trips, and a 10 MB data package up and down.

A real hub (loopback, its own temporary folder and CA) with `enroll` and `marti` listeners:

- **enrollment**: per round a new one-time token, `GET /Marti/api/tls/config` then
  `POST /Marti/api/tls/signClient/v2` with a fresh P-256 CSR (as pytak and ATAK do; the CSR's
  key is made before the clock starts) — p50 and p99 of the pair, in ms;
- **files**: `curl` uploads a package of `--megabytes` (random bytes, stored: zip adds nothing)
  to `/Marti/sync/missionupload` and fetches it from `/Marti/sync/content` with a client
  certificate, and — in the same run, same file, same `curl` — fetches it from a plain static
  server (`python -m http.server` on loopback, no TLS): MB/s each, best of `--repeat`.

`--postgres URL`: the same again, in the same run, with the hub as a cluster's core — its
tokens and files in that database (marti/pgtokens.py, pgfiles.py), in a schema of its own
made for the run and dropped after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import httpx
import numpy as np
import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from commonsky.bench.ports import HeldPorts
from commonsky.config import config_from_dict
from commonsky.errors import UsageError, finite_flags


def _csr(user: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user)])
    request = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM)


def _package(megabytes: float, seed: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(
            "MANIFEST/manifest.xml",
            f'<MissionPackageManifest version="2"><Configuration><Parameter name="name" '
            f'value="bench-{seed}"/></Configuration><Contents/></MissionPackageManifest>',
        )
        archive.writestr(
            "data/payload.bin", np.random.default_rng(seed).bytes(int(megabytes * 1e6))
        )
    return out.getvalue()


def _curl(*args: str) -> float:
    """Seconds `curl` took (its own figure, so process start is not counted)."""
    done = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{time_total}", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise UsageError(f"curl failed: {done.stderr.strip()[:200]}")
    return float(done.stdout)


async def _run(
    rounds: int, megabytes: float, repeat: int, postgres: str | None = None
) -> dict[str, float]:
    from commonsky.marti.stores import config_tokens
    from commonsky.pki import init_ca, issue_client
    from commonsky.server import HubServer

    root = Path(tempfile.mkdtemp(prefix="commonsky-bench-marti-"))
    try:
        ca = root / "ca"
        init_ca(ca)
        issue_client(ca, "USA", "bench", root / "client", password="bench")
        data: dict[str, object] = {
            "server": {
                "data_dir": str(root / "hub"),
                "http": "127.0.0.1:0",
                "limit_file_bytes": int(megabytes * 1e6) + 1_000_000,
                **({"store_url": postgres} if postgres else {}),
            },
            "listener": [
                {"kind": "enroll", "bind": "127.0.0.1:0", "ca": str(ca)},
                {"kind": "marti", "bind": "127.0.0.1:0", "ca": str(ca)},
            ],
            "party": [{"id": "USA", "token": "bench-token-0123456789"}],
        }
        if postgres:  # (a cluster's core, as cluster/run.py builds it holding the lease)
            data["cluster"] = {"nats_url": "nats://127.0.0.1:4222", "role": "core"}
        config = config_from_dict(data, "bench")
        server = HubServer(config, init=True, writer="bench" if postgres else None)
        await server.start()
        figures: dict[str, float] = {}
        try:
            context = ssl.create_default_context(cafile=str(ca / "ca.pem"))
            base = f"https://127.0.0.1:{server.port('enroll')}"
            csrs = [_csr(f"user-{i}") for i in range(rounds)]
            store = config_tokens(config)
            tokens = [store.issue("USA", f"user-{i}", 3600, time.time()) for i in range(rounds)]
            store.close()
            took = []
            async with httpx.AsyncClient(base_url=base, verify=context) as client:
                for i in range(rounds):
                    auth = (f"user-{i}", tokens[i])
                    began = time.perf_counter()
                    first = await client.get("/Marti/api/tls/config", auth=auth)
                    second = await client.post(
                        "/Marti/api/tls/signClient/v2", content=csrs[i], auth=auth
                    )
                    took.append(time.perf_counter() - began)
                    if first.status_code != 200 or second.status_code != 200:
                        raise UsageError(f"enrollment failed: {second.status_code} {second.text}")
            ms = np.array(took) * 1000
            figures["enroll p50 ms"] = float(np.percentile(ms, 50))
            figures["enroll p99 ms"] = float(np.percentile(ms, 99))
            figures.update(await asyncio.to_thread(_files, server, root, megabytes, repeat))
        finally:
            await server.stop()
        return figures
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _files(server: object, root: Path, megabytes: float, repeat: int) -> dict[str, float]:
    marti = f"https://127.0.0.1:{server.port('marti')}"  # type: ignore[attr-defined]
    tls = [
        "--cacert",
        str(root / "ca/ca.pem"),
        "--cert",
        str(root / "client/bench.pem"),
        "--key",
        str(root / "client/bench-key.pem"),
    ]
    static_dir = root / "static"
    static_dir.mkdir()
    # Held until the static server is gone (bench/ports.py; http.server sets SO_REUSEADDR).
    held = HeldPorts()
    static_port = held.port()
    static = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(static_port), "--bind", "127.0.0.1"],
        cwd=static_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    up, down, plain = [], [], []
    try:
        for attempt in range(repeat):
            data = _package(megabytes, attempt)
            digest = hashlib.sha256(data).hexdigest()
            path = static_dir / f"bench-{attempt}.zip"
            path.write_bytes(data)
            size = len(data) / 1e6
            up.append(
                size
                / _curl(
                    *tls,
                    "-F",
                    f"assetfile=@{path};type=application/x-zip-compressed",
                    f"{marti}/Marti/sync/missionupload?hash={digest}&filename={path.name}",
                )
            )
            down.append(size / _curl(*tls, f"{marti}/Marti/sync/content?hash={digest}"))
            _wait_for(static_port)
            plain.append(size / _curl(f"http://127.0.0.1:{static_port}/{path.name}"))
    finally:
        static.terminate()
        static.wait(5)
        held.close()
    return {
        "upload MB/s (hub, TLS)": max(up),
        "fetch MB/s (hub, TLS)": max(down),
        "fetch MB/s (static server, plain)": max(plain),
    }


def _wait_for(port: int) -> None:
    for _ in range(100):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise UsageError("the static server did not start")


def bench(
    rounds: Annotated[int, typer.Option(help="Enrollments to time.")] = 200,
    megabytes: Annotated[float, typer.Option(help="Size of the data package.")] = 10.0,
    repeat: Annotated[int, typer.Option(help="Uploads and fetches (best kept).")] = 3,
    postgres: Annotated[
        str | None,
        typer.Option(help="Also as a cluster's core with tokens and files in this database."),
    ] = None,
) -> None:
    """Enrollment round trip p99; upload and fetch of a data package in MB/s beside a static
    server, same run."""
    finite_flags(megabytes=megabytes)
    if rounds < 1 or megabytes <= 0 or repeat < 1:
        raise UsageError("--rounds, --megabytes and --repeat must be positive")
    if shutil.which("curl") is None:
        raise UsageError("bench marti compares against curl, which is not installed")
    figures = {"data folder": asyncio.run(_run(rounds, megabytes, repeat))}
    if postgres:
        with _schema(postgres) as url:
            figures["PostgreSQL (cluster core)"] = asyncio.run(_run(rounds, megabytes, repeat, url))
    print(f"bench marti: {rounds} enrollments, {megabytes:g} MB package, {os.cpu_count()} cores")
    for where, found in figures.items():
        print(f" tokens and files in the {where}:")
        for name, value in found.items():
            print(f"  {name:34} {value:10.2f}")


@contextlib.contextmanager
def _schema(url: str) -> Iterator[str]:
    """`url` with a schema of its own for one run (dropped after it)."""
    import psycopg

    name = f"commonsky_bench_{os.urandom(6).hex()}"
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as db:
            db.execute(f"CREATE SCHEMA {name}")
    except psycopg.Error as exc:
        raise UsageError(f"--postgres: cannot use {url.split('@')[-1]}: {exc}") from None
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as db:
            db.execute(f"DROP SCHEMA {name} CASCADE")
