"""`commonsky conformance DIR`: what a TAK administrator runs on their own captures."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from commonsky.cli import main


def stamp(offset_s: float = 0.0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + offset_s))


def good_track() -> bytes:
    """A position report written in the very form the hub renders (ms times, numbers as
    Python writes them), so nothing but a real fault can change it."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><event version="2.0" uid="ADMIN-TRACK-1"'
        f' type="a-f-G-U-C" time="{stamp()}" start="{stamp()}" stale="{stamp(600)}"'
        f' how="m-g"><point lat="35.5" lon="139.25" hae="40.0" ce="5.0" le="5.0"/>'
        f'<detail><contact callsign="ADMIN1"/></detail></event>'
    ).encode()


HOSTILE = (
    b'<?xml version="1.0"?><!DOCTYPE event [<!ENTITY x "boom">]>'
    b'<event version="2.0" uid="EVIL-1" type="a-f-G" time="2026-01-01T00:00:00Z"'
    b' start="2026-01-01T00:00:00Z" stale="2026-01-01T00:05:00Z" how="m-g">'
    b'<point lat="1" lon="1"/><detail><remarks>&x;</remarks></detail></event>'
)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(["conformance", *args])
        status = 0
    except SystemExit as exc:
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def test_help_answers(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--help")
    assert status == 0
    for words in ("DIR", "--json", "--wire", "PARTY::uid", "Exit status"):
        assert words in out


@pytest.mark.parametrize("case", ["missing", "a file", "empty", "only .bin", "unreadable"])
def test_bad_dir_gives_one_clear_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    folder = tmp_path / "captures"
    expected = str(folder)
    if case == "a file":
        folder.write_text("x")
    elif case in ("empty", "only .bin", "unreadable"):
        folder.mkdir()
    if case == "only .bin":
        (folder / "frame.bin").write_bytes(b"\xbf\x00")
    if case == "unreadable":
        (folder / "ok.xml").write_bytes(good_track())
        (folder / "capture.xml").mkdir()  # a name that matches but cannot be read
        expected = str(folder / "capture.xml")
    status, out, err = run(capsys, str(folder))
    assert status == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("commonsky: error: ")
    assert expected in lines[0]


def test_a_broken_link_is_an_unreadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "gone.xml").symlink_to(tmp_path / "nowhere.xml")
    status, _, err = run(capsys, str(tmp_path))
    assert status == 2 and f"cannot read {tmp_path / 'gone.xml'}" in err


def test_table_names_every_file_and_a_refusal_fails_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-track.xml").write_bytes(good_track())
    (tmp_path / "b-hostile.xml").write_bytes(HOSTILE)
    (tmp_path / "notes.txt").write_text("not played")
    status, out, _ = run(capsys, str(tmp_path))
    assert status == 1
    assert "a-track.xml" in out and "b-hostile.xml" in out and "notes.txt" not in out
    assert "refused" in out and "(dtd)" in out  # the hub's reason, from its log line
    assert "of 2 conform" in out


def test_json_is_machine_readable_and_complete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-track.xml").write_bytes(good_track())
    (tmp_path / "b-hostile.xml").write_bytes(HOSTILE)
    status, out, _ = run(capsys, str(tmp_path), "--json", "--wire", "both")
    assert status == 1
    report = json.loads(out)
    assert report["total"] == 4 and report["ok"] is False
    files = {(f["file"], f["sent_as"]): f for f in report["files"]}
    assert set(files) == {
        (name, wire) for name in ("a-track.xml", "b-hostile.xml") for wire in ("xml", "protobuf")
    }
    hostile = files["b-hostile.xml", "xml"]
    assert hostile["accepted"] is False and "dtd" in hostile["refusal"]
    assert all(d["copies"] == 0 for d in hostile["within"] + hostile["across"])
    for wire in ("xml", "protobuf"):
        track = files["a-track.xml", wire]
        assert track["accepted"] is True and track["uid"] == "ADMIN-TRACK-1"
        receivers = [d["receiver"] for d in track["within"] + track["across"]]
        assert receivers == ["ALPHA xml", "ALPHA protobuf", "BRAVO xml", "BRAVO protobuf"]
        for delivery in track["within"] + track["across"]:
            assert delivery["copies"] == 1 and delivery["differences"] == [], delivery


def test_status_0_when_every_file_conforms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-track.xml").write_bytes(good_track())
    status, out, _ = run(capsys, str(tmp_path))
    assert "1 of 1 conform" in out, out
    assert status == 0


def chat_file() -> bytes:
    """An all-rooms GeoChat as ATAK writes it (corpus 011), on one line so that takproto's
    conversion keeps its detail, with the sender's own number and time text."""
    t = stamp().replace(".000Z", ".1Z")
    return (
        f"<event version='2.0' uid='GeoChat.ANDROID-1.All Chat Rooms.m-1' type='b-t-f'"
        f" time='{t}' start='{t}' stale='{stamp(3600)}' how='h-g-i-g-o'>"
        f"<point lat='0' lon='0' hae='9999999' ce='9999999' le='9999999'/><detail>"
        f"<__chat id='All Chat Rooms' chatroom='All Chat Rooms'><chatgrp id='All Chat Rooms'"
        f" uid0='ANDROID-1' uid1='All Chat Rooms'/></__chat>"
        f"<link relation='p-p' type='a-f-G-U-C' uid='ANDROID-1'/>"
        f"<remarks source='BAO.F.ATAK.ANDROID-1' time='{t}'>Roger</remarks></detail></event>"
    ).encode()


def test_a_chat_played_in_both_wires_conforms_in_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each wire has its own hub: in one, the protobuf copy would be the recorded message
    sent again, taken once and not relayed — every receiver would miss it."""
    (tmp_path / "chat.xml").write_bytes(chat_file())
    status, out, _ = run(capsys, str(tmp_path), "--json", "--wire", "both")
    report = json.loads(out)
    assert [(f["sent_as"], f["ok"]) for f in report["files"]] == [("xml", True), ("protobuf", True)]
    assert status == 0


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--cluster", "nats://127.0.0.1:4222"], "--cluster and --postgres go together"),
        (["--postgres", "postgresql://127.0.0.1/x"], "--cluster and --postgres go together"),
        (
            ["--cluster", "nats://user:secret@127.0.0.1:1", "--postgres", "postgresql://p/x"],
            "NATS at nats://user:***@127.0.0.1:1: ",  # (user said, password masked)
        ),
    ],
)
def test_a_cluster_it_cannot_play_through_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], said: str
) -> None:
    (tmp_path / "a-track.xml").write_bytes(good_track())
    status, out, err = run(capsys, str(tmp_path), *args)
    assert status == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], err
    assert "secret" not in err  # (credentials in a URL are not printed)
