# Rule: fusion is a pure function of exactly the reports it is given. The hub calls `fuse` once
# per recipient with only the reports that recipient may see, so nothing here may read a clock,
# a global RNG or any state outside its arguments, and the result must not depend on the order
# of the inputs (they are de-duplicated and sorted first). That is how the non-interference
# invariant holds for fused launch events.
#
# Model (documented, deliberately simple): after launch the object flies a drag-free ballistic
# arc under constant gravity g = 9.80665 m/s^2 in a "flat" frame whose horizontal axes are the
# WGS-84 azimuthal-equidistant projection centred on the data and whose vertical axis is the
# altitude above the ellipsoid:
#     x(t) = x0 + vx t,   y(t) = y0 + vy t,   z(t) = z0 + vz t - g t^2 / 2
# Boost thrust, drag, Earth curvature/rotation and manoeuvres are NOT modelled: the launch point
# is where the fitted arc meets the ground going up, the impact point where it meets it coming
# down (altitude 0). The model is linear in its six parameters, so the fit is an exact weighted
# least-squares solve (three decoupled 2-parameter regressions); its covariance is scaled by the
# reduced chi-square when that exceeds 1 (misfit widens, never narrows, the warning area) and is
# propagated to the launch and impact points by linearisation (analytic Jacobian).

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

import msgspec
import numpy as np
from shapely.geometry import Polygon

from commonsky.alerts.geo import FloatArray, ellipse_polygon, from_local, to_local
from commonsky.alerts.report import MAX_SPEED_MPS, LaunchReport

G = 9.80665
CONFIDENCE = 0.95
#: Correlation gates. Reports whose observation windows are more than TIME_GATE_S apart never
#: join; otherwise they join when one ballistic arc explains both (the chi-square increase of
#: the joint fit stays under its CHI2_GATE_P quantile) or, when there is too little data for
#: that test, when the hop between them is kinematically possible (< 8 km/s, < MAX_GAP_M).
TIME_GATE_S = 900.0
CHI2_GATE_P = 0.999
MAX_GAP_M = 3_000_000.0


class Ellipse(msgspec.Struct, frozen=True):
    """Confidence ellipse on the ground: centre, semi-axes (m), major-axis azimuth (deg from N)."""

    lat: float
    lon: float
    semi_major_m: float
    semi_minor_m: float
    orientation_deg: float
    confidence: float

    def polygon(self, n: int = 48) -> Polygon:
        return ellipse_polygon(
            self.lat, self.lon, self.semi_major_m, self.semi_minor_m, self.orientation_deg, n
        )

    @property
    def area_km2(self) -> float:
        return math.pi * self.semi_major_m * self.semi_minor_m / 1e6


class PointFix(msgspec.Struct, frozen=True):
    """Estimated launch or impact: when, where, and how sure (ellipse at `CONFIDENCE`)."""

    time: datetime
    sigma_t_s: float
    ellipse: Ellipse

    @property
    def lat(self) -> float:
        return self.ellipse.lat

    @property
    def lon(self) -> float:
        return self.ellipse.lon


class Trajectory(msgspec.Struct, frozen=True):
    """The fitted arc: frame origin, reference time, state (x0,vx,y0,vy,z0,vz) and covariance."""

    origin_lat: float
    origin_lon: float
    t_ref: datetime
    state: tuple[float, ...]
    cov: tuple[float, ...]  # 6x6, row-major

    def _t(self, t: datetime) -> float:
        return (t - self.t_ref).total_seconds()

    def position(self, t: datetime) -> tuple[float, float, float]:
        """(lat, lon, alt_m) predicted at time t (altitude may be negative after impact)."""
        s = self._t(t)
        x0, vx, y0, vy, z0, vz = self.state
        lat, lon = from_local(self.origin_lat, self.origin_lon, [x0 + vx * s], [y0 + vy * s])
        return float(lat[0]), float(lon[0]), z0 + vz * s - 0.5 * G * s * s

    def horizontal_sigma_m(self, t: datetime) -> float:
        """Largest 1-sigma horizontal position error at time t."""
        s = self._t(t)
        c = np.asarray(self.cov).reshape(6, 6)
        vx = c[0, 0] + 2 * s * c[0, 1] + s * s * c[1, 1]
        vy = c[2, 2] + 2 * s * c[2, 3] + s * s * c[3, 3]
        return math.sqrt(max(vx, vy, 0.0))

    def ground_track(
        self, t0: datetime, t1: datetime, step_s: float = 20.0
    ) -> list[tuple[datetime, float, float, float]]:
        """(time, lat, lon, horizontal 1-sigma m) every `step_s` from t0 to t1 inclusive."""
        total = max(0.0, (t1 - t0).total_seconds())
        n = max(2, math.ceil(total / step_s) + 1)
        times = [t0 + timedelta(seconds=total * i / (n - 1)) for i in range(n)]
        x0, vx, y0, vy, _z0, _vz = self.state
        ss = np.array([self._t(t) for t in times])
        lats, lons = from_local(self.origin_lat, self.origin_lon, x0 + vx * ss, y0 + vy * ss)
        return [
            (t, float(la), float(lo), self.horizontal_sigma_m(t))
            for t, la, lo in zip(times, lats, lons, strict=True)
        ]


class FusedEvent(msgspec.Struct, frozen=True):
    event_id: str
    report_keys: tuple[str, ...]
    parties: tuple[str, ...]
    first_seen: datetime
    last_seen: datetime
    n_points: int
    launch: PointFix | None
    impact: PointFix | None
    trajectory: Trajectory | None
    chi2_per_dof: float | None


# ---------------------------------------------------------------------------------------------
# Samples and the fit


class _Samples(msgspec.Struct):
    t_ref: datetime
    lat0: float
    lon0: float
    t: FloatArray
    x: FloatArray
    y: FloatArray
    z: FloatArray
    sh: FloatArray
    sv: FloatArray
    st: FloatArray  # time uncertainty of estimates (0 for observations)
    is_obs: FloatArray


def _canonical(reports: Iterable[LaunchReport]) -> list[LaunchReport]:
    """De-duplicate by key (latest report_time, then bytes, wins) and sort: order-independence."""
    best: dict[str, tuple[datetime, bytes, LaunchReport]] = {}
    for r in reports:
        cand = (r.report_time, msgspec.json.encode(r), r)
        cur = best.get(r.key)
        if cur is None or cand[:2] > cur[:2]:
            best[r.key] = cand
    return [best[k][2] for k in sorted(best)]


def _samples(reports: Sequence[LaunchReport]) -> _Samples:
    rows: list[tuple[datetime, float, float, float, float, float, float, float]] = []
    for r in reports:
        rows.extend(
            (p.time, p.lat, p.lon, p.alt_m, p.sigma_h_m, p.sigma_v_m, 0.0, 1.0) for p in r.points
        )
        rows.extend(
            (e.time, e.lat, e.lon, e.alt_m, e.sigma_h_m, e.sigma_v_m, e.sigma_t_s, 0.0)
            for e in (r.launch, r.impact)
            if e is not None
        )
    rows.sort(key=lambda row: (row[0], *row[1:]))
    t_ref = rows[0][0]
    lat0 = float(np.mean([row[1] for row in rows]))
    lon0 = float(np.mean([row[2] for row in rows]))
    arr = np.array([[(row[0] - t_ref).total_seconds(), *row[1:]] for row in rows], dtype=float)
    x, y = to_local(lat0, lon0, arr[:, 1], arr[:, 2])
    return _Samples(
        t_ref, lat0, lon0, arr[:, 0], x, y, arr[:, 3], arr[:, 4], arr[:, 5], arr[:, 6], arr[:, 7]
    )


class _Fit(msgspec.Struct):
    theta: FloatArray  # x0, vx, y0, vy, z0, vz
    cov: FloatArray  # 6x6
    chi2: float
    dof: int


def _solve_axis(
    t: FloatArray, m: FloatArray, s: FloatArray
) -> tuple[FloatArray, FloatArray, float] | None:
    w = 1.0 / (s * s)
    a = np.stack([np.ones_like(t), t], axis=1)
    n = a.T @ (a * w[:, None])
    if np.linalg.cond(n) > 1e14:
        return None
    cov: FloatArray = np.linalg.inv(n).astype(np.float64)
    theta = cov @ (a.T @ (w * m))
    r = m - a @ theta
    return theta, cov, float(np.sum(w * r * r))


def _fit(s: _Samples) -> _Fit | None:
    if len(np.unique(s.t)) < 2:
        return None
    zc = s.z + 0.5 * G * s.t * s.t
    sh, sv = s.sh.copy(), s.sv.copy()
    out: _Fit | None = None
    for _pass in range(2):
        parts = [_solve_axis(s.t, m, sd) for m, sd in ((s.x, sh), (s.y, sh), (zc, sv))]
        if any(p is None for p in parts):
            return None
        theta = np.zeros(6)
        cov = np.zeros((6, 6))
        chi2 = 0.0
        for i, p in enumerate(parts):
            assert p is not None
            theta[2 * i : 2 * i + 2] = p[0]
            cov[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = p[1]
            chi2 += p[2]
        out = _Fit(theta, cov, chi2, 3 * len(s.t) - 6)
        if not np.any(s.st > 0):
            break
        # An estimate's time error moves it along the arc: add (speed * sigma_t)^2 and refit.
        vx, vy, vz = theta[1], theta[3], theta[5] - G * s.t
        sh = np.sqrt(s.sh**2 + (np.hypot(vx, vy) * s.st) ** 2 / 2)
        sv = np.sqrt(s.sv**2 + (vz * s.st) ** 2)
    if out is not None and out.dof > 0 and out.chi2 / out.dof > 1.0:
        out.cov = out.cov * (out.chi2 / out.dof)
    return out


def _ground_crossing(f: _Fit, descending: bool) -> tuple[FloatArray, FloatArray]:
    """(x, y, tau) where the arc meets altitude 0, and its 3x6 Jacobian."""
    x0, vx, y0, vy, z0, vz = (float(v) for v in f.theta)
    r = math.sqrt(max(vz * vz + 2 * G * z0, 1e-6))
    sign = 1.0 if descending else -1.0
    tau = (vz + sign * r) / G
    dtau = np.zeros(6)
    dtau[4] = sign / r
    dtau[5] = (1.0 + sign * vz / r) / G
    jx = vx * dtau
    jx[0] += 1.0
    jx[1] += tau
    jy = vy * dtau
    jy[2] += 1.0
    jy[3] += tau
    return np.array([x0 + vx * tau, y0 + vy * tau, tau]), np.stack([jx, jy, dtau])


def _chi2_quantile(p: float, k: int) -> float:
    """Chi-square quantile (Wilson-Hilferty; exact for k=2), no scipy needed."""
    if k == 2:
        return -2.0 * math.log(1.0 - p)
    z = {0.95: 1.6449, 0.99: 2.3263, 0.999: 3.0902}[p]
    h = 2.0 / (9.0 * k)
    return k * (1.0 - h + z * math.sqrt(h)) ** 3


def ellipse_from_cov(lat: float, lon: float, cov2: FloatArray, confidence: float) -> Ellipse:
    """The `confidence` ellipse of a 2x2 (east, north) covariance in m^2."""
    vals, vecs = np.linalg.eigh(np.asarray(cov2, dtype=float))
    k = math.sqrt(_chi2_quantile(confidence, 2))
    major = vecs[:, 1]
    orientation = math.degrees(math.atan2(major[0], major[1])) % 180.0
    return Ellipse(
        lat,
        lon,
        k * math.sqrt(max(float(vals[1]), 0.0)),
        k * math.sqrt(max(float(vals[0]), 0.0)),
        orientation,
        confidence,
    )


def _fix(s: _Samples, xyt: FloatArray, cov3: FloatArray) -> PointFix:
    lat, lon = from_local(s.lat0, s.lon0, [xyt[0]], [xyt[1]])
    return PointFix(
        s.t_ref + timedelta(seconds=float(xyt[2])),
        math.sqrt(max(float(cov3[2, 2]), 0.0)),
        ellipse_from_cov(float(lat[0]), float(lon[0]), cov3[:2, :2], CONFIDENCE),
    )


def _combine_estimates(s: _Samples, mask: FloatArray) -> PointFix | None:
    """Inverse-variance mean of reporters' own estimates (used when no arc can be fitted)."""
    idx = np.nonzero(mask)[0]
    if len(idx) == 0:
        return None
    w = 1.0 / s.sh[idx] ** 2
    wt = 1.0 / s.st[idx] ** 2
    var = 1.0 / float(np.sum(w))
    xyt = np.array(
        [
            float(np.sum(w * s.x[idx])) * var,
            float(np.sum(w * s.y[idx])) * var,
            float(np.sum(wt * s.t[idx]) / np.sum(wt)),
        ]
    )
    return _fix(s, xyt, np.diag([var, var, 1.0 / float(np.sum(wt))]))


def event_id_for(reports: Sequence[LaunchReport]) -> str:
    """Event id named after the earliest report (report_time, then key) among those given."""
    first = min(reports, key=lambda r: (r.report_time, r.key))
    return "L" + hashlib.sha256(first.key.encode()).hexdigest()[:16]


def fuse(reports: Sequence[LaunchReport], event_id: str | None = None) -> FusedEvent | None:
    """Fuse reports about ONE launch; None when given none. Pure, deterministic, order-free.

    With enough data (two distinct times) the ballistic arc is fitted and launch and impact
    come from it; otherwise whatever launch/impact estimates the reporters gave are combined.
    """
    rs = _canonical(reports)
    if not rs:
        return None
    s = _samples(rs)
    fit = _fit(s)
    launch: PointFix | None
    impact: PointFix | None
    trajectory: Trajectory | None = None
    chi2: float | None = None
    if fit is None:
        launch = _combine_estimates(s, (s.is_obs == 0) & (s.z <= 1000) & (s.t == s.t.min()))
        impact = _combine_estimates(s, (s.is_obs == 0) & (s.z <= 1000) & (s.t == s.t.max()))
        if launch is not None and impact is not None and launch.time == impact.time:
            launch = None
    else:
        xyt, jac = _ground_crossing(fit, descending=True)
        impact = _fix(s, xyt, jac @ fit.cov @ jac.T)
        xyt, jac = _ground_crossing(fit, descending=False)
        launch = _fix(s, xyt, jac @ fit.cov @ jac.T)
        trajectory = Trajectory(
            s.lat0,
            s.lon0,
            s.t_ref,
            tuple(float(v) for v in fit.theta),
            tuple(float(v) for v in fit.cov.ravel()),
        )
        chi2 = fit.chi2 / fit.dof if fit.dof > 0 else None
    obs_times = [p.time for r in rs for p in r.points]
    return FusedEvent(
        event_id=event_id if event_id is not None else event_id_for(rs),
        report_keys=tuple(r.key for r in rs),
        parties=tuple(sorted({r.party for r in rs})),
        first_seen=min(obs_times),
        last_seen=max(obs_times),
        n_points=len(obs_times),
        launch=launch,
        impact=impact,
        trajectory=trajectory,
        chi2_per_dof=chi2,
    )


# ---------------------------------------------------------------------------------------------
# Correlation


def _window(r: LaunchReport) -> tuple[datetime, datetime]:
    times = [p.time for p in r.points]
    times += [e.time for e in (r.launch, r.impact) if e is not None]
    return min(times), max(times)


def _chi2_dof(reports: Sequence[LaunchReport]) -> tuple[float, int, _Samples]:
    s = _samples(reports)
    f = _fit(s)
    if f is None:
        return 0.0, 0, s
    # Undo the Birge scaling: the gate wants the raw misfit.
    return f.chi2, max(f.dof, 0), s


def consistent(a: Sequence[LaunchReport], b: Sequence[LaunchReport]) -> float | None:
    """Gate score of joining report groups a and b (lower is better), None if they must not."""
    wa = [_window(r) for r in a]
    wb = [_window(r) for r in b]
    a0, a1 = min(w[0] for w in wa), max(w[1] for w in wa)
    b0, b1 = min(w[0] for w in wb), max(w[1] for w in wb)
    gap = max((b0 - a1).total_seconds(), (a0 - b1).total_seconds(), 0.0)
    if gap > TIME_GATE_S:
        return None
    ca, da, sa = _chi2_dof(a)
    cb, db, sb = _chi2_dof(b)
    cu, du, _su = _chi2_dof([*a, *b])
    ddof = du - da - db
    if ddof > 0:
        dchi = max(cu - ca - cb, 0.0)
        limit = _chi2_quantile(CHI2_GATE_P, ddof)
        return dchi / limit if dchi <= limit else None
    # Too little data for the arc test: the nearest samples must be reachable from each other.
    lat, lon = sb.lat0, sb.lon0
    xa, ya = to_local(lat, lon, *from_local(sa.lat0, sa.lon0, sa.x, sa.y))
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
        self._events: dict[str, list[LaunchReport]] = {}
        self._order: dict[str, int] = {}
        self._where: dict[str, str] = {}
        self._seq = 0

    def copy(self) -> Correlator:
        """An independent copy (reports are immutable, so only the containers are copied)."""
        twin = Correlator()
        twin._events = {eid: list(group) for eid, group in self._events.items()}
        twin._order = dict(self._order)
        twin._where = dict(self._where)
        twin._seq = self._seq
        return twin

    def add(self, report: LaunchReport) -> Correlation:
        known = self._where.get(report.key)
        if known is not None:  # a re-sent or updated report keeps its event
            group = self._events[known]
            group[:] = [report if r.key == report.key else r for r in group]
            return Correlation(known)
        scored = []
        for eid, group in self._events.items():
            score = consistent(group, [report])
            if score is not None:
                scored.append((score, self._order[eid], eid))
        scored.sort()
        if not scored:
            eid = event_id_for([report])
            self._events[eid] = [report]
            self._order[eid] = self._seq
            self._seq += 1
            self._where[report.key] = eid
            return Correlation(eid)
        target = scored[0][2]
        self._events[target].append(report)
        merged: list[str] = []
        for _score, _o, other in scored[1:]:
            if consistent(self._events[target], self._events[other]) is not None:
                merged.append(other)
                self._events[target].extend(self._events.pop(other))
        # The surviving id is the oldest of the merged events.
        survivor = min([target, *merged], key=lambda e: self._order[e])
        if survivor != target:
            self._events[survivor] = self._events.pop(target)
            merged = [target if m == survivor else m for m in merged]
        for r in self._events[survivor]:
            self._where[r.key] = survivor
        for m in merged:
            self._order.pop(m, None)
        return Correlation(survivor, tuple(sorted(merged)))

    def events(self) -> Mapping[str, tuple[LaunchReport, ...]]:
        return {eid: tuple(g) for eid, g in self._events.items()}

    def fused(self) -> dict[str, FusedEvent]:
        out: dict[str, FusedEvent] = {}
        for eid, group in self._events.items():
            f = fuse(group, event_id=eid)
            if f is not None:
                out[eid] = f
        return out

    def expire(self, now: datetime, after: timedelta = timedelta(hours=1)) -> list[str]:
        """Forget events whose newest observation is older than `after`; returns their ids."""
        gone = [e for e, g in self._events.items() if max(_window(r)[1] for r in g) < now - after]
        for e in gone:
            for r in self._events.pop(e):
                self._where.pop(r.key, None)
            self._order.pop(e, None)
        return gone


def correlate(reports: Iterable[LaunchReport]) -> list[tuple[str, tuple[LaunchReport, ...]]]:
    """Order-free grouping: feed the reports sorted by (report_time, key) to a fresh Correlator."""
    c = Correlator()
    for r in sorted(_canonical(reports), key=lambda r: (r.report_time, r.key)):
        c.add(r)
    return sorted(c.events().items())
