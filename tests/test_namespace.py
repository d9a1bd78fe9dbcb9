"""The namespace rule (namespace.py): names read back to the items they were given for."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from commonsky.namespace import (
    SHARED,
    SHARED_NAMES,
    Key,
    foreign_uid,
    handle,
    is_handle,
    own_uid,
    read_name,
)

PARTIES = frozenset({"USA", "GBR", "RUS", "HUB"})
uids = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
    min_size=1,
    max_size=40,
) | st.sampled_from(["fe80::1", "::x", "GBR::", "USA::RUS::x", "All Chat Rooms", "a::b::c"])
party = st.sampled_from(sorted(PARTIES - {"HUB"}))


def test_examples() -> None:
    assert read_name("USA", "GBR::EUD-7", PARTIES) == Key("GBR", "EUD-7")
    assert read_name("USA", "USA::dev", PARTIES) == Key("USA", "dev")  # an echo of its own
    assert read_name("USA", "fe80::1", PARTIES) == Key("USA", "fe80::1")  # no party there
    assert read_name("USA", "HUB::thread-1", PARTIES) == Key("HUB", "thread-1")
    assert read_name("GBR", "All Chat Rooms", PARTIES) == Key(SHARED, "All Chat Rooms")
    assert own_uid("USA", "GBR::EUD-7", PARTIES) is None
    assert own_uid("USA", "USA::x", PARTIES) == "x"
    assert own_uid("USA", "GeoChat.USA-1.GBR::EUD-7.m", PARTIES) == "GeoChat.USA-1.GBR::EUD-7.m"
    h = handle(b"k" * 32, "GBR", "EUD-7")
    assert h.startswith("GBR::g-") and is_handle(h.partition("::")[2])
    assert "Cyan" in SHARED_NAMES and "All Chat Rooms" in SHARED_NAMES


@given(party, party, uids)
def test_a_name_given_for_an_item_reads_back_as_that_item(
    owner: str, reader: str, uid: str
) -> None:
    """Two-way: whatever uid an owner's item has, the name another party is given for it
    (`OWNER::uid`, or the owner's own uid back) means that item when that party writes it."""
    stored = own_uid(owner, uid, PARTIES)
    if stored is None:
        return  # the owner could not have created it
    key = read_name(owner, uid, PARTIES)
    if key.party == SHARED:
        return  # a shared name means the same for everybody; never translated
    given_name = stored if reader == owner else foreign_uid(owner, stored)
    assert read_name(reader, given_name, PARTIES) == Key(owner, stored)


@given(party, party, uids, uids)
def test_no_name_given_for_another_partys_item_is_one_a_party_may_create(
    owner: str, reader: str, uid: str, mine: str
) -> None:
    """Disjointness: a foreign item's name is never a uid the reader could create, so it
    can never collide with, overwrite or impersonate the reader's own items."""
    stored = own_uid(owner, uid, PARTIES)
    if owner == reader or stored is None:
        return
    for name in (foreign_uid(owner, stored), handle(b"k" * 32, owner, stored)):
        assert own_uid(reader, name, PARTIES) is None
    if own_uid(reader, mine, PARTIES) is not None:
        assert mine != foreign_uid(owner, stored)
