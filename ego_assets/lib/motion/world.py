"""World-frame hand motion: camera-frame hand tracks composed with the camera poses, cleaned per hand.

Why world frame: in egocentric video the camera (the head) moves all the time, so a hand held still
moves in the image. Segmenting and captioning on camera-frame motion would cut at head turns; composing
with ``T_wc`` removes the head motion and leaves what the hand did.

Per hand and per contiguous run of frames (a missing frame or an untracked pose ends a run, so nothing
is smoothed or differentiated across a gap):

1. outliers: a Hampel filter on the wrist position (rolling median, robust scale from the median
   absolute deviation) and the same on the wrist rotation (angle to the leave-one-out local mean);
   outlier frames are re-estimated from their inlier neighbours (linear in time for joints, slerp for
   the rotation);
2. positions (all 21 joints) smoothed with a Savitzky-Golay filter (keeps the speed peaks of quick
   reaches better than a moving average of the same width);
3. rotations smoothed with a weighted chordal mean over a sliding window (``Rotation.mean``), which
   stays on SO(3) - no component-wise filtering of angles or quaternions;
4. speed (m/s) from the smoothed wrist positions and the real ``t_s`` differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
from scipy.ndimage import median_filter
from scipy.spatial.transform import Rotation, Slerp

from ego_assets.lib.motion.arrow import (MotionInputError, fixed, require, scalar, schema_without_key,
                                         vectors)

HANDS = ("left", "right")
N_JOINTS = 21


@dataclass(frozen=True)
class MotionParams:
    """Clean-up and smoothing of world-frame hand motion. Windows are in frames (odd), tuned for the
    10 fps proxies; at other rates scale them with the rate.

    - ``outlier_window`` (7): rolling-median window of the Hampel filter.
    - ``outlier_k`` (4.0): a frame is an outlier when its distance to the rolling median exceeds
      ``outlier_k`` robust standard deviations (1.4826 x the local median absolute deviation) ...
    - ``outlier_min_dev_m`` (0.04): ... and at least this many metres (monocular depth of a lifted hand
      jitters by centimetres; only jumps beyond that are glitches worth replacing).
    - ``outlier_min_angle_deg`` (40): the same floor for the wrist rotation.
    - ``savgol_window`` (7), ``savgol_polyorder`` (2): Savitzky-Golay smoothing of the joints.
    - ``rot_window`` (5): window of the sliding chordal mean of the wrist rotation (triangular weights).
    """

    outlier_window: int = 7
    outlier_k: float = 4.0
    outlier_min_dev_m: float = 0.04
    outlier_min_angle_deg: float = 40.0
    savgol_window: int = 7
    savgol_polyorder: int = 2
    rot_window: int = 5

    def __post_init__(self):
        for name in ("outlier_window", "savgol_window", "rot_window"):
            v = getattr(self, name)
            if v < 1 or v % 2 == 0:
                raise ValueError(f"MotionParams.{name} must be a positive odd number of frames, got {v}")
        if self.savgol_polyorder < 0 or self.savgol_polyorder >= self.savgol_window:
            raise ValueError(f"MotionParams.savgol_polyorder must be in [0, savgol_window), got "
                             f"{self.savgol_polyorder}")
        if self.outlier_k <= 0 or self.outlier_min_dev_m < 0 or self.outlier_min_angle_deg < 0:
            raise ValueError("MotionParams: outlier thresholds must be positive")


def contiguous_runs(frame_index: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` row ranges of consecutive frame indices in a sorted array."""
    n = len(frame_index)
    if n == 0:
        return []
    breaks = np.flatnonzero(np.diff(frame_index) != 1) + 1
    edges = np.concatenate([[0], breaks, [n]])
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def windowed_rotation_mean(rot: Rotation, window: int, exclude_center: bool = False) -> Rotation:
    """Chordal L2 mean of the rotations in a centred window around each sample (triangular weights,
    truncated at the ends). ``exclude_center`` gives the leave-one-out mean used to spot outliers."""
    n = len(rot)
    h = window // 2
    if n == 0 or h == 0:
        return rot
    q = rot.as_quat()
    qp = np.pad(q, ((h, h), (0, 0)), mode="edge")
    win = np.moveaxis(np.lib.stride_tricks.sliding_window_view(qp, window, axis=0), -1, 1)  # (n, W, 4)
    offs = np.arange(window) - h
    w = np.broadcast_to((h + 1 - np.abs(offs)).astype(float), (n, window)).copy()
    idx = np.arange(n)[:, None] + offs[None, :]
    w[(idx < 0) | (idx >= n)] = 0.0
    if exclude_center:
        w[:, h] = 0.0
    bad = w.sum(axis=1) == 0
    w[bad, h] = 1.0  # a lone sample: its own mean
    return Rotation.from_quat(np.ascontiguousarray(win)).mean(weights=w, axis=1)


def position_outliers(pos: np.ndarray, window: int, k: float, min_dev: float) -> np.ndarray:
    """Hampel test on a (N, 3) trajectory: distance to the rolling median vs. a robust local scale."""
    if len(pos) < 5:
        return np.zeros(len(pos), bool)
    med = median_filter(pos, size=(window, 1), mode="nearest")
    d = np.linalg.norm(pos - med, axis=1)
    scale = 1.4826 * median_filter(d, size=3 * window, mode="nearest")
    return d > np.maximum(k * scale, min_dev)


def rotation_outliers(rot: Rotation, window: int, k: float, min_angle: float) -> np.ndarray:
    """Hampel-style test on rotations: angle to the leave-one-out local chordal mean."""
    if len(rot) < 5:
        return np.zeros(len(rot), bool)
    loo = windowed_rotation_mean(rot, window, exclude_center=True)
    ang = (loo.inv() * rot).magnitude()
    scale = 1.4826 * median_filter(ang, size=3 * window, mode="nearest")
    return ang > np.maximum(k * scale, min_angle)


def smooth_positions(x: np.ndarray, window: int, polyorder: int) -> np.ndarray:
    """Savitzky-Golay along axis 0; the window shrinks to the run length (odd) on short runs."""
    n = len(x)
    w = min(window, n if n % 2 else n - 1)
    if w <= polyorder or w < 3:
        return x.copy()
    from scipy.signal import savgol_filter  # scipy.signal is slow to import: only when used

    return savgol_filter(x, w, polyorder, axis=0, mode="interp")


def _fill_positions(x: np.ndarray, t: np.ndarray, bad: np.ndarray) -> np.ndarray:
    good = ~bad
    if not bad.any() or not good.any():
        return x
    out = x.copy()
    for d in range(x.shape[1]):
        out[bad, d] = np.interp(t[bad], t[good], x[good, d])
    return out


def _fill_rotations(rot: Rotation, t: np.ndarray, bad: np.ndarray) -> Rotation:
    good = ~bad
    if not bad.any() or not good.any():
        return rot
    q = rot.as_quat()
    if good.sum() == 1:
        q[bad] = q[good][0]
    else:
        tg = t[good]
        q[bad] = Slerp(tg, rot[np.flatnonzero(good)])(np.clip(t[bad], tg[0], tg[-1])).as_quat()
    return Rotation.from_quat(q)


def tracked_poses(camera_poses: pa.Table) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """frame_index -> (unit quaternion x,y,z,w, translation) of ``T_wc`` for the tracked poses."""
    require(camera_poses, "camera_poses", ["frame_index", "tx", "ty", "tz", "qx", "qy", "qz", "qw",
                                           "tracked"])
    tracked = scalar(camera_poses, "tracked", bool, fill=False)
    cp = camera_poses.filter(pa.array(tracked))
    fi = scalar(cp, "frame_index", np.int64)
    if len(np.unique(fi)) != len(fi):
        raise MotionInputError("camera_poses: duplicate frame_index among tracked poses")
    t = np.stack([scalar(cp, c) for c in ("tx", "ty", "tz")], axis=1)
    q = np.stack([scalar(cp, c) for c in ("qx", "qy", "qz", "qw")], axis=1)
    qn = np.linalg.norm(q, axis=1)
    if len(q) and (not np.all(np.isfinite(q)) or np.any(qn < 1e-6) or not np.all(np.isfinite(t))):
        raise MotionInputError("camera_poses: non-finite translation or zero/non-finite quaternion "
                               "in a tracked pose")
    return {int(f): (q[i] / qn[i], t[i]) for i, f in enumerate(fi)}


def pose_scale(camera_poses: pa.Table) -> str | None:
    """The scale of a video's camera poses ('metric' or 'relative'; one per video), None when the
    table does not say. A world built on a 'relative' path is not metric: see ``hand_world.world_scale``."""
    if "scale" not in camera_poses.column_names or camera_poses.num_rows == 0:
        return None
    values = {v for v in camera_poses.column("scale").to_pylist() if v is not None}
    if len(values) > 1:
        raise MotionInputError(f"camera_poses: one scale per video expected, got {sorted(values)}")
    return values.pop() if values else None


def build_hand_world(hand_tracks: pa.Table, camera_poses: pa.Table, frames: pa.Table,
                     params: MotionParams = MotionParams(),
                     progress: Callable[[int, int], None] | None = None,
                     stats: dict | None = None) -> pa.Table:
    """World-frame, cleaned and smoothed hand motion (columns of ``hand_world``, no partition_key).

    One row per (frame, hand) of ``hand_tracks`` whose frame has a tracked camera pose; ``observed`` is
    False for rows the tracker filled in (``interpolated``). ``segment_id`` is null (set by
    :func:`ego_assets.lib.motion.segment.segment_by_wrist_speed`); ``speed_mps`` is null only for a
    single-frame run, where no speed exists. ``t_s`` is taken from ``frames`` (the one clock of the
    partition). ``world_scale`` repeats the poses' scale: with 'relative' poses the world positions
    and speeds mix metric hands with a camera path of unknown scale. If ``stats`` is a dict, counts
    are written into it (rows in/out, outlier frames...)."""
    require(hand_tracks, "hand_tracks", ["frame_index", "hand", "joints_cam", "wrist_rotvec_cam",
                                         "finger_pose"])
    require(frames, "frames", ["frame_index", "t_s"])
    poses = tracked_poses(camera_poses)
    world_scale = pose_scale(camera_poses)
    f_idx = scalar(frames, "frame_index", np.int64)
    f_t = scalar(frames, "t_s")
    if len(np.unique(f_idx)) != len(f_idx):
        raise MotionInputError("frames: duplicate frame_index values")
    t_of = dict(zip(f_idx.tolist(), f_t.tolist()))

    hands = np.asarray(hand_tracks.column("hand").to_pylist(), dtype=object)
    unknown = sorted({str(h) for h in hands} - set(HANDS))
    if unknown:
        raise MotionInputError(f"hand_tracks.hand: values must be 'left' or 'right', got {unknown}")
    fi_all = scalar(hand_tracks, "frame_index", np.int64)
    missing = sorted(set(fi_all.tolist()) - set(t_of))
    if missing:
        raise MotionInputError(f"hand_tracks: frame_index {missing[:5]} not in the frames table")
    interp = (scalar(hand_tracks, "interpolated", bool, fill=False)
              if "interpolated" in hand_tracks.column_names else np.zeros(len(fi_all), bool))

    out = {k: [] for k in ("frame_index", "t_s", "hand", "joints_world", "wrist_pos_world",
                           "wrist_rotvec_world", "finger_pose", "speed_mps", "observed")}
    st = dict(rows_in=int(hand_tracks.num_rows), rows_untracked_pose=0, outlier_frames=0,
              rotation_outlier_frames=0, runs=0)
    for hi, hand in enumerate(HANDS):
        sel = np.flatnonzero(hands == hand)
        if len(sel) == 0:
            if progress:
                progress(hi + 1, len(HANDS))
            continue
        sel = sel[np.argsort(fi_all[sel], kind="stable")]
        fi = fi_all[sel]
        if np.any(np.diff(fi) == 0):
            raise MotionInputError(f"hand_tracks: duplicate rows for the {hand} hand in one frame")
        keep = np.array([int(f) in poses for f in fi], bool)
        st["rows_untracked_pose"] += int((~keep).sum())
        sel, fi = sel[keep], fi[keep]
        if len(sel) == 0:
            if progress:
                progress(hi + 1, len(HANDS))
            continue
        sub = hand_tracks.take(pa.array(sel))
        t = np.array([t_of[int(f)] for f in fi])
        if np.any(np.diff(t) <= 0):
            raise MotionInputError("frames: t_s must increase with frame_index")
        joints_c = vectors(sub, "joints_cam", 3 * N_JOINTS, "hand_tracks").reshape(-1, N_JOINTS, 3)
        rv_c = vectors(sub, "wrist_rotvec_cam", 3, "hand_tracks")
        finger = vectors(sub, "finger_pose", 45, "hand_tracks")
        if not (np.all(np.isfinite(joints_c)) and np.all(np.isfinite(rv_c))):
            raise MotionInputError(f"hand_tracks: non-finite joints or wrist rotation ({hand} hand)")
        q_wc = np.stack([poses[int(f)][0] for f in fi])
        t_wc = np.stack([poses[int(f)][1] for f in fi])
        r_wc = Rotation.from_quat(q_wc)
        joints_w = np.einsum("nij,nkj->nki", r_wc.as_matrix(), joints_c) + t_wc[:, None, :]
        rot_w = r_wc * Rotation.from_rotvec(rv_c)

        joints_s = np.empty_like(joints_w)
        quat_s = np.empty((len(fi), 4))
        speed = np.full(len(fi), np.nan)
        for a, b in contiguous_runs(fi):
            st["runs"] += 1
            tr = t[a:b]
            jw = joints_w[a:b].reshape(b - a, -1)
            rr = rot_w[a:b]
            bad_p = position_outliers(jw[:, :3], params.outlier_window, params.outlier_k,
                                      params.outlier_min_dev_m)
            bad_r = rotation_outliers(rr, params.outlier_window, params.outlier_k,
                                      np.deg2rad(params.outlier_min_angle_deg))
            bad = bad_p | bad_r
            st["outlier_frames"] += int(bad_p.sum())
            st["rotation_outlier_frames"] += int(bad_r.sum())
            jw = _fill_positions(jw, tr, bad)
            rr = _fill_rotations(rr, tr, bad)
            js = smooth_positions(jw, params.savgol_window, params.savgol_polyorder)
            joints_s[a:b] = js.reshape(b - a, N_JOINTS, 3)
            quat_s[a:b] = windowed_rotation_mean(rr, params.rot_window).as_quat()
            if b - a >= 2:
                vel = np.gradient(js[:, :3], tr, axis=0)
                speed[a:b] = np.linalg.norm(vel, axis=1)

        out["frame_index"].append(fi)
        out["t_s"].append(t)
        out["hand"].append(np.full(len(fi), hand, dtype=object))
        out["joints_world"].append(joints_s.reshape(len(fi), -1))
        out["wrist_pos_world"].append(joints_s[:, 0, :])
        out["wrist_rotvec_world"].append(Rotation.from_quat(quat_s).as_rotvec())
        out["finger_pose"].append(finger)
        out["speed_mps"].append(speed)
        out["observed"].append(~interp[sel])
        if progress:
            progress(hi + 1, len(HANDS))

    schema = schema_without_key("hand_world")
    if not out["frame_index"]:
        if stats is not None:
            stats.update(st, rows_out=0)
        return schema.empty_table()
    cat = {k: np.concatenate(v) for k, v in out.items()}
    order = np.lexsort((np.array([HANDS.index(h) for h in cat["hand"]]), cat["frame_index"]))
    cat = {k: v[order] for k, v in cat.items()}
    n = len(order)
    speed = cat["speed_mps"]
    table = pa.table({
        "frame_index": pa.array(cat["frame_index"], pa.int32()),
        "t_s": pa.array(cat["t_s"], pa.float64()),
        "hand": pa.array(cat["hand"].tolist(), pa.string()),
        "joints_world": fixed(cat["joints_world"], schema.field("joints_world").type),
        "wrist_pos_world": fixed(cat["wrist_pos_world"], schema.field("wrist_pos_world").type),
        "wrist_rotvec_world": fixed(cat["wrist_rotvec_world"], schema.field("wrist_rotvec_world").type),
        "finger_pose": fixed(cat["finger_pose"], schema.field("finger_pose").type),
        "speed_mps": pa.array(speed, pa.float64(), mask=~np.isfinite(speed)),
        "segment_id": pa.nulls(n, pa.int32()),
        "observed": pa.array(cat["observed"].astype(bool), pa.bool_()),
        "world_scale": pa.array([world_scale] * n, pa.string()),
    }, schema=schema)
    if stats is not None:
        stats.update(st, rows_out=n)
    return table
