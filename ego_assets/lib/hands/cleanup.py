"""Temporal clean-up of one hand track, on plain arrays.

Per-frame 3D positions are noisy mostly in depth (the lifting's scale comes from a network guess or a
size prior). Depth jumps are corrected in place (the frame's 2D evidence is good, only its distance is
off); then a rolling median over the track with a MAD threshold drops the frames whose wrist still
jumps away from its neighbours (a wrong detection); then gaps of at most ``max_gap`` missing frames
(dropped outliers
or missed detections) are filled by linear interpolation and flagged, and longer gaps stay empty:
a hand not seen has no row (docs/architecture.md §2), but a one-frame dropout inside a motion should not cut an
action segment in two. :func:`smooth_depth` smooths a track's depth (scaling about the camera centre,
so the 2D evidence is kept) and :func:`smooth_shape` its finger shape and a backend's finger pose
alike.
"""

from __future__ import annotations

import numpy as np

MAD_TO_SIGMA = 1.4826


def reject_outliers(values: np.ndarray, window: int = 7, k: float = 4.0, floor: float = 0.05) -> np.ndarray:
    """Inlier mask (N,) for a track's samples ``values`` (N, D) (e.g. wrist xyz in metres).

    A sample is an outlier when its distance to the rolling median (``window`` samples, centred)
    exceeds ``max(k * 1.4826 * MAD, floor)``, the MAD being that of all the track's distances;
    ``floor`` (same unit as values) keeps ordinary jitter from being cut on a very steady track: the
    default 5 cm is above the few-centimetre depth noise of a monocular hand at arm's length, below
    the jumps of a wrong detection or a distorted lift.
    Tracks shorter than 3 samples are kept whole.
    """
    from scipy.ndimage import median_filter

    v = np.asarray(values, float)
    if v.ndim == 1:
        v = v[:, None]
    n = len(v)
    if n < 3:
        return np.ones(n, bool)
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window={window}: must be an odd number >= 3")
    w = min(window, n if n % 2 else n - 1)
    med = median_filter(v, size=(w, 1), mode="mirror")  # an end sample is not its own neighbour
    r = np.linalg.norm(v - med, axis=1)
    mad = np.median(np.abs(r - np.median(r)))
    thr = max(k * MAD_TO_SIGMA * mad, floor)
    return r <= thr


def correct_depth_outliers(joints_cam: np.ndarray, window: int = 7, k: float = 4.0, floor_rel: float = 0.1
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Pull back the depth of frames whose palm depth jumps away from the track's rolling median.

    Monocular depth is the weak coordinate: the 2D keypoints of such a frame are fine, only its
    metric depth is off. So instead of dropping the frame, its joints are scaled about the camera
    centre (which leaves their projection unchanged) to put the palm at the rolling median depth.
    A frame is corrected when its relative depth deviation exceeds ``max(k * 1.4826 * MAD,
    floor_rel)``. Returns (joints, corrected mask).
    """
    from scipy.ndimage import median_filter

    J = np.asarray(joints_cam, float)
    n = len(J)
    if n < 3:
        return J.copy(), np.zeros(n, bool)
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window={window}: must be an odd number >= 3")
    z = J[:, [0, 5, 9, 13, 17], 2].mean(1)
    w = min(window, n if n % 2 else n - 1)
    med = median_filter(z, size=w, mode="mirror")
    r = np.abs(z - med) / np.maximum(med, 1e-6)
    mad = np.median(np.abs(r - np.median(r)))
    bad = r > max(k * MAD_TO_SIGMA * mad, floor_rel)
    out = J.copy()
    out[bad] *= (med[bad] / z[bad])[:, None, None]
    return out, bad


def fill_gaps(frame_index: np.ndarray, arrays: dict[str, np.ndarray], max_gap: int = 3
              ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Linearly interpolate every array over runs of at most ``max_gap`` missing frame indices.

    ``frame_index`` (N,) strictly increasing; each array has N rows (any trailing shape). Returns
    (frame indices, arrays, interpolated mask) with the new rows inserted in order.
    """
    fi = np.asarray(frame_index, np.int64)
    if len(fi) and np.any(np.diff(fi) <= 0):
        raise ValueError("fill_gaps: frame_index must be strictly increasing")
    if max_gap < 0:
        raise ValueError(f"max_gap={max_gap}: must be >= 0")
    for name, a in arrays.items():
        if len(a) != len(fi):
            raise ValueError(f"fill_gaps: array {name!r} has {len(a)} rows, frame_index {len(fi)}")
    if len(fi) < 2 or max_gap == 0:
        return fi.copy(), {k: np.asarray(a).copy() for k, a in arrays.items()}, np.zeros(len(fi), bool)
    new_fi, lo, hi, wt = [], [], [], []
    for i in range(len(fi) - 1):
        missing = fi[i + 1] - fi[i] - 1
        if 0 < missing <= max_gap:
            for m in range(1, missing + 1):
                new_fi.append(fi[i] + m)
                lo.append(i)
                hi.append(i + 1)
                wt.append(m / (missing + 1))
    if not new_fi:
        return fi.copy(), {k: np.asarray(a).copy() for k, a in arrays.items()}, np.zeros(len(fi), bool)
    new_fi = np.array(new_fi, np.int64)
    lo, hi, wt = np.array(lo), np.array(hi), np.array(wt)
    all_fi = np.concatenate([fi, new_fi])
    order = np.argsort(all_fi, kind="stable")
    out = {}
    for name, a in arrays.items():
        a = np.asarray(a)
        w = wt.reshape((-1,) + (1,) * (a.ndim - 1))
        interp = (1 - w) * a[lo].astype(float) + w * a[hi].astype(float)
        out[name] = np.concatenate([a.astype(float), interp])[order]
    flags = np.concatenate([np.zeros(len(fi), bool), np.ones(len(new_fi), bool)])[order]
    return all_fi[order], out, flags


def smooth_depth(joints_cam: np.ndarray, frame_index: np.ndarray | None = None, window: int = 5
                 ) -> np.ndarray:
    """Temporally smooth a track's palm depth, leaving every frame's projection unchanged.

    Monocular depth jitters from frame to frame (the landmarker's shape and keypoints are noisy, and
    depth is their least constrained coordinate), while a real hand's distance changes smoothly at
    10 fps. The palm depth is replaced by a running median (``window`` samples) followed by a 3-tap
    mean, both in log-depth, and each frame's joints are scaled about the camera centre to that depth.
    A median keeps monotone motion exactly and the 3-tap mean keeps linear motion, so a hand moving
    steadily towards the camera is not delayed; the ends use mirrored neighbours. Runs of samples
    separated by a gap of more than ``window`` frames (``frame_index``) are smoothed separately.
    """
    from scipy.ndimage import median_filter, uniform_filter1d

    J = np.asarray(joints_cam, float)
    n = len(J)
    if n < 3:
        return J.copy()
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window={window}: must be an odd number >= 3")
    fi = np.arange(n) if frame_index is None else np.asarray(frame_index)
    out = J.copy()
    breaks = np.flatnonzero(np.diff(fi) > window) + 1
    for seg in np.split(np.arange(n), breaks):
        if len(seg) < 3:
            continue
        z = J[seg][:, [0, 5, 9, 13, 17], 2].mean(1)
        if (z <= 0).any():
            continue
        lz = np.log(z)
        w = min(window, len(seg) if len(seg) % 2 else len(seg) - 1)
        sm = uniform_filter1d(median_filter(lz, size=w, mode="mirror"), 3, mode="mirror")
        out[seg] *= np.exp(sm - lz)[:, None, None]
    return out


def smooth_shape(arrays: dict[str, np.ndarray], frame_index: np.ndarray, weights=(0.25, 0.5, 0.25)
                 ) -> dict[str, np.ndarray]:
    """A 3-tap temporal smoothing of a track's hand *shape*, applied alike to the joints and to a
    backend's own finger pose, so that ``finger_pose`` is exactly as smooth as the joints it goes
    with. ``arrays``: ``joints_cam`` (N, 21, 3), smoothed relative to the palm centre (the palm
    centre itself, and so the hand's position and depth, is left as it is), and optionally
    ``finger_pose`` (N, 15, 3) axis-angle, smoothed as vectors (the 3 neighbours differ by a few
    degrees at 10 fps, where that equals the rotation average). A sample is smoothed only when both
    neighbours are the adjacent frames; the landmarker's per-frame jitter of the fingers (a few mm)
    is halved, a finger motion lasting 3 frames or more keeps its extent."""
    fi = np.asarray(frame_index)
    n = len(fi)
    out = {k: np.asarray(v, float).copy() for k, v in arrays.items()}
    if n < 3:
        return out
    a, b, c = weights
    mid = np.flatnonzero((fi[2:] - fi[1:-1] == 1) & (fi[1:-1] - fi[:-2] == 1)) + 1
    if "joints_cam" in arrays:
        J = np.asarray(arrays["joints_cam"], float)
        centre = J[:, [0, 5, 9, 13, 17]].mean(1, keepdims=True)
        rel = J - centre
        out["joints_cam"][mid] = centre[mid] + a * rel[mid - 1] + b * rel[mid] + c * rel[mid + 1]
    if "finger_pose" in arrays:
        P = np.asarray(arrays["finger_pose"], float)
        out["finger_pose"][mid] = a * P[mid - 1] + b * P[mid] + c * P[mid + 1]
    return out
