"""Sliding-window bundle adjustment of the odometry's last keyframes and the map points they share
(SciPy ``least_squares``, sparse analytic Jacobian, Huber loss)."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def adjust_window(kfs: list, X: np.ndarray, K: np.ndarray, scale_ref: float, max_nfev: int,
                  outlier_px: float) -> bool:
    """Sliding-window bundle adjustment over the last keyframes and the map points they share.

    Gauge: the oldest keyframe of the window is fixed, and the distance between it and the next
    one is held by a stiff prior (monocular scale). Fixing the second keyframe outright would
    freeze the error of the two-view initialisation into the whole clip; when the two centres
    nearly coincide (rotation only), both are fixed instead.

    ``kfs``: the window's keyframes (``.R``, ``.t``, ``.ids``, ``.uv``), oldest first; their poses and the
    map points ``X`` (indexed by track id) are refined in place, and points whose residual stays above
    ``outlier_px`` or that went behind a camera are set to NaN. ``scale_ref``: the map's median scene
    depth. Returns whether the window was adjusted (False: too few keyframes or shared points).
    """
    from scipy.optimize import least_squares
    from scipy.sparse import coo_matrix

    if len(kfs) < 2:
        return False
    c_first = -kfs[0].R.T @ kfs[0].t
    d0 = float(np.linalg.norm(kfs[1].R @ c_first + kfs[1].t))
    n_fix = 1 if d0 > 0.01 * scale_ref else 2
    if len(kfs) <= n_fix:
        return False
    all_ids = np.concatenate([k.ids for k in kfs])
    u, cnt = np.unique(all_ids, return_counts=True)
    pid = u[(cnt >= 2) & np.isfinite(X[u, 0])]
    if len(pid) < 10:
        return False
    cams, pts, uvs = [], [], []
    for ci, k in enumerate(kfs):
        common, a, b = np.intersect1d(k.ids, pid, assume_unique=True, return_indices=True)
        cams.append(np.full(len(common), ci))
        pts.append(b)
        uvs.append(k.uv[a])
    cam = np.concatenate(cams)
    pt = np.concatenate(pts)
    uv = np.concatenate(uvs).astype(np.float64)
    nfree = len(kfs) - n_fix
    R0 = np.stack([k.R for k in kfs])
    t0s = np.stack([k.t for k in kfs])
    # free poses are parametrised as R = exp(d) R0 (left perturbation), t; the Jacobian is analytic
    x0 = np.concatenate([np.concatenate([np.zeros(3), k.t]) for k in kfs[n_fix:]] + [X[pid].ravel()])
    fx, fy = K[0, 0], K[1, 1]
    m = len(cam)
    free = cam >= n_fix

    def unpack(x):
        Rs, ts = R0.copy(), t0s.copy()
        cp = x[: 6 * nfree].reshape(nfree, 6)
        Rs[n_fix:] = Rotation.from_rotvec(cp[:, :3]).as_matrix() @ R0[n_fix:]
        ts[n_fix:] = cp[:, 3:]
        return Rs, ts, x[6 * nfree:].reshape(-1, 3), cp[:, :3]

    prior = n_fix == 1  # the scale prior residual (last row) on the distance kfs[0] - kfs[1]
    w_scale = 1000.0 / d0 if prior else 0.0  # 0.1 % change in that distance costs 1 px

    def fun(x):
        Rs, ts, P, _ = unpack(x)
        Xc = (Rs[cam] @ P[pt][:, :, None])[:, :, 0] + ts[cam]
        z = np.maximum(Xc[:, 2], 1e-6)
        r = np.empty((m, 2))
        r[:, 0] = Xc[:, 0] / z * fx + K[0, 2] - uv[:, 0]
        r[:, 1] = Xc[:, 1] / z * fy + K[1, 2] - uv[:, 1]
        if not prior:
            return r.ravel()
        t_rel = Rs[1] @ c_first + ts[1]
        return np.append(r.ravel(), w_scale * (np.linalg.norm(t_rel) - d0))

    # sparsity pattern: each observation's 2 rows touch its camera's 6 columns (if free) and its
    # point's 3 columns; values are filled in the same order by jac()
    obs = np.arange(m)
    ofree = obs[free]
    r_cam = np.repeat(np.stack([2 * ofree, 2 * ofree + 1], 1), 6, axis=1).ravel()
    c_cam = np.tile(6 * (cam[free] - n_fix), (12, 1)).T + np.tile(np.arange(6), 2)
    r_pt = np.repeat(np.stack([2 * obs, 2 * obs + 1], 1), 3, axis=1).ravel()
    c_pt = (6 * nfree + 3 * pt)[:, None] + np.tile(np.arange(3), 2)[None]
    rows = np.concatenate([r_cam, r_pt] + ([np.full(6, 2 * m)] if prior else []))
    cols = np.concatenate([c_cam.ravel(), c_pt.ravel()] + ([np.arange(6)] if prior else []))
    shape = (2 * m + int(prior), len(x0))

    def jac(x):
        Rs, ts, P, d = unpack(x)
        Y = (Rs[cam] @ P[pt][:, :, None])[:, :, 0]
        Xc = Y + ts[cam]
        z = np.maximum(Xc[:, 2], 1e-6)
        J = np.zeros((m, 2, 3))  # d residual / d Xc
        J[:, 0, 0] = fx / z
        J[:, 0, 2] = -fx * Xc[:, 0] / z ** 2
        J[:, 1, 1] = fy / z
        J[:, 1, 2] = -fy * Xc[:, 1] / z ** 2
        Jp = J @ Rs[cam]  # d / d point
        vals = [Jp.reshape(m, 6)]
        th = np.linalg.norm(d, axis=1)
        Jl = np.tile(np.eye(3), (nfree, 1, 1))  # left Jacobian of SO(3) at each free pose's d
        nz = th > 1e-9
        if nz.any():
            W = np.zeros((nfree, 3, 3))
            dd = d[nz]
            W[nz] = np.array([[np.zeros(len(dd)), -dd[:, 2], dd[:, 1]], [dd[:, 2], np.zeros(len(dd)), -dd[:, 0]],
                              [-dd[:, 1], dd[:, 0], np.zeros(len(dd))]]).transpose(2, 0, 1)
            a = ((1 - np.cos(th[nz])) / th[nz] ** 2)[:, None, None]
            b = ((th[nz] - np.sin(th[nz])) / th[nz] ** 3)[:, None, None]
            Jl[nz] = np.eye(3) + a * W[nz] + b * (W[nz] @ W[nz])
        if len(ofree):
            Yf = Y[free]
            skew = np.zeros((len(Yf), 3, 3))
            skew[:, 0, 1], skew[:, 0, 2] = -Yf[:, 2], Yf[:, 1]
            skew[:, 1, 0], skew[:, 1, 2] = Yf[:, 2], -Yf[:, 0]
            skew[:, 2, 0], skew[:, 2, 1] = -Yf[:, 1], Yf[:, 0]
            Jrot = -(J[free] @ skew) @ Jl[cam[free] - n_fix]
            Jcam = np.concatenate([Jrot, J[free]], axis=2)  # (k, 2, 6)
            vals.insert(0, Jcam.reshape(-1, 12))
        if prior:
            y = Rs[1] @ c_first
            t_rel = y + ts[1]
            u_ = t_rel / max(np.linalg.norm(t_rel), 1e-12)
            sk = np.array([[0, -y[2], y[1]], [y[2], 0, -y[0]], [-y[1], y[0], 0]])
            vals.append(w_scale * np.concatenate([u_ @ (-sk) @ Jl[0], u_]))
        v = np.concatenate([a.ravel() for a in vals])
        return coo_matrix((v, (rows, cols)), shape=shape).tocsr()

    sol = least_squares(fun, x0, jac=jac, method="trf", loss="huber", f_scale=1.0,
                        x_scale="jac", max_nfev=max_nfev, xtol=1e-5, ftol=1e-5,
                        tr_solver="lsmr")
    Rs, ts, P, _ = unpack(sol.x)
    for k, R, t in zip(kfs[n_fix:], Rs[n_fix:], ts[n_fix:]):
        k.R, k.t = R, t
    X[pid] = P
    # points that still do not fit, or went behind a camera, leave the map
    res = np.hypot(*sol.fun[: 2 * m].reshape(-1, 2).T)
    z = np.einsum("nij,nj->ni", Rs[cam], P[pt])[:, 2] + ts[cam, 2]
    bad = np.zeros(len(pid), bool)
    np.logical_or.at(bad, pt, (res > outlier_px) | (z <= 0))
    X[pid[bad]] = np.nan
    return True
