"""What an operator sees when the NATS link is set up wrong (README, "The NATS link across
machines"): one line saying what to fix, exit status 2, no traceback, no warning before it —
on a private `nats-server -js` with TLS and the documented users (test_nats_auth.py's).

- A typo'd `edge` (the permissions name another edge), or role `all` with the core's user:
  the user may not read the process's replies (its inbox), said at connect, naming the key.
- A core given an edge's user: the same, naming the core's user.
- No client certificate for a server with `verify: true`; one from another CA.
- A permissions file that lacks a JetStream subject an edge needs; a server without
  JetStream."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from commonsky.bench.cluster import Cluster, until
from commonsky.pki import init_ca, issue_client

from .test_nats_auth import NAME, PASSWORDS, SecuredNats, process, tls_lines
from .test_nats_auth import ca as ca  # (fixtures)
from .test_nats_auth import secured as secured

pytestmark = pytest.mark.slow  # (each test starts and stops several processes)


async def one_line(cluster: Cluster, role: str, url: str, more: str) -> str:
    """The one line a process stopping at start printed (exit status 2): everything else it
    wrote is INFO (the data folder of a core, say)."""
    proc, _ = process(cluster, role, url, more)
    assert proc.proc is not None
    status = await asyncio.to_thread(proc.proc.wait, 60)
    text = proc.text()
    assert status == 2 and "Traceback" not in text, text
    lines = [line for line in text.strip().splitlines() if " INFO " not in line]
    assert len(lines) == 1 and lines[0].startswith("commonsky: error: [cluster] "), text
    for password in PASSWORDS.values():
        assert password not in text
    return lines[0]


async def test_a_process_whose_user_may_not_read_its_replies_says_which_key_to_fix(
    tmp_path: Path, ca: Path, secured: SecuredNats, postgres_url: str
) -> None:
    cluster = Cluster(tmp_path, NAME, "unused", postgres_url)
    try:
        tls = tls_lines(tmp_path, ca)
        line = await one_line(cluster, "edge", secured.url("edge-a"), tls + 'edge = "edge-aa"\n')
        assert "edge = 'edge-aa'" in line and "NATS user 'edge-a'" in line, line
        assert f"_INBOX.{NAME}.edge.edge-aa.>" in line and "($.cluster.edge)" in line, line
        line = await one_line(cluster, "core", secured.url("edge-b"), tls)
        assert "NATS user 'edge-b'" in line and "a core needs the core's user" in line, line
        line = await one_line(cluster, "all", secured.url("core"), tls + 'edge = "edge-a"\n')
        assert "role 'all'" in line and "($.cluster.role)" in line, line
    finally:
        cluster.stop()  # (gives back the ports it held: Cluster.port)


async def test_a_client_certificate_missing_or_of_another_ca_is_named(
    tmp_path: Path, ca: Path, secured: SecuredNats, postgres_url: str
) -> None:
    cluster = Cluster(tmp_path, NAME, "unused", postgres_url)
    try:
        edge = 'edge = "edge-a"\n'
        only_ca = f'nats_ca = "{ca}/ca.pem"\n'
        line = await one_line(cluster, "edge", secured.url("edge-a"), only_ca + edge)
        assert "wants a client certificate" in line and "set nats_cert and nats_key" in line, line
        other = tmp_path / "other-ca"
        init_ca(other)
        issue_client(other, "cluster", "stranger", tmp_path / "stranger", password="y" * 16)
        stranger = (f'nats_cert = "{tmp_path}/stranger/stranger.pem"\n'
                    f'nats_key = "{tmp_path}/stranger/stranger-key.pem"\n')  # fmt: skip
        line = await one_line(cluster, "edge", secured.url("edge-a"), only_ca + stranger + edge)
        assert "refused the client certificate nats_cert = " in line, line
        assert "stranger.pem" in line and "($.cluster.nats_cert)" in line, line
    finally:
        cluster.stop()  # (gives back the ports it held: Cluster.port)


async def test_a_missing_jetstream_permission_or_no_jetstream_is_one_line(
    tmp_path: Path, ca: Path, secured: SecuredNats, postgres_url: str
) -> None:
    cluster = Cluster(tmp_path, NAME, "unused", postgres_url)
    try:
        tls = tls_lines(tmp_path, ca) + 'edge = "edge-a"\n'
        # The operator's copy of the file lost one of edge A's JetStream subjects; reloaded.
        conf = secured.folder / "nats-permissions.conf"
        text = conf.read_text()
        block = text.index('user: "edge-a"')
        gone = f'"$JS.API.STREAM.INFO.{NAME}_IN", '
        at = text.index(gone, block)
        conf.write_text(text[:at] + text[at + len(gone) :])
        secured.proc.send_signal(signal.SIGHUP)
        await until(lambda: "Reloaded server configuration" in secured.log(), "nats-server reloads")
        line = await one_line(cluster, "edge", secured.url("edge-a"), tls)
        assert "NATS user 'edge-a' lacks a permission an edge of cluster" in line, line
        assert f"$js.api.stream.info.{NAME}_in" in line.lower(), line
        plain = await SecuredNats(tmp_path / "plain", None, jetstream=False).started()
        try:
            line = await one_line(cluster, "edge", plain.url("edge-a"), 'edge = "edge-a"\n')
            assert "has no JetStream: start it with -js" in line, line
        finally:
            plain.stop()
    finally:
        cluster.stop()  # (gives back the ports it held: Cluster.port)
