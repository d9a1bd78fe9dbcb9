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


# ---- integrity: a recorded message is never rewritten (issue 13, class 10) ---------------


def _restart(w, tmp_path: Path, agreements: list[dict]) -> object:
    w.services.close()
    w.hub.store.close()
    again = make_world(tmp_path, agreements)
    again.clock.now = w.clock.now
    return again


def test_a_recorded_message_is_never_rewritten(tmp_path: Path) -> None:
    import pytest

    from commonsky.errors import RemoteProtocolError

    w = make_world(tmp_path, [HOTLINE, BACK])
    first = w.send("USA", chat("GeoChat.m7", "Hold at FL200", "RUS"))
    w.send("RUS", receipt("r7", "USA::GeoChat.m7"))
    w.take("RUS"), w.take("USA")
    entries = w.services.recorder.ledger.size
    with pytest.raises(RemoteProtocolError) as refused:
        w.send("USA", chat("GeoChat.m7", "Climb to FL300", "RUS"))
    assert refused.value.reason == "hotline_immutable" and "new message" in str(refused.value)
    # The same content again is a harmless duplicate: the first one's number, nothing new.
    again = w.send("USA", chat("GeoChat.m7", "Hold at FL200", "RUS"))
    assert again.seq == first.seq and w.services.recorder.ledger.size == entries
    # Barrier: a correction as a new message arrives; nothing of the rewrite ever did.
    w.send("USA", chat("GeoChat.m8", "Correction: climb to FL300", "RUS"))
    got = w.take("RUS")
    assert [e.uid for e in got] == ["USA::GeoChat.m8"]
    (old, new) = w.services.hotline.history("USA")
    assert old["text"] == "Hold at FL200" and old["acks"].keys() == {"RUS"}
    assert new["text"] == "Correction: climb to FL300" and new["pending"] == ["RUS"]
    # After a restart, and once the message has gone stale, it is still immutable.
    w = _restart(w, tmp_path, [HOTLINE, BACK])
    w.clock.now += 3 * 86400
    with pytest.raises(RemoteProtocolError):
        w.send("USA", chat("GeoChat.m7", "Climb to FL300", "RUS", now=w.clock.now))


def test_the_same_message_resent_over_tak_protobuf_is_one_message(tmp_path: Path) -> None:
    """A client that sends a message again in the other wire (XML, then TAK protobuf after
    a reconnect, with new times) sends the same message: content is compared as read
    (type, text, addressees), not as bytes, so the resend is taken once and relayed once."""
    from msgspec.structs import replace

    from commonsky.protocol.cot import encode_event, parse_event
    from commonsky.protocol.takv1 import event_to_proto, parse_proto_event

    w = make_world(tmp_path, [HOTLINE, BACK])
    sent = parse_event(encode_event(chat("GeoChat.m20", "Hold at FL200, wait", "RUS")))
    first = w.send("USA", sent)
    assert [e.uid for e in w.take("RUS")] == ["USA::GeoChat.m20"]
    entries = w.services.recorder.ledger.size
    later = replace(sent, time=sent.time + 5, start=sent.start + 5)
    again = w.send("USA", parse_proto_event(event_to_proto(later)))
    assert again.seq == first.seq and w.services.recorder.ledger.size == entries
    w.send("USA", chat("GeoChat.m21", "barrier", "RUS"))
    assert [e.uid for e in w.take("RUS")] == ["USA::GeoChat.m21"]  # m20 came once
    assert len(w.services.hotline.history("USA")) == 2


def test_a_message_to_another_uid_is_other_content(tmp_path: Path) -> None:
    import pytest

    from commonsky.errors import RemoteProtocolError
    from commonsky.protocol.cot import parse_event

    def to_uid(uid: str) -> bytes:
        return (
            '<event version="2.0" uid="GeoChat.m30" type="b-t-f" time="2030-01-01T00:00:00Z"'
            ' start="2030-01-01T00:00:00Z" stale="2030-01-02T00:00:00Z"><point lat="0" lon="0"/>'
            f'<detail><marti><dest uid="{uid}"/></marti><remarks>Hold</remarks></detail></event>'
        ).encode()

    w = make_world(tmp_path, [HOTLINE, BACK])
    first = w.send("USA", parse_event(to_uid("RUS::EUD-1")))
    assert w.send("USA", parse_event(to_uid("RUS::EUD-1"))).seq == first.seq
    with pytest.raises(RemoteProtocolError) as refused:
        w.send("USA", parse_event(to_uid("RUS::EUD-2")))
    assert refused.value.reason == "hotline_immutable"


def test_acks_name_the_ledger_entry_of_the_message_also_entry_zero_and_after_restart(
    tmp_path: Path,
) -> None:
    both = dict(HOTLINE, to=["RUS", "JPN"])
    w = make_world(tmp_path, [both])
    w.send("USA", chat("GeoChat.m9", "to both", "RUS"))  # dest RUS: RUS only
    w.send("USA", event_to_all("GeoChat.m10", "to everyone"))
    ledger = w.services.recorder.ledger
    first = w.services.hotline.find(("USA", "GeoChat.m9"))
    assert first is not None and first.ledger_seq == 0
    w.send("RUS", receipt("r9", "USA::GeoChat.m9"))
    ack = next(e for e in ledger.entries() if e.kind == "ack")
    assert ack.payload["of_ledger_seq"] == 0
    second = w.services.hotline.find(("USA", "GeoChat.m10"))
    assert second is not None and second.ledger_seq is not None and second.ledger_seq > 0
    w = _restart(w, tmp_path, [both])
    w.send("JPN", receipt("r10", "USA::GeoChat.m10"))
    acks = [e for e in w.services.recorder.ledger.entries() if e.kind == "ack"]
    assert acks[-1].payload == {
        "of": "USA::GeoChat.m10",
        "of_ledger_seq": second.ledger_seq,
        "via": "tak-read",  # a read receipt (`b-t-f-r`); a delivered one says tak-delivered
    }


def event_to_all(uid: str, text: str):
    from tests.engines.harness import event

    return event(
        uid,
        "b-t-f",
        detail=f'<__chat chatroom="hotline" senderCallsign="OPS"/><remarks>{text}</remarks>',
        stale_s=86400.0,
    )


# ---- bounded memory and paged history (issue 13, class 12) --------------------------------


def test_only_open_messages_are_held_and_history_is_paged_from_the_store(tmp_path: Path) -> None:
    w = make_world(tmp_path, [HOTLINE, BACK])
    for i in range(30):
        w.send("USA", chat(f"GeoChat.p{i}", f"message {i}", "RUS"))
    for i in range(26):
        w.send("RUS", receipt(f"rp{i}", f"USA::GeoChat.p{i}"))
    desk = w.services.hotline
    assert sorted(k[1] for k in desk.messages) == [f"GeoChat.p{i}" for i in range(26, 30)]
    seen: list[str] = []
    before = None
    while True:
        page, before = desk.history_page("RUS", "USA", before, limit=7)
        assert len(page) <= 7 and [m["seq"] for m in page] == sorted(m["seq"] for m in page)
        seen = [m["text"] for m in page] + seen
        if before is None:
            break
    assert seen == [f"message {i}" for i in range(30)]
    assert desk.history_page("JPN")[0] == []  # not involved: nothing
    # A restart holds the open ones again, read back, not replayed.
    w = _restart(w, tmp_path, [HOTLINE, BACK])
    assert sorted(k[1] for k in w.services.hotline.messages) == [
        f"GeoChat.p{i}" for i in range(26, 30)
    ]
    # Stale messages are let go of at the next tick (they stay in the store).
    w.clock.now += 2 * 86400
    w.services.hotline.tick()
    assert w.services.hotline.messages == {}
    assert len(w.services.hotline.records("USA")) == 30


def test_an_escalation_is_not_repeated_after_a_restart(tmp_path: Path) -> None:
    w = make_world(tmp_path, [dict(HOTLINE, ack_deadline_s=60)])
    w.send("USA", chat("GeoChat.e1", "confirm", "RUS"))
    w.clock.now += 61
    assert len(w.services.hotline.tick()) == 1
    w = _restart(w, tmp_path, [dict(HOTLINE, ack_deadline_s=60)])
    w.clock.now += 10
    assert w.services.hotline.tick() == []
    (message,) = w.services.hotline.history("USA")
    assert message["escalated"] == ["RUS"] and message["pending"] == ["RUS"]


def test_an_acknowledgement_through_the_api_survives_a_restart(tmp_path: Path) -> None:
    w = make_world(tmp_path, [HOTLINE])
    w.send("USA", chat("GeoChat.a1", "api ack", "RUS"))
    w.services.hotline.acknowledge("RUS", "USA::GeoChat.a1", w.clock.now, via="api")
    w = _restart(w, tmp_path, [HOTLINE])
    (message,) = w.services.hotline.history("USA")
    assert message["acks"].keys() == {"RUS"} and w.services.hotline.messages == {}


def test_a_store_from_before_hotline_rows_is_indexed_once(tmp_path: Path) -> None:
    w = make_world(tmp_path, [HOTLINE])
    w.send("USA", chat("GeoChat.o1", "old store", "RUS"))
    w.send("USA", chat("GeoChat.o2", "old store, acked", "RUS"))
    w.send("RUS", receipt("ro2", "USA::GeoChat.o2"))
    db = w.hub.store._db
    db.execute("DELETE FROM hotline"), db.execute("DELETE FROM hotline_party")
    db.execute("DELETE FROM meta")
    w = _restart(w, tmp_path, [HOTLINE])
    assert [k[1] for k in w.services.hotline.messages] == ["GeoChat.o1"]
    assert [m["text"] for m in w.services.hotline.history("RUS")] == [
        "old store",
        "old store, acked",
    ]
    assert w.hub.store.meta("hotline_index_v1") == "1"
