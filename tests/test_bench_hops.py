"""`python -m commonsky.bench.hops`, briefly, through a real cluster (NATS and PostgreSQL on
this machine: tests/cluster/conftest.py; they fail, never skip), and the probe it reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from commonsky import probe
from commonsky.bench.hops import bench_hops
from tests.cluster.conftest import ADMIN_URL, NATS_URL


def test_stamps_name_every_bench_item_in_the_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe, "_FOLDER", str(tmp_path))
    probe.stamp("edge_receive", b'<event><bench s="5"/></event><event><bench s="17"/>', "e1")
    probe.stamp("core_apply", '<contact callsign="x"/><bench s="9"/>')
    probe.stamp("client_write", b"<event>no bench mark</event>")
    probe._write()
    got = [(pid, station, seq, where) for pid, station, seq, where, _ in probe.read(tmp_path)]
    me = os.getpid()
    assert got == [(me, "edge_receive", 5, "e1"), (me, "edge_receive", 17, "e1"),
                   (me, "core_apply", 9, "")]  # fmt: skip


def test_the_probe_is_off_without_its_variable() -> None:
    env = {k: v for k, v in os.environ.items() if k != "COMMONSKY_PROBE"}
    code = ("import threading, commonsky.probe as p; "
            "print(p.ON, sorted(t.name for t in threading.enumerate()))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    assert out == "False ['MainThread']"


def test_each_hop_of_a_cluster_is_measured() -> None:
    figures = bench_hops(200, 1.0, senders=4, receivers=10, edges=2, nats_url=NATS_URL,
                         postgres_admin=ADMIN_URL)  # fmt: skip
    assert figures["relay"]["delivery ratio"] == 1.0
    assert figures["relay"]["missed (entitled)"] == 0
    hops, stations = figures["hops"], figures["stations"]
    for name, spread in hops.items():
        assert spread["n"] > 0, name
        assert spread["min ms"] >= 0, (name, spread)  # (each pair in causal order)
    assert hops["sent → client_read"]["n"] == hops["edge_receive → client_read"]["n"]
    path = ("edge_accept", "core_apply", "core_publish", "edge_receive", "client_write",
            "client_read")  # fmt: skip
    order = [stations[s]["p50 ms"] for s in path]
    assert order == sorted(order), stations
