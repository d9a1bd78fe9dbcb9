from __future__ import annotations

from datetime import timedelta

from alerts_scenarios import T0

from commonsky.alerts.cap import cap_xml, validate_cap
from commonsky.alerts.engine import AlertEngine
from commonsky.alerts.regions import RegionRegistry
from commonsky.alerts.threats import ThreatTrack, assess_track

# Night raid: a Shahed-type drone over Cherkasy heading north towards Kyiv at 180 km/h,
# and a cruise missile over the Black Sea heading west, away from every listed oblast.
DRONE = ThreatTrack("d1", "UKR", "drone", T0, 49.9, 31.3, 500.0, 50.0, 340.0, 1_000.0)
MISSILE_AWAY = ThreatTrack("c1", "UKR", "cruise-missile", T0, 44.6, 31.5, 50.0, 250.0, 180.0)


def test_drone_warns_regions_on_its_way_and_not_behind(regions: RegionRegistry) -> None:
    hz = assess_track(DRONE, regions, T0, timedelta(minutes=30))
    reached = {t.region_id: t for t in hz.threatened}
    assert "UA-32" in reached  # Kyiv oblast, ~20 min ahead
    assert not {"UA-46", "UA-51", "UA-63", "UA-23"} & set(reached)
    assert hz.event == "Attack drone"
    # A shorter horizon reaches less far.
    near = assess_track(DRONE, regions, T0, timedelta(minutes=2))
    assert set(t.region_id for t in near.threatened) < set(reached)


def test_missile_heading_away_warns_nobody(regions: RegionRegistry) -> None:
    assert assess_track(MISSILE_AWAY, regions, T0).threatened == ()


def test_tracks_drive_alert_update_cancel(regions: RegionRegistry) -> None:
    engine = AlertEngine(regions, "ua-air-alert@example.org")
    first = engine.step_events(T0, tracks=[DRONE], horizon=timedelta(minutes=30))
    assert first
    assert {m.msg_type for m in first} == {"Alert"}
    turned = ThreatTrack(
        "d1", "UKR", "drone", T0 + timedelta(minutes=1), 49.96, 31.27, 500.0, 50.0, 20.0, 1_000.0
    )
    second = engine.step_events(
        T0 + timedelta(minutes=1), tracks=[turned], horizon=timedelta(minutes=30)
    )
    assert second
    assert all(m.msg_type in ("Update", "Cancel", "Alert") for m in second)
    assert any(m.msg_type == "Update" for m in second)
    down = ThreatTrack(
        "d1",
        "UKR",
        "drone",
        T0 + timedelta(minutes=3),
        50.0,
        31.3,
        0.0,
        0.0,
        0.0,
        ended="The drone was shot down.",
    )
    third = engine.step_events(T0 + timedelta(minutes=3), tracks=[down])
    assert third
    assert {m.msg_type for m in third} == {"Cancel"}
    assert all(m.info[0].description == "The drone was shot down." for m in third)
    for m in engine.history():
        validate_cap(cap_xml(m))
    assert engine.active() == []


def test_stale_track_and_vanished_track_are_cancelled(regions: RegionRegistry) -> None:
    assert assess_track(DRONE, regions, T0 + timedelta(minutes=6)).over
    engine = AlertEngine(regions, "ua-air-alert@example.org")
    assert engine.step_events(T0, tracks=[DRONE], horizon=timedelta(minutes=30))
    gone = engine.step_events(T0 + timedelta(seconds=30), tracks=[])
    assert gone
    assert {m.msg_type for m in gone} == {"Cancel"}
