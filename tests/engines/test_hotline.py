"""Hotline: exactly once, the hub's receipt, acknowledgement, deadlines and escalation."""

from __future__ import annotations

from pathlib import Path

from commonsky.ledger.export import export, verify
from tests.engines.harness import chat, make_world, receipt

HOTLINE = {"name": "US-RU hotline", "from": "USA", "to": ["RUS"], "categories": ["hotline"]}
BACK = {"name": "RU-US hotline", "from": "RUS", "to": ["USA"], "categories": ["hotline"]}


def test_message_receipt_ack_and_ledger(tmp_path: Path) -> None:
    w = make_world(tmp_path, [HOTLINE, BACK])
    w.send("USA", chat("GeoChat.m1", "Strike package 0400Z east of the line", "RUS"))
    got = w.take("RUS")
    assert [e.uid for e in got] == ["USA::GeoChat.m1"]
    assert w.take("JPN") == [] and w.take("KOR") == []
    receipts = w.take("USA")
    assert [e.type for e in receipts] == ["b-t-f-d"]
    assert "ledger #0" in receipts[0].detail
    w.clock.now += 30
    w.send("RUS", receipt("rcpt-1", "USA::GeoChat.m1", now=w.clock.now))
    acks = [e for e in w.take("USA") if e.type == "b-t-f-r" and e.uid.startswith("HUB::")]
    assert len(acks) == 1 and "RUS acknowledged GeoChat.m1" in acks[0].detail
    (history,) = w.services.hotline.history("USA", "RUS")
    assert history["acks"] == {"RUS": w.clock.now} and history["pending"] == []
    kinds = [e.kind for e in w.services.recorder.ledger.entries()]
    assert kinds[:2] == ["item", "notice"] and "ack" in kinds
    # The same message sent again (a client's retry) is one message, not two.
    w.send("USA", chat("GeoChat.m1", "Strike package 0400Z east of the line", "RUS"))
    assert len(w.services.hotline.history("USA")) == 1


def test_deadline_escalates_once_and_resends(tmp_path: Path) -> None:
    w = make_world(tmp_path, [dict(HOTLINE, ack_deadline_s=120)])
    w.send("USA", chat("GeoChat.m2", "Please confirm deconfliction", "RUS"))
    w.take("RUS"), w.take("USA")
    w.clock.now += 119
    assert w.services.hotline.tick() == []
    w.clock.now += 2
    (escalation,) = w.services.hotline.tick()
    assert escalation[1] == "RUS"
    assert [e.uid for e in w.take("RUS")] == ["USA::GeoChat.m2"]  # re-sent
    told = w.take("USA")
    assert len(told) == 1 and "ESCALATION" in told[0].detail
    w.clock.now += 1000
    assert w.services.hotline.tick() == []  # once
    assert "escalation" in [e.kind for e in w.services.recorder.ledger.entries()]
    # A late acknowledgement still counts and stops nothing else from working.
    w.send("RUS", receipt("rcpt-2", "USA::GeoChat.m2", now=w.clock.now))
    assert w.services.hotline.history("USA")[0]["acks"].keys() == {"RUS"}


def test_default_deadline_comes_from_settings(tmp_path: Path) -> None:
    w = make_world(tmp_path, [HOTLINE], server={"timeout_hotline_ack_s": 60})
    w.send("USA", chat("GeoChat.m3", "ping", "RUS"))
    w.clock.now += 61
    assert len(w.services.hotline.tick()) == 1


def test_acks_from_non_recipients_or_for_unknown_messages_are_ignored(tmp_path: Path) -> None:
    w = make_world(tmp_path, [HOTLINE])
    w.send("USA", chat("GeoChat.m4", "for RUS", "RUS"))
    w.send("JPN", receipt("r-jpn", "USA::GeoChat.m4"))
    w.send("RUS", receipt("r-bad", "USA::GeoChat.nope"))
    assert w.services.hotline.history("USA")[0]["acks"] == {}


def test_state_survives_restart(tmp_path: Path) -> None:
    w = make_world(tmp_path, [HOTLINE])
    w.send("USA", chat("GeoChat.m5", "before restart", "RUS"))
    w.send("RUS", receipt("r5", "USA::GeoChat.m5"))
    w.services.close()
    w.hub.store.close()
    again = make_world(tmp_path, [HOTLINE])
    (message,) = again.services.hotline.history("USA")
    assert message["acks"].keys() == {"RUS"} and message["text"] == "before restart"
    again.clock.now += 10_000
    assert again.services.hotline.tick() == []


def test_a_party_export_verifies_and_hides_others(tmp_path: Path) -> None:
    w = make_world(tmp_path, [HOTLINE])
    w.send("USA", chat("GeoChat.m6", "for RUS", "RUS"))
    w.send("JPN", chat("GeoChat.j1", "JPN internal note", "KOR"))  # no agreement: JPN only
    ledger = w.services.recorder.ledger
    out = tmp_path / "rus.jsonl"
    export(ledger, out, party="RUS")
    assert verify(out).ok
    text = out.read_text()
    assert "for RUS" in text and "JPN internal note" not in text
