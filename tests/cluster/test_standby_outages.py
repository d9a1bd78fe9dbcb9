"""A standby core rides out what it depends on going away, instead of dying or serving
broken (cluster/lease.py `acquire`, core.py `_check_store`, run.py):

- PostgreSQL away (here only for the standby: its `store_url` goes through a relay the test
  cuts — the machine's server is shared): while the lease is free and its database does not
  answer, it does not take the lease (one line); once it answers, it takes over and serves.
  A serving core whose database stops answering stops (exit 75) and hands the lease back at
  once, rather than serve on without a store.
- NATS restarted (a private `nats-server -js` started by the test on a free port, its store
  kept): the standby waits it out and reconnects, and still takes over when the serving core
  dies; the edge and the core serve across the restart."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as Nats
from nats.js.errors import KeyNotFoundError

from commonsky.bench.cluster import Client, Cluster, Process, track, until


class Relay:
    """A TCP relay to PostgreSQL (127.0.0.1:5432) on `port` (held by the test for as long as
    the relay may reopen on it) that the test cuts and restores."""

    def __init__(self, port: int, target: int = 5432) -> None:
        self.target, self.port = target, port
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """New connections refused, and those open broken."""
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


def standby_config(serving: Process, folder: Path, store_url: str, http: int) -> Path:
    text = serving.config.read_text()
    text = re.sub(r'data_dir = "[^"]*"', f'data_dir = "{folder}"', text)
    text = re.sub(r'store_url = "[^"]*"', f'store_url = "{store_url}"', text)
    text = re.sub(r'http = "[^"]*"', f'http = "127.0.0.1:{http}"', text, count=1)
    path = folder.parent / "standby.toml"
    path.write_text(text)
    return path


async def lease_free(nc: Nats, cluster_name: str) -> bool:
    kv = await nc.jetstream().key_value(f"{cluster_name}_lease")
    try:
        await kv.get("core")
    except KeyNotFoundError:
        return True
    return False


async def test_a_standby_takes_the_lease_only_while_its_database_answers(
    tmp_path: Path, cluster: Cluster, postgres_url: str, nc: Nats, cluster_name: str
) -> None:
    relay = Relay(cluster.port())  # (held until the cluster stops, as the next one)
    await relay.open()
    serving = await cluster.core()
    _, ports = await cluster.edge()
    usa = await Client("USA", ports["USA"]).connect()
    rus = await Client("RUS", ports["RUS"]).connect()
    await usa.send(track("before", time.time()))
    await until(lambda: rus.got("before") >= 1, "RUS sees USA's track (the first core)")
    through = re.sub(r"@127\.0\.0\.1:5432/", f"@127.0.0.1:{relay.port}/", postgres_url)
    assert through != postgres_url
    standby = cluster.started(
        standby_config(serving, tmp_path / "standby", through, cluster.port()), "core"
    )
    await standby.wait_log(r"cluster core \S+: standing by")
    await relay.cut()
    serving.kill()
    await standby.wait_log("the lease is free, but this process cannot serve")
    assert await lease_free(nc, cluster_name)
    assert "serving" not in standby.text()
    await relay.open()
    await standby.wait_log(r"cluster core \S+ serving")
    await usa.send(track("after", time.time()))
    await until(lambda: rus.got("after") >= 1, "RUS sees USA's track (the standby serves)")
    # Serving, it loses its database: it stops and hands the lease back (not left to expire).
    await relay.cut()
    assert standby.proc is not None
    await until(lambda: standby.proc.poll() is not None, "the core stops")  # type: ignore[union-attr]
    assert standby.proc.returncode == 75, standby.text()[-2000:]
    assert await lease_free(nc, cluster_name)
    assert "the database does not answer (3 of 3)" in standby.text()
    for client in (usa, rus):
        await client.close()


class PrivateNats:
    """`nats-server -js` on `port` (held by the test: it restarts there) with its own store,
    restartable."""

    def __init__(self, folder: Path, port: int) -> None:
        binary = shutil.which("nats-server")
        if binary is None:  # (.ci/run installs it)
            pytest.fail("these tests need the nats-server binary on PATH")
        self.binary, self.folder, self.port = binary, folder, port
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self._spawn()

        def up() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        await until(up, "the private nats-server answers")

    def _spawn(self) -> None:
        self.folder.mkdir(exist_ok=True)
        with (self.folder / "nats.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port),
                 "-sd", str(self.folder / "store")],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def test_a_standby_and_the_cluster_ride_out_a_nats_restart(
    tmp_path: Path, postgres_url: str, cluster_name: str, held_port: Callable[[], int]
) -> None:
    server = PrivateNats(tmp_path / "nats", held_port())
    await server.start()
    cluster = Cluster(tmp_path, cluster_name, server.url, postgres_url)
    try:
        serving = await cluster.core()
        standby = await cluster.core(wait=False)
        _, ports = await cluster.edge()
        usa = await Client("USA", ports["USA"]).connect()
        rus = await Client("RUS", ports["RUS"]).connect()
        await usa.send(track("before-restart", time.time()))
        await until(lambda: rus.got("before-restart") >= 1, "RUS sees USA's track")
        server.stop()
        await standby.wait_log("NATS connection lost")
        # Away long enough for the standby's tries at the lease to fail (it used to die of
        # the first), and for the serving core to give its lease up (its renewals fail too).
        await standby.wait_log(r"lease \S+: NATS unavailable")
        await server.start()
        await standby.wait_log("NATS connection back")
        await usa.send(track("across-restart", time.time()))
        await until(lambda: rus.got("across-restart") >= 1, "RUS sees USA's track after it")
        # The standby is alive, and still takes over when the serving core dies.
        assert standby.proc is not None and standby.proc.poll() is None
        if serving.proc is not None and serving.proc.poll() is None:
            serving.kill()
        await standby.wait_log(r"cluster core \S+ serving")
        await usa.send(track("after-takeover", time.time()))
        await until(lambda: rus.got("after-takeover") >= 1, "RUS sees USA's track (standby)")
        nc = await nats.connect(server.url)
        try:
            assert not await lease_free(nc, cluster_name)  # (held: by the standby now)
        finally:
            await nc.close()
        for client in (usa, rus):
            await client.close()
    finally:
        cluster.stop()
        server.stop()
