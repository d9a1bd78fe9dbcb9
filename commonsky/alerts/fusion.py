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

import functools
import hashlib
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import msgspec
import numpy as np
from shapely.geometry import Polygon

from commonsky.alerts.report import LaunchReport
from commonsky.geo import FRAME_GRID_DEG, FloatArray, ellipse_polygon, from_local, to_local

G = 9.80665
CONFIDENCE = 0.95


_cached_ellipse_polygon = functools.lru_cache(maxsize=256)(ellipse_polygon)


class Ellipse(msgspec.Struct, frozen=True):
    """Confidence ellipse on the ground: centre, semi-axes (m), major-axis azimuth (deg from N)."""

    lat: float
    lon: float
    semi_major_m: float
    semi_minor_m: float
    orientation_deg: float
    confidence: float

    def polygon(self, n: int = 48) -> Polygon:
        # The same estimate is drawn for the CoT body and assessed by every issuing party.
        return _cached_ellipse_polygon(
            self.lon, self.lat, self.semi_major_m, self.semi_minor_m, self.orientation_deg, n
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
        lon, lat = from_local(self.origin_lon, self.origin_lat, [x0 + vx * s], [y0 + vy * s])
        return float(lat[0]), float(lon[0]), z0 + vz * s - 0.5 * G * s * s

    def _horizontal_sigmas_m(self, s: FloatArray) -> FloatArray:
        """Largest 1-sigma horizontal position error at each of `s` seconds from t_ref."""
        c = np.asarray(self.cov).reshape(6, 6)
        vx = c[0, 0] + 2 * s * c[0, 1] + s * s * c[1, 1]
        vy = c[2, 2] + 2 * s * c[2, 3] + s * s * c[3, 3]
        out: FloatArray = np.sqrt(np.maximum(np.maximum(vx, vy), 0.0))
        return out

    def ground_track(
        self, t0: datetime, t1: datetime, step_s: float = 20.0
    ) -> list[tuple[datetime, float, float, float]]:
        """(time, lat, lon, horizontal 1-sigma m) every `step_s` from t0 to t1 inclusive."""
        total = max(0.0, (t1 - t0).total_seconds())
        n = max(2, math.ceil(total / step_s) + 1)
        offsets = np.linspace(0.0, total, n)
        x0, vx, y0, vy, _z0, _vz = self.state
        ss = self._t(t0) + offsets
        lons, lats = from_local(self.origin_lon, self.origin_lat, x0 + vx * ss, y0 + vy * ss)
        return [
            (t0 + timedelta(seconds=dt), la, lo, sig)
            for dt, la, lo, sig in zip(
                offsets.tolist(),
                lats.tolist(),
                lons.tolist(),
                self._horizontal_sigmas_m(ss).tolist(),
                strict=True,
            )
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


class Samples(msgspec.Struct):
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


def canonical(reports: Iterable[LaunchReport]) -> list[LaunchReport]:
    """De-duplicate by key (latest report_time, then bytes, wins) and sort: order-independence."""
    best: dict[str, tuple[datetime, bytes, LaunchReport]] = {}
    for r in reports:
        cand = (r.report_time, msgspec.json.encode(r), r)
        cur = best.get(r.key)
        if cur is None or cand[:2] > cur[:2]:
            best[r.key] = cand
    return [best[k][2] for k in sorted(best)]


def frame_centre(lats: FloatArray, lons: FloatArray) -> tuple[float, float]:
    """The local frame's origin for these samples: their mean snapped to geo.FRAME_GRID_DEG
    (so the frame of a launch rarely moves as reports arrive, and the correlator keeps every
    report's projection: a geodesic inverse per sample is the costliest step of a fusion)."""
    lat = round(float(lats.mean()) / FRAME_GRID_DEG) * FRAME_GRID_DEG
    lon = round(float(lons.mean()) / FRAME_GRID_DEG) * FRAME_GRID_DEG
    return lat, lon


def samples_of(reports: Sequence[LaunchReport]) -> Samples:
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
    lat0, lon0 = frame_centre(
        np.array([row[1] for row in rows]), np.array([row[2] for row in rows])
    )
    arr = np.array([[(row[0] - t_ref).total_seconds(), *row[1:]] for row in rows], dtype=float)
    x, y = to_local(lon0, lat0, arr[:, 2], arr[:, 1])
    return Samples(
        t_ref, lat0, lon0, arr[:, 0], x, y, arr[:, 3], arr[:, 4], arr[:, 5], arr[:, 6], arr[:, 7]
    )


class _Fit(msgspec.Struct):
    theta: FloatArray  # x0, vx, y0, vy, z0, vz
    cov: FloatArray  # 6x6
    chi2: float
    dof: int


#: The fit refuses an axis whose 2x2 normal matrix is worse conditioned than this.
MAX_CONDITION = 1e14


def _solve_axes(t: FloatArray, m: FloatArray, sd: FloatArray) -> _Fit | None:
    """Weighted least squares of each row of `m` (x, y, z + g t^2/2) on (1, t), weights
    1/sd^2: the three 2-parameter regressions solved in closed form at once (a 2x2 normal
    matrix per axis: no general solver is worth its set-up cost at this size)."""
    w = sd**-2
    wt = w * t
    s0, s1, s2 = w.sum(axis=1), wt.sum(axis=1), (wt * t).sum(axis=1)
    half, spread = (s0 + s2) / 2, np.hypot((s0 - s2) / 2, s1)
    low = half - spread
    if np.any(low <= 0) or np.any((half + spread) / low > MAX_CONDITION):
        return None
    det = s0 * s2 - s1 * s1
    b0, b1 = (w * m).sum(axis=1), (wt * m).sum(axis=1)
    a, b = (s2 * b0 - s1 * b1) / det, (s0 * b1 - s1 * b0) / det
    r = m - a[:, None] - b[:, None] * t
    cov = np.zeros((6, 6))
    for i in range(3):
        cov[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = [[s2[i], -s1[i]], [-s1[i], s0[i]]]
        cov[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] /= det[i]
    theta = np.column_stack([a, b]).ravel()
    return _Fit(theta, cov, float((w * r * r).sum()), 3 * len(t) - 6)


def _fit(s: Samples) -> _Fit | None:
    if len(np.unique(s.t)) < 2:
        return None
    m = np.stack([s.x, s.y, s.z + 0.5 * G * s.t * s.t])
    sh, sv = s.sh, s.sv
    out: _Fit | None = None
    for _pass in range(2):
        out = _solve_axes(s.t, m, np.stack([sh, sh, sv]))
        if out is None:
            return None
        if not np.any(s.st > 0):
            break
        # An estimate's time error moves it along the arc: add (speed * sigma_t)^2 and refit.
        theta = out.theta
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


def chi2_quantile(p: float, k: int) -> float:
    """Chi-square quantile (Wilson-Hilferty; exact for k=2), no scipy needed."""
    if k == 2:
        return -2.0 * math.log(1.0 - p)
    z = {0.95: 1.6449, 0.99: 2.3263, 0.999: 3.0902}[p]
    h = 2.0 / (9.0 * k)
    return k * (1.0 - h + z * math.sqrt(h)) ** 3


def ellipse_from_cov(lat: float, lon: float, cov2: FloatArray, confidence: float) -> Ellipse:
    """The `confidence` ellipse of a 2x2 (east, north) covariance in m^2."""
    vals, vecs = np.linalg.eigh(np.asarray(cov2, dtype=float))
    k = math.sqrt(chi2_quantile(confidence, 2))
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


def _fix(s: Samples, xyt: FloatArray, cov3: FloatArray) -> PointFix:
    lon, lat = from_local(s.lon0, s.lat0, [xyt[0]], [xyt[1]])
    return PointFix(
        s.t_ref + timedelta(seconds=float(xyt[2])),
        math.sqrt(max(float(cov3[2, 2]), 0.0)),
        ellipse_from_cov(float(lat[0]), float(lon[0]), cov3[:2, :2], CONFIDENCE),
    )


def _combine_estimates(s: Samples, mask: FloatArray) -> PointFix | None:
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
    rs = canonical(reports)
    if not rs:
        return None
    return fuse_samples(rs, samples_of(rs), event_id)


def fuse_samples(rs: Sequence[LaunchReport], s: Samples, event_id: str | None = None) -> FusedEvent:
    """`fuse` of canonical reports `rs` whose samples `s` are already laid out (the
    correlator keeps each report's samples as an array and hands them over)."""
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
