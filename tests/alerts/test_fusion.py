from __future__ import annotations

from datetime import timedelta

import numpy as np
from alerts_scenarios import SEA_SHOT, T0, at, impact_mahalanobis, jpn_descent, kor_boost
from hypothesis import given, settings
from hypothesis import strategies as st

from commonsky.alerts.correlation import Correlator, correlate
from commonsky.alerts.fusion import event_id_for, fuse
from commonsky.alerts.report import LaunchReport, Observation, PointEstimate, validate_report
from commonsky.alerts.simulate import Ballistic, radar_report
from commonsky.geo import distance_m


def test_fuse_nothing_is_none() -> None:
    assert fuse([]) is None


def test_reports_validate(  # the simulator must produce reports the hub would accept
) -> None:
    rng = np.random.default_rng(0)
    for r in (kor_boost(SEA_SHOT, rng), jpn_descent(SEA_SHOT, rng)):
        validate_report(r, r.report_time)


def test_korea_each_alone_is_partial_together_both() -> None:
    rng = np.random.default_rng(1)
    kor, jpn = kor_boost(SEA_SHOT, rng), jpn_descent(SEA_SHOT, rng)
    k, j, both = fuse([kor]), fuse([jpn]), fuse([kor, jpn])
    assert k
    assert j
    assert both
    for ev in (k, j, both):
        assert ev.launch is not None
        assert ev.impact is not None
    assert k.launch
    assert k.impact
    assert j.launch
    assert j.impact
    assert both.launch
    assert both.impact
    # Korea alone: good launch point, poor impact area.  Japan alone: the reverse.
    assert k.impact.ellipse.semi_major_m > 3 * j.impact.ellipse.semi_major_m
    assert j.launch.ellipse.semi_major_m > 3 * k.launch.ellipse.semi_major_m
    # Together: at least as good as the better single source on each end.
    assert both.impact.ellipse.semi_major_m <= j.impact.ellipse.semi_major_m
    assert both.launch.ellipse.semi_major_m <= k.launch.ellipse.semi_major_m
    assert both.impact.ellipse.semi_major_m * 5 < k.impact.ellipse.semi_major_m
    assert both.launch.ellipse.semi_major_m * 5 < j.launch.ellipse.semi_major_m
    # And the estimates are right.
    assert distance_m(both.launch.lon, both.launch.lat, SEA_SHOT.lon, SEA_SHOT.lat) < 500
    assert distance_m(both.impact.lon, both.impact.lat, *SEA_SHOT.impact[::-1]) < 500
    assert abs((both.launch.time - T0).total_seconds()) < 1.0
    assert abs((both.impact.time - SEA_SHOT.impact_time).total_seconds()) < 1.0
    assert both.parties == ("JPN", "KOR")
    assert both.chi2_per_dof is not None
    assert 0.5 < both.chi2_per_dof < 1.5


def test_more_and_better_reports_tighten_the_estimate() -> None:
    rng = np.random.default_rng(2)
    coarse = kor_boost(SEA_SHOT, rng, sigma=900.0)
    fine = kor_boost(SEA_SHOT, rng, sigma=150.0, rid="k2")
    extra = radar_report(SEA_SHOT, "USA", "u1", 200, 400, 10, 500.0, 500.0, rng)

    def area(*rs: LaunchReport) -> float:
        ev = fuse(rs)
        assert ev is not None
        assert ev.impact is not None
        return ev.impact.ellipse.area_km2

    assert area(fine) < area(coarse) / 4  # better sensor
    assert area(coarse, extra) < area(coarse)  # more sensors
    assert area(coarse, fine, extra) < area(coarse, fine) < area(fine)


def test_single_point_gives_no_estimate_and_reporter_estimates_are_used() -> None:
    obs = Observation(at(120), 39.3, 128.0, 400_000.0, 2_000.0, 2_000.0)
    bare = fuse([LaunchReport("JPN", "j8", at(121), (obs,))])
    assert bare is not None
    assert bare.impact is None
    assert bare.trajectory is None
    # One point plus the reporter's own impact estimate: the arc through both is used, and
    # the impact lands on the estimate with (about) the estimate's uncertainty.
    impact = PointEstimate(at(600), 40.0, 137.3, 5_000.0, sigma_t_s=20.0)
    ev = fuse([LaunchReport("JPN", "j9", at(121), (obs,), impact=impact)])
    assert ev is not None
    assert ev.impact is not None
    assert distance_m(ev.impact.lon, ev.impact.lat, 137.3, 40.0) < 1_000.0
    # The 20 s time uncertainty at ~1.7 km/s stretches the ellipse along the track.
    assert 5_000 < ev.impact.ellipse.semi_minor_m < ev.impact.ellipse.semi_major_m < 150_000


def test_impact_ellipse_coverage_200_trials() -> None:
    # Noisy synthetic reports from the model's own physics: the 95 % ellipse should hold the
    # true impact in roughly 95 % of trials (not 100 %: that would mean it is too wide).
    rng = np.random.default_rng(20221004)
    inside_both = inside_kor = 0
    trials = 200
    for _ in range(trials):
        kor, jpn = kor_boost(SEA_SHOT, rng), jpn_descent(SEA_SHOT, rng)
        both, alone = fuse([kor, jpn]), fuse([kor])
        assert both is not None
        assert alone is not None
        inside_both += impact_mahalanobis(both, *SEA_SHOT.impact) <= 1.0
        inside_kor += impact_mahalanobis(alone, *SEA_SHOT.impact) <= 1.0
    assert 0.90 <= inside_both / trials <= 0.99
    assert 0.90 <= inside_kor / trials <= 0.99


_RNG = np.random.default_rng(5)
_REPORTS = [
    kor_boost(SEA_SHOT, _RNG),
    jpn_descent(SEA_SHOT, _RNG),
    radar_report(SEA_SHOT, "USA", "u1", 100, 300, 20, 800.0, 800.0, _RNG),
    radar_report(SEA_SHOT, "USA", "u2", 300, 500, 20, 800.0, 800.0, _RNG),
]


@settings(max_examples=30, deadline=None)
@given(st.permutations(_REPORTS), st.integers(min_value=1, max_value=len(_REPORTS)))
def test_fuse_is_invariant_to_input_order(perm: list[LaunchReport], n: int) -> None:
    subset = perm[:n]
    canonical = sorted(subset, key=lambda r: r.key)
    assert fuse(subset) == fuse(canonical)
    assert fuse(subset + subset[:1]) == fuse(canonical)  # duplicates change nothing
    assert [g for _e, g in correlate(subset)] == [g for _e, g in correlate(canonical)]


def test_correlation_joins_one_launch_and_separates_a_salvo() -> None:
    rng = np.random.default_rng(6)
    other = Ballistic(39.0, 125.7, T0 + timedelta(seconds=20), 110.0, 800_000.0, 300_000.0)
    reports = [
        kor_boost(SEA_SHOT, rng),
        jpn_descent(SEA_SHOT, rng),
        kor_boost(other, rng, rid="k2"),
        jpn_descent(other, rng, rid="j2"),
    ]
    groups = correlate(reports)
    assert sorted(sorted(r.key for r in g) for _e, g in groups) == [
        ["JPN/j1", "KOR/k1"],
        ["JPN/j2", "KOR/k2"],
    ]
    for eid, g in groups:
        assert eid == event_id_for(g)  # named after its earliest report


def test_correlation_gates_without_a_fit() -> None:
    def single(party: str, rid: str, s: float, lon: float) -> LaunchReport:
        p = Observation(at(s), 39.0, lon, 50_000.0, 1_000.0, 1_000.0)
        return LaunchReport(party, rid, at(s + 1), (p,))

    near = [single("KOR", "a", 0, 125.7), single("JPN", "b", 10, 126.0)]  # ~26 km in 10 s
    assert len(correlate(near)) == 1
    far = [single("KOR", "a", 0, 125.7), single("JPN", "b", 10, 131.0)]  # ~460 km in 10 s
    assert len(correlate(far)) == 2
    late = [single("KOR", "a", 0, 125.7), single("JPN", "b", 1_000, 126.0)]  # > 15 min apart
    assert len(correlate(late)) == 2


def test_correlator_ids_are_stable_and_merges_are_reported() -> None:
    rng = np.random.default_rng(8)
    kor, jpn = kor_boost(SEA_SHOT, rng), jpn_descent(SEA_SHOT, rng)
    c = Correlator()
    first = c.add(kor)
    assert first.event_id == event_id_for([kor])
    assert c.add(jpn).event_id == first.event_id
    assert c.add(kor).event_id == first.event_id  # re-sent report
    assert list(c.fused()) == [first.event_id]
    # A lofted shot (26 min flight): fragments more than 15 min apart start as two events,
    # then a report spanning the gap bridges them; the older id survives, the other retires.
    lofted = Ballistic(39.0, 125.7, T0, 80.0, 1_000_000.0, 3_000_000.0)
    c2 = Correlator()
    a = radar_report(lofted, "KOR", "a", 30, 60, 5, 300.0, 300.0, rng)
    b = radar_report(lofted, "JPN", "b", 1400, 1450, 5, 300.0, 300.0, rng)
    ida, idb = c2.add(a).event_id, c2.add(b).event_id
    assert ida != idb
    res = c2.add(radar_report(lofted, "USA", "m", 100, 1300, 20, 300.0, 300.0, rng))
    assert res.event_id == ida
    assert res.merged == (idb,)
    assert list(c2.events()) == [ida]
    assert len(c2.events()[ida]) == 3
    assert c2.expire(lofted.impact_time + timedelta(hours=2)) == [ida]
    assert not c2.events()
