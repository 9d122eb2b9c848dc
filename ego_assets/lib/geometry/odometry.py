"""Monocular visual odometry of a whole video (the default ``camera_poses`` method, CPU, OpenCV).

:func:`estimate` decodes the proxy once (streamed: one frame in memory), undistorts each frame with the
calibration, masks the hands (:mod:`.hand_masks`), feeds one :class:`~.tracker.ClipOdometry` per clip
(:mod:`.tracker`; two at a time where clips overlap), stitches the clips into one world frame
(:mod:`.stitch`) and sets the metric scale. The table holds camera-to-world poses.
"""

from __future__ import annotations

import time
from dataclasses import InitVar, dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa
from scipy.spatial.transform import Rotation

from ego_assets.lib.arrow import schema_without_key
from ego_assets.lib.geometry import stitch
from ego_assets.lib.geometry.hand_masks import HandMasker
from ego_assets.lib.geometry.pose_inputs import PoseInputError, clip_ranges, validate_inputs
from ego_assets.lib.geometry.tracker import ClipOdometry, VOParams

__all__ = ["METHOD", "POSES_SCHEMA", "HandMasker", "PoseInputError", "PoseResult", "PoseResultError", "VOParams",
           "estimate", "plot_trajectory_topdown", "pose_table"]


METHOD = "opencv_vo"  # the backend name of this module's estimate (pose_backends.OpenCVOdometry)
POSES_SCHEMA = schema_without_key("camera_poses")
_UNIT_ATOL = 1e-6  # |q| of a tracked row may differ from 1 by float rounding only


class PoseResultError(ValueError):
    """A pose backend returned a result that breaks the contract of :class:`PoseResult`."""


@dataclass(frozen=True)
class PoseResult:
    """What ``estimate`` returns (the contract of the ``poses`` stage; the conformance test checks every
    backend).

    ``poses``: exactly the ``camera_poses`` schema without ``partition_key`` (:data:`POSES_SCHEMA`;
    :func:`pose_table` builds it), one row per frame, ``frame_index`` increasing, ``t_s`` finite and
    increasing; a tracked row has a unit quaternion and a finite position, an untracked one NaN.
    ``stats``: a dict (JSON-safe, for the UI and the lineage). ``frames``: when given (the stage's
    ``frames`` table), ``poses`` must hold exactly its frames and times. Checked on construction:
    :class:`PoseResultError` names the backend and the field."""

    poses: pa.Table
    stats: dict = field(default_factory=dict)
    backend: str = METHOD
    frames: InitVar[pa.Table | None] = None

    def _fail(self, field_: str, why: str):
        raise PoseResultError(f"poses backend {self.backend!r}: estimate() returned a bad {field_!r}: {why}")

    def __post_init__(self, frames: pa.Table | None):
        t = self.poses
        if not isinstance(t, pa.Table) or not t.schema.equals(POSES_SCHEMA):
            self._fail("poses", f"expected the schema {POSES_SCHEMA}, got "
                                f"{t.schema if isinstance(t, pa.Table) else type(t).__name__}")
        if not isinstance(self.stats, dict):
            self._fail("stats", f"expected a dict, got {type(self.stats).__name__}")
        for name in ("frame_index", "t_s", "tracked"):
            if t.column(name).null_count:
                self._fail(f"poses.{name}", f"{t.column(name).null_count} null value(s)")
        fi = t.column("frame_index").to_numpy()
        ts = t.column("t_s").to_numpy()
        if np.any(np.diff(fi) <= 0):
            self._fail("poses.frame_index", "not increasing (one row per frame, in frame order)")
        if not np.isfinite(ts).all() or np.any(np.diff(ts) <= 0):
            self._fail("poses.t_s", "not finite and increasing")
        tracked = t.column("tracked").to_numpy(zero_copy_only=False)
        q = np.column_stack([t.column(c).to_numpy(zero_copy_only=False) for c in ("qx", "qy", "qz", "qw")])
        c = np.column_stack([t.column(k).to_numpy(zero_copy_only=False) for k in ("tx", "ty", "tz")])
        bad_q = np.flatnonzero(tracked & ~(np.abs(np.linalg.norm(q, axis=1) - 1.0) <= _UNIT_ATOL))
        if len(bad_q):
            self._fail("poses.q", f"{len(bad_q)} tracked row(s) without a unit quaternion (first: frame "
                                  f"{int(fi[bad_q[0]])}, q={q[bad_q[0]].tolist()})")
        bad_c = np.flatnonzero(tracked & ~np.isfinite(c).all(1))
        if len(bad_c):
            self._fail("poses.t", f"{len(bad_c)} tracked row(s) with a non-finite position (first: frame "
                                  f"{int(fi[bad_c[0]])})")
        if frames is not None:
            want = frames.column("frame_index").to_numpy(zero_copy_only=False)
            if not np.array_equal(fi, want):
                self._fail("poses.frame_index", f"{len(fi)} rows for the {len(want)} frames of the frames "
                                                "table (one row per frame, the same frame_index)")
            if not np.allclose(ts, frames.column("t_s").to_numpy(zero_copy_only=False), rtol=0, atol=1e-9):
                self._fail("poses.t_s", "differs from the frames table's t_s")


def pose_table(frame_index, t_s, R_wc, c, tracked, scale: str, is_kf=None, n_inliers=None) -> pa.Table:
    """CAMERA_POSES columns (without partition_key); untracked frames carry NaN poses."""
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
    return pa.table(cols).cast(POSES_SCHEMA)


def estimate(proxy_path: str, frames: pa.Table, clips: pa.Table | None, calib: dict,
             hand_tracks: pa.Table | None, progress: Callable[[int, int], None] | None = None,
             scene_depth: pa.Table | None = None, params: VOParams = VOParams()) -> PoseResult:
    """Camera-to-world pose of every frame of ``frames`` (world = camera of the first sampled frame).

    Frames are decoded once, undistorted with the calibration, hand-masked, and fed to one
    :class:`~.tracker.ClipOdometry` per clip (two at a time where clips overlap); each finished clip is stitched
    into the world frame by a Sim(3) fit on the overlap. Metric scale comes from ``scene_depth``
    (frame_index, depth_m: median metric scene depth, e.g. from the DepthPro calibration backend) if
    given, else from the hands (metric ``joints_cam`` against their triangulated depth while a hand
    rests; for head motion too small to triangulate, a still hand's metric positions against the
    camera's translation), else the scale is 'relative' (median scene depth ~ 1). A camera the calibration classified
    as static gets identity poses. OpenCV runs on the step's cores (``lib/opencv_threads``)."""
    from ego_assets.lib.opencv_threads import opencv_threads

    with opencv_threads():
        return _estimate(proxy_path, frames, clips, calib, hand_tracks, progress, scene_depth, params)


def _estimate(proxy_path, frames, clips, calib, hand_tracks, progress, scene_depth, params) -> PoseResult:
    from ego_assets.lib.geometry.calibration import camera_matrix, undistorter
    from ego_assets.lib.video import iter_frames

    t_start = time.perf_counter()
    fi, t_s = validate_inputs(frames, calib)
    n = len(fi)
    size = (int(calib["width"]), int(calib["height"]))
    if str(calib.get("camera_motion") or "") == "static":
        R = np.tile(np.eye(3), (n, 1, 1))
        table = pose_table(fi, t_s, R, np.zeros((n, 3)), np.ones(n, bool), "metric")
        if progress:
            progress(n, n)
        return PoseResult(table, dict(static=True, tracked_fraction=1.0, n_keyframes=0, n_clips=0,
                                      scale_source="static", metric_scale=1.0,
                                      fps=n / max(1e-9, time.perf_counter() - t_start), n_frames=n),
                          frames=frames)
    K = camera_matrix(calib, rectified=True)
    und = undistorter(calib)
    masker = HandMasker(hand_tracks, size, params.hand_margin, params.hand_margin_px)
    ranges = clip_ranges(t_s, clips)
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
    return PoseResult(table, stats, frames=frames)


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
