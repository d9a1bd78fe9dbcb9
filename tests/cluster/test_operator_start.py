"""A cluster process started as an operator starts it (`commonsky serve` in a subprocess) when
what it needs is not there: one line naming the problem, exit status 2, no traceback, no hang
(README "Quick start": "When something is wrong at start … one line … status 2")."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError

from commonsky.bench.cluster import Cluster
from commonsky.config import config_from_dict
from commonsky.errors import UsageError
from commonsky.server import HubServer
from tests.cluster.conftest import NATS_URL
from tests.cluster.test_shared_state import _toml, cli, core_config

#: Far above the bound the process gives itself (commonsky.cluster.nats_io.give_up_s: 4 s for
#: one server), far below "forever": before the fix a process here never stopped.
WITHIN_S = 30.0


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize("role", ["edge", "core", "all"])
def test_no_nats_at_start_is_one_line_not_a_hang(tmp_path: Path, role: str) -> None:
    url = f"nats://127.0.0.1:{closed_port()}"
    path = tmp_path / "hub.toml"
    path.write_text(
        '[server]\ndata_dir = "var"\nhttp = "127.0.0.1:0"\n'
        'store_url = "postgresql://postgres@127.0.0.1:5432/unused"\n'
        f'[cluster]\nnats_url = "{url}"\nrole = "{role}"\n'
        '[[listener]]\nkind = "tak-tcp"\nbind = "127.0.0.1:0"\nparty = "USA"\n'
        '[[party]]\nid = "USA"\n'
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "commonsky", "serve", "--config", str(path)],
                          capture_output=True, text=True, timeout=WITHIN_S)  # fmt: skip
    assert time.monotonic() - started < WITHIN_S
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("commonsky: error")]
    assert len(errors) == 1, done.stderr
    assert f"nats_url = '{url}': cannot connect" in errors[0]
    assert "ConnectionRefusedError" in errors[0]  # the reason, not just "no answer"


def test_a_core_of_another_cluster_is_refused_the_database(
    tmp_path: Path, postgres_url: str
) -> None:
    """Cluster 'a' runs on the database; a core of cluster 'b' (its own lease, so it would
    hold it at once) given the same store_url stops in one line before it claims the writer,
    which stays a's; a's next core starts as ever."""
    first = HubServer(config_from_dict(core_config(tmp_path / "a1", postgres_url, name="a")),
                      init=True, writer="a1 epoch 1")  # fmt: skip
    first._release()
    other = core_config(tmp_path / "b1", postgres_url, name="b")
    (tmp_path / "b.toml").write_text(_toml(other))
    done = cli("serve", "--config", str(tmp_path / "b.toml"))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert "this database is cluster 'a''s, not 'b''s ([cluster] name)" in line, line
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT writer FROM commonsky_writer").fetchone() == ("a1 epoch 1",)
    with pytest.raises(UsageError, match="cluster 'a''s, not 'b''s"):
        HubServer(config_from_dict(other), writer="b1 epoch 1")
    again = HubServer(config_from_dict(core_config(tmp_path / "a2", postgres_url, name="a")),
                      writer="a2 epoch 2")  # fmt: skip
    again._release()


def test_an_edge_stopped_with_sigterm_exits_0_without_alarms(tmp_path: Path) -> None:
    """SIGTERM: the edge closes its clients and its NATS connection and exits 0; closing NATS
    on purpose is not logged as NATS lost (an operator's alert would fire at every stop)."""
    path = tmp_path / "edge.toml"
    path.write_text(
        '[server]\nhttp = "127.0.0.1:0"\nstore_url = "postgresql://postgres@127.0.0.1/unused"\n'
        f'[cluster]\nnats_url = "{NATS_URL}"\nrole = "edge"\nname = "t{uuid.uuid4().hex[:10]}"\n'
        '[[listener]]\nkind = "tak-tcp"\nbind = "127.0.0.1:0"\nparty = "USA"\n'
        '[[party]]\nid = "USA"\n'
    )
    command = [sys.executable, "-m", "commonsky", "serve", "--config", str(path)]
    edge = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert edge.stdout is not None
        lines = []
        for line in edge.stdout:  # (until ready: a dead edge ends the loop, failing below)
            lines.append(line)
            if "cluster edge" in line and " ready " in line:
                break
        assert any(" ready " in line for line in lines), "".join(lines)
        edge.send_signal(signal.SIGTERM)
        rest, _ = edge.communicate(timeout=WITHIN_S)
    finally:
        edge.kill()
    assert edge.returncode == 0, rest
    assert "Traceback" not in rest, rest
    assert "NATS connection lost" not in rest, rest
    assert "NATS connection closed" in rest, rest  # (the barrier: the close was logged)


async def test_a_standby_with_an_unusable_database_says_so_at_start(
    tmp_path: Path, cluster: Cluster
) -> None:
    """Another core holds the lease; a second core whose store_url answers nobody stops at
    once with one line (exit 2) instead of standing by to fail only at the takeover."""
    serving = await cluster.core()
    text = serving.config.read_text()
    bad = re.sub(
        r'store_url = "[^"]*"',
        f'store_url = "postgresql://postgres:secret@127.0.0.1:{closed_port()}/x"',
        text,
    )
    bad = re.sub(r'data_dir = "[^"]*"', f'data_dir = "{tmp_path / "standby"}"', bad)  # fmt: skip
    assert "secret@" in bad and str(tmp_path / "standby") in bad
    (tmp_path / "standby.toml").write_text(bad)
    command = [
        sys.executable,
        "-m",
        "commonsky",
        "serve",
        "--config",
        str(tmp_path / "standby.toml"),
    ]
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True,
                                   timeout=WITHIN_S)  # fmt: skip
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("commonsky: error")]
    assert len(errors) == 1 and "store_url: cannot use PostgreSQL at" in errors[0], done.stderr
    assert "secret" not in done.stderr  # (the password is not printed)
    assert "standing by" not in done.stderr


async def test_a_core_refused_at_the_takeover_hands_the_lease_back(
    tmp_path: Path, postgres_url: str, cluster_name: str, nc: Client
) -> None:
    """A core that takes the lease and then cannot serve (here: its HTTP port is taken)
    stops in one line and deletes its lease entry on the way out, so the next standby
    need not wait out the TTL."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        data = core_config(tmp_path / "core", postgres_url, name=cluster_name)
        data["server"]["http"] = f"127.0.0.1:{busy.getsockname()[1]}"
        (tmp_path / "core.toml").write_text(_toml(data))
        done = await asyncio.to_thread(
            cli, "serve", "--init", "--config", str(tmp_path / "core.toml")
        )
    assert done.returncode == 2, done.stderr
    assert "lease" in done.stderr and "taken by" in done.stderr, done.stderr  # (it held it)
    kv = await nc.jetstream().key_value(f"{cluster_name}_lease")
    with pytest.raises(KeyNotFoundError):  # (deleted: KeyDeletedError is one)
        await kv.get("core")


def test_a_core_and_edge_in_one_process_names_the_edges_http_not_its_private_port(
    tmp_path: Path, postgres_url: str
) -> None:
    """Role "all": the core's own HTTP port is private (127.0.0.1, a port of the kernel's);
    the log named it as "map and API on http://127.0.0.1:<port>/", sending an operator to a
    port that is not the one configured. The edge's `http` is where they are."""
    data = core_config(tmp_path / "hub", postgres_url, name=f"t{uuid.uuid4().hex[:10]}")
    data["cluster"]["role"] = "all"
    path = tmp_path / "all.toml"
    path.write_text(_toml(data))
    command = [sys.executable, "-m", "commonsky", "serve", "--config", str(path), "--init"]
    hub = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert hub.stdout is not None
        lines = []
        for line in hub.stdout:  # (until the core serves: a dead process ends the loop)
            lines.append(line)
            if re.search(r"cluster core \S+ serving", line):
                break
        serving = lines[-1]
        hub.send_signal(signal.SIGTERM)
        hub.communicate(timeout=WITHIN_S)
    finally:
        hub.kill()
    assert "map and API the edge's" in serving, "".join(lines)
    assert "http://" not in serving, serving
