"""A map page on a cluster's edge gets its picture from the bucket as JSON made at the edge
(`picture_kv.entry_json`, from the entry's XML): it must be the very JSON the core sends a page
for the same version (`hub.render.item_json` of the event the hub holds), or a page would
see an item change when it did not. Checked on the TAK corpus and on generated events."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings

from commonsky.cluster.picture_kv import entry_json
from commonsky.cluster.wire import PictureEntry, encode, entry_decoder
from commonsky.errors import RemoteProtocolError
from commonsky.hub.render import item_json
from commonsky.model import Category, CotEvent, Item, category_of_event
from commonsky.protocol.bounds import check_event
from commonsky.protocol.cot import DEFAULT_LIMITS, check_uid, encode_event, parse_event
from tests.protocol.test_bounds import events

CORPUS = sorted((Path(__file__).parents[1] / "corpus" / "data").glob("*.xml"))
NOW = 1_800_000_000.0


def same_json(event: CotEvent, origin: str = "") -> None:
    """The core's page JSON of `event` (as the hub holds it) equals the edge's from an entry."""
    category = category_of_event(event) or Category.OTHER
    item = Item("USA", "u", category, event, NOW, seq=7, origin=origin)
    core = msgspec.json.encode(item_json(item, event))
    entry = PictureEntry("USA", event.uid, category.value, NOW, NOW + 60, True,
                         encode_event(event), item.seq, origin)  # fmt: skip
    # (Through the bucket's own bytes, as an edge reads it.)
    assert entry_json(entry_decoder.decode(encode(entry)), DEFAULT_LIMITS) == core


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name[:40])
def test_corpus_events_give_the_cores_json(path: Path) -> None:
    try:
        event = parse_event(path.read_bytes())
    except RemoteProtocolError:
        return  # (refused by the hub: never in a picture)
    same_json(event)
    same_json(event, origin="fed:peer>JPN")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_generated_events_give_the_cores_json(e: CotEvent) -> None:
    try:
        check_event(e)
        check_uid(e.uid)
        held = parse_event(encode_event(e))  # (what the hub holds: TAK's or the API's parse)
    except RemoteProtocolError:
        return
    same_json(held)


def test_an_old_entry_without_seq_and_origin_still_reads() -> None:
    """Entries written before `seq` and `origin` were added decode with their defaults."""
    old = msgspec.msgpack.encode(["USA", "u1", "track", NOW, NOW + 60, False, b"<event/>"])
    entry = entry_decoder.decode(old)
    assert (entry.seq, entry.origin) == (0, "")
