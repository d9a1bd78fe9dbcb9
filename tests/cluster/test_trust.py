"""The core's checks of the inbound stream (cluster/trust.py), one row per way an edge's
message can be wrong, and the ones that are right. No NATS here: `Checks` reads bytes and a
subject; tests/cluster/test_trust_core.py runs them inside a core, and
tests/cluster/test_trust_cluster.py through a real one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from commonsky.bench.cluster import marker, track
from commonsky.cluster.trust import REASONS, Checks, Untrusted, agrees, envelope_limit
from commonsky.cluster.wire import Attach, ConnInfo, Detach, Ingest, Names, Roster, encode
from commonsky.protocol.cot import parse_event
from commonsky.settings import defaults

NAMES = Names("tc")
EDGE = "host-1-ab12"
SUBJECT = NAMES.ingest(EDGE)
CHECKS = Checks.of(NAMES, {"USA", "RUS", "JPN", "KOR"}, defaults())
EVENT = parse_event(track("T-1", time.time()))
INGEST = Ingest(f"{EDGE}.9f3a.1", EDGE, "tak-tcp:1#1", "USA", "u1", "xml", EVENT, time.time())
INFO = ConnInfo("tak-tcp:1#1", "USA", "u1", "tak-tcp", "127.0.0.1:5", "xml")
ATTACH = Attach(EDGE, INFO, 7)
# A detail that closes its <detail> and <event> and opens an event of its own choosing.
INJECTED = (
    '<contact callsign="x"/></detail></event><event version="2.0" uid="forged" type="a-h-A" '
    'time="2026-01-01T00:00:00Z" start="2026-01-01T00:00:00Z" stale="2099-01-01T00:00:00Z">'
    '<point lat="1" lon="1" hae="0" ce="1" le="1"/><detail>'
)


def ingest(**changes: Any) -> Ingest:
    return msgspec.structs.replace(INGEST, **changes)


def event(**changes: Any) -> Ingest:
    return ingest(event=msgspec.structs.replace(EVENT, **changes))


def attach(**changes: Any) -> Attach:
    return Attach(EDGE, msgspec.structs.replace(INFO, **changes), 7)


Row = tuple[str, Callable[[], tuple[str, bytes]], str | None]

ROWS: list[Row] = [
    ("an edge's event", lambda: (SUBJECT, encode(INGEST)), None),
    ("a durable event", lambda: (SUBJECT, encode(ingest(event=parse_event(marker("M", 0))))), None),
    ("an event in TAK protobuf", lambda: (SUBJECT, encode(ingest(mode="proto"))), None),
    ("an Attach", lambda: (SUBJECT, encode(ATTACH)), None),
    ("a map page's Attach", lambda: (SUBJECT, encode(attach(mode="json", oversight=True))), None),
    ("a Detach", lambda: (SUBJECT, encode(Detach(EDGE, "tak-tcp:1#1"))), None),
    ("empty bytes", lambda: (SUBJECT, b""), "undecodable"),
    ("not msgpack", lambda: (SUBJECT, b"\xc1\xff<event/>"), "undecodable"),
    ("another struct", lambda: (SUBJECT, encode(Roster(EDGE, []))), "undecodable"),
    (
        "a field of the wrong type",
        lambda: (SUBJECT, encode({"type": "in", **{k: 1 for k in INGEST.__struct_fields__}})),
        "undecodable",
    ),
    (
        "oversize",
        lambda: (SUBJECT, encode(event(detail="<a/>" * (envelope_limit(defaults()) // 4)))),
        "oversize",
    ),
    (
        "another edge's subject",
        lambda: (NAMES.ingest("other-edge"), encode(INGEST)),
        "wrong_subject",
    ),
    (
        "another cluster's subject",
        lambda: (Names("x").ingest(EDGE), encode(INGEST)),
        "wrong_subject",
    ),
    (
        "an Attach for another edge",
        lambda: (NAMES.ingest("other"), encode(ATTACH)),
        "wrong_subject",
    ),
    (
        "a Detach for another edge",
        lambda: (NAMES.ingest("other"), encode(Detach(EDGE, "c"))),
        "wrong_subject",
    ),
    ("an id of another edge", lambda: (SUBJECT, encode(ingest(id="other.1.1"))), "bad_id"),
    ("an empty id", lambda: (SUBJECT, encode(ingest(id=""))), "bad_id"),
    ("a huge id", lambda: (SUBJECT, encode(ingest(id=f"{EDGE}." + "9" * 600))), "bad_id"),
    ("an id with NUL", lambda: (SUBJECT, encode(ingest(id=f"{EDGE}.\x00.1"))), "bad_text"),
    ("a user with an escape", lambda: (SUBJECT, encode(ingest(user="u\x1b[2J"))), "bad_text"),
    ("a connection with NUL", lambda: (SUBJECT, encode(ingest(conn="c\x00"))), "bad_text"),
    ("a Detach with NUL", lambda: (SUBJECT, encode(Detach(EDGE, "c\x00"))), "bad_text"),
    (
        "an Attach with a NUL callsign",
        lambda: (SUBJECT, encode(attach(devices={"ANDROID-1": "RED\x00"}))),
        "bad_text",
    ),
    (
        "an Attach with a NUL device uid",
        lambda: (SUBJECT, encode(attach(devices={"A\x00": "RED"}))),
        "bad_text",
    ),
    ("an Attach from a NUL address", lambda: (SUBJECT, encode(attach(address="\x00"))), "bad_text"),
    (
        "an Attach with a NUL unread key",
        lambda: (SUBJECT, encode(Attach(EDGE, INFO, 7, ["k\x00"]))),
        "bad_text",
    ),
    ("an undeclared party", lambda: (SUBJECT, encode(ingest(party="XXX"))), "unknown_party"),
    ("an empty party", lambda: (SUBJECT, encode(ingest(party=""))), "unknown_party"),
    ("the hub's own identity", lambda: (SUBJECT, encode(ingest(party="HUB"))), "hub_party"),
    ("an Attach as the hub", lambda: (SUBJECT, encode(attach(party="HUB"))), "hub_party"),
    (
        "an Attach of an undeclared party",
        lambda: (SUBJECT, encode(attach(party="usa"))),
        "unknown_party",
    ),
    ("an unknown event wire form", lambda: (SUBJECT, encode(ingest(mode="json"))), "unknown_mode"),
    ("an unknown client wire form", lambda: (SUBJECT, encode(attach(mode="yaml"))), "unknown_mode"),
    ("an empty uid", lambda: (SUBJECT, encode(event(uid=""))), "bad_uid"),
    ("a uid with a newline", lambda: (SUBJECT, encode(event(uid="a\nb"))), "bad_uid"),
    ("a uid of 257 characters", lambda: (SUBJECT, encode(event(uid="u" * 257))), "bad_uid"),
    ("an empty type", lambda: (SUBJECT, encode(event(type=""))), "empty_type"),
    ("a detail that is not XML", lambda: (SUBJECT, encode(event(detail="<contact"))), "bad_detail"),
    (
        "a detail that ends its event",
        lambda: (SUBJECT, encode(event(detail=INJECTED))),
        "bad_detail",
    ),
    (
        "a detail that closes and reopens <detail>",
        lambda: (SUBJECT, encode(event(detail="</detail><detail>"))),
        "bad_detail",
    ),
    (
        "a detail with text after it",
        lambda: (SUBJECT, encode(event(detail="<a/></detail>x<detail>"))),
        "bad_detail",
    ),
    (
        "a detail with a DTD",
        lambda: (SUBJECT, encode(event(detail='<!DOCTYPE x [<!ENTITY a "b">]><a>&a;</a>'))),
        "bad_detail",
    ),
    (
        "a detail with an entity",
        lambda: (SUBJECT, encode(event(detail="<a>&xxe;</a>"))),
        "bad_detail",
    ),
    (
        "a detail nested too deep",
        lambda: (SUBJECT, encode(event(detail="<a>" * 40 + "</a>" * 40))),
        "bad_detail",
    ),
    (
        "a stroke that is not XML",
        lambda: (SUBJECT, encode(event(detail='<link line="&lt;event"/>'))),
        "bad_detail",
    ),
]


@pytest.mark.parametrize(("name", "make", "reason"), ROWS, ids=[row[0] for row in ROWS])
def test_each_check(name: str, make: Callable[[], tuple[str, bytes]], reason: str | None) -> None:
    subject, data = make()
    if reason is None:
        assert CHECKS.read(subject, data) is not None
        return
    with pytest.raises(Untrusted) as refused:
        CHECKS.read(subject, data)
    assert refused.value.reason == reason, refused.value
    assert reason in REASONS
    # The line names the edge (the one the message names, or its subject's).
    assert refused.value.edge in (EDGE, "other-edge", "other", "?")


def test_an_edge_named_with_nul_is_refused_and_shown_escaped() -> None:
    """The property test's case (test_trust_core.py): an edge "\\x00" on its own subject, its
    message id "\\x00.r.0" — which reached PostgreSQL and failed the core's batch."""
    edge = "\x00"
    message = ingest(edge=edge, id=f"{edge}.r.0")
    with pytest.raises(Untrusted) as refused:
        CHECKS.read(NAMES.ingest(edge), encode(message))
    assert refused.value.reason == "bad_text"
    assert refused.value.edge == "\\x00"


def test_every_reason_has_a_row() -> None:
    rows = {row[2] for row in ROWS}
    assert set(REASONS) - {"party_mismatch"} <= rows


def test_the_party_must_be_the_one_its_edge_attached() -> None:
    agrees(INGEST, "USA")
    agrees(INGEST, None)  # (not heard of: the edge's word)
    agrees(ATTACH, "USA")
    with pytest.raises(Untrusted) as refused:
        agrees(ingest(party="RUS"), "USA")
    assert refused.value.reason == "party_mismatch" and refused.value.edge == EDGE
    with pytest.raises(Untrusted):
        agrees(attach(party="RUS"), "USA")


def test_an_envelope_of_a_largest_event_passes() -> None:
    """The bound leaves room for what an edge makes of the largest event it accepts: every
    character escaped when our parser writes the detail again."""
    s = defaults()
    quotes = '"' * (s.limit_attribute_bytes - 16)
    detail = f"<remarks a='{quotes}'/>" * ((s.limit_message_bytes - 600) // s.limit_attribute_bytes)
    data = track("T-big", time.time()).replace(b"<detail>", f"<detail>{detail}".encode())
    assert len(data) <= s.limit_message_bytes
    big = ingest(event=parse_event(data))
    assert len(encode(big)) > s.limit_message_bytes  # (escaped: longer than sent)
    assert len(encode(big)) <= envelope_limit(s)
    CHECKS.read(SUBJECT, encode(big))


def test_a_roster_keeps_its_good_clients_and_says_why_the_others_went() -> None:
    good = INFO
    data = encode(Roster(EDGE, [good, msgspec.structs.replace(INFO, conn="c2", party="HUB"),
                                msgspec.structs.replace(INFO, conn="c3", mode="x")]))  # fmt: skip
    roster, left = CHECKS.roster(data)
    assert roster.conns == [good]
    assert sorted(e.reason for e in left) == ["hub_party", "unknown_mode"]
    for garbage in (b"", b"\x00\x01", encode(INGEST), b"\x91" * 10):
        with pytest.raises(Untrusted) as refused:
            CHECKS.roster(garbage)
        assert refused.value.reason == "undecodable"
