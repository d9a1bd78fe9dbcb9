"""The NATS link secured (docs/nats-permissions.conf, docs/architecture.md "The NATS link"):
a private `nats-server -js` with TLS (certificates from the project's own CA, pki.py) and the
documented users — a core, and one per edge allowed only its own subjects.

- A core and two edges, each with its own user, relay between clients on both edges.
- An impostor holding edge B's user can neither publish on edge A's subjects (its stream
  subject, its beat) nor read A's deliveries or replies: NATS refuses each (permissions
  violation), and nothing of it reaches the core or a client.
- The live bucket (cluster/live_kv.py: tracks and positions as accepted, undisclosed) is
  the core's alone: the core keeps it with the documented permissions, and an edge's user
  can neither look it up, read a value, open a consumer on it, listen to its writes, nor
  make the picture's stream copy it.
- A wrong password, a server certificate the configured CA does not sign, or a `tls://` URL
  answered by a server without TLS stops the process at start with one line; the password is
  in no log."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as Nats

from commonsky.bench.cluster import (
    Client,
    Cluster,
    Process,
    cluster_config,
    track,
    until,
    until_async,
)
from commonsky.bench.ports import reserve_port
from commonsky.cluster.live_kv import live_key
from commonsky.cluster.wire import ConnInfo, Ingest, Names, Roster, encode
from commonsky.pki import init_ca, issue_client
from commonsky.protocol.cot import parse_event

DOCS = Path(__file__).parents[2] / "docs"
NAME = "commonsky"  # (the documented file's cluster name: this server is the test's own)
PASSWORDS = {
    "core": "core-Pw-7f3a9c",
    "edge-a": "edge-a-Pw-51d0e2",
    "edge-b": "edge-b-Pw-a88c41",
}
ENV = {
    "COMMONSKY_NATS_CORE_PASSWORD": PASSWORDS["core"],
    "COMMONSKY_NATS_EDGE_A_PASSWORD": PASSWORDS["edge-a"],
    "COMMONSKY_NATS_EDGE_B_PASSWORD": PASSWORDS["edge-b"],
}


class SecuredNats:
    """`nats-server -js` on a free port with the documented users (and `tls`: TLS with
    client certificates from `ca`; without `jetstream`, a server that has none)."""

    def __init__(self, folder: Path, ca: Path | None, jetstream: bool = True) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not Path(binary).is_file():
            pytest.fail("these tests need the nats-server binary (Debian's nats-server)")
        folder.mkdir(parents=True)
        # Held until `stop`: the port is written into the server's file before it starts
        # (nats-server listens with SO_REUSEADDR, as Go does, so it can bind a reserved port).
        self.held = reserve_port()
        self.folder, self.port = folder, int(self.held.getsockname()[1])
        shutil.copy(DOCS / "nats-permissions.conf", folder / "nats-permissions.conf")
        tls = ""
        if ca is not None:
            tls = (f'tls {{\n  cert_file: "{ca}/server.pem"\n  key_file: "{ca}/server-key.pem"\n'
                   f'  ca_file: "{ca}/ca.pem"\n  verify: true\n}}\n')  # fmt: skip
        js = f'jetstream {{ store_dir: "{folder}/store" }}\n' if jetstream else ""
        (folder / "server.conf").write_text(
            f'listen: "127.0.0.1:{self.port}"\n{js}{tls}include nats-permissions.conf\n'
        )
        self.scheme = "tls" if ca is not None else "nats"
        with (folder / "nats.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [binary, "-c", str(folder / "server.conf")],
                stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, **ENV),
            )  # fmt: skip

    def url(self, user: str, password: str | None = None) -> str:
        secret = PASSWORDS[user] if password is None else password
        return f"{self.scheme}://{user}:{secret}@127.0.0.1:{self.port}"

    async def started(self) -> SecuredNats:
        def up() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        await until(up, f"the private nats-server answers: {self.log()}")
        return self

    def log(self) -> str:
        return (self.folder / "nats.log").read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.held.close()


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    """The project's CA (`commonsky ca init`): the server's certificate for 127.0.0.1, and a
    client certificate the processes and the impostor present (`verify: true`)."""
    folder = tmp_path / "ca"
    init_ca(folder)
    issue_client(folder, "cluster", "node", tmp_path / "node", password="x" * 16)
    return folder


@pytest.fixture
async def secured(tmp_path: Path, ca: Path) -> AsyncIterator[SecuredNats]:
    server = SecuredNats(tmp_path / "nats", ca)
    try:
        yield await server.started()
    finally:
        server.stop()


def tls_lines(folder: Path, ca: Path) -> str:
    """The `[cluster]` keys of a process of the TLS server (appended: the table is last)."""
    node = folder / "node"
    return (f'nats_ca = "{ca}/ca.pem"\nnats_cert = "{node}/node.pem"\n'
            f'nats_key = "{node}/node-key.pem"\n')  # fmt: skip


def process(cluster: Cluster, role: str, url: str, more: str) -> tuple[Process, dict[str, int]]:
    """A `commonsky serve` of `role` on `url` with `more` `[cluster]` lines, started."""
    ports = {party: cluster.port() for party in cluster.parties}  # (held: Cluster.port)
    http = cluster.port()
    config = cluster_config(cluster.folder, NAME, url, cluster.store_url, role, ports, http)
    config.write_text(config.read_text() + more)
    return cluster.started(config, role, http), ports


async def impostor(server: SecuredNats, folder: Path, ca: Path, errors: list[str],
                   inbox: str = "_INBOX") -> Nats:  # fmt: skip
    """A connection with edge B's user (and the cluster's client certificate); its requests'
    answers come to `inbox` (edge B's own lets it read them)."""
    context = ssl.create_default_context(cafile=str(ca / "ca.pem"))
    context.load_cert_chain(folder / "node" / "node.pem", folder / "node" / "node-key.pem")

    async def error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(server.url("edge-b"), tls=context, error_cb=error,
                              max_reconnect_attempts=0, inbox_prefix=inbox)  # fmt: skip


def tls_context(folder: Path, ca: Path) -> ssl.SSLContext:
    """The cluster's client certificate, trusting the project's CA (`verify: true`)."""
    context = ssl.create_default_context(cafile=str(ca / "ca.pem"))
    context.load_cert_chain(folder / "node" / "node.pem", folder / "node" / "node-key.pem")
    return context


async def test_only_the_core_s_user_may_touch_the_live_bucket(
    tmp_path: Path, ca: Path, secured: SecuredNats, postgres_url: str
) -> None:
    cluster = Cluster(tmp_path, NAME, "unused", postgres_url)
    tls = tls_lines(tmp_path, ca)
    try:
        core, _ = process(cluster, "core", secured.url("core"), tls)
        await core.wait_log(r"cluster core \S+ serving")
        edge, ports = process(cluster, "edge", secured.url("edge-a"), tls + 'edge = "edge-a"\n')
        await edge.wait_log(r"cluster edge \S+ ready")
        usa = await Client("USA", ports["USA"]).connect()
        await usa.send(track("usa-live", time.time()))
        name = live_key(("USA", "usa-live"))
        bucket = f"KV_{NAME}_live"
        # The core keeps the record with its documented permissions (read with its user).
        as_core = await nats.connect(secured.url("core"), tls=tls_context(tmp_path, ca),
                                     inbox_prefix=f"_INBOX.{NAME}.core",
                                     max_reconnect_attempts=0)  # fmt: skip
        try:
            live = await as_core.jetstream().key_value(f"{NAME}_live")

            async def kept() -> bool:
                try:
                    return name in await live.keys()
                except Exception:  # (no key yet)
                    return False

            await until_async(kept, "the core keeps the track's record")
            before = await as_core.jetstream().stream_info(f"KV_{NAME}_picture")
        finally:
            await as_core.close()

        errors: list[str] = []
        inbox = f"_INBOX.{NAME}.edge.edge-b"  # (its own: answers, and where a consumer pushes)
        nc = await impostor(secured, tmp_path, ca, errors, inbox)
        stolen: list[bytes] = []

        async def steal(msg: object) -> None:
            stolen.append(msg.data)  # type: ignore[attr-defined]

        try:
            await nc.subscribe(f"{inbox}.live", cb=steal)
            await nc.subscribe(f"$KV.{NAME}_live.>", cb=steal)
            push = {"deliver_subject": f"{inbox}.live", "ack_policy": "none"}
            sourced = {"name": f"KV_{NAME}_picture", "sources": [{"name": bucket}]}
            asks = {
                f"$JS.API.STREAM.INFO.{bucket}": {},
                f"$JS.API.DIRECT.GET.{bucket}.$KV.{NAME}_live.{name}": {},
                f"$JS.API.STREAM.MSG.GET.{bucket}": {"last_by_subj": f"$KV.{NAME}_live.{name}"},
                f"$JS.API.CONSUMER.CREATE.{bucket}": {"stream_name": bucket, "config": push},
                f"$JS.API.CONSUMER.CREATE.{bucket}.x.$KV.{NAME}_live.>": {
                    "stream_name": bucket,
                    "config": {**push, "name": "x"},
                },
                f"$JS.API.STREAM.UPDATE.KV_{NAME}_picture": sourced,
            }
            for subject, payload in asks.items():
                with pytest.raises(nats.errors.TimeoutError):  # (refused: never answered)
                    await nc.request(subject, json.dumps(payload).encode(), timeout=1.0)
            # An edge may make the picture's stream (idempotently, at its start): made already,
            # it is not made again copying the live bucket.
            copy = {**before.config.as_dict(), "sources": [{"name": bucket}]}
            answer = await nc.request(f"$JS.API.STREAM.CREATE.KV_{NAME}_picture",
                                      json.dumps(copy).encode(), timeout=5.0)  # fmt: skip
            assert "error" in json.loads(answer.data), answer.data
            await nc.flush()
        finally:
            await nc.close()
        assert stolen == []
        log = secured.log()
        for subject in asks:
            assert f'Publish Violation - User "edge-b", Subject "{subject}"' in log, (subject, log)
        assert f'Subscription Violation - User "edge-b", Subject "$KV.{NAME}_live.>"' in log, log
        own = [line for line in log.splitlines() if "Violation" in line and
               any(f"python3:{role} " in line for role in ("edge", "core", "lease"))]  # fmt: skip
        assert own == [], own
        assert "Traceback" not in core.text()
        await usa.close()
    finally:
        cluster.stop()


async def test_per_edge_users_over_tls_relay_and_an_impostor_is_refused(
    tmp_path: Path, ca: Path, secured: SecuredNats, postgres_url: str
) -> None:
    cluster = Cluster(tmp_path, NAME, "unused", postgres_url)
    tls = tls_lines(tmp_path, ca)
    try:
        core, _ = process(cluster, "core", secured.url("core"), tls)
        await core.wait_log(r"cluster core \S+ serving")
        edge_a, ports_a = process(cluster, "edge", secured.url("edge-a"), tls + 'edge = "edge-a"\n')
        edge_b, ports_b = process(cluster, "edge", secured.url("edge-b"), tls + 'edge = "edge-b"\n')
        for edge in (edge_a, edge_b):
            await edge.wait_log(r"cluster edge \S+ ready")
        usa = await Client("USA", ports_a["USA"]).connect()
        rus = await Client("RUS", ports_b["RUS"]).connect()
        await usa.send(track("usa-on-a", time.time()))
        await until(lambda: rus.got("usa-on-a") >= 1, "RUS on edge B sees USA's track")
        await rus.send(track("rus-on-b", time.time()))
        await until(lambda: usa.got("rus-on-b") >= 1, "USA on edge A sees RUS's track")

        errors: list[str] = []
        nc = await impostor(secured, tmp_path, ca, errors)
        try:
            names = Names(NAME)
            run_a = edge_a.text().split("cluster edge ", 1)[1].split()[0]  # (its id)
            stolen: list[bytes] = []

            async def steal(msg: object) -> None:
                stolen.append(msg.data)  # type: ignore[attr-defined]

            for subject in (names.out(run_a), f"{NAME}.out.>", f"_INBOX.{NAME}.edge.edge-a.>",
                            f"{NAME}.in.>"):  # fmt: skip
                await nc.subscribe(subject, cb=steal)
            event = parse_event(track("forged-on-a", time.time()))
            forged = Ingest(f"{run_a}.x.1", run_a, "tak-tcp#999", "USA", "u", "xml", event, 0.0)
            await nc.publish(names.ingest(run_a), encode(forged), headers={"Nats-Msg-Id": "f1"})
            ghost = ConnInfo("ghost", "USA", "u", "tak-tcp", "", "xml")
            await nc.publish(names.beat(run_a), encode(Roster(run_a, [ghost])))
            await nc.flush()
            # After the forgery (a round trip: the server has it), a track through edge A and
            # back to its own client: had the forged event entered the stream, it was applied
            # and delivered first.
            await usa.send(track("after-forgery", time.time()))
            await until(lambda: rus.got("after-forgery") >= 1, "RUS sees USA's next track")
            await rus.send(track("to-a-after", time.time()))
            await until(lambda: usa.got("to-a-after") >= 1, "USA sees RUS's next track")
            await nc.flush()  # (what the server sent the impostor before this, it has)
        finally:
            await nc.close()
        assert rus.got("forged-on-a") == usa.got("forged-on-a") == 0
        assert stolen == []
        # NATS refused each (its log: one line per refusal), and said so to the impostor.
        log = secured.log()
        for kind, subject in (("Publish", names.ingest(run_a)), ("Publish", names.beat(run_a)),
                              ("Subscription", names.out(run_a)),
                              ("Subscription", f"{NAME}.out.>"),
                              ("Subscription", f"_INBOX.{NAME}.edge.edge-a.>"),
                              ("Subscription", f"{NAME}.in.>")):  # fmt: skip
            assert f'{kind} Violation - User "edge-b", Subject "{subject}"' in log, (subject, log)
        assert any("permissions violation" in error for error in errors), errors
        # The product's own connections (named "edge …", "core …", "lease …") were refused
        # nothing: the documented permissions are all they need.
        own = [line for line in log.splitlines() if "Violation" in line and
               any(f"python3:{role} " in line for role in ("edge", "core", "lease"))]  # fmt: skip
        assert own == [], own
        assert "dropped a message" not in core.text()  # (nothing of it reached the core)
        for proc in cluster.processes:
            assert "Traceback" not in proc.text(), proc.text()[-2000:]
            for password in PASSWORDS.values():
                assert password not in proc.text()
        for client in (usa, rus):
            await client.close()
    finally:
        cluster.stop()


async def one_line_exit(cluster: Cluster, role: str, url: str, more: str) -> str:
    """The process's output once it stopped at start (exit status 2)."""
    proc, _ = process(cluster, role, url, more)
    assert proc.proc is not None
    status = await asyncio.to_thread(proc.proc.wait, 60)
    text = proc.text()
    assert status == 2, text
    assert "Traceback" not in text, text
    lines = [line for line in text.strip().splitlines() if " INFO " not in line]
    assert len(lines) == 1 and lines[0].startswith("commonsky: error: [cluster] nats_url"), text
    return lines[0]


async def test_a_wrong_password_or_an_untrusted_server_stops_with_one_line(
    tmp_path: Path, ca: Path, secured: SecuredNats, postgres_url: str
) -> None:
    cluster = Cluster(tmp_path, NAME, "unused", postgres_url)
    try:
        tls = tls_lines(tmp_path, ca)
        wrong = "Wrong-Pw-0c9e"
        line = await one_line_exit(cluster, "edge", secured.url("edge-a", wrong), tls)
        assert "refused this user and password" in line, line
        assert f"tls://edge-a:***@127.0.0.1:{secured.port}" in line, line
        assert wrong not in line
        other = tmp_path / "other-ca"
        init_ca(other)
        untrusted = tls.replace(f"{ca}/ca.pem", f"{other}/ca.pem")
        line = await one_line_exit(cluster, "core", secured.url("core"), untrusted)
        assert "TLS certificate is not trusted" in line and "nats_ca" in line, line
        assert PASSWORDS["core"] not in line
        for proc in cluster.processes:
            for password in (wrong, *PASSWORDS.values()):
                assert password not in proc.text()
    finally:
        cluster.stop()  # (gives back the ports it held: Cluster.port)


async def test_a_tls_url_answered_without_tls_sends_no_password(
    tmp_path: Path, postgres_url: str
) -> None:
    plain = await SecuredNats(tmp_path / "nats", None).started()
    cluster = Cluster(tmp_path, NAME, "unused", postgres_url)
    try:
        url = plain.url("edge-a").replace("nats://", "tls://")
        line = await one_line_exit(cluster, "edge", url, 'edge = "edge-a"\n')
        assert "does not ask for TLS" in line, line
        assert PASSWORDS["edge-a"] not in line
        # (The server never saw the user: no authorization error in its log.)
        assert "edge-a" not in plain.log(), plain.log()
    finally:
        cluster.stop()  # (gives back the ports it held: Cluster.port)
        plain.stop()
