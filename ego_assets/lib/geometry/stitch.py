"""Stitching per-clip trajectories into one world frame, and the metric scale cues.

Clips overlap (2 s by default), so consecutive clips have frames posed in both. The new clip is mapped
into the world by a similarity transform fitted on those frames: the rotation by averaging the
relative rotations (a proper mean on SO(3), not an average of matrices), then scale and translation
in closed form (Umeyama's, with the rotation fixed) on the camera centres. When the overlap hardly
moves (a head turning in place), the centres cannot carry the scale; the ratio of the scene depths both
clips measured on the same frames does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from scipy.spatial.transform import Rotation

from ego_assets.lib.arrow import vectors
from ego_assets.lib.geometry.pose_inputs import PoseInputError


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (s, R, t) with dst ~ s R src + t (Umeyama 1991). src, dst: (N, 3)."""
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 3:
        raise ValueError(f"umeyama: need two (N>=3, 3) point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    var_s = (xs ** 2).sum() / len(src)
    s = float(np.trace(np.diag(D) @ S) / var_s) if with_scale and var_s > 0 else 1.0
    t = mu_d - s * R @ mu_s
    return s, R, t


def rotation_mean(Rs: np.ndarray) -> np.ndarray:
    """Chordal L2 mean of rotation matrices (scipy's quaternion-based Rotation.mean)."""
    return Rotation.from_matrix(np.asarray(Rs)).mean().as_matrix()


@dataclass
class Sim3:
    s: float
    R: np.ndarray
    t: np.ndarray

    def apply_poses(self, R_wc: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.einsum("ij,njk->nik", self.R, R_wc), self.s * c @ self.R.T + self.t


MIN_SPREAD_OF_DEPTH = 0.05  # centres spread over < 5 % of the scene depth carry no usable scale


def matched_depth_ratio(samples_a: dict, samples_b: dict, frames, tol_px: float = 1.0) -> tuple[float | None, int]:
    """Scale between two reconstructions of the same frames from the points both saw: the same image
    corner (within ``tol_px``) in the same frame is the same scene point, so its depth ratio is the
    scale ratio, free of which points each happened to keep."""
    from scipy.spatial import cKDTree

    ratios = []
    for f in frames:
        a, b = samples_a.get(int(f)), samples_b.get(int(f))
        if a is None or b is None:
            continue
        d, j = cKDTree(a[0]).query(b[0], distance_upper_bound=tol_px)
        ok = np.isfinite(d)
        if ok.any():
            ratios.append(a[1][j[ok]] / b[1][ok])
    if not ratios:
        return None, 0
    r = np.concatenate(ratios)
    if len(r) < 20:
        return None, len(r)
    return float(np.median(r)), len(r)


def fit_sim3(R_wc_a: np.ndarray, c_a: np.ndarray, R_wc_b: np.ndarray, c_b: np.ndarray,
             depth_a: np.ndarray | None = None, depth_b: np.ndarray | None = None,
             s_matched: float | None = None) -> tuple[Sim3, dict]:
    """Similarity mapping trajectory b's world into a's from the same frames posed in both
    (camera-to-world rotations and camera centres). Rotation: mean of R_a R_b^T. Scale: from the depth
    ratio of matched points (``s_matched``) when given, else in closed form on the centres when they
    spread enough, else from the ratio of median scene depths. Translation: closed form given both."""
    R = rotation_mean(np.einsum("nij,nkj->nik", R_wc_a, R_wc_b))
    x = c_b @ R.T
    xm, ym = x.mean(0), c_a.mean(0)
    xc, yc = x - xm, c_a - ym
    spread_b = float(np.sqrt((xc ** 2).sum(1).mean()))
    s_depth = None
    if depth_a is not None and depth_b is not None:
        ok = np.isfinite(depth_a) & np.isfinite(depth_b) & (depth_b > 0)
        if ok.sum() >= 2:
            s_depth = float(np.median(depth_a[ok] / depth_b[ok]))
    scene_b = float(np.nanmedian(depth_b)) if depth_b is not None and np.isfinite(depth_b).any() else None
    well_spread = len(x) >= 3 and (scene_b is None or spread_b > MIN_SPREAD_OF_DEPTH * scene_b) and spread_b > 0
    s_pos = float((xc * yc).sum() / (xc ** 2).sum()) if well_spread else None
    if s_matched is not None and s_matched > 0:
        s, method = s_matched, "matched_depth"
    elif s_pos is not None and s_pos > 0:
        s, method = s_pos, "sim3"
    elif s_depth is not None and s_depth > 0:
        s, method = s_depth, "depth_ratio"
    else:
        s, method = 1.0, "rotation_only"
    t = ym - s * xm
    rot_res = Rotation.from_matrix(np.einsum("nij,njk->nik", np.transpose(R_wc_a, (0, 2, 1)),
                                             np.einsum("ij,njk->nik", R, R_wc_b))).magnitude()
    pos_res = np.linalg.norm(s * x + t - c_a, axis=1)
    info = dict(method=method, scale=s, scale_pos=s_pos, scale_depth=s_depth, scale_matched=s_matched,
                n_overlap=len(x),
                rot_residual_deg=float(np.degrees(np.median(rot_res))),
                pos_residual=float(np.sqrt((pos_res ** 2).mean())))
    return Sim3(s, R, t), info


@dataclass
class World:
    """The video's trajectory in the world frame (positions indexed like the frames table)."""

    R_wc: np.ndarray
    centres: np.ndarray
    tracked: np.ndarray
    is_keyframe: np.ndarray
    n_inliers: np.ndarray
    depth: np.ndarray  # median depth of the map points seen per frame, world units
    samples: dict  # frame -> (pixels, depths in world units) of map points, for some frames

    @property
    def R_cw(self) -> np.ndarray:
        return np.transpose(self.R_wc, (0, 2, 1))

    @property
    def t_cw(self) -> np.ndarray:
        return -np.einsum("nij,nj->ni", self.R_cw, self.centres)


class Stitcher:
    """Adds clip trajectories (in clip order) to one world frame: the first clip's frame is the world
    (its first frame is the camera of the first sampled frame)."""

    def __init__(self, n: int):
        self.w = World(np.full((n, 3, 3), np.nan), np.full((n, 3), np.nan), np.zeros(n, bool),
                       np.zeros(n, bool), np.zeros(n, np.int32), np.full(n, np.nan), {})
        self.info: list[dict] = []
        self.last_pos = -1
        self.keep_samples: set[int] = set()  # frames whose samples the depth cue needs at the end

    def add(self, traj) -> None:
        pos = np.asarray(traj.frame_index)
        if not len(pos):
            return
        R_wc, c, depth, tr = traj.R_wc, traj.centres, traj.depth.copy(), traj.tracked
        w = self.w
        info: dict = dict(clip=len(self.info), first=int(pos[0]), last=int(pos[-1]),
                          tracked=float(tr.mean()))
        if not self.info or not w.tracked.any():
            sim = Sim3(1.0, np.eye(3), np.zeros(3))
            info["method"] = "world"
        else:
            ov = tr & w.tracked[pos]
            if ov.sum() >= 3:
                p = pos[ov]
                s_m, n_m = matched_depth_ratio(w.samples, traj.samples, p)
                sim, fit = fit_sim3(w.R_wc[p], w.centres[p], R_wc[ov], c[ov], w.depth[p], depth[ov], s_m)
                fit["n_matched"] = n_m
                info.update(fit)
            else:
                sim, how = self._anchor(pos, R_wc, c, depth, tr)
                info.update(how)
        if tr.any():
            R2, c2 = sim.apply_poses(R_wc[tr], c[tr])
            R_new = np.full_like(R_wc, np.nan)
            c_new = np.full_like(c, np.nan)
            R_new[tr], c_new[tr] = R2, c2
        else:
            R_new, c_new = R_wc, c
        depth = depth * sim.s
        # in the overlap, each clip keeps the half nearer its own middle; a frame only one clip
        # tracked comes from that clip
        mid = 0.5 * (pos[0] + self.last_pos) if self.last_pos >= pos[0] else -np.inf
        take = tr & (~w.tracked[pos] | (pos >= mid))
        p = pos[take]
        w.R_wc[p], w.centres[p], w.tracked[p] = R_new[take], c_new[take], True
        w.is_keyframe[p], w.n_inliers[p], w.depth[p] = traj.is_keyframe[take], traj.n_inliers[take], depth[take]
        for f in p:
            smp = traj.samples.get(int(f))
            if smp is not None:
                w.samples[int(f)] = (smp[0], smp[1] * sim.s)
            else:
                w.samples.pop(int(f), None)
        self.last_pos = max(self.last_pos, int(pos[-1]))
        self.info.append(info)
        # samples before this clip were only needed to stitch it (bounded memory on long videos)
        for f in [f for f in w.samples if f < pos[0] and f not in self.keep_samples]:
            del w.samples[f]

    def _anchor(self, pos, R_wc, c, depth, tr) -> tuple[Sim3, dict]:
        """No frame posed in both clips: the new clip's first tracked frame takes the pose of the last
        tracked world frame before it (a continuity assumption, reported as 'anchored')."""
        w = self.w
        if not tr.any():
            return Sim3(1.0, np.eye(3), np.zeros(3)), dict(method="untracked")
        f = int(np.flatnonzero(tr)[0])
        before = np.flatnonzero(w.tracked[: pos[f] + 1])
        if not len(before):
            return Sim3(1.0, np.eye(3), np.zeros(3)), dict(method="anchored")
        g = int(before[-1])
        R = w.R_wc[g] @ R_wc[f].T
        s = 1.0
        if np.isfinite(w.depth[g]) and np.isfinite(depth[f]) and depth[f] > 0:
            s = float(w.depth[g] / depth[f])
        t = w.centres[g] - s * R @ c[f]
        return Sim3(s, R, t), dict(method="anchored", scale=s, anchor_frame=g)

    def result(self, n: int | None = None) -> World:
        return self.w


# -- metric scale ---------------------------------------------------------------------------------------

def scale_from_depth(world: World, scene_depth: pa.Table, pos_of: dict[int, int],
                     size: tuple[int, int] | None = None, min_frames: int = 3) -> tuple[float | None, dict]:
    """Metres per world unit from metric scene depth (``frame_index``, ``depth_m`` = median metric
    depth of the frame, optionally ``depth_grid`` = a coarse metric depth map, ``grid_w`` x ``grid_h``,
    row-major over the proxy image). With a grid, the metric depth is read at the very pixels of the
    map points the odometry saw in that frame (same points, no sampling bias); with the median only,
    the two medians are compared."""
    from scipy.ndimage import map_coordinates

    for name in ("frame_index", "depth_m"):
        if name not in scene_depth.column_names:
            raise ValueError(f"scene_depth table: no {name!r} column")
    fi = scene_depth.column("frame_index").to_numpy()
    dm = scene_depth.column("depth_m").to_numpy(zero_copy_only=False).astype(float)
    has_grid = size is not None and all(c in scene_depth.column_names for c in ("depth_grid", "grid_w", "grid_h"))
    grids = scene_depth.column("depth_grid").to_pylist() if has_grid else [None] * len(fi)
    gws = scene_depth.column("grid_w").to_pylist() if has_grid else [None] * len(fi)
    ghs = scene_depth.column("grid_h").to_pylist() if has_grid else [None] * len(fi)
    ratios, n_grid = [], 0
    for f, d, g, gw, gh in zip(fi, dm, grids, gws, ghs):
        p = pos_of.get(int(f))
        if p is None or not world.tracked[p]:
            continue
        smp = world.samples.get(p)
        if g is not None and gw and gh and smp is not None and len(g) == gw * gh:
            grid = np.asarray(g, float).reshape(gh, gw)
            uv, z = smp
            gx = (uv[:, 0] + 0.5) * gw / size[0] - 0.5
            gy = (uv[:, 1] + 0.5) * gh / size[1] - 0.5
            D = map_coordinates(grid, [gy, gx], order=1, mode="nearest")
            ok = np.isfinite(D) & (D > 0) & (z > 0)
            if ok.sum() >= 5:
                ratios.append(float(np.median(D[ok] / z[ok])))
                n_grid += 1
                continue
        v = world.depth[p]
        if np.isfinite(d) and d > 0 and np.isfinite(v) and v > 0:
            ratios.append(d / v)
    if len(ratios) < min_frames:
        return None, dict(n_frames=len(ratios))
    r = np.array(ratios)
    return float(np.median(r)), dict(n_frames=len(r), n_with_grid=n_grid,
                                     iqr_rel=float(np.subtract(*np.percentile(r, [75, 25])) / np.median(r)))


RIGID_JOINTS = (0, 5, 9, 13, 17)  # wrist and knuckles: the hand's most rigid points


def scale_from_hands(world: World, hand_tracks: pa.Table, pos_of: dict[int, int], K: np.ndarray,
                     window: int = 10, max_rms_px: float = 2.0, min_angle_deg: float = 2.0,
                     min_windows: int = 2) -> tuple[float | None, dict]:
    """Metres per world unit from hands that rest while the head moves: over short windows, a hand's
    wrist and knuckles are triangulated from their 2D keypoints and the odometry poses; where they
    reproject well (the hand did not move in the world) with enough parallax, the metric depth of the
    hand (``joints_cam``, metric from the hand stage) over its triangulated depth is the scale."""
    for name in ("frame_index", "hand", "kp2d", "joints_cam"):
        if name not in hand_tracks.column_names:
            return None, dict(reason=f"hand_tracks has no {name!r} column")
    fi = hand_tracks.column("frame_index").to_numpy()
    hands = np.array(hand_tracks.column("hand").to_pylist(), object)
    kp = vectors(hand_tracks, "kp2d", 42, "hand_tracks", PoseInputError).reshape(-1, 21, 2)
    jc = vectors(hand_tracks, "joints_cam", 63, "hand_tracks", PoseInputError).reshape(-1, 21, 3)
    Kinv = np.linalg.inv(K)
    R_cw, t_cw = world.R_cw, world.t_cw
    ratios = []
    n_tried = 0
    for h in sorted(set(hands.tolist())):
        rows = np.flatnonzero(hands == h)
        pos = np.array([pos_of.get(int(f), -1) for f in fi[rows]])
        keep = pos >= 0
        rows, pos = rows[keep], pos[keep]
        keep = world.tracked[pos]
        rows, pos = rows[keep], pos[keep]
        order = np.argsort(pos)
        rows, pos = rows[order], pos[order]
        for s0 in range(0, max(0, len(rows) - window + 1), max(1, window // 2)):
            r, p = rows[s0:s0 + window], pos[s0:s0 + window]
            if p[-1] - p[0] > 1.5 * window:
                continue
            n_tried += 1
            uv = kp[r][:, RIGID_JOINTS]  # (V, J, 2)
            if not np.isfinite(uv).all():
                continue
            xn = np.einsum("ij,vkj->vki", Kinv, np.concatenate([uv, np.ones(uv.shape[:2] + (1,))], -1))
            P = np.concatenate([R_cw[p], t_cw[p][:, :, None]], 2)  # (V, 3, 4)
            A = np.concatenate([xn[:, :, 0:1].transpose(1, 0, 2) * P[None, :, 2] - P[None, :, 0],
                                xn[:, :, 1:2].transpose(1, 0, 2) * P[None, :, 2] - P[None, :, 1]], 1)
            _, _, Vt = np.linalg.svd(A)  # (J, 2V, 4)
            Xh = Vt[:, -1]
            if np.any(np.abs(Xh[:, 3]) < 1e-12):
                continue
            X = Xh[:, :3] / Xh[:, 3:4]  # (J, 3) world
            Xc = np.einsum("vij,kj->vki", R_cw[p], X) + t_cw[p][:, None]  # (V, J, 3)
            if np.any(Xc[..., 2] <= 0):
                continue
            proj = Xc[..., :2] / Xc[..., 2:3]
            err = np.linalg.norm((proj - xn[..., :2]) * K[0, 0], axis=-1)
            rms = np.sqrt((err ** 2).mean(0))  # per joint
            centres = world.centres[p]
            rays = X[None] - centres[:, None]  # (V, J, 3)
            rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
            ang = np.degrees(np.arccos(np.clip(np.einsum("vjk,jk->vj", rays, rays[len(p) // 2]), -1, 1))).max(0)
            ok = (rms < max_rms_px) & (ang > min_angle_deg)
            if ok.sum() < 3:
                continue
            mid = len(p) // 2
            z_metric = jc[r[mid]][list(RIGID_JOINTS), 2]
            z_tri = Xc[mid, :, 2]
            ratios.append(float(np.median(z_metric[ok] / z_tri[ok])))
    if len(ratios) < min_windows:
        return None, dict(n_windows=len(ratios), n_tried=n_tried)
    r = np.array(ratios)
    return float(np.median(r)), dict(n_windows=len(r), n_tried=n_tried,
                                     iqr_rel=float(np.subtract(*np.percentile(r, [75, 25])) / np.median(r)))


PALM_JOINTS = (0, 1, 5, 9, 13, 17)  # wrist, thumb base and knuckles: the palm, nearly rigid


def _still_point_fit(y: np.ndarray, c: np.ndarray, ray: np.ndarray, depth_weight: float
                     ) -> tuple[float | None, float, float]:
    """Weighted least squares of ``y_t + s c_t = X`` for (X, s): residual along each frame's viewing
    ray (``ray``, unit, world frame) weighs ``depth_weight``, across it 1 (a lifted hand's depth is far
    noisier than its image position). Returns s (None when the fit is singular or s <= 0), the rms
    residual across the rays (metres), and the head's translation the fit implies (s times the rms
    spread of the centres, metres)."""
    n = len(y)
    W = np.eye(3)[None] - (1.0 - depth_weight) * np.einsum("ni,nj->nij", ray, ray)
    # unknowns (X, s): residual r_t = X - s c_t - y_t
    A = np.zeros((n, 3, 4))
    A[:, :, :3] = np.eye(3)
    A[:, :, 3] = -c
    N = np.einsum("nki,nkl,nlj->ij", A, W, A)
    b = np.einsum("nki,nkl,nl->i", A, W, y)
    try:
        x = np.linalg.solve(N, b)
    except np.linalg.LinAlgError:
        return None, np.inf, 0.0
    s = float(x[3])
    if not np.isfinite(s) or s <= 0:
        return None, np.inf, 0.0
    r = x[:3] - s * c - y
    r_across = r - np.einsum("ni,ni->n", r, ray)[:, None] * ray
    motion = s * float(np.sqrt(((c - c.mean(0)) ** 2).sum(1).mean()))
    return s, float(np.sqrt((r_across ** 2).sum(1).mean())), motion


def scale_from_still_hands(world: World, hand_tracks: pa.Table, pos_of: dict[int, int],
                           window: int = 15, max_residual_m: float = 0.006, min_motion_m: float = 0.008,
                           depth_weight: float = 0.1, max_depth_m: float = 1.2,
                           min_windows: int = 2, max_iqr_rel: float = 0.3) -> tuple[float | None, dict]:
    """Metres per world unit from a hand held still while the head translates, for small head motion.

    A still hand's palm centre is one world point X, so with its metric camera-frame position
    ``p_t`` (``joints_cam``) and the odometry's pose, ``R_wc,t p_t + s c_t = X`` for every frame t of
    the window, with ``s`` the metres per world unit: linear in (X, s), solved by least squares with
    the component along each viewing ray down-weighted (:func:`_still_point_fit`). Unlike
    :func:`scale_from_hands` this needs no parallax for a triangulation within a second: the hand's
    depth comes from the hand stage on every frame, so a head translating by a couple of centimetres
    over a pause of the hand is enough. A window counts when the head moved (``s * rms(c~)`` at least
    ``min_motion_m``), the fitted still point explains the hand's apparent motion (residual at most
    ``max_residual_m`` and at most half that motion: a hand moving in the world does not fit a single
    point), and ``s > 0``; the median of at least ``min_windows`` windows whose interquartile range
    is at most ``max_iqr_rel`` of it is the scale. It inherits the hand stage's depth error (its size
    prior)."""
    for name in ("frame_index", "hand", "joints_cam"):
        if name not in hand_tracks.column_names:
            return None, dict(reason=f"hand_tracks has no {name!r} column")
    if not world.tracked.any():
        return None, dict(reason="no tracked pose")
    fi = hand_tracks.column("frame_index").to_numpy()
    hands = np.array(hand_tracks.column("hand").to_pylist(), object)
    jc = vectors(hand_tracks, "joints_cam", 63, "hand_tracks", PoseInputError).reshape(-1, 21, 3)
    palm = jc[:, list(PALM_JOINTS)].mean(1)
    if "interpolated" in hand_tracks.column_names:  # a filled-in gap is no measurement
        filled = np.array([bool(v) for v in hand_tracks.column("interpolated").to_pylist()])
        palm[filled] = np.nan
    scales, n_tried, n_moved = [], 0, 0
    for h in sorted(set(hands.tolist())):
        rows = np.flatnonzero(hands == h)
        pos = np.array([pos_of.get(int(f), -1) for f in fi[rows]])
        ok = pos >= 0
        rows, pos = rows[ok], pos[ok]
        ok = world.tracked[pos] & np.isfinite(palm[rows]).all(1) & (palm[rows, 2] > 0) \
            & (palm[rows, 2] < max_depth_m)
        rows, pos = rows[ok], pos[ok]
        order = np.argsort(pos)
        rows, pos = rows[order], pos[order]
        for s0 in range(0, max(0, len(rows) - window + 1), max(1, window // 3)):
            r, p = rows[s0:s0 + window], pos[s0:s0 + window]
            if p[-1] - p[0] > 1.5 * window:  # the hand or the pose was missing too long
                continue
            n_tried += 1
            y = np.einsum("nij,nj->ni", world.R_wc[p], palm[r])
            ray = y / np.linalg.norm(y, axis=1, keepdims=True)
            s, resid, motion = _still_point_fit(y, world.centres[p], ray, depth_weight)
            if s is None or motion < min_motion_m:
                continue
            n_moved += 1
            if resid > max_residual_m or resid > 0.5 * motion:
                continue
            scales.append(s)
    if len(scales) < min_windows:
        return None, dict(n_windows=len(scales), n_tried=n_tried, n_head_moved=n_moved)
    s = np.array(scales)
    detail = dict(n_windows=len(s), n_tried=n_tried, n_head_moved=n_moved,
                  iqr_rel=float(np.subtract(*np.percentile(s, [75, 25])) / np.median(s)))
    if detail["iqr_rel"] > max_iqr_rel:  # windows that disagree: hands that only seemed still
        return None, detail | dict(reason=f"windows disagree (IQR {detail['iqr_rel']:.2f} of the median)")
    return float(np.median(s)), detail
