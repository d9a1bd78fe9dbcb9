"""`commonsky conformance DIR --cluster NATS_URL --postgres URL`: the same report, played
through two edges and a core (`conformance/targets.py`, `cluster_hubs`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cluster.conftest import ADMIN_URL, NATS_URL
from tests.corpus.test_conformance_cli import HOSTILE, good_track, run


def test_the_report_through_a_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-track.xml").write_bytes(good_track())
    (tmp_path / "b-hostile.xml").write_bytes(HOSTILE)
    status, out, _ = run(capsys, str(tmp_path), "--json", "--wire", "both",
                         "--cluster", NATS_URL, "--postgres", ADMIN_URL)  # fmt: skip
    assert status == 1
    files = {(f["file"], f["sent_as"]): f for f in json.loads(out)["files"]}
    for wire in ("xml", "protobuf"):
        track = files["a-track.xml", wire]
        assert track["ok"] is True, track
        receivers = [d["receiver"] for d in track["within"] + track["across"] + track["late_join"]]
        assert receivers == ["ALPHA xml @edge0", "ALPHA protobuf @edge1", "BRAVO xml @edge1",
                             "BRAVO protobuf @edge0", "ALPHA late join @edge1",
                             "BRAVO late join @edge0"]  # fmt: skip
    # Refused by the edge that took it (its parser): counted in that edge's /metrics.
    hostile = files["b-hostile.xml", "xml"]
    assert hostile["accepted"] is False and "(dtd)" in hostile["refusal"], hostile


def test_a_postgres_it_cannot_reach_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-track.xml").write_bytes(good_track())
    status, out, err = run(capsys, str(tmp_path), "--cluster", NATS_URL,
                           "--postgres", "postgresql://u:secret@127.0.0.1:1/x")  # fmt: skip
    assert status == 2 and out == ""
    lines = err.strip().splitlines()
    # (the user is said, the password masked: cluster/config.py's one reading of userinfo)
    assert len(lines) == 1 and "PostgreSQL at postgresql://u:***@127.0.0.1:1/x" in lines[0], err
    assert "secret" not in err
