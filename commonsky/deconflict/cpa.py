# Rule: state-based conflict screening of many tracks, vectorised, with a broad phase that can
# only ever ADD candidate pairs (never lose one) before the exact per-pair test.
#
# Model. Each track moves in a straight line from its current state: ground speed `gs_mps`
# along true track `trk_deg` in the horizontal plane of its own position, and `vs_mps`
# vertically. Positions are taken on the WGS-84 ellipsoid surface in ECEF (earth-centred,
# earth-fixed) coordinates, with the horizontal velocity turned into an ECEF vector through the
# track's own east/north axes. ECEF is chosen because it has no seam: the antimeridian and the
# poles are ordinary points, and no latitude/longitude is ever treated as a plane.
#
# Exact test, per pair (i, j), in the pair's own local tangent frame: the "up" axis is the
# mean of the two ellipsoid normals; the relative ECEF position and velocity are projected onto
# the horizontal plane of that axis to give H(t) = H0 + Hv t. Horizontal distance is |H(t)|
# (for the distances that matter here the chord differs from the geodesic by under a
# millimetre). Vertical separation is the altitude difference dz(t) = dz0 + dvz t, taken from
# the altitudes directly so that the earth's curvature never leaks into it.
#
# A track whose altitude is unknown carries NaN: its vertical interval is all time (it is
# screened horizontally alone), and whoever reports the conflict says "altitude unknown".
#
# Conflict (as BlueSky's state-based detector): horizontal separation is lost on the open
# interval where |H(t)| < rpz and vertical separation on the open interval where
# |dz(t)| < hpz; the pair conflicts when these two intervals and [0, lookahead] share a time.
# Both tests are strict: a pair exactly at rpz apart, or exactly hpz apart vertically with no
# relative vertical speed, is NOT in conflict. `t_in_s`/`t_out_s` bound the shared interval
# (clamped to the horizon). `tcpa_s` is the time of the horizontal closest point of approach
# clamped to [0, lookahead] and `dcpa_m` the horizontal distance then; with no relative
# horizontal motion tcpa is 0.
#
# Broad phase. Tracks are grouped by the face of a cube around the earth their position falls
# on (with an overlap band wide enough for any pair that could conflict); each group is
# projected orthographically onto its face plane. Orthographic projection never lengthens a
# vector, so two tracks closer than d in 3-D are closer than d on the plane. The horizon is
# cut into time slices; in each slice every track's swept box (plane x/y, altitude) is
# inflated by half the separation (plus a bound on how far the curvature can lift the 3-D
# relative vector out of the pair's horizontal plane) and registered in a grid of plane
# cells; within a cell, boxes are swept by altitude. Pairs whose boxes overlap are candidates;
# only they get the exact test. `screen_all_pairs` skips the broad phase (the baseline).

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

RPZ_M = 9260.0  # 5 NM
HPZ_M = 304.8  # 1000 ft
LOOKAHEAD_S = 300.0

WGS84_A = 6378137.0
WGS84_F = 1 / 298.257223563
WGS84_E2 = WGS84_F * (2 - WGS84_F)
# Smallest radius of curvature of the ellipsoid (meridional, at the equator): the fastest the
# normal can turn per metre travelled.
MIN_CURVATURE_RADIUS_M = WGS84_A * (1 - WGS84_E2)


class Kinematics(NamedTuple):
    """Tracks as ECEF vectors, ready for the exact test. Arrays of shape (n,) or (n, 3)."""

    pos: FloatArray  # surface point, ECEF metres
    vel: FloatArray  # horizontal velocity, ECEF m/s
    up: FloatArray  # ellipsoid normal (unit)
    alt_m: FloatArray
    vs_mps: FloatArray


class PairResult(NamedTuple):
    """Conflicting pairs: indices into the input arrays (i < j) and their figures."""

    i: IntArray
    j: IntArray
    tcpa_s: FloatArray
    dcpa_m: FloatArray
    t_in_s: FloatArray
    t_out_s: FloatArray


def kinematics(
    lat: npt.ArrayLike,
    lon: npt.ArrayLike,
    alt_m: npt.ArrayLike,
    gs_mps: npt.ArrayLike,
    trk_deg: npt.ArrayLike,
    vs_mps: npt.ArrayLike,
) -> Kinematics:
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    lam = np.radians(np.asarray(lon, dtype=np.float64))
    trk = np.radians(np.asarray(trk_deg, dtype=np.float64))
    gs = np.asarray(gs_mps, dtype=np.float64)
    sp, cp, sl, cl = np.sin(phi), np.cos(phi), np.sin(lam), np.cos(lam)
    n_rad = WGS84_A / np.sqrt(1 - WGS84_E2 * sp * sp)
    pos = np.stack([n_rad * cp * cl, n_rad * cp * sl, n_rad * (1 - WGS84_E2) * sp], axis=-1)
    up = np.stack([cp * cl, cp * sl, sp], axis=-1)
    east = np.stack([-sl, cl, np.zeros_like(sl)], axis=-1)
    north = np.stack([-sp * cl, -sp * sl, cp], axis=-1)
    ve, vn = gs * np.sin(trk), gs * np.cos(trk)
    vel = ve[:, None] * east + vn[:, None] * north
    return Kinematics(
        pos=pos,
        vel=vel,
        up=up,
        alt_m=np.asarray(alt_m, dtype=np.float64).copy(),
        vs_mps=np.asarray(vs_mps, dtype=np.float64).copy(),
    )


def exact_pairs(
    k: Kinematics,
    i: IntArray,
    j: IntArray,
    rpz_m: float | FloatArray = RPZ_M,
    hpz_m: float | FloatArray = HPZ_M,
    lookahead_s: float = LOOKAHEAD_S,
) -> tuple[npt.NDArray[np.bool_], FloatArray, FloatArray, FloatArray, FloatArray]:
    """Exact state-based test of the given pairs (minima may be per pair).

    Returns (conflict, tcpa_s, dcpa_m, t_in_s, t_out_s) for every pair given; t_in/t_out are
    only meaningful where conflict is True.
    """
    up = k.up[i] + k.up[j]
    up /= np.linalg.norm(up, axis=1)[:, None]
    d0 = k.pos[j] - k.pos[i]
    dv = k.vel[j] - k.vel[i]
    h0 = d0 - np.einsum("ij,ij->i", d0, up)[:, None] * up
    hv = dv - np.einsum("ij,ij->i", dv, up)[:, None] * up
    a = np.einsum("ij,ij->i", hv, hv)
    b_half = np.einsum("ij,ij->i", h0, hv)
    c0 = np.einsum("ij,ij->i", h0, h0)
    r2 = np.asarray(rpz_m, dtype=np.float64) ** 2
    moving = a > 1e-12
    safe_a = np.where(moving, a, 1.0)
    tcpa = np.where(moving, np.clip(-b_half / safe_a, 0.0, lookahead_s), 0.0)
    dcpa2 = c0 + 2 * b_half * tcpa + a * tcpa * tcpa
    dcpa = np.sqrt(np.maximum(dcpa2, 0.0))

    # Horizontal loss interval: a t^2 + 2 b t + (c - r^2) < 0.
    disc = b_half * b_half - a * (c0 - r2)
    root = np.sqrt(np.maximum(disc, 0.0))
    h_in = np.where(moving, (-b_half - root) / safe_a, np.where(c0 < r2, -np.inf, np.inf))
    h_out = np.where(moving, (-b_half + root) / safe_a, np.where(c0 < r2, np.inf, -np.inf))
    h_empty = moving & (disc <= 0.0)
    # Vertical loss interval: |dz0 + dvz t| < h.
    hpz = np.asarray(hpz_m, dtype=np.float64)
    dz0 = k.alt_m[j] - k.alt_m[i]
    dvz = k.vs_mps[j] - k.vs_mps[i]
    climbing = dvz != 0.0
    safe_dvz = np.where(climbing, dvz, 1.0)
    ta = (-hpz - dz0) / safe_dvz
    tb = (hpz - dz0) / safe_dvz
    level_in = np.abs(dz0) < hpz
    v_in = np.where(climbing, np.minimum(ta, tb), np.where(level_in, -np.inf, np.inf))
    v_out = np.where(climbing, np.maximum(ta, tb), np.where(level_in, np.inf, -np.inf))
    # A track of unknown altitude (NaN) may be at any height: vertical separation cannot be
    # shown, so the pair is screened horizontally alone (never as if it flew at 0 m).
    unknown = np.isnan(dz0) | np.isnan(dvz)
    v_in = np.where(unknown, -np.inf, v_in)
    v_out = np.where(unknown, np.inf, v_out)

    lo = np.maximum(h_in, v_in)
    hi = np.minimum(h_out, v_out)
    conflict = ~h_empty & (lo < hi) & (lo < lookahead_s) & (hi > 0.0)
    t_in = np.clip(lo, 0.0, lookahead_s)
    t_out = np.clip(hi, 0.0, lookahead_s)
    return conflict, tcpa, dcpa, t_in, t_out


def _select(
    k: Kinematics,
    i: IntArray,
    j: IntArray,
    rpz_m: float,
    hpz_m: float,
    lookahead_s: float,
) -> PairResult:
    conflict, tcpa, dcpa, t_in, t_out = exact_pairs(k, i, j, rpz_m, hpz_m, lookahead_s)
    return PairResult(
        i[conflict], j[conflict], tcpa[conflict], dcpa[conflict], t_in[conflict], t_out[conflict]
    )


def screen_all_pairs(
    k: Kinematics,
    rpz_m: float = RPZ_M,
    hpz_m: float = HPZ_M,
    lookahead_s: float = LOOKAHEAD_S,
) -> PairResult:
    """The naive baseline: the exact test on all n(n-1)/2 pairs."""
    n = len(k.alt_m)
    i, j = np.triu_indices(n, k=1)
    return _select(k, i.astype(np.int64), j.astype(np.int64), rpz_m, hpz_m, lookahead_s)


def _curvature_margin(k: Kinematics, rpz_m: float, lookahead_s: float) -> float:
    """Half-width to inflate broad-phase boxes by so that no conflicting pair is missed.

    The exact test measures the relative ECEF vector D(t) projected onto the pair's
    horizontal plane; the broad phase measures D(t) itself. For a pair that conflicts,
    |D(t)|^2 = |H(t)|^2 + V(t)^2 < rpz^2 + V^2, where V, the component along the mean
    normal, comes from each velocity being horizontal at its own position rather than at the
    midpoint: |V| <= |dv| * T * sin(angle between the normals), and the angle is at most
    d0 / (2 R_min) with d0 <= rpz + |dv| T. 50 m covers the (tiny) chord tilt on the ellipsoid.
    """
    speed = np.linalg.norm(k.vel, axis=1)
    vmax2 = 2.0 * float(speed.max()) if len(speed) else 0.0
    d0 = 1.01 * (rpz_m + vmax2 * lookahead_s) + 1000.0
    v_bound = vmax2 * lookahead_s * min(1.0, d0 / (2.0 * MIN_CURVATURE_RADIUS_M)) + 50.0
    return 0.5 * math.sqrt(rpz_m * rpz_m + v_bound * v_bound) + 1.0


_FACES = np.array(
    [
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        [[-1, 0, 0], [0, 1, 0], [0, 0, 1]],
        [[0, 1, 0], [1, 0, 0], [0, 0, 1]],
        [[0, -1, 0], [1, 0, 0], [0, 0, 1]],
        [[0, 0, 1], [1, 0, 0], [0, 1, 0]],
        [[0, 0, -1], [1, 0, 0], [0, 1, 0]],
    ],
    dtype=np.float64,
)  # per face: axis, then the two in-plane axes


def _face_members(k: Kinematics, reach_m: float) -> list[tuple[IntArray, FloatArray]]:
    """Tracks on each cube face, widened so that any pair within reach shares a face.

    When every track lies within 60 degrees of their mean direction (any regional picture),
    one plane square to that direction serves them all. Otherwise: a point's gnomonic
    coordinates on a face move by at most sec^2(54.8 deg) = 3 per radian
    of travel inside the face; 4x the reach angle (plus 0.01) is a safe overlap band.
    """
    centre = k.up.sum(axis=0)
    norm = float(np.linalg.norm(centre))
    if norm > 0 and float((k.up @ (centre / norm)).min()) >= 0.5:
        axis = centre / norm
        helper = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        e1 = np.cross(axis, helper)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(axis, e1)
        return [(np.arange(len(k.alt_m), dtype=np.int64), np.stack([axis, e1, e2]))]
    eps = 4.0 * reach_m / MIN_CURVATURE_RADIUS_M + 0.01
    out: list[tuple[IntArray, FloatArray]] = []
    for face in _FACES:
        ax = k.up @ face[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = (ax > 0.05) & (np.abs(k.up @ face[1]) <= (1 + eps) * ax)
            ok &= np.abs(k.up @ face[2]) <= (1 + eps) * ax
        idx = np.flatnonzero(ok).astype(np.int64)
        if len(idx) > 1:
            out.append((idx, face))
    return out


def _slice_candidates(
    x0: FloatArray,
    y0: FloatArray,
    x1: FloatArray,
    y1: FloatArray,
    z0: FloatArray,
    z1: FloatArray,
    half_xy: float,
    half_z: float,
    cell: float,
) -> tuple[IntArray, IntArray]:
    """Local index pairs (a, b) whose swept boxes overlap in one time slice."""
    xmin = np.minimum(x0, x1) - half_xy
    xmax = np.maximum(x0, x1) + half_xy
    ymin = np.minimum(y0, y1) - half_xy
    ymax = np.maximum(y0, y1) + half_xy
    zmin = np.minimum(z0, z1) - half_z
    zmax = np.maximum(z0, z1) + half_z
    ix0 = np.floor(xmin / cell).astype(np.int64)
    ix1 = np.floor(xmax / cell).astype(np.int64)
    iy0 = np.floor(ymin / cell).astype(np.int64)
    iy1 = np.floor(ymax / cell).astype(np.int64)
    nx = ix1 - ix0 + 1
    ny = iy1 - iy0 + 1
    per = nx * ny
    track = np.repeat(np.arange(len(x0), dtype=np.int64), per)
    start = np.repeat(np.cumsum(per) - per, per)
    off = np.arange(len(track), dtype=np.int64) - start
    nyt = ny[track]
    cx = ix0[track] + off // nyt
    cy = iy0[track] + off % nyt
    cx_lo, cy_lo = int(cx.min()), int(cy.min())
    cy_span = int(cy.max()) - cy_lo + 1
    key = (cx - cx_lo) * cy_span + (cy - cy_lo)
    zbase = float(zmin.min())
    zspan = float(zmax.max()) - zbase + 1.0
    combo = key.astype(np.float64) * zspan + (zmin[track] - zbase)
    order = np.argsort(combo, kind="stable")
    combo = combo[order]
    track = track[order]
    key = key[order]
    upper = np.searchsorted(combo, key * zspan + (zmax[track] - zbase), side="right")
    pos = np.arange(len(track), dtype=np.int64)
    counts = np.maximum(upper - pos - 1, 0)
    total = int(counts.sum())
    if total == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    first = np.repeat(pos, counts)
    second = (
        first + 1 + np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    )
    a = track[first]
    b = track[second]
    ok = (xmin[a] <= xmax[b]) & (xmin[b] <= xmax[a]) & (ymin[a] <= ymax[b]) & (ymin[b] <= ymax[a])
    a, b, first = a[ok], b[ok], first[ok]
    # Report each pair once: in the cell holding the low corner of the boxes' intersection.
    lx = np.floor(np.maximum(xmin[a], xmin[b]) / cell).astype(np.int64)
    ly = np.floor(np.maximum(ymin[a], ymin[b]) / cell).astype(np.int64)
    own = (lx - cx_lo) * cy_span + (ly - cy_lo) == key[first]
    return a[own], b[own]


def screen(
    k: Kinematics,
    rpz_m: float = RPZ_M,
    hpz_m: float = HPZ_M,
    lookahead_s: float = LOOKAHEAD_S,
    slices: int | None = None,
) -> PairResult:
    """All conflicting pairs among the tracks, through the broad phase then the exact test."""
    n = len(k.alt_m)
    if n < 2:
        e = np.empty(0, dtype=np.int64)
        f = np.empty(0, dtype=np.float64)
        return PairResult(e, e, f, f, f, f)
    half_xy = _curvature_margin(k, rpz_m, lookahead_s)
    half_z = 0.5 * hpz_m + 1e-6 * (1.0 + float(np.abs(k.alt_m).max()))
    speed_max = float(np.linalg.norm(k.vel, axis=1).max())
    if slices is None:
        # Balance box size against the number of slices (fewer, fatter boxes vs more of them).
        slices = int(np.clip(round(speed_max * lookahead_s / (3.0 * half_xy)), 1, 12))
    reach = 2.0 * half_xy + 2.0 * speed_max * lookahead_s
    tau = lookahead_s / slices
    cell = max(2.0 * half_xy + speed_max * tau * 0.75, 1.0)
    keys: list[IntArray] = []
    for idx, face in _face_members(k, reach):
        px = k.pos[idx] @ face[1]
        py = k.pos[idx] @ face[2]
        vx = k.vel[idx] @ face[1]
        vy = k.vel[idx] @ face[2]
        alt = k.alt_m[idx]
        vs = k.vs_mps[idx]
        for s in range(slices):
            t0, t1 = s * tau, (s + 1) * tau
            a, b = _slice_candidates(
                px + vx * t0,
                py + vy * t0,
                px + vx * t1,
                py + vy * t1,
                alt + vs * t0,
                alt + vs * t1,
                half_xy,
                half_z,
                cell,
            )
            ga, gb = idx[a], idx[b]
            keys.append(np.minimum(ga, gb) * n + np.maximum(ga, gb))
    if not keys:
        e = np.empty(0, dtype=np.int64)
        f = np.empty(0, dtype=np.float64)
        return PairResult(e, e, f, f, f, f)
    allk = np.sort(np.concatenate(keys))
    uniq = allk[np.concatenate((allk[:1] >= 0, allk[1:] != allk[:-1]))]
    return _select(k, uniq // n, uniq % n, rpz_m, hpz_m, lookahead_s)
