"""The live items a core taking over restores (cluster/live_kv.py `LiveKeeper.restore`) are
given to the desks (`Hub.restored`), as a single hub's rebuild rule has it: the desks' state is
what it would be had they seen them, and only what differs from what the dead core told (the
notices it stored) is told.

Here on an in-memory hub with every desk (the bucket's read stubbed with records sealed as a
core seals them), the "dead core" being a first hub on the same store; the cluster itself in
test_live_failover.py (`test_a_restored_track_is_in_the_deconfliction_engine_at_once`).

- A restored track in conflict with a stored zone: the conflict the dead core told is not
  told again (before, the rebuild cleared it — a "cleared" notice stored and sent — and it was
  raised again at the track's next report), and another party's new track on a collision
  course with it raises a conflict at the next screening (before: not until the restored
  track reported again).
- A conflict between a restored track and a zone that the dead core never told (it died
  before its screening round) is raised at the takeover, once.
- A restored threat track is in the warnings desk's index, its warning taken as issued (the
  same CAP message is not issued twice), and its all-clear is told when it stops being one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from commonsky.cluster import live_kv
from commonsky.cluster.live_kv import LiveKeeper, LiveRecord, live_key, write_record
from commonsky.model import Category, Item
from tests.engines.harness import World, drawing, event, make_world, square

ZONES = [
    {"name": f"{a} areas", "from": a, "to": [b], "categories": ["airspace", "site"],
     "disclosure": "full"}
    for a, b in (("USA", "RUS"), ("RUS", "USA"))
]  # fmt: skip
TRACKS = [
    {"name": f"{a} tracks", "from": a, "to": [b], "categories": ["track"], "disclosure": "full"}
    for a, b in (("USA", "RUS"), ("RUS", "USA"))
]


def stored_notices(w: World) -> list[tuple[str, str]]:
    """(uid, state) of every conflict notice the store holds, in order."""
    out = []
    for item in w.hub.store.since(0):
        if item.event.type == "t-x-csky-conflict":
            state = item.event.detail.split('state="', 1)[1].split('"', 1)[0]
            out.append((item.uid, state))
    return out


def told(w: World, party: str) -> list[dict[str, Any]]:
    return [
        json.loads(e.detail.split(">", 1)[1].split("</csky_conflict>", 1)[0])
        for e in w.take(party)
        if e.type == "t-x-csky-conflict"
    ]


def take_over(
    tmp_path: Path, before: World, items: list[Item], monkeypatch: pytest.MonkeyPatch,
    agreements: list[dict[str, Any]], **world: Any,
) -> World:  # fmt: skip
    """Stop `before` (the dead core: its live items are lost with it) and start a hub on its
    store as a core taking over does: desks rebuilt with the live items to follow, then
    `LiveKeeper.restore` of `items` from a live bucket holding them as written."""
    clock = before.clock.now
    before.services.close()
    before.hub.store.close()
    after = make_world(tmp_path, agreements, now=clock, live_follows=True, **world)
    keeper = LiveKeeper(after.hub, None, "bucket")  # type: ignore[arg-type]
    held = {}
    for revision, item in enumerate(items, 1):
        name = live_key(item.key)
        held[name] = (revision, write_record(name, LiveRecord(item, {}), keeper.master))

    async def read_bucket(kv: object, timeout: float = 5.0) -> tuple[dict[str, Any], int]:
        return held, len(held)

    monkeypatch.setattr(live_kv, "read_bucket", read_bucket)
    import asyncio

    got = asyncio.run(keeper.restore())
    assert got.restored == len(items)
    return after


def live_item(w: World, party: str, uid: str) -> Item:
    return w.hub.live[(party, uid)].item


# A USA zone; RUS's fighter 20 km west of it heading east at 250 m/s: in it within the
# look-ahead (from its report's time: the notice does not move with the clock).
ZONE = square(38.0, 34.0, 1.0)


def fighter(uid: str, lon: float, course: float, lat: float = 34.5) -> Any:
    return event(uid, "a-f-A-M-F", lat=lat, lon=lon, hae=5000, speed=250, course=course)


def test_a_restored_track_in_conflict_is_known_to_the_desk_and_not_told_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agreements = ZONES + TRACKS
    w = make_world(tmp_path, agreements)
    w.send("USA", drawing("US-ZONE", ZONE, 0, 10000))
    w.send("RUS", fighter("RU-SU35", 37.8, 90.0))
    w.services.airspace.screen(budget_s=10.0)
    (raised,) = told(w, "RUS")
    assert raised["kind"] == "track-volume"
    notices = stored_notices(w)
    assert [state for _, state in notices] == ["raised"] * 2  # (RUS and USA told)
    api = json.dumps(w.services.airspace.for_party("RUS"))
    su35 = live_item(w, "RUS", "RU-SU35")
    after = take_over(tmp_path, w, [su35], monkeypatch, agreements)
    # Known to the desk as the dead core had it; nothing told again, nothing cleared.
    assert json.dumps(after.services.airspace.for_party("RUS")) == api
    assert stored_notices(after) == notices
    # (A connection's replay of the picture: the notice it holds, nothing else.)
    assert [n["conflict_id"] for n in told(after, "RUS")] == [raised["conflict_id"]]
    # USA's new fighter, head-on with the restored one: a conflict at the next screening,
    # without the restored track reporting again.
    after.send("USA", fighter("US-F22", 38.6, 270.0))
    after.services.airspace.screen(budget_s=10.0)
    kinds = [n["kind"] for n in told(after, "RUS")]
    assert kinds == ["track-track"], kinds
    assert [s for _, s in stored_notices(after)].count("cleared") == 0
    after.services.close()


def test_a_conflict_the_dead_core_never_told_is_raised_at_the_takeover_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agreements = ZONES + TRACKS
    w = make_world(tmp_path, agreements)
    w.send("USA", drawing("US-ZONE", ZONE, 0, 10000))
    w.send("RUS", fighter("RU-SU35", 37.8, 90.0))  # (the core dies before screening it)
    assert stored_notices(w) == []
    su35 = live_item(w, "RUS", "RU-SU35")
    after = take_over(tmp_path, w, [su35], monkeypatch, agreements)
    assert [s for _, s in stored_notices(after)] == ["raised"] * 2
    assert [n["kind"] for n in told(after, "RUS")] == ["track-volume"]  # (raised, held)
    # Screening rounds after it find the same conflict: told once.
    after.services.airspace.screen(budget_s=10.0)
    after.services.airspace.tick()
    assert [s for _, s in stored_notices(after)] == ["raised"] * 2
    after.services.close()


UKR = ("UKR", "POL", "RUS")
POL_TRACKS = [{"name": "POL tracks", "from": "POL", "to": ["UKR"], "categories": ["track"]}]


def drone(uid: str, cot_type: str = "a-h-A-M-F-Q") -> Any:
    # 60 km east of Kyiv, heading west at 50 m/s: over the city within the horizon.
    return event(uid, cot_type, lat=50.45, lon=31.4, hae=300, speed=50.0, course=270.0)


def warnings(w: World) -> list[tuple[str, str]]:
    """(uid, CAP message type) of every warning the store holds."""
    return [
        (i.uid, i.event.detail.split('msgType="', 1)[1].split('"', 1)[0])
        for i in w.hub.store.since(0)
        if i.category is Category.ALERT
    ]


def test_a_restored_threat_track_keeps_its_warning_without_issuing_it_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = make_world(tmp_path, POL_TRACKS, parties=UKR)
    w.send("POL", drone("D1"))
    w.services.launch.tick()
    issued = warnings(w)
    assert issued and {kind for _, kind in issued} == {"Alert"}
    d1 = live_item(w, "POL", "D1")
    after = take_over(tmp_path, w, [d1], monkeypatch, POL_TRACKS, parties=UKR)
    after.services.launch.tick()
    assert warnings(after) == issued  # (the dead core issued them: not again)
    assert {a.identifier for a in after.services.launch.feed()} == {
        uid.removeprefix("cap-") for uid, _ in issued
    }
    # Identified friendly: the warning it raised ends (before, it was never cancelled).
    after.clock.now += 1.0
    after.send("POL", drone("D1", cot_type="a-f-A-M-F-Q"))
    after.services.launch.tick()
    assert [kind for _, kind in warnings(after)[len(issued) :]] == ["Cancel"] * len(issued)
    after.services.close()
