"""Monocular visual odometry on proxy frames (the default ``camera_poses`` method, CPU, OpenCV).

Per clip, frame by frame (streamed: one decoded frame in memory):

* KLT features (pyramidal Lucas-Kanade, forward-backward checked), re-detected at keyframes;
  features on the hands are dropped (dilated convex hulls of the ``hand_tracks`` keypoints), because
  hands move on their own and would be taken for camera motion;
* initialisation from the essential matrix (5-point RANSAC + ``recoverPose``) once there is enough
  parallax; until then (and whenever translation is unobservable) a rotation-only model, which is what
  a head mostly does; a camera that does not move keeps exactly the previous pose (no drift);
* then PnP (RANSAC + LM refinement) against the triangulated map, new points triangulated at keyframes,
  and a sliding-window bundle adjustment (SciPy ``least_squares``, sparse Jacobian, Huber loss);
* tracking loss (too few features, failed PnP) marks frames ``tracked=False`` with no pose; the
  tracker relocalises against recent keyframes (ORB matches + PnP, same world frame) or, failing that,
  starts a new segment anchored at the last good pose (counted in the stats, never silent).

Clips are stitched into one world frame by :mod:`.stitch`; :func:`estimate` ties it together.
Poses here are world-to-camera (R, t) as OpenCV uses them; the table holds camera-to-world.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa
from scipy.spatial.transform import Rotation


class PoseInputError(ValueError):
    """An input of the pose stage is unusable; the message names it and says why."""


@dataclass(frozen=True)
class VOParams:
    max_features: int = 350
    min_distance: int = 12
    quality: float = 0.005
    lk_win: int = 21
    lk_levels: int = 4  # head turns move the image up to ~50 px per proxy frame
    fb_px: float = 1.0  # forward-backward consistency of KLT
    border_px: int = 8
    min_tracks: int = 25  # fewer tracked features than this: the frame is lost
    static_px: float = 0.3  # median displacement below which the camera did not move
    init_min_disp_px: float = 6.0
    init_min_angle_deg: float = 2.0  # median triangulation angle needed to initialise (a weak
    # first map skews the whole clip: stitching showed 1 deg made clip starts drift)
    init_min_points: int = 40
    init_max_frames: int = 25
    rot_inlier_deg: float = 0.3
    pnp_px: float = 2.0
    pnp_min_inliers: int = 20
    kf_max_gap: int = 10
    kf_min_ratio: float = 0.6
    kf_disp_px: float = 50.0  # median feature displacement since the last keyframe
    tri_min_angle_deg: float = 1.0
    tri_max_px: float = 2.0
    ba_window: int = 6
    ba_max_nfev: int = 4
    reloc_kfs: int = 6
    reloc_frames: int = 5  # lost frames spent trying to relocalise before starting a new segment
    reloc_min_inliers: int = 25
    hand_margin: float = 0.2  # hull dilation, fraction of the hand's size
    hand_margin_px: float = 6.0


# -- hand masks ---------------------------------------------------------------------------------------

class HandMasker:
    """Per-frame masks (uint8, 255 = hand) from the ``hand_tracks`` table: the convex hull of each hand's
    21 keypoints, grown by ``margin`` of its size plus ``margin_px`` (fingers stick out of a hull of
    joint centres, and motion blur smears them)."""

    def __init__(self, hand_tracks: pa.Table | None, size: tuple[int, int], margin: float = 0.2,
                 margin_px: float = 6.0):
        self.size = size
        self.margin, self.margin_px = margin, margin_px
        self._by_frame: dict[int, list[np.ndarray]] = {}
        if hand_tracks is None or hand_tracks.num_rows == 0:
            return
        for name in ("frame_index", "kp2d"):
            if name not in hand_tracks.column_names:
                raise PoseInputError(f"hand_tracks table: no {name!r} column")
        fi = hand_tracks.column("frame_index").to_numpy()
        kp = _fixed_list(hand_tracks.column("kp2d"), 42).reshape(-1, 21, 2)
        for f, k in zip(fi, kp):
            k = k[np.isfinite(k).all(1)]
            if len(k) >= 3:
                self._by_frame.setdefault(int(f), []).append(k)

    def __bool__(self) -> bool:
        return bool(self._by_frame)

    def hulls(self, frame_index: int) -> list[np.ndarray]:
        out = []
        for k in self._by_frame.get(frame_index, []):
            c = k.mean(0)
            ext = np.ptp(k, axis=0).max()
            d = k - c
            n = np.linalg.norm(d, axis=1, keepdims=True)
            grown = c + d * (1 + self.margin) + d / np.maximum(n, 1e-6) * self.margin_px
            out.append(grown if ext > 0 else k)
        return out

    def mask(self, frame_index: int) -> np.ndarray | None:
        import cv2

        hulls = self.hulls(frame_index)
        if not hulls:
            return None
        w, h = self.size
        m = np.zeros((h, w), np.uint8)
        for g in hulls:
            hull = cv2.convexHull(np.round(np.clip(g, -1e4, 1e4) * 16).astype(np.int32))
            cv2.fillConvexPoly(m, hull, 255, shift=4)
        return m


def _fixed_list(col, n: int) -> np.ndarray:
    """A fixed-size-list (or list) column as a float (rows, n) array."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type):
        flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
        if len(flat) != len(col) * n:
            raise PoseInputError(f"list column: expected {n} values per row")
        return flat.reshape(len(col), n)
    return np.asarray(col.to_pylist(), np.float64).reshape(len(col), n)


# -- small geometry helpers ---------------------------------------------------------------------------

def _bearings(uv: np.ndarray, Kinv: np.ndarray) -> np.ndarray:
    b = np.column_stack([uv, np.ones(len(uv))]) @ Kinv.T
    return b / np.linalg.norm(b, axis=1, keepdims=True)


def _kabsch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation R minimising sum |R a_i - b_i|^2 (batched over the leading axis if 3-D)."""
    H = np.einsum("...ni,...nj->...ij", a, b)
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.einsum("...ji,...kj->...ik", Vt, U)))
    D = np.zeros(H.shape)
    D[..., 0, 0] = 1
    D[..., 1, 1] = 1
    D[..., 2, 2] = d
    return np.einsum("...ji,...jk,...lk->...il", Vt, D, U)


def rotation_only(b1: np.ndarray, b2: np.ndarray, inlier_rad: float, n_hyp: int = 64,
                  rng: np.random.Generator | None = None) -> tuple[np.ndarray | None, np.ndarray]:
    """Rotation R with b2 ~ R b1 for unit bearings, by RANSAC over 2-point Kabsch fits then a least-squares
    refit on the inliers. Returns (R or None, inlier mask)."""
    n = len(b1)
    if n < 5:
        return None, np.zeros(n, bool)
    rng = rng or np.random.default_rng(0)
    idx = rng.integers(0, n, size=(n_hyp, 2))
    idx[:, 1] = np.where(idx[:, 1] == idx[:, 0], (idx[:, 0] + 1) % n, idx[:, 1])
    Rs = _kabsch(b1[idx], b2[idx])
    cos = np.einsum("hij,nj,ni->hn", Rs, b1, b2)
    thr = np.cos(inlier_rad)
    score = (cos > thr).sum(1)
    best = int(np.argmax(score))
    inl = cos[best] > thr
    if inl.sum() < 5:
        return None, inl
    for _ in range(2):
        R = _kabsch(b1[inl], b2[inl])
        inl = np.einsum("ij,nj,ni->n", R, b1, b2) > thr
        if inl.sum() < 5:
            return None, inl
    return R, inl


def _triangulate(R1, t1, R2, t2, x1, x2):
    """Linear triangulation from normalised coordinates; returns (X world (N,3), depth1, depth2, angle)."""
    import cv2

    P1 = np.hstack([R1, t1[:, None]])
    P2 = np.hstack([R2, t2[:, None]])
    Xh = cv2.triangulatePoints(P1, P2, x1.T.astype(np.float64), x2.T.astype(np.float64))
    X = (Xh[:3] / Xh[3]).T
    z1 = X @ R1[2] + t1[2]
    z2 = X @ R2[2] + t2[2]
    c1, c2 = -R1.T @ t1, -R2.T @ t2
    r1, r2 = X - c1, X - c2
    cosang = np.einsum("ij,ij->i", r1, r2) / (np.linalg.norm(r1, axis=1) * np.linalg.norm(r2, axis=1) + 1e-12)
    return X, z1, z2, np.degrees(np.arccos(np.clip(cosang, -1, 1)))


def _reproj_px(R, t, X, uv, K) -> np.ndarray:
    Xc = X @ R.T + t
    p = Xc[:, :2] / Xc[:, 2:3]
    return np.hypot(p[:, 0] * K[0, 0] + K[0, 2] - uv[:, 0], p[:, 1] * K[1, 1] + K[1, 2] - uv[:, 1])


# -- per clip -----------------------------------------------------------------------------------------

@dataclass
class _KF:
    n: int
    fi: int
    R: np.ndarray
    t: np.ndarray
    ids: np.ndarray  # track ids seen in this keyframe (sorted)
    uv: np.ndarray  # their pixel positions
    gray: np.ndarray | None = None  # kept for the last few keyframes, for relocalisation
    desc: np.ndarray | None = None  # ORB descriptors at its map points, computed on a loss
    desc_ids: np.ndarray | None = None


@dataclass
class ClipTrajectory:
    """Poses of one clip in its own world frame (its first tracked frame), world-to-camera."""

    frame_index: np.ndarray
    R_cw: np.ndarray  # (n, 3, 3), nan where not tracked
    t_cw: np.ndarray  # (n, 3)
    tracked: np.ndarray
    is_keyframe: np.ndarray
    n_inliers: np.ndarray
    depth: np.ndarray  # median depth of the map points seen (clip units), nan if none
    mode: np.ndarray  # 'map' | 'rotation' | 'static' | 'lost' | 'anchored'
    stats: dict = field(default_factory=dict)
    samples: dict = field(default_factory=dict)  # frame -> (pixels (k, 2), depths (k,)) of map points

    @property
    def R_wc(self) -> np.ndarray:
        return np.transpose(self.R_cw, (0, 2, 1))

    @property
    def centres(self) -> np.ndarray:
        return -np.einsum("nji,nj->ni", self.R_cw, self.t_cw)


class ClipOdometry:
    """Visual odometry over the frames of one clip, fed one (undistorted, gray) frame at a time."""

    def __init__(self, K: np.ndarray, size: tuple[int, int], params: VOParams = VOParams(),
                 sample_frames: set[int] | None = None):
        """``sample_frames``: frames whose map points (pixel, depth) are kept, for the stitching
        scale (overlaps with the neighbouring clips) and the metric depth cue."""
        import cv2

        self.K = np.asarray(K, float)
        self.Kinv = np.linalg.inv(self.K)
        self.size = size
        self.p = params
        self.lk = dict(winSize=(params.lk_win, params.lk_win), maxLevel=params.lk_levels,
                       criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 0.03))
        self.rng = np.random.default_rng(0)
        self.prev: np.ndarray | None = None
        self.pts = np.zeros((0, 2), np.float32)
        self.ids = np.zeros(0, np.int64)
        cap = 4096
        self.X = np.full((cap, 3), np.nan)
        self.first_kf = np.full(cap, -1, np.int64)
        self.next_id = 0
        self.kfs: list[_KF] = []
        self.mode = "start"  # start | init (no map yet) | track | lost
        self.ref: _KF | None = None
        self.buffer: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.last_pose: tuple[np.ndarray, np.ndarray] | None = None
        self.lost_since = 0
        self.scale_ref = 1.0  # median scene depth the map is normalised to (clip units)
        self.res: dict[int, list] = {}  # frame -> [R_cw, t_cw, mode, is_keyframe, n_inliers, depth]
        self.counters = dict(n_keyframes=0, n_relocalised=0, n_new_segments=0, n_inits=0, ba_s=0.0)
        self._orb = None
        self.sample_frames = sample_frames or set()
        self.samples: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- bookkeeping --
    def _new_ids(self, n: int) -> np.ndarray:
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        self.next_id += n
        if self.next_id > len(self.X):
            cap = max(2 * len(self.X), self.next_id)
            X = np.full((cap, 3), np.nan)
            X[: len(self.X)] = self.X
            fk = np.full(cap, -1, np.int64)
            fk[: len(self.first_kf)] = self.first_kf
            self.X, self.first_kf = X, fk
        return ids

    def _record(self, fi, R, t, mode, kf=False, n_in=0, depth=np.nan, current=True, seen=None):
        """Result of frame ``fi``. ``current``: it is the frame being tracked (its map points are the
        current tracks); a buffered frame posed later passes what it saw as ``seen`` = (ids, pixels)."""
        self.res[fi] = [R, t, mode, kf, n_in, depth]
        if mode != "lost" and current:
            self.last_pose = (R, t)
        if fi in self.sample_frames:
            self.samples.pop(fi, None)
            ids, uv = (self.ids, self.pts) if current else (seen or (np.zeros(0, np.int64), None))
            if R is not None and len(ids):
                has = np.isfinite(self.X[ids, 0])
                z = self.X[ids[has]] @ R[2] + t[2]
                ok = z > 0
                if ok.sum() >= 5:
                    self.samples[fi] = (uv[has][ok].astype(np.float32), z[ok].astype(np.float32))

    def _detect(self, gray: np.ndarray, hand: np.ndarray | None, n_max: int) -> np.ndarray:
        import cv2

        if n_max <= 0:
            return np.zeros((0, 2), np.float32)
        h, w = gray.shape
        m = np.zeros((h, w), np.uint8)
        b = self.p.border_px
        m[b:h - b, b:w - b] = 255
        if hand is not None:
            m[hand > 0] = 0
        for x, y in self.pts:
            cv2.circle(m, (int(x), int(y)), self.p.min_distance, 0, -1)
        c = cv2.goodFeaturesToTrack(gray, n_max, self.p.quality, self.p.min_distance, mask=m, blockSize=5)
        return np.zeros((0, 2), np.float32) if c is None else c.reshape(-1, 2).astype(np.float32)

    def _add_kf(self, fi, R, t, gray, hand, n_map, new: np.ndarray | None = None) -> _KF:
        """Keyframe at this frame: top the features up and remember what it sees."""
        if new is None:
            new = self._detect(gray, hand, self.p.max_features - len(self.pts))
        kf = _KF(len(self.kfs), fi, R, t, self.ids.copy(), self.pts.copy())
        if len(new):
            nid = self._new_ids(len(new))
            self.first_kf[nid] = kf.n
            self.pts = np.vstack([self.pts, new])
            self.ids = np.concatenate([self.ids, nid])
            kf.ids, kf.uv = self.ids.copy(), self.pts.copy()
        kf.gray = gray
        self.kfs.append(kf)
        self.counters["n_keyframes"] += 1
        if len(self.kfs) > self.p.ba_window + self.p.reloc_kfs + 2:  # bounded memory
            old = self.kfs[-(self.p.ba_window + self.p.reloc_kfs + 2)]
            old.uv = old.uv[:0]
            old.ids = old.ids[:0]
        if len(self.kfs) > self.p.reloc_kfs:
            self.kfs[-self.p.reloc_kfs - 1].gray = None
        return kf

    def _orb_at(self, gray, uv, ids):
        """ORB descriptors at given corners (upright, one scale: between a keyframe and a frame a
        second later, rotation and scale change little, and the same corner detector on both sides
        matches far better than ORB's own keypoints against tracked corners)."""
        import cv2

        if self._orb is None:
            self._orb = cv2.ORB_create(edgeThreshold=16, patchSize=31)
        kps = [cv2.KeyPoint(float(x), float(y), 31, 0, 0, 0, int(i)) for (x, y), i in zip(uv, ids)]
        return self._orb.compute(gray, kps)

    def _detect_free(self, gray, hand, n):
        keep, self.pts = self.pts, np.zeros((0, 2), np.float32)
        try:
            return self._detect(gray, hand, n)
        finally:
            self.pts = keep

    def _describe(self, kf: _KF) -> None:
        """ORB descriptors at the keyframe's map points, for relocalisation after a loss."""
        import cv2

        gray = kf.gray
        if gray is None or kf.desc is not None or not len(kf.ids):
            return
        has = np.isfinite(self.X[kf.ids, 0])
        if has.sum() < self.p.reloc_min_inliers:
            return
        kps, desc = self._orb_at(gray, kf.uv[has], kf.ids[has])
        if desc is not None and len(kps):
            kf.desc = desc
            kf.desc_ids = np.array([k.class_id for k in kps], np.int64)

    # -- main entry --
    def push(self, fi: int, gray: np.ndarray, hand: np.ndarray | None = None) -> None:
        import cv2

        if self.prev is None:
            self._start(fi, gray, hand, np.eye(3), np.zeros(3))
            self.prev = gray
            return
        if len(self.pts):
            p0 = self.pts.reshape(-1, 1, 2)
            p1, st, _ = cv2.calcOpticalFlowPyrLK(self.prev, gray, p0, None, **self.lk)
            # backward check started from the original positions: only the finest levels are needed
            p0r, st2, _ = cv2.calcOpticalFlowPyrLK(gray, self.prev, p1, p0.copy(), winSize=self.lk["winSize"],
                                                   maxLevel=0, criteria=self.lk["criteria"],
                                                   flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
            p1 = p1.reshape(-1, 2)
            h, w = gray.shape
            b = self.p.border_px
            ok = ((st.ravel() == 1) & (st2.ravel() == 1)
                  & (np.linalg.norm(p0r.reshape(-1, 2) - self.pts, axis=1) < self.p.fb_px)
                  & (p1[:, 0] >= b) & (p1[:, 0] < w - b) & (p1[:, 1] >= b) & (p1[:, 1] < h - b))
            if hand is not None and ok.any():
                xi = np.clip(p1[:, 0].astype(int), 0, w - 1)
                yi = np.clip(p1[:, 1].astype(int), 0, h - 1)
                ok &= hand[yi, xi] == 0
            self.pts, self.ids = p1[ok], self.ids[ok]
        if self.mode == "lost":
            self._lost(fi, gray, hand)
        elif len(self.pts) < self.p.min_tracks:
            self._lose(fi, gray, hand)
        elif self.mode == "init":
            self._init_step(fi, gray, hand)
        else:
            self._track_step(fi, gray, hand)
        self.prev = gray

    def _start(self, fi, gray, hand, R, t, feats: np.ndarray | None = None):
        """(Re)start from this frame: it becomes the reference keyframe of a new initialisation."""
        self.pts = np.zeros((0, 2), np.float32)
        self.ids = np.zeros(0, np.int64)
        if feats is None:
            feats = self._detect(gray, hand, self.p.max_features)
        if len(feats) < self.p.min_tracks:
            self._record(fi, None, None, "lost")
            self.mode = "lost"
            return
        self.ref = self._add_kf(fi, R, t, gray, hand, 0, new=feats)
        self.buffer = []
        self.mode = "init"
        self._record(fi, R, t, "map", kf=True)

    # -- initialisation / rotation-only --
    def _common(self, kf: _KF):
        common, a, b = np.intersect1d(kf.ids, self.ids, assume_unique=True, return_indices=True)
        return common, kf.uv[a], self.pts[b]

    def _init_step(self, fi, gray, hand):
        import cv2

        p = self.p
        ref = self.ref
        ids, u0, u1 = self._common(ref)
        if len(ids) < p.min_tracks:
            return self._lose(fi, gray, hand)
        disp = float(np.median(np.linalg.norm(u1 - u0, axis=1)))
        if disp < p.static_px:
            # the camera did not move: exactly the reference pose (no drift); refresh the features
            # when hands or the border have eaten half of them
            self._record(fi, ref.R, ref.t, "static")
            if len(ids) < 0.5 * len(ref.ids):
                self.ref = self._add_kf(fi, ref.R, ref.t, gray, hand, 0)
                self.buffer = []
            return
        if disp > p.init_min_disp_px and self._try_init(fi, gray, hand, ids, u0, u1):
            return
        b0, b1 = _bearings(u0, self.Kinv), _bearings(u1, self.Kinv)
        Rrel, inl = rotation_only(b0, b1, np.radians(p.rot_inlier_deg) * 3, rng=self.rng)
        if Rrel is None or inl.sum() < p.min_tracks:
            return self._lose(fi, gray, hand)

        R = Rrel @ ref.R
        c = -ref.R.T @ ref.t  # the centre does not move under the rotation-only model
        t = -R @ c
        self._record(fi, R, t, "rotation", n_in=int(inl.sum()))
        self.buffer.append((fi, ids, u1))
        lost_share = 1 - len(ids) / max(1, len(ref.ids))
        if len(self.buffer) >= p.init_max_frames or lost_share > 0.5:
            # no parallax in sight: move the reference here (rotation is kept, nothing drifts)
            self.ref = self._add_kf(fi, R, t, gray, hand, 0)
            self.buffer = []

    def _try_init(self, fi, gray, hand, ids, u0, u1) -> bool:
        """Initialise the map from the reference keyframe and this frame if the parallax allows."""
        import cv2

        p = self.p
        E, m = cv2.findEssentialMat(u0, u1, self.K, cv2.RANSAC, 0.999, 1.0)
        if E is None or E.shape != (3, 3):
            return False
        n_in, Rr, tr, m = cv2.recoverPose(E, u0, u1, self.K, mask=m.copy())
        inl = m.ravel() > 0
        if inl.sum() < p.init_min_points:
            return False
        x0 = (np.column_stack([u0, np.ones(len(u0))]) @ self.Kinv.T)[:, :2]
        x1 = (np.column_stack([u1, np.ones(len(u1))]) @ self.Kinv.T)[:, :2]
        tr = tr.ravel()
        X, z0, z1, ang = _triangulate(np.eye(3), np.zeros(3), Rr, tr, x0, x1)
        e0 = _reproj_px(np.eye(3), np.zeros(3), X, u0, self.K)
        e1 = _reproj_px(Rr, tr, X, u1, self.K)
        good = inl & (z0 > 0) & (z1 > 0) & (e0 < p.tri_max_px) & (e1 < p.tri_max_px) & (ang > 0.2)
        if good.sum() < p.init_min_points or np.median(ang[good]) < p.init_min_angle_deg:
            return False
        # scale: the map's median depth equals the running reference (1 for a clip's first map)
        s = self.scale_ref / float(np.median(z0[good]))
        ref = self.ref
        Xw = (X[good] * s - ref.t) @ ref.R  # ref camera -> world: R^T (x - t)
        self.X[ids[good]] = Xw
        R = Rr @ ref.R
        t = Rr @ ref.t + s * tr
        self.counters["n_inits"] += 1
        self.mode = "track"
        # frames buffered since the reference get their translation from the new map
        for bfi, bids, buv in self.buffer:
            prev = self.res.get(bfi)
            pose = self._pnp(bids, buv, prev[0] if prev and prev[0] is not None else ref.R,
                             prev[1] if prev and prev[1] is not None else ref.t)
            if pose is not None:
                self._record(bfi, pose[0], pose[1], "map", n_in=pose[2], depth=pose[3], current=False,
                             seen=(bids[pose[4]], buv[pose[4]]))
        self.buffer = []
        kf = self._add_kf(fi, R, t, gray, hand, int(good.sum()))
        zc = (self.X[ids[good]] @ R.T + t)[:, 2]
        self._record(fi, R, t, "map", kf=True, n_in=int(good.sum()), depth=float(np.median(zc)))
        self._local_ba()
        return True

    # -- tracking against the map --
    def _pnp(self, ids, uv, R0, t0):
        """Pose from 2D-3D matches: (R, t, n_inliers, median depth, inlier mask) or None."""
        import cv2

        has = np.isfinite(self.X[ids, 0])
        if has.sum() < max(6, self.p.pnp_min_inliers):
            return None
        obj = self.X[ids[has]]
        img = uv[has].astype(np.float64)
        rvec0 = cv2.Rodrigues(R0)[0]
        ok, rvec, tvec, inl = cv2.solvePnPRansac(obj, img, self.K, None, rvec0.copy(), t0.reshape(3, 1).copy(),
                                                 useExtrinsicGuess=True, iterationsCount=60,
                                                 reprojectionError=self.p.pnp_px, confidence=0.99,
                                                 flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok or inl is None or len(inl) < self.p.pnp_min_inliers:
            return None
        inl = inl.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(obj[inl], img[inl], self.K, None, rvec, tvec)
        R = cv2.Rodrigues(rvec)[0]
        t = tvec.ravel()
        err = _reproj_px(R, t, obj, img, self.K)
        good = err < self.p.pnp_px
        if good.sum() < self.p.pnp_min_inliers:
            return None
        z = (obj[good] @ R.T + t)[:, 2]
        if np.median(z) <= 0:
            return None
        mask = np.zeros(len(ids), bool)
        mask[np.flatnonzero(has)[good]] = True
        return R, t, int(good.sum()), float(np.median(z)), mask

    def _track_step(self, fi, gray, hand):
        p = self.p
        R0, t0 = self.last_pose
        pose = self._pnp(self.ids, self.pts, R0, t0)
        last = self.kfs[-1]
        if pose is None:
            # the map went out of view without enough parallax to replace it: rotation-only from the
            # last keyframe, then re-initialise from here (scale carried by the median depth)
            ids, u0, u1 = self._common(last)
            Rrel, inl = (rotation_only(_bearings(u0, self.Kinv), _bearings(u1, self.Kinv),
                                       np.radians(p.rot_inlier_deg) * 3, rng=self.rng)
                         if len(ids) >= p.min_tracks else (None, None))
            if Rrel is None or inl.sum() < p.min_tracks:
                return self._lose(fi, gray, hand)
            R = Rrel @ last.R
            t = -R @ (-last.R.T @ last.t)
            self._record(fi, R, t, "rotation", n_in=int(inl.sum()))
            self.ref = self._add_kf(fi, R, t, gray, hand, 0)
            self.buffer = []
            self.mode = "init"
            return
        R, t, n_in, depth, inl = pose
        self.scale_ref = depth
        # map points that disagree with the pose are unreliable tracks: drop them
        has = np.isfinite(self.X[self.ids, 0])
        bad = has & ~inl
        if bad.any():
            self.pts, self.ids = self.pts[~bad], self.ids[~bad]
        last_n = int(np.isfinite(self.X[last.ids, 0]).sum())
        common, a, b = np.intersect1d(last.ids, self.ids, assume_unique=True, return_indices=True)
        disp = float(np.median(np.linalg.norm(last.uv[a] - self.pts[b], axis=1))) if len(common) else 1e9
        need = (fi - last.fi >= p.kf_max_gap or n_in < p.kf_min_ratio * last_n
                or n_in < 2 * p.pnp_min_inliers + 20 or disp > p.kf_disp_px)
        if not need:
            self._record(fi, R, t, "map", n_in=n_in, depth=depth)
            return
        self._triangulate_new(R, t)
        self._add_kf(fi, R, t, gray, hand, n_in)
        self._record(fi, R, t, "map", kf=True, n_in=n_in, depth=depth)
        self._local_ba()

    def _triangulate_new(self, R, t):
        """Triangulate tracks without a map point between their first keyframe and this frame; those
        without enough parallax stay candidates and are tried again at the next keyframe."""
        p = self.p
        cand = ~np.isfinite(self.X[self.ids, 0]) & (self.first_kf[self.ids] >= 0)
        if not cand.any():
            return
        by_kf = {kf.n: kf for kf in self.kfs[-(p.ba_window + p.reloc_kfs):]}
        fk = self.first_kf[self.ids]
        for n in np.unique(fk[cand]):
            kf = by_kf.get(int(n))
            if kf is None or not len(kf.ids):
                continue
            sel = cand & (fk == n)
            ids = self.ids[sel]
            common, a, b = np.intersect1d(kf.ids, ids, assume_unique=True, return_indices=True)
            if not len(common):
                continue
            u0, u1 = kf.uv[a], self.pts[sel][b]
            x0 = (np.column_stack([u0, np.ones(len(u0))]) @ self.Kinv.T)[:, :2]
            x1 = (np.column_stack([u1, np.ones(len(u1))]) @ self.Kinv.T)[:, :2]
            X, z0, z1, ang = _triangulate(kf.R, kf.t, R, t, x0, x1)
            e0 = _reproj_px(kf.R, kf.t, X, u0, self.K)
            e1 = _reproj_px(R, t, X, u1, self.K)
            good = ((z0 > 0) & (z1 > 0) & (e0 < p.tri_max_px) & (e1 < p.tri_max_px)
                    & (ang > p.tri_min_angle_deg) & (z1 < 40 * self.scale_ref))
            self.X[common[good]] = X[good]

    # -- bundle adjustment --
    def _local_ba(self) -> None:
        """Sliding-window bundle adjustment over the last keyframes and the map points they share.

        Gauge: the oldest keyframe of the window is fixed, and the distance between it and the next
        one is held by a stiff prior (monocular scale). Fixing the second keyframe outright would
        freeze the error of the two-view initialisation into the whole clip; when the two centres
        nearly coincide (rotation only), both are fixed instead."""
        from scipy.optimize import least_squares
        from scipy.sparse import coo_matrix

        t0 = time.perf_counter()
        kfs = [k for k in self.kfs[-self.p.ba_window:] if len(k.ids)]
        if len(kfs) < 2:
            return
        c_first = -kfs[0].R.T @ kfs[0].t
        d0 = float(np.linalg.norm(kfs[1].R @ c_first + kfs[1].t))
        n_fix = 1 if d0 > 0.01 * self.scale_ref else 2
        if len(kfs) <= n_fix:
            return
        all_ids = np.concatenate([k.ids for k in kfs])
        u, cnt = np.unique(all_ids, return_counts=True)
        pid = u[(cnt >= 2) & np.isfinite(self.X[u, 0])]
        if len(pid) < 10:
            return
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
        x0 = np.concatenate([np.concatenate([np.zeros(3), k.t]) for k in kfs[n_fix:]] + [self.X[pid].ravel()])
        K = self.K
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
                            x_scale="jac", max_nfev=self.p.ba_max_nfev, xtol=1e-5, ftol=1e-5,
                            tr_solver="lsmr")
        Rs, ts, P, _ = unpack(sol.x)
        for k, R, t in zip(kfs[n_fix:], Rs[n_fix:], ts[n_fix:]):
            k.R, k.t = R, t
        self.X[pid] = P
        # points that still do not fit, or went behind a camera, leave the map
        res = np.hypot(*sol.fun[: 2 * m].reshape(-1, 2).T)
        z = np.einsum("nij,nj->ni", Rs[cam], P[pt])[:, 2] + ts[cam, 2]
        bad = np.zeros(len(pid), bool)
        np.logical_or.at(bad, pt, (res > 3 * self.p.pnp_px) | (z <= 0))
        self.X[pid[bad]] = np.nan
        last = kfs[-1]
        if last.fi in self.res and self.res[last.fi][2] == "map":
            self.res[last.fi][0], self.res[last.fi][1] = last.R, last.t
            self.last_pose = (last.R, last.t)
        self.counters["ba_s"] += time.perf_counter() - t0

    # -- loss and recovery --
    def _lose(self, fi, gray, hand):
        self.mode = "lost"
        self.lost_since = 0
        self.pts = np.zeros((0, 2), np.float32)
        self.ids = np.zeros(0, np.int64)
        self._record(fi, None, None, "lost")
        self._lost(fi, gray, hand, first=True)

    def _lost(self, fi, gray, hand, first: bool = False):
        if not first:
            self._record(fi, None, None, "lost")
        if self._relocalise(fi, gray, hand):
            return
        feats = self._detect(gray, hand, self.p.max_features)
        if len(feats) < self.p.min_tracks:
            return  # nothing to start from (dark, blurred, covered): keep trying to relocalise
        self.lost_since += 1
        can_reloc = any(k.desc is not None for k in self.kfs[-self.p.reloc_kfs:])
        if self.lost_since >= self.p.reloc_frames or not can_reloc:
            anchor = self.last_pose
            self._start(fi, gray, hand, *(anchor or (np.eye(3), np.zeros(3))), feats=feats)
            if self.mode == "init" and anchor is not None:
                # a new segment, anchored (not aligned): its first frame gets the last good pose
                self.counters["n_new_segments"] += 1
                self.res[fi][2] = "anchored"

    def _relocalise(self, fi, gray, hand) -> bool:
        """ORB matches between this frame and the map points of recent keyframes, then PnP."""
        import cv2

        for k in self.kfs[-self.p.reloc_kfs:]:
            self._describe(k)
        kfs = [k for k in self.kfs[-self.p.reloc_kfs:] if k.desc is not None]
        if not kfs:
            return False
        pts = self._detect_free(gray, hand, 1000)
        kps, desc = self._orb_at(gray, pts, np.arange(len(pts)))
        if desc is None or len(kps) < self.p.reloc_min_inliers:
            return False
        D = np.vstack([k.desc for k in kfs])
        Did = np.concatenate([k.desc_ids for k in kfs])
        matches = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(desc, D, k=2)
        qi, ti = [], []
        for mm in matches:
            if len(mm) == 2 and mm[0].distance < 0.8 * mm[1].distance and mm[0].distance < 64:
                qi.append(mm[0].queryIdx)
                ti.append(mm[0].trainIdx)
        if len(qi) < self.p.reloc_min_inliers:
            return False
        ids = Did[ti]
        ok = np.isfinite(self.X[ids, 0])
        uv = np.array([kps[q].pt for q in qi], np.float32)[ok]
        ids = ids[ok]
        if len(ids) < self.p.reloc_min_inliers:
            return False
        obj = self.X[ids]
        ok, rvec, tvec, inl = cv2.solvePnPRansac(obj, uv.astype(np.float64), self.K, None,
                                                 iterationsCount=200, reprojectionError=3.0,
                                                 confidence=0.999, flags=cv2.SOLVEPNP_EPNP)
        if not ok or inl is None or len(inl) < self.p.reloc_min_inliers:
            return False
        inl = inl.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(obj[inl], uv[inl].astype(np.float64), self.K, None, rvec, tvec)
        R, t = cv2.Rodrigues(rvec)[0], tvec.ravel()
        # continue tracking from the matched map points (one track per point), plus the other map
        # points of the best-matching keyframe, found by KLT from that keyframe starting at their
        # projections (a handful of ORB matches alone would leave the map thin and the pose weak)
        uid, first = np.unique(ids[inl], return_index=True)
        pts = uv[inl][first].astype(np.float32)
        best = max(kfs, key=lambda k: np.isin(uid, k.ids, assume_unique=True).sum())
        if best.gray is not None:
            sel = np.isfinite(self.X[best.ids, 0]) & ~np.isin(best.ids, uid, assume_unique=True)
            cid, cuv = best.ids[sel], best.uv[sel]
            Xc = self.X[cid] @ R.T + t
            pred = (Xc @ self.K.T)[:, :2] / np.maximum(Xc[:, 2:3], 1e-9)
            h, w = gray.shape
            b = self.p.border_px
            vis = (Xc[:, 2] > 0) & (pred[:, 0] >= b) & (pred[:, 0] < w - b) & (pred[:, 1] >= b) & (pred[:, 1] < h - b)
            if vis.sum():
                p1, st, _ = cv2.calcOpticalFlowPyrLK(best.gray, gray, cuv[vis].reshape(-1, 1, 2),
                                                     pred[vis].astype(np.float32).reshape(-1, 1, 2),
                                                     winSize=self.lk["winSize"], maxLevel=2,
                                                     criteria=self.lk["criteria"],
                                                     flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
                p1 = p1.reshape(-1, 2)
                good = (st.ravel() == 1) & (np.linalg.norm(p1 - pred[vis], axis=1) < 3 * self.p.pnp_px)
                if hand is not None:
                    good &= hand[np.clip(p1[:, 1].astype(int), 0, h - 1), np.clip(p1[:, 0].astype(int), 0, w - 1)] == 0
                if good.any():
                    uid = np.concatenate([uid, cid[vis][good]])
                    pts = np.vstack([pts, p1[good].astype(np.float32)])
                    order = np.argsort(uid)
                    uid, pts = uid[order], pts[order]
                    rvec, tvec = cv2.solvePnPRefineLM(self.X[uid], pts.astype(np.float64), self.K, None,
                                                      cv2.Rodrigues(R)[0], t.reshape(3, 1).copy())
                    R2, t2 = cv2.Rodrigues(rvec)[0], tvec.ravel()
                    keep = _reproj_px(R2, t2, self.X[uid], pts, self.K) < self.p.pnp_px
                    if keep.sum() >= self.p.reloc_min_inliers:
                        R, t, uid, pts = R2, t2, uid[keep], pts[keep]
        self.pts = pts
        self.ids = uid
        z = (self.X[uid] @ R.T + t)[:, 2]
        self.counters["n_relocalised"] += 1
        self.mode = "track"
        self.last_pose = (R, t)
        self._add_kf(fi, R, t, gray, hand, len(uid))
        self._record(fi, R, t, "map", kf=True, n_in=len(uid), depth=float(np.median(z)))
        return True

    def finish(self) -> ClipTrajectory:
        fis = np.array(sorted(self.res), np.int64)
        n = len(fis)
        R = np.full((n, 3, 3), np.nan)
        t = np.full((n, 3), np.nan)
        tracked = np.zeros(n, bool)
        kf = np.zeros(n, bool)
        nin = np.zeros(n, np.int32)
        depth = np.full(n, np.nan)
        mode = np.empty(n, object)
        for i, f in enumerate(fis):
            Ri, ti, m, k, ni, d = self.res[int(f)]
            mode[i] = m
            if Ri is not None:
                R[i], t[i], tracked[i] = Ri, ti, True
            kf[i], nin[i], depth[i] = k, ni, d
        stats = dict(self.counters)
        stats.update({f"frames_{m}": int((mode == m).sum()) for m in ("map", "rotation", "static", "lost",
                                                                      "anchored")})
        return ClipTrajectory(fis, R, t, tracked, kf, nin, depth, mode, stats, self.samples)


# -- video level --------------------------------------------------------------------------------------

@dataclass
class PoseResult:
    poses: pa.Table  # CAMERA_POSES columns (without partition_key), one row per frame of `frames`
    stats: dict


def _clip_ranges(frames_t: np.ndarray, clips: pa.Table | None) -> list[tuple[int, int]]:
    """[first, last] frame positions of each clip (by presentation time), in clip order."""
    n = len(frames_t)
    if clips is None or clips.num_rows == 0:
        return [(0, n - 1)]
    for name in ("start_s", "end_s"):
        if name not in clips.column_names:
            raise PoseInputError(f"clips table: no {name!r} column")
    cl = sorted(zip(clips.column("start_s").to_pylist(), clips.column("end_s").to_pylist()))
    out = []
    for a, b in cl:
        if b < a:
            raise PoseInputError(f"clips table: clip [{a}, {b}] ends before it starts")
        i0 = int(np.searchsorted(frames_t, a - 1e-6, "left"))
        i1 = int(np.searchsorted(frames_t, b + 1e-6, "right")) - 1
        if i1 >= i0:
            out.append((i0, i1))
    if not out:
        return [(0, n - 1)]
    # frames no clip covers (rounding at the ends) join the nearest clip, so every frame gets a pose
    out[0] = (0, out[0][1])
    out[-1] = (out[-1][0], max(out[-1][1], n - 1))
    return out


def _validate(frames: pa.Table, calib: dict) -> tuple[np.ndarray, np.ndarray]:
    if frames is None or frames.num_rows == 0:
        raise PoseInputError("frames table: empty")
    for name in ("frame_index", "t_s"):
        if name not in frames.column_names:
            raise PoseInputError(f"frames table: no {name!r} column")
    fi = frames.column("frame_index").to_numpy().astype(np.int64)
    t = frames.column("t_s").to_numpy().astype(np.float64)
    if np.any(np.diff(fi) <= 0) or fi[0] < 0:
        raise PoseInputError("frames table: frame_index must be increasing from 0")
    if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise PoseInputError("frames table: t_s must be finite and strictly increasing")
    if not calib or any(calib.get(k) is None for k in ("fx", "fy", "cx", "cy", "width", "height")):
        raise PoseInputError(f"calibration row {calib!r}: needs fx, fy, cx, cy, width, height")
    return fi, t


def pose_table(frame_index, t_s, R_wc, c, tracked, scale: str, is_kf=None, n_inliers=None) -> pa.Table:
    """CAMERA_POSES columns (without partition_key); untracked frames carry NaN poses."""
    from ego_assets.lib.schemas import CAMERA_POSES

    n = len(frame_index)
    q = np.full((n, 4), np.nan)
    ok = np.asarray(tracked, bool) & np.isfinite(R_wc).all(axis=(1, 2))
    if ok.any():
        q[ok] = Rotation.from_matrix(R_wc[ok]).as_quat()
    c = np.where(ok[:, None], c, np.nan)
    cols = dict(frame_index=pa.array(np.asarray(frame_index, np.int32)), t_s=pa.array(np.asarray(t_s, float)),
                tx=pa.array(c[:, 0]), ty=pa.array(c[:, 1]), tz=pa.array(c[:, 2]),
                qx=pa.array(q[:, 0]), qy=pa.array(q[:, 1]), qz=pa.array(q[:, 2]), qw=pa.array(q[:, 3]),
                tracked=pa.array(ok), scale=pa.array([scale] * n, pa.string()),
                is_keyframe=pa.array(np.zeros(n, bool) if is_kf is None else np.asarray(is_kf, bool)),
                n_inliers=pa.array(np.zeros(n, np.int32) if n_inliers is None else
                                   np.asarray(n_inliers, np.int32)))
    schema = pa.schema([f for f in CAMERA_POSES if f.name != "partition_key"])
    return pa.table(cols).cast(schema)


def estimate(proxy_path: str, frames: pa.Table, clips: pa.Table | None, calib: dict,
             hand_tracks: pa.Table | None, progress: Callable[[int, int], None] | None = None,
             scene_depth: pa.Table | None = None, params: VOParams = VOParams()) -> PoseResult:
    """Camera-to-world pose of every frame of ``frames`` (world = camera of the first sampled frame).

    Frames are decoded once, undistorted with the calibration, hand-masked, and fed to one
    :class:`ClipOdometry` per clip (two at a time where clips overlap); each finished clip is stitched
    into the world frame by a Sim(3) fit on the overlap. Metric scale comes from ``scene_depth``
    (frame_index, depth_m: median metric scene depth, e.g. from the DepthPro calibration backend) if
    given, else from the hands (metric ``joints_cam`` against their triangulated depth while a hand
    rests; for head motion too small to triangulate, a still hand's metric positions against the
    camera's translation), else the scale is 'relative' (median scene depth ~ 1). A camera the calibration classified
    as static gets identity poses."""
    import cv2

    from ego_assets.lib.geometry import stitch
    from ego_assets.lib.geometry.calibration import camera_matrix, undistorter
    from ego_assets.lib.video import iter_frames

    t_start = time.perf_counter()
    fi, t_s = _validate(frames, calib)
    n = len(fi)
    size = (int(calib["width"]), int(calib["height"]))
    if str(calib.get("camera_motion") or "") == "static":
        R = np.tile(np.eye(3), (n, 1, 1))
        table = pose_table(fi, t_s, R, np.zeros((n, 3)), np.ones(n, bool), "metric")
        if progress:
            progress(n, n)
        return PoseResult(table, dict(static=True, tracked_fraction=1.0, n_keyframes=0, n_clips=0,
                                      scale_source="static", metric_scale=1.0,
                                      fps=n / max(1e-9, time.perf_counter() - t_start), n_frames=n))
    K = camera_matrix(calib, rectified=True)
    und = undistorter(calib)
    masker = HandMasker(hand_tracks, size, params.hand_margin, params.hand_margin_px)
    ranges = _clip_ranges(t_s, clips)
    stitcher = stitch.Stitcher(n)  # keep_samples set below, once the depth frames are known
    active: dict[int, ClipOdometry] = {}
    pos_of = {int(f): i for i, f in enumerate(fi)}
    depth_pos = set()
    if scene_depth is not None and scene_depth.num_rows and "frame_index" in scene_depth.column_names:
        depth_pos = {pos_of[int(f)] for f in scene_depth.column("frame_index").to_pylist() if int(f) in pos_of}
    stitcher.keep_samples = depth_pos
    samples_for = []
    for k, (a, b) in enumerate(ranges):
        want = {p for p in depth_pos if a <= p <= b}
        if k > 0:
            want |= set(range(a, min(b, ranges[k - 1][1]) + 1))
        if k + 1 < len(ranges):
            want |= set(range(max(a, ranges[k + 1][0]), b + 1))
        samples_for.append(want)
    next_clip = 0
    n_decoded = 0
    clip_stats = []
    for idx, _, img in iter_frames(proxy_path, 0, int(fi[-1]) + 1, fmt="gray"):
        pos = pos_of.get(idx)
        if pos is None:
            continue
        n_decoded += 1
        if img.shape[1] != size[0] or img.shape[0] != size[1]:
            raise PoseInputError(f"proxy {proxy_path}: frames are {img.shape[1]}x{img.shape[0]}, the "
                                 f"calibration is for {size[0]}x{size[1]}")
        if und is not None:
            img = und(img)
        hand = masker.mask(idx) if masker else None
        while next_clip < len(ranges) and ranges[next_clip][0] <= pos:
            active[next_clip] = ClipOdometry(K, size, params, samples_for[next_clip])
            next_clip += 1
        for k in sorted(active):
            active[k].push(pos, img, hand)
        for k in [k for k in active if ranges[k][1] <= pos]:
            traj = active.pop(k).finish()
            clip_stats.append(traj.stats)
            stitcher.add(traj)
        if progress and (n_decoded % 50 == 0 or n_decoded == n):
            progress(n_decoded, n)
    for k in sorted(active):  # proxy shorter than the table: finish what was seen
        traj = active.pop(k).finish()
        clip_stats.append(traj.stats)
        stitcher.add(traj)
    if n_decoded < n:
        raise PoseInputError(f"proxy {proxy_path}: decoded {n_decoded} frames, the frames table has {n}")
    world = stitcher.result(n)
    scale_source, metres_per_unit, scale_detail = "none", None, {}
    if scene_depth is not None and scene_depth.num_rows:
        metres_per_unit, scale_detail = stitch.scale_from_depth(world, scene_depth, pos_of, size)
        if metres_per_unit is not None:
            scale_source = "depth"
    if metres_per_unit is None and hand_tracks is not None and hand_tracks.num_rows:
        metres_per_unit, scale_detail = stitch.scale_from_hands(world, hand_tracks, pos_of, K)
        if metres_per_unit is not None:
            scale_source = "hands"
        else:  # too little parallax for a triangulation (a seated person's small head motion)
            metres_per_unit, still_detail = stitch.scale_from_still_hands(world, hand_tracks, pos_of)
            scale_detail = dict(triangulated=scale_detail, still_hands=still_detail)
            if metres_per_unit is not None:
                scale_source = "still_hands"
    c = world.centres * (metres_per_unit or 1.0)
    table = pose_table(fi, t_s, world.R_wc, c, world.tracked,
                       "metric" if metres_per_unit is not None else "relative", world.is_keyframe,
                       world.n_inliers)
    wall = time.perf_counter() - t_start
    agg = {k: sum(s.get(k, 0) for s in clip_stats) for k in
           ("n_keyframes", "n_relocalised", "n_new_segments", "n_inits", "frames_map", "frames_rotation",
            "frames_static", "frames_lost", "frames_anchored")}
    stats = dict(static=False, n_frames=n, tracked_fraction=float(world.tracked.mean()),
                 n_clips=len(ranges), scale_source=scale_source,
                 metric_scale=None if metres_per_unit is None else float(metres_per_unit),
                 scale_detail=scale_detail, stitch=stitcher.info, fps=n / wall if wall > 0 else 0.0,
                 seconds=wall, ba_seconds=float(sum(s.get("ba_s", 0.0) for s in clip_stats)),
                 hand_masked_frames=int(sum(1 for f in fi if masker.hulls(int(f)))), **agg)
    return PoseResult(table, stats)


def plot_trajectory_topdown(poses: pa.Table, size_px: int = 360) -> bytes:
    """PNG of the camera path seen from above (x right, z forward in the world = first camera), with
    untracked stretches left out; small, for the UI."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = poses.column("tx").to_numpy(zero_copy_only=False).astype(float)
    z = poses.column("tz").to_numpy(zero_copy_only=False).astype(float)
    tr = poses.column("tracked").to_numpy(zero_copy_only=False).astype(bool)
    scale = poses.column("scale")[0].as_py() if poses.num_rows else "relative"
    dpi = 100
    fig, ax = plt.subplots(figsize=(size_px / dpi, size_px / dpi), dpi=dpi)
    xs, zs = np.where(tr, x, np.nan), np.where(tr, z, np.nan)
    ax.plot(xs, zs, "-", lw=1.2, color="tab:blue")
    if tr.any():
        i0 = int(np.flatnonzero(tr)[0])
        ax.plot([xs[i0]], [zs[i0]], "o", color="tab:green", ms=5, label="start")
        i1 = int(np.flatnonzero(tr)[-1])
        ax.plot([xs[i1]], [zs[i1]], "s", color="tab:red", ms=5, label="end")
        ax.legend(fontsize=7, loc="best")
    unit = "m" if scale == "metric" else "rel."
    ax.set_xlabel(f"x ({unit})", fontsize=8)
    ax.set_ylabel(f"z ({unit})", fontsize=8)
    ax.set_title(f"camera path, top view ({100 * tr.mean() if len(tr) else 0:.0f}% tracked)", fontsize=8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
