"""hub/held.py: which forms are too long for commo's reader, who may fetch what is held for
them, and how much is held at most."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commonsky.hub import held as held_module
from commonsky.hub.held import STREAM_BYTES, LongMessages, too_long
from commonsky.hub.outbox import Rendered
from commonsky.model import Category, CotEvent, Item, Point
from commonsky.protocol.render import frame_proto

NOW = 1_800_000_000.0
PARTIES = ("JPN", "KOR", "RUS")


def test_the_longest_message_commo_reads_is_written_whole() -> None:
    assert not too_long(b"x" * STREAM_BYTES, "xml")
    assert too_long(b"x" * (STREAM_BYTES + 1), "xml")
    assert not too_long(frame_proto(b"x" * STREAM_BYTES), "proto")  # (its header aside)
    assert too_long(frame_proto(b"x" * (STREAM_BYTES + 1)), "proto")


def item_of(uid: str, size: int) -> Rendered:
    event = CotEvent(uid, "b-m-r", NOW, NOW, NOW + 3600, "h-e", Point(35.0, 135.0))
    xml = f'<event uid="{uid}">{"x" * size}</event>'.encode()
    return Rendered(Item("USA", "ops", Category.AIRSPACE, event, NOW), lambda r, v, m: xml)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 7),  # which item
            st.integers(STREAM_BYTES + 1, 3 * STREAM_BYTES),  # its size
            st.sets(st.sampled_from(PARTIES)),  # the parties it is written to
        ),
        max_size=25,
    )
)
def test_only_a_party_written_an_announcement_fetches_and_what_is_held_is_bounded(
    writes: list[tuple[int, int, set[str]]],
) -> None:
    limit = 5 * STREAM_BYTES
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(held_module, "HELD_BYTES", limit)
        store = LongMessages(lambda: NOW)
        store.serve(lambda: "https://hub.example:8443", held_module.Path("."))
        granted: dict[str, set[str]] = {}  # sha -> the parties it was written to
        for index, size, parties in writes:
            rendered = item_of(f"route-{index}", size)
            data = rendered.wire("full", "xml")
            one = store.announce(rendered, "full", "xml", data)
            assert one is not None and one.sha256 == hashlib.sha256(data).hexdigest()
            assert b'type="b-f-t-r"' in store.wire(one, "xml")
            for party in parties:
                store.grant(party, [one])
                granted.setdefault(one.sha256, set()).add(party)
            assert store._bytes <= limit + 3 * STREAM_BYTES + 64  # (one form may overrun)
            assert store._bytes == sum(len(h.xml) for h in store._by_sha.values())
        for sha in granted:
            for party in (*PARTIES, "USA"):
                if store.get(party, sha) is not None:
                    assert party in granted[sha]


class _NoWalk(dict[bytes, object]):
    """`LongMessages._by_wire` that refuses to be walked: a drop must find its keys directly."""

    def items(self):  # type: ignore[override]
        raise AssertionError("the whole wire map was walked")


def test_a_dropped_holding_takes_exactly_its_own_wire_keys() -> None:
    now = [NOW]
    store = LongMessages(lambda: now[0])
    store.serve(lambda: "https://hub.example:8443", held_module.Path("."))
    store._by_wire = _NoWalk()  # type: ignore[assignment]
    held = {}
    for name, size in (("a", 1), ("b", 2), ("c", 3)):
        rendered = item_of(f"route-{name}", STREAM_BYTES + size)
        xml = rendered.wire("full", "xml")
        one = store.announce(rendered, "full", "xml", xml)
        # (the same form written in protobuf: a second wire key for the same holding)
        assert store.announce(rendered, "full", "proto", frame_proto(xml)) is one is not None
        store.grant("JPN", [one])
        held[name] = (one, {xml, frame_proto(xml)})
    assert set(store._by_wire) == set().union(*(keys for _, keys in held.values()))
    dropped, keys = held.pop("b")
    store._drop(dropped)
    assert store.get("JPN", dropped.sha256) is None
    assert set(store._by_wire) == set().union(*(keys for _, keys in held.values()))
    for one, keys in held.values():  # the others: fetchable, and found by their wire bytes
        assert store.get("JPN", one.sha256) is one
        for data in keys:
            assert store._by_wire[data] is one
    assert store._bytes == sum(len(h.xml) for h in store._by_sha.values())


def test_another_version_written_ends_what_is_held_of_the_others() -> None:
    """`supersede` (a cluster's edge: what it knows of an item is its key and version)."""
    store = LongMessages(lambda: NOW)
    store.serve(lambda: "https://edge.example:8443", held_module.Path("."))
    older = item_of("route-1", 2 * STREAM_BYTES)
    one = store.announce(older, "full", "xml", older.wire("full", "xml"))
    assert one is not None
    store.grant("JPN", [one])
    store.supersede(older.item.key, older.item.received)  # (the same version: kept)
    assert store.get("JPN", one.sha256) is one
    store.supersede(("USA", "route-2"), NOW + 1)  # (another item: kept)
    assert store.get("JPN", one.sha256) is one
    store.supersede(older.item.key, NOW + 1)
    assert store.get("JPN", one.sha256) is None and len(store) == 0 and not store._by_key
