"""Where CoT carries uids (protocol/refs.py), checked on the real traffic of the corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commonsky.errors import RemoteProtocolError
from commonsky.model import CotEvent
from commonsky.protocol.cot import parse_event
from commonsky.protocol.refs import link_target, references, rewrite

# The team's corpus of real TAK traffic (84 messages with their sources); a test run without
# it fails (test_the_corpus_is_there) rather than passing on nothing.
_IN_REPO = Path(__file__).parents[1] / "corpus" / "data"
CORPUS = Path(
    os.environ.get(
        "COMMONSKY_TAK_CORPUS", _IN_REPO if _IN_REPO.is_dir() else "/work/shared/tak-corpus"
    )
)


def corpus() -> list[CotEvent]:
    events = []
    for path in sorted(CORPUS.glob("*.xml")):
        try:
            events.append(parse_event(path.read_bytes().strip()))
        except RemoteProtocolError:
            continue  # values another rule refuses (NaN points): not this module's business
    return events


EVENTS = corpus()


def by_name(stem: str) -> CotEvent:
    (path,) = CORPUS.glob(f"{stem}*.xml")
    return parse_event(path.read_bytes().strip())


def test_the_corpus_is_there() -> None:
    assert len(EVENTS) >= 80


@pytest.mark.parametrize("e", EVENTS, ids=lambda e: f"{e.type}:{e.uid[:30]}")
def test_rewriting_every_name_with_itself_changes_nothing(e: CotEvent) -> None:
    refs = references(e)
    assert rewrite(e, refs, refs.names, e.uid) == e


def test_an_all_chat_message_names_its_sender_room_and_id() -> None:
    refs = references(by_name("011-b-t-f"))
    sender = "ANDROID-695052bbc591dcae"
    assert refs.form == "geochat" and refs.in_uid == 3
    assert refs.names == (
        sender,
        "All Chat Rooms",
        "b4936fac-b0ca-4fd3-892d-35596f0dc749",
        "All Chat Rooms",  # __chat@id
        "All Chat Rooms",  # chatgrp@id
        sender,  # chatgrp@uid0
        "All Chat Rooms",  # chatgrp@uid1
        sender,  # link@uid
        sender,  # remarks@source, after BAO.F.ATAK.
        sender,  # __serverdestination, after host:port:tcp:
    )


def test_receipts_route_and_group_chat_names() -> None:
    read = references(by_name("036-b-t-f-r"))
    assert read.form == "receipt" and read.names[0] == "f77dae64-3573-4dae-8447-c0c7a0219d7a"
    waypoints = references(by_name("028-b-m-r")).names
    assert len(waypoints) == 13 and waypoints[0] == "f3acf150-d75c-407d-be43-e401ab40fe74"
    group = references(by_name("070-b-t-f")).names
    assert {"ANDROID-278d482f9309168c", "ANDROID-1ee39a6e95887992"} <= set(group[3:])
    assert "UserGroups" in group  # names as written; namespace.py decides they are shared
    route = references(by_name("039-b-m-r")).names
    assert "ANDROID-0cfdc4b8512c44c6" in route  # <creator uid>
    assert route.count("0d245fd5-7381-45a0-9a67-3d814d0f11b0") == 2  # waypoint and its cue


names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters=".,\ufffe\uffff"),
    min_size=1,
    max_size=20,
)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([e for e in EVENTS if references(e).names]), st.data())
def test_names_put_in_are_the_names_read_out(e: CotEvent, data: st.DataObject) -> None:
    refs = references(e)
    given_names = tuple(data.draw(names) for _ in refs.names)
    out = rewrite(e, refs, given_names, "NEW-UID")
    back = references(out)
    assert back.names == given_names and back.form == refs.form
    # Everything but the names is untouched.
    assert (out.type, out.point, out.time, out.stale) == (e.type, e.point, e.time, e.stale)
    if refs.form == "plain":
        assert out.uid == "NEW-UID"


def test_a_delete_names_its_first_link() -> None:
    target = "ANDROID-78:4b:87:f3:5b:0c"
    e = parse_event(
        b"<event version='2.0' uid='55555-XXX-XXX' type='t-x-d-d' how='m-g'"
        b" time='2030-01-01T00:00:00Z' start='2030-01-01T00:00:00Z'"
        b" stale='2030-01-01T00:01:00Z'><point lat='36.7' lon='-115.4' hae='4433'"
        b" ce='9999999' le='9999999'/><detail><link uid='" + target.encode() + b"'"
        b" relation='none' type='none'/><__forcedelete/></detail></event>"
    )
    assert link_target(e) == target
    hello = parse_event(
        b"<event version='2.0' uid='takPing' type='t-x-d-d' how='m-g'"
        b" time='2030-01-01T00:00:00Z' start='2030-01-01T00:00:00Z'"
        b" stale='2030-01-01T00:01:00Z'><point lat='0' lon='0'/><detail/></event>"
    )
    assert link_target(hello) is None


@pytest.mark.parametrize(
    ("stem", "device"),
    [
        ("012-b-f-t-r", "ANDROID-976ffabe78fda5d9"),
        ("015-b-f-t-r", "commoncommo-EMBER1"),
        ("014-b-f-t-a", "ANDROID-51cc3b9b6823a0f2"),
        ("055-b-f-t-a", "ANDROID-077658241117fd49"),
    ],
)
def test_a_file_transfer_names_the_device_it_comes_from(stem: str, device: str) -> None:
    """`fileshare@senderUid` (request) and `ackresponse@senderUid` (acknowledgement) name a
    device: ATAK sends its acknowledgement to the contact the request's senderUid names."""
    assert device in references(by_name(stem)).names


@pytest.mark.parametrize(
    ("stem", "entry"),
    [
        ("143-b-i-v", "fb637afd-7d37-4d98-8def-839eee6aa4bc"),
        ("064-b-m-p-s-p-loc", "efd8f175-9732-4a2a-a7dc-fc7f2c803ed2"),
    ],
)
def test_a_video_feed_names_its_entry(stem: str, entry: str) -> None:
    """`__video/ConnectionEntry@uid` (and `__video@uid`) is the key of ATAK's video entry:
    a name in the sender's namespace like the event uid, not a free string."""
    event = by_name(stem)
    assert entry in references(event).names
    refs = references(event)
    renamed = rewrite(event, refs, [f"USA::{n}" for n in refs.names], event.uid)
    assert f'uid="USA::{entry}"' in renamed.detail
    assert f'uid="{entry}"' not in renamed.detail.replace("<link ", "")
