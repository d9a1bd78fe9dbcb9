# Rule: correlation decides which reports describe the same launch, per recipient, from nothing
# but the reports that recipient may see (the same rule as fusion: no clock, no globals).
#
# Gates, in order: reports whose observation windows are more than TIME_GATE_S apart never
# join; otherwise they join when one ballistic arc explains both — the chi-square increase of
# the joint fit over the two separate fits stays under its CHI2_GATE_P quantile — or, when there
# is too little data for that test, when the hop between them is kinematically possible
# (< 8 km/s, < MAX_GAP_M).
#
# Speed: a report is tested against every open event, and a raid keeps dozens open. The arc
# model is linear in its parameters, so each axis's weighted least-squares fit and its
# chi-square follow from six weighted moments of the observations, and the moments of a union
# are the sums of the parts'. Each event therefore keeps its moments in one fixed frame — the
# AEQD frame centred on its first report, time from that report's first sample — and testing a
# report costs one projection of its few samples into that frame plus three 2x2 solves, not
# three refits of every sample. Reporters' launch/impact estimates are kept whole, because
# their weight depends on the fitted speed (the fit's second pass, as in `fusion._fit`).

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt

from commonsky.alerts.fusion import (
    MAX_CONDITION,
    FusedEvent,
    G,
    Samples,
    canonical,
    chi2_quantile,
    event_id_for,
    frame_centre,
    fuse,
    fuse_samples,
    samples_of,
)
from commonsky.alerts.report import MAX_SPEED_MPS, LaunchReport
from commonsky.geo import FloatArray, from_local, to_local

TIME_GATE_S = 900.0
CHI2_GATE_P = 0.999
MAX_GAP_M = 3_000_000.0

# Columns of a report's raw sample array.
_T, _LAT, _LON, _ALT, _SH, _SV, _ST, _OBS = range(8)


def raw_samples(report: LaunchReport) -> FloatArray:
    """(epoch s, lat, lon, alt m, sigma_h, sigma_v, sigma_t, is observation) per sample."""
    rows = [
        (p.time.timestamp(), p.lat, p.lon, p.alt_m, p.sigma_h_m, p.sigma_v_m, 0.0, 1.0)
        for p in report.points
    ]
    rows += [
        (e.time.timestamp(), e.lat, e.lon, e.alt_m, e.sigma_h_m, e.sigma_v_m, e.sigma_t_s, 0.0)
        for e in (report.launch, report.impact)
        if e is not None
    ]
    return np.array(rows, dtype=np.float64).reshape(-1, 8)


@functools.lru_cache(maxsize=8192)
def _local_of_bytes(samples: bytes, lat0: float, lon0: float) -> tuple[FloatArray, FloatArray]:
    raw = np.frombuffer(samples).reshape(-1, 8)
    x, y = to_local(lon0, lat0, raw[:, _LON], raw[:, _LAT])
    x.flags.writeable = y.flags.writeable = False  # shared by every caller: read only
    return x, y


def local_xy(raw: FloatArray, lat0: float, lon0: float) -> tuple[FloatArray, FloatArray]:
    """`to_local` of a raw sample array, remembered: frames sit on a grid (FRAME_GRID_DEG),
    so each report's samples are projected into few frames, each once (a bounded cache)."""
    return _local_of_bytes(np.ascontiguousarray(raw).tobytes(), lat0, lon0)


def samples_from_raw(raws: Sequence[FloatArray]) -> Samples:
    """`fusion.samples_of` from `raw_samples` arrays: rows in the same order (time, then
    the other columns), frame centred as `frame_centre` says, times from the earliest."""
    raw = np.concatenate(raws)
    lat0, lon0 = frame_centre(raw[:, _LAT], raw[:, _LON])
    local = [local_xy(r, lat0, lon0) for r in raws]
    order = np.lexsort(raw.T[::-1])
    raw = raw[order]
    x = np.concatenate([xy[0] for xy in local])[order]
    y = np.concatenate([xy[1] for xy in local])[order]
    t0 = float(raw[0, _T])
    return Samples(
        datetime.fromtimestamp(t0, UTC),
        lat0,
        lon0,
        raw[:, _T] - t0,
        x,
        y,
        raw[:, _ALT],
        raw[:, _SH],
        raw[:, _SV],
        raw[:, _ST],
        raw[:, _OBS],
    )


class Frame(NamedTuple):
    lat0: float
    lon0: float
    t_ref: float  # epoch seconds

    @classmethod
    def around(cls, raw: FloatArray) -> Frame:
        lat0, lon0 = frame_centre(raw[:, _LAT], raw[:, _LON])
        return cls(lat0, lon0, float(raw[:, _T].min()))


def _moments(t: FloatArray, m: FloatArray, w: FloatArray) -> FloatArray:
    """(S0, St, Stt, Sm, Stm, Smm): the weighted sums a 2-parameter fit of m on t needs."""
    row: FloatArray = _row_moments(t[None, :], m[None, :], w)[0]
    return row


class ArcStats:
    """Everything the arc test needs of a set of samples, in one frame; joined by `+`."""

    __slots__ = ("est", "moments", "n", "tmax", "tmin")

    def __init__(
        self, n: int, tmin: float, tmax: float, moments: FloatArray, est: FloatArray
    ) -> None:
        self.n, self.tmin, self.tmax = n, tmin, tmax
        self.moments = moments  # (3 axes: x, y, z + g t^2/2) x (S0, St, Stt, Sm, Stm, Smm)
        self.est = est  # estimates: t, x, y, z + g t^2/2, sigma_h, sigma_v, sigma_t

    @classmethod
    def of(cls, frame: Frame, raw: FloatArray) -> ArcStats:
        t = raw[:, _T] - frame.t_ref
        x, y = local_xy(raw, frame.lat0, frame.lon0)
        zc = raw[:, _ALT] + 0.5 * G * t * t
        obs = raw[:, _OBS] == 1.0
        to, wh, wv = t[obs], raw[obs, _SH] ** -2, raw[obs, _SV] ** -2
        moments = np.stack(
            [_moments(to, x[obs], wh), _moments(to, y[obs], wh), _moments(to, zc[obs], wv)]
        )
        est = np.stack([t, x, y, zc, raw[:, _SH], raw[:, _SV], raw[:, _ST]], axis=1)[~obs]
        return cls(len(t), float(t.min()), float(t.max()), moments, est)

    def __add__(self, other: ArcStats) -> ArcStats:
        return ArcStats(
            self.n + other.n,
            min(self.tmin, other.tmin),
            max(self.tmax, other.tmax),
            self.moments + other.moments,
            np.concatenate([self.est, other.est]),
        )

    def chi2_dof(self) -> tuple[float, int]:
        """Raw chi-square and degrees of freedom of the arc fit; (0, 0) when none is possible
        (fewer than two distinct times, or an ill-conditioned axis) — as `fusion._fit`."""
        if self.n < 2 or not self.tmin < self.tmax:
            return 0.0, 0
        est = self.est
        t = est[:, 0]
        sh, sv = est[:, 4], est[:, 5]
        chi2 = 0.0
        for _pass in range(2):
            total = self.moments.copy()
            if len(est):
                wh, wv = sh**-2, sv**-2
                total[0] += _moments(t, est[:, 1], wh)
                total[1] += _moments(t, est[:, 2], wh)
                total[2] += _moments(t, est[:, 3], wv)
            chi2, speeds = 0.0, []
            for s0, s1, s2, sm, stm, smm in total.tolist():
                half, spread = (s0 + s2) / 2, math.hypot((s0 - s2) / 2, s1)
                if half - spread <= 0 or (half + spread) / (half - spread) > MAX_CONDITION:
                    return 0.0, 0
                det = s0 * s2 - s1 * s1
                a, b = (s2 * sm - s1 * stm) / det, (s0 * stm - s1 * sm) / det
                chi2 += smm - (a * sm + b * stm)  # sum of w (m - a - b t)^2 at the optimum
                speeds.append(b)
            if not np.any(est[:, 6] > 0):
                break
            # An estimate's time error moves it along the arc: widen it by speed * sigma_t.
            vz = speeds[2] - G * t
            sh = np.sqrt(est[:, 4] ** 2 + (math.hypot(speeds[0], speeds[1]) * est[:, 6]) ** 2 / 2)
            sv = np.sqrt(est[:, 5] ** 2 + (vz * est[:, 6]) ** 2)
        return max(chi2, 0.0), 3 * self.n - 6


@dataclass
class _Group:
    """One event's reports, their raw samples, and its arc statistics in its own frame."""

    reports: list[LaunchReport]
    raws: list[FloatArray]
    frame: Frame
    stats: ArcStats
    fit: tuple[float, int]
    t0: float
    t1: float

    @classmethod
    def of(cls, reports: list[LaunchReport], raws: list[FloatArray], frame: Frame) -> _Group:
        raw = np.concatenate(raws)
        stats = ArcStats.of(frame, raw)
        return cls(
            reports,
            raws,
            frame,
            stats,
            stats.chi2_dof(),
            float(raw[:, _T].min()),
            float(raw[:, _T].max()),
        )

    def copy(self) -> _Group:
        return _Group(
            list(self.reports), list(self.raws), self.frame, self.stats, self.fit, self.t0, self.t1
        )

    def absorb(
        self, reports: Sequence[LaunchReport], raws: Sequence[FloatArray], stats: ArcStats
    ) -> None:
        """Add reports whose statistics in this group's frame are `stats`."""
        self.reports.extend(reports)
        self.raws.extend(raws)
        self.stats = self.stats + stats
        self.fit = self.stats.chi2_dof()
        self.t0 = min(self.t0, *(float(r[:, _T].min()) for r in raws))
        self.t1 = max(self.t1, *(float(r[:, _T].max()) for r in raws))


def _in_time(a: _Group, b0: float, b1: float) -> bool:
    return max(b0 - a.t1, a.t0 - b1, 0.0) <= TIME_GATE_S


def _decide(
    fit_a: tuple[float, int],
    fit_b: tuple[float, int],
    fit_u: tuple[float, int],
    a: Sequence[LaunchReport],
    b: Sequence[LaunchReport],
) -> float | None:
    """The arc test on the three fits (a alone, b alone, union), or the hop test."""
    (ca, da), (cb, db), (cu, du) = fit_a, fit_b, fit_u
    ddof = du - da - db
    if ddof > 0:
        dchi = max(cu - ca - cb, 0.0)
        limit = chi2_quantile(CHI2_GATE_P, ddof)
        return dchi / limit if dchi <= limit else None
    return _reachable(a, b)


def _score(
    a: _Group, b_reports: Sequence[LaunchReport], b_raw: FloatArray
) -> tuple[float, ArcStats] | None:
    """Gate score of joining samples `b_raw` to group `a` (lower is better), with b's
    statistics in a's frame; None if they must not join."""
    if not _in_time(a, float(b_raw[:, _T].min()), float(b_raw[:, _T].max())):
        return None
    sb = ArcStats.of(a.frame, b_raw)
    score = _decide(a.fit, sb.chi2_dof(), (a.stats + sb).chi2_dof(), a.reports, b_reports)
    return None if score is None else (score, sb)


def _scores(groups: Sequence[_Group], report: LaunchReport, raw: FloatArray) -> list[float | None]:
    """`_score` of one report against many groups at once.

    Groups and a report made of observations only (the usual case) are tested together:
    one projection call for the report in every group's frame and the 2x2 solves as array
    operations. Anything with reporters' estimates takes `_score`, one group at a time.
    """
    b0, b1 = float(raw[:, _T].min()), float(raw[:, _T].max())
    out: list[float | None] = [None] * len(groups)
    batch: list[int] = []
    only_obs = bool(np.all(raw[:, _OBS] == 1.0))
    for i, g in enumerate(groups):
        if not _in_time(g, b0, b1):
            continue
        if only_obs and not len(g.stats.est):
            batch.append(i)
        else:
            scored = _score(g, [report], raw)
            out[i] = None if scored is None else scored[0]
    if batch:
        chosen = [groups[i] for i in batch]
        fits_b, fits_u = _batch_fits(chosen, raw)
        for i, g, fb, fu in zip(batch, chosen, fits_b, fits_u, strict=True):
            out[i] = _decide(g.fit, fb, fu, g.reports, [report])
    return out


def _batch_fits(
    groups: Sequence[_Group], raw: FloatArray
) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
    """For observations `raw` and each group (no estimates on either side): the chi-square
    and degrees of freedom of `raw` alone and of the union, in that group's frame."""
    t_ref = np.array([g.frame.t_ref for g in groups])
    # Frames sit on a grid, so nearby events share one and the report is projected once each.
    local = [local_xy(raw, g.frame.lat0, g.frame.lon0) for g in groups]
    x = np.stack([xy[0] for xy in local])
    y = np.stack([xy[1] for xy in local])
    k = len(raw)
    t = raw[None, :, _T] - t_ref[:, None]
    zc = raw[None, :, _ALT] + 0.5 * G * t * t
    wh, wv = raw[:, _SH] ** -2, raw[:, _SV] ** -2
    mb = np.stack(
        [
            _row_moments(t, x, wh),
            _row_moments(t, y, wh),
            _row_moments(t, zc, wv),
        ],
        axis=1,
    )
    ma = np.stack([g.stats.moments for g in groups])
    chi_b, ok_b = _row_chi2(mb)
    chi_u, ok_u = _row_chi2(ma + mb)
    b0, b1 = float(raw[:, _T].min()), float(raw[:, _T].max())
    b_fits = k >= 2 and b0 < b1
    fits_b = [
        (max(float(c), 0.0), 3 * k - 6) if b_fits and ok else (0.0, 0)
        for c, ok in zip(chi_b, ok_b, strict=True)
    ]
    fits_u = []
    for g, c, ok in zip(groups, chi_u, ok_u, strict=True):
        fits = ok and min(g.t0, b0) < max(g.t1, b1)
        fits_u.append((max(float(c), 0.0), 3 * (g.stats.n + k) - 6) if fits else (0.0, 0))
    return fits_b, fits_u


def _row_moments(t: FloatArray, m: FloatArray, w: FloatArray) -> FloatArray:
    """`_moments` of each row of t and m (shape groups x samples), same weights."""
    wt, wm = w * t, w * m
    return np.stack(
        [
            np.full(len(t), w.sum()),
            wt.sum(axis=1),
            (wt * t).sum(axis=1),
            wm.sum(axis=1),
            (wt * m).sum(axis=1),
            (wm * m).sum(axis=1),
        ],
        axis=1,
    )


def _row_chi2(moments: FloatArray) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """`ArcStats.chi2_dof`'s first pass for a stack of (3 axes x 6 moments): chi-square and
    whether every axis could be solved."""
    s0, s1, s2, sm, stm, smm = np.moveaxis(moments, -1, 0)
    half, spread = (s0 + s2) / 2, np.hypot((s0 - s2) / 2, s1)
    low = half - spread
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = ((low > 0) & ((half + spread) / low <= MAX_CONDITION)).all(axis=1)
        det = s0 * s2 - s1 * s1
        a, b = (s2 * sm - s1 * stm) / det, (s0 * stm - s1 * sm) / det
        chi2 = (smm - (a * sm + b * stm)).sum(axis=1)
    return np.where(ok, chi2, 0.0), ok


def _reachable(a: Sequence[LaunchReport], b: Sequence[LaunchReport]) -> float | None:
    """Too little data for the arc test: the nearest samples must be reachable from each other."""
    sa, sb = samples_of(a), samples_of(b)
    xa, ya = to_local(sb.lon0, sb.lat0, *from_local(sa.lon0, sa.lat0, sa.x, sa.y))
    best = math.inf
    for i in range(len(sa.t)):
        d = np.sqrt((sb.x - xa[i]) ** 2 + (sb.y - ya[i]) ** 2 + (sb.z - sa.z[i]) ** 2)
        dt = np.abs((sb.t_ref - sa.t_ref).total_seconds() + sb.t - sa.t[i])
        slack = 3.0 * np.sqrt(sa.sh[i] ** 2 + sb.sh**2 + sa.sv[i] ** 2 + sb.sv**2)
        need = np.maximum(d - slack, 0.0)
        ok = (need <= MAX_SPEED_MPS * np.maximum(dt, 1e-9)) & (d <= MAX_GAP_M)
        if np.any(ok):
            best = min(best, float(np.min(d[ok])) / MAX_GAP_M)
    return best if math.isfinite(best) else None


class Correlation(msgspec.Struct, frozen=True):
    event_id: str
    #: Events folded into `event_id` by this report (their ids are retired).
    merged: tuple[str, ...] = ()


class Correlator:
    """Groups reports into launch events incrementally; one instance per recipient.

    An event's id is `event_id_for([r])` of the first report that *this* correlator received
    for it and never changes afterwards; when a report bridges two events the younger one is
    folded into the older and its id retired. Fed only the reports a recipient may see, every id
    and grouping it produces is therefore a function of that recipient's visible inputs.
    """

    def __init__(self) -> None:
        self._events: dict[str, _Group] = {}
        self._order: dict[str, int] = {}
        self._where: dict[str, str] = {}
        self._seq = 0

    def copy(self) -> Correlator:
        """An independent copy (reports and statistics are immutable; groups are copied)."""
        twin = Correlator()
        twin._events = {eid: group.copy() for eid, group in self._events.items()}
        twin._order = dict(self._order)
        twin._where = dict(self._where)
        twin._seq = self._seq
        return twin

    def add(self, report: LaunchReport) -> Correlation:
        raw = raw_samples(report)
        known = self._where.get(report.key)
        if known is not None:  # a re-sent or updated report keeps its event
            old = self._events[known]
            at = [r.key for r in old.reports].index(report.key)
            reports, raws = list(old.reports), list(old.raws)
            reports[at], raws[at] = report, raw
            self._events[known] = _Group.of(reports, raws, old.frame)
            return Correlation(known)
        ids = list(self._events)
        results = _scores([self._events[e] for e in ids], report, raw)
        scored = sorted(
            (score, self._order[eid], eid)
            for eid, score in zip(ids, results, strict=True)
            if score is not None
        )
        if not scored:
            eid = event_id_for([report])
            self._events[eid] = _Group.of([report], [raw], Frame.around(raw))
            self._order[eid] = self._seq
            self._seq += 1
            self._where[report.key] = eid
            return Correlation(eid)
        target = scored[0][2]
        into = self._events[target]
        into.absorb([report], [raw], ArcStats.of(into.frame, raw))
        merged: list[str] = []
        for *_, other in scored[1:]:
            into, away = self._events[target], self._events[other]
            joined = _score(into, away.reports, np.concatenate(away.raws))
            if joined is not None:
                merged.append(other)
                into.absorb(away.reports, away.raws, joined[1])
                del self._events[other]
        # The surviving id is the oldest of the merged events.
        survivor = min([target, *merged], key=lambda e: self._order[e])
        if survivor != target:
            self._events[survivor] = self._events.pop(target)
            merged = [target if m == survivor else m for m in merged]
        for r in self._events[survivor].reports:
            self._where[r.key] = survivor
        for m in merged:
            self._order.pop(m, None)
        return Correlation(survivor, tuple(sorted(merged)))

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._events

    def events(self) -> Mapping[str, tuple[LaunchReport, ...]]:
        return {eid: tuple(g.reports) for eid, g in self._events.items()}

    def reports(self, event_id: str) -> tuple[LaunchReport, ...]:
        return tuple(self._events[event_id].reports)

    def fuse(self, event_id: str) -> FusedEvent:
        """`fuse(self.reports(event_id))`, from the samples this correlator already holds."""
        group = self._events[event_id]
        order = sorted(range(len(group.reports)), key=lambda i: group.reports[i].key)
        rs = [group.reports[i] for i in order]
        return fuse_samples(rs, samples_from_raw(group.raws), event_id)

    def fused(self) -> dict[str, FusedEvent]:
        out: dict[str, FusedEvent] = {}
        for eid, group in self._events.items():
            f = fuse(group.reports, event_id=eid)
            if f is not None:
                out[eid] = f
        return out

    def expire(self, now: datetime, after: timedelta = timedelta(hours=1)) -> list[str]:
        """Forget events whose newest observation is older than `after`; returns their ids."""
        cutoff = (now - after).timestamp()
        gone = [e for e, g in self._events.items() if g.t1 < cutoff]
        for e in gone:
            for r in self._events.pop(e).reports:
                self._where.pop(r.key, None)
            self._order.pop(e, None)
        return gone


def correlate(reports: Iterable[LaunchReport]) -> list[tuple[str, tuple[LaunchReport, ...]]]:
    """Order-free grouping: feed the reports sorted by (report_time, key) to a fresh Correlator."""
    c = Correlator()
    for r in sorted(canonical(reports), key=lambda r: (r.report_time, r.key)):
        c.add(r)
    return sorted(c.events().items())
