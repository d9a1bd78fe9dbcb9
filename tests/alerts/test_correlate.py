"""The correlator's arc test from moments must be the fit's own chi-square, only faster."""

from __future__ import annotations

import math
from datetime import timedelta

import msgspec
import numpy as np
from alerts_scenarios import SEA_SHOT, T0, at, jpn_descent, kor_boost
from hypothesis import given, settings
from hypothesis import strategies as st

from commonsky.alerts.correlation import (
    ArcStats,
    Correlator,
    Frame,
    _Group,
    _score,
    _scores,
    correlate,
    raw_samples,
)
from commonsky.alerts.fusion import _fit, fuse, samples_of
from commonsky.alerts.report import LaunchReport, Observation, PointEstimate
from commonsky.alerts.simulate import Ballistic, radar_report

_RNG = np.random.default_rng(21)
_OTHER = Ballistic(38.5, 126.0, T0 + timedelta(seconds=40), 95.0, 1_200_000.0, 500_000.0)
_REPORTS = [
    kor_boost(SEA_SHOT, _RNG),
    jpn_descent(SEA_SHOT, _RNG),
    # Reporters' own estimates with a time error exercise the fit's second pass.
    msgspec.structs.replace(
        radar_report(SEA_SHOT, "USA", "u1", 100, 300, 20, 800.0, 800.0, _RNG),
        impact=PointEstimate(at(600), 40.0, 137.3, 5_000.0, sigma_t_s=20.0),
        launch=PointEstimate(at(0), 39.0, 125.7, 3_000.0, sigma_t_s=5.0),
    ),
    kor_boost(_OTHER, _RNG, rid="k2"),
    LaunchReport(
        "JPN", "one", at(121), (Observation(at(120), 39.3, 128.0, 400_000.0, 2_000.0, 2_000.0),)
    ),
]


def _fit_chi2_dof(reports: list[LaunchReport]) -> tuple[float, int, Frame]:
    s = samples_of(reports)
    f = _fit(s)
    frame = Frame(s.lat0, s.lon0, s.t_ref.timestamp())
    return (0.0, 0, frame) if f is None else (f.chi2, f.dof, frame)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(range(len(_REPORTS))), min_size=1, max_size=5, unique=True))
def test_moments_give_the_fits_chi_square(picked: list[int]) -> None:
    reports = [_REPORTS[i] for i in picked]
    chi2, dof, frame = _fit_chi2_dof(reports)
    whole = ArcStats.of(frame, np.concatenate([raw_samples(r) for r in reports]))
    got_chi2, got_dof = whole.chi2_dof()
    assert got_dof == dof
    assert math.isclose(got_chi2, chi2, rel_tol=1e-6, abs_tol=1e-6), (got_chi2, chi2)
    # Statistics add: the union from its parts is the union computed whole.
    parts = [ArcStats.of(frame, raw_samples(r)) for r in reports]
    joined = parts[0]
    for p in parts[1:]:
        joined = joined + p
    j_chi2, j_dof = joined.chi2_dof()
    assert j_dof == dof and math.isclose(j_chi2, chi2, rel_tol=1e-6, abs_tol=1e-6)


def test_a_copy_is_independent_of_its_original() -> None:
    a = Correlator()
    a.add(_REPORTS[0])
    b = a.copy()
    b.add(_REPORTS[1])
    assert [len(g) for g in a.events().values()] == [1]
    assert [len(g) for g in b.events().values()] == [2]


def test_a_resent_report_replaces_its_old_version_in_place() -> None:
    c = Correlator()
    first = c.add(_REPORTS[0]).event_id
    c.add(_REPORTS[1])
    again = msgspec.structs.replace(_REPORTS[0], report_time=_REPORTS[0].report_time + timedelta(1))
    assert c.add(again).event_id == first
    assert c.reports(first)[0] is again and len(c.reports(first)) == 2


def test_a_salvo_of_twenty_close_launches_is_kept_apart() -> None:
    # Twenty launches 10 s and ~9 km apart from one site, two sensors each: the arc test
    # must not fold neighbours together however many events are open.
    rng = np.random.default_rng(8)
    reports = []
    for k in range(20):
        truth = Ballistic(
            39.75, 125.6 + 0.1 * k, T0 + timedelta(seconds=10 * k), 80.0, 2_100_000.0, 900_000.0
        )
        reports += [
            radar_report(truth, "KOR", f"k{k}", 20, 200, 10.0, 400.0, 400.0, rng),
            radar_report(truth, "JPN", f"j{k}", 260, 400, 10.0, 400.0, 400.0, rng),
        ]
    groups = correlate(reports)
    assert sorted(sorted(r.report_id[1:] for r in g) for _e, g in groups) == sorted(
        [str(k), str(k)] for k in range(20)
    )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sampled_from(range(len(_REPORTS))), min_size=1, max_size=3, unique=True),
    st.sampled_from(range(len(_REPORTS))),
)
def test_batched_scores_are_the_one_at_a_time_scores(in_group: list[int], probe: int) -> None:
    groups = []
    for i in in_group:  # one group per report, and one group of them all
        raw = raw_samples(_REPORTS[i])
        groups.append(_Group.of([_REPORTS[i]], [raw], Frame.around(raw)))
    raws = [raw_samples(_REPORTS[i]) for i in in_group]
    groups.append(_Group.of([_REPORTS[i] for i in in_group], raws, Frame.around(raws[0])))
    report = _REPORTS[probe]
    raw = raw_samples(report)
    batched = _scores(groups, report, raw)
    for g, got in zip(groups, batched, strict=True):
        one = _score(g, [report], raw)
        if one is None:
            assert got is None
        else:
            assert got is not None and math.isclose(got, one[0], rel_tol=1e-6, abs_tol=1e-9)


def test_the_correlator_fuses_what_fuse_would_from_its_own_samples() -> None:
    c = Correlator()
    for r in (_REPORTS[0], _REPORTS[2], _REPORTS[1]):  # one launch; one with estimates
        eid = c.add(r).event_id
    assert len(c.events()) == 1
    mine, plain = c.fuse(eid), fuse(c.reports(eid), event_id=eid)
    assert plain is not None
    assert (mine.event_id, mine.report_keys, mine.parties) == (
        plain.event_id,
        plain.report_keys,
        plain.parties,
    )
    assert (mine.first_seen, mine.last_seen, mine.n_points) == (
        plain.first_seen,
        plain.last_seen,
        plain.n_points,
    )
    assert mine.impact is not None and plain.impact is not None
    assert math.isclose(mine.impact.lat, plain.impact.lat, abs_tol=1e-9)
    assert math.isclose(mine.impact.lon, plain.impact.lon, abs_tol=1e-9)
    assert abs((mine.impact.time - plain.impact.time).total_seconds()) < 1e-3
    assert math.isclose(
        mine.impact.ellipse.semi_major_m, plain.impact.ellipse.semi_major_m, rel_tol=1e-6
    )
    assert mine.chi2_per_dof is not None and plain.chi2_per_dof is not None
    assert math.isclose(mine.chi2_per_dof, plain.chi2_per_dof, rel_tol=1e-6)
