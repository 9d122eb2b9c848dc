"""Monocular visual odometry over the frames of one clip (:class:`ClipOdometry`), fed one undistorted gray
frame at a time:

* KLT features (pyramidal Lucas-Kanade, forward-backward checked), re-detected at keyframes, none on
  the hands (:mod:`.hand_masks`);
* initialisation from the essential matrix (5-point RANSAC + ``recoverPose``) once there is enough
  parallax; until then (and whenever translation is unobservable) a rotation-only model, which is what
  a head mostly does; a camera that does not move keeps exactly the previous pose (no drift);
* then PnP (RANSAC + LM refinement) against the triangulated map, new points triangulated at keyframes,
  and a sliding-window bundle adjustment (:mod:`.bundle_adjustment`);
* tracking loss (too few features, failed PnP) marks frames ``tracked=False`` with no pose; the
  tracker relocalises against recent keyframes (ORB matches + PnP, same world frame) or, failing that,
  starts a new segment anchored at the last good pose (counted in the stats, never silent).

Poses here are world-to-camera (R, t) as OpenCV uses them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ego_assets.lib.geometry.bundle_adjustment import adjust_window
from ego_assets.lib.geometry.two_view import bearings, reproj_px, rotation_only, triangulate


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


@dataclass
class Keyframe:
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
        self.kfs: list[Keyframe] = []
        self.mode = "start"  # start | init (no map yet) | track | lost
        self.ref: Keyframe | None = None
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
        for x, y in self.pts.astype(np.int64).tolist():  # int() of each, as Python ints: 2x faster loop
            cv2.circle(m, (x, y), self.p.min_distance, 0, -1)
        c = cv2.goodFeaturesToTrack(gray, n_max, self.p.quality, self.p.min_distance, mask=m, blockSize=5)
        return np.zeros((0, 2), np.float32) if c is None else c.reshape(-1, 2).astype(np.float32)

    def _add_kf(self, fi, R, t, gray, hand, n_map, new: np.ndarray | None = None) -> Keyframe:
        """Keyframe at this frame: top the features up and remember what it sees."""
        if new is None:
            new = self._detect(gray, hand, self.p.max_features - len(self.pts))
        kf = Keyframe(len(self.kfs), fi, R, t, self.ids.copy(), self.pts.copy())
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

    def _describe(self, kf: Keyframe) -> None:
        """ORB descriptors at the keyframe's map points, for relocalisation after a loss."""

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
    def _common(self, kf: Keyframe):
        common, a, b = np.intersect1d(kf.ids, self.ids, assume_unique=True, return_indices=True)
        return common, kf.uv[a], self.pts[b]

    def _init_step(self, fi, gray, hand):

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
        b0, b1 = bearings(u0, self.Kinv), bearings(u1, self.Kinv)
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
        X, z0, z1, ang = triangulate(np.eye(3), np.zeros(3), Rr, tr, x0, x1)
        e0 = reproj_px(np.eye(3), np.zeros(3), X, u0, self.K)
        e1 = reproj_px(Rr, tr, X, u1, self.K)
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
        self._add_kf(fi, R, t, gray, hand, int(good.sum()))
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
        err = reproj_px(R, t, obj, img, self.K)
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
            Rrel, inl = (rotation_only(bearings(u0, self.Kinv), bearings(u1, self.Kinv),
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
            X, z0, z1, ang = triangulate(kf.R, kf.t, R, t, x0, x1)
            e0 = reproj_px(kf.R, kf.t, X, u0, self.K)
            e1 = reproj_px(R, t, X, u1, self.K)
            good = ((z0 > 0) & (z1 > 0) & (e0 < p.tri_max_px) & (e1 < p.tri_max_px)
                    & (ang > p.tri_min_angle_deg) & (z1 < 40 * self.scale_ref))
            self.X[common[good]] = X[good]

    # -- bundle adjustment --
    def _local_ba(self) -> None:
        t0 = time.perf_counter()
        kfs = [k for k in self.kfs[-self.p.ba_window:] if len(k.ids)]
        if not adjust_window(kfs, self.X, self.K, self.scale_ref, self.p.ba_max_nfev, 3 * self.p.pnp_px):
            return
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
                    keep = reproj_px(R2, t2, self.X[uid], pts, self.K) < self.p.pnp_px
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
