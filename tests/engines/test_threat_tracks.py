"""Air-threat tracks raise the same warnings as launches, through the hub: the issuing party
warns from the tracks it may see (and only those), a track that stops being a threat ends
its warning, and a raid's thousands of other tracks are not scanned for each step."""

from __future__ import annotations

from pathlib import Path

from commonsky.model import Category
from tests.engines.harness import event, make_world

PARTIES = ("UKR", "POL", "RUS")
TRACKS = [{"name": "POL tracks", "from": "POL", "to": ["UKR"], "categories": ["track"]}]


def drone(uid: str, lon: float, cot_type: str = "a-h-A-M-F-Q") -> object:
    # 60 km east of Kyiv, heading west at 50 m/s: over the city within the horizon.
    return event(uid, cot_type, lat=50.45, lon=lon, hae=300, speed=50.0, course=270.0)


def warned(w) -> set[str]:
    return {
        a.info[0].areas[0].geocodes[0][1]
        for e in w.services.launch.core.engines.values()
        for a in e.active()
    }


def test_tracks_the_issuer_may_see_warn_and_others_do_not(tmp_path: Path) -> None:
    w = make_world(tmp_path / "seen", TRACKS, parties=PARTIES)
    w.send("POL", drone("D1", 31.4))
    w.services.launch.tick()
    regions = warned(w)
    assert "UA-30" in regions  # Kyiv
    assert {a.sender for a in w.services.launch.feed()} == {"commonsky.ukr"}
    # The same drone from a party that shares nothing with UKR warns nobody.
    alone = make_world(tmp_path / "unseen", TRACKS, parties=PARTIES)
    alone.send("RUS", drone("D1", 31.4))
    alone.services.launch.tick()
    assert warned(alone) == set() and alone.services.launch.feed() == []


def test_a_track_that_stops_being_a_threat_ends_its_warning(tmp_path: Path) -> None:
    w = make_world(tmp_path, TRACKS, parties=PARTIES)
    w.send("POL", drone("D1", 31.4))
    w.services.launch.tick()
    assert warned(w)
    w.clock.now += 1.0
    w.send("POL", drone("D1", 31.4, cot_type="a-f-A-M-F-Q"))  # identified friendly
    w.services.launch.tick()
    assert warned(w) == set()
    assert w.services.launch.feed()[-1].msg_type == "Cancel"


def test_a_step_looks_only_at_threat_tracks(tmp_path: Path) -> None:
    w = make_world(tmp_path, TRACKS, parties=PARTIES)
    for i in range(300):
        w.send("POL", event(f"F{i}", "a-f-A-M-F", lat=49 + i * 0.001, lon=24.0))
    w.send("POL", drone("D1", 31.4))
    live = [r.item for r in w.hub.live.values() if r.item.category is Category.TRACK]
    assert len(live) == 301
    assert [t.track_id for t in w.services.launch.threats_for("UKR")] == ["POL::D1"]
    assert list(w.services.launch._threats) == [("POL", "D1")]
    w.clock.now += 3600  # every track stale and pruned: the index follows the picture
    w.hub.prune()
    w.services.launch.prune()
    assert w.services.launch.threats_for("UKR") == [] and not w.services.launch._threats
