"""Quality checks of ``calibrations`` and ``camera_poses`` as pure functions: each takes the stored
row/table and returns ``(passed, value, detail)``; the wiring picks the severity (suggested in each
docstring) and writes the ``quality`` table."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from scipy.spatial.transform import Rotation

HFOV_RANGE_DEG = (30.0, 170.0)
MAX_SPEED_MPS = 3.0  # a head: brisk walking is ~1.5 m/s, a quick lean ~1 m/s
MAX_ANGULAR_DEG_S = 720.0  # a very fast head turn peaks around 500-700 deg/s


def check_intrinsics(calib: dict, hfov_range: tuple[float, float] = HFOV_RANGE_DEG):
    """ERROR. Positive focal lengths, principal point inside the image, horizontal FoV in a sane range
    (rectified intrinsics too, when the row has them). value: hfov in degrees."""
    try:
        fx, fy, cx, cy = (float(calib[k]) for k in ("fx", "fy", "cx", "cy"))
        w, h = int(calib["width"]), int(calib["height"])
    except (KeyError, TypeError, ValueError) as e:
        return False, None, f"calibration row incomplete: {e}"
    hfov = calib.get("hfov_deg")
    hfov = float(hfov) if hfov is not None else math.degrees(2 * math.atan(w / 2 / fx)) if fx > 0 else float("nan")
    problems = []
    if not (fx > 0 and fy > 0 and math.isfinite(fx) and math.isfinite(fy)):
        problems.append(f"focal lengths fx={fx:.1f}, fy={fy:.1f} not positive")
    if not (-0.5 <= cx <= w - 0.5 and -0.5 <= cy <= h - 0.5):
        problems.append(f"principal point ({cx:.1f}, {cy:.1f}) outside the {w}x{h} image")
    if not (hfov_range[0] <= hfov <= hfov_range[1]):
        problems.append(f"hfov {hfov:.1f} deg outside [{hfov_range[0]:g}, {hfov_range[1]:g}]")
    if fx > 0 and fy > 0 and not (0.5 <= fx / fy <= 2.0):
        problems.append(f"aspect fx/fy = {fx / fy:.2f} implausible")
    if calib.get("rect_fx") is not None:
        rfx, rcx, rcy = float(calib["rect_fx"]), float(calib["rect_cx"]), float(calib["rect_cy"])
        if not (rfx > 0 and -0.5 <= rcx <= w - 0.5 and -0.5 <= rcy <= h - 0.5):
            problems.append(f"rectified intrinsics implausible (fx={rfx:.1f}, c=({rcx:.1f}, {rcy:.1f}))")
    detail = (f"fx={fx:.1f} fy={fy:.1f} c=({cx:.1f}, {cy:.1f}) {w}x{h}, hfov {hfov:.1f} deg, "
              f"{calib.get('distortion_model') or 'none'}, from {calib.get('method')}")
    return not problems, hfov, detail if not problems else "; ".join(problems) + f" ({detail})"


def _col(t: pa.Table, name: str) -> np.ndarray:
    return t.column(name).to_numpy(zero_copy_only=False)


def check_tracked_fraction(poses: pa.Table, threshold: float = 0.8):
    """WARN. Share of frames with a tracked pose. value: the fraction."""
    n = poses.num_rows
    if n == 0:
        return False, 0.0, "no pose rows"
    tr = _col(poses, "tracked").astype(bool)
    f = float(tr.mean())
    return f >= threshold, f, f"{tr.sum()}/{n} frames tracked ({100 * f:.1f} %, threshold {100 * threshold:.0f} %)"


def check_pose_jumps(poses: pa.Table, max_speed_mps: float = MAX_SPEED_MPS,
                  max_angular_deg_s: float = MAX_ANGULAR_DEG_S):
    """ERROR. Between consecutive tracked frames, rotation speed below ``max_angular_deg_s`` and, for
    metric poses, translation speed below ``max_speed_mps`` (t_s differences, so variable frame rates
    are fine). value: the worst speed as a fraction of its bound (<= 1 passes)."""
    if poses.num_rows < 2:
        return True, 0.0, "fewer than 2 poses"
    t = _col(poses, "t_s").astype(float)
    tr = _col(poses, "tracked").astype(bool)
    c = np.column_stack([_col(poses, k) for k in ("tx", "ty", "tz")]).astype(float)
    q = np.column_stack([_col(poses, k) for k in ("qx", "qy", "qz", "qw")]).astype(float)
    metric = bool(poses.num_rows) and poses.column("scale")[0].as_py() == "metric"
    pair = tr[:-1] & tr[1:] & np.isfinite(q[:-1]).all(1) & np.isfinite(q[1:]).all(1)
    if not pair.any():
        return True, 0.0, "no consecutive tracked frames"
    i = np.flatnonzero(pair)
    dt = t[i + 1] - t[i]
    if np.any(dt <= 0):
        return False, float("inf"), "t_s not strictly increasing"
    ang = Rotation.from_quat(q[i]).inv() * Rotation.from_quat(q[i + 1])
    w = np.degrees(ang.magnitude()) / dt
    ratio_w = w / max_angular_deg_s
    ratio_v = (np.linalg.norm(c[i + 1] - c[i], axis=1) / dt / max_speed_mps) if metric else np.zeros_like(w)
    ratio = np.maximum(ratio_w, ratio_v)
    k = int(np.argmax(ratio))
    worst = float(ratio[k])
    f0, f1 = (int(_col(poses, "frame_index")[i[k]]), int(_col(poses, "frame_index")[i[k] + 1]))
    detail = (f"worst between frames {f0} and {f1}: {w[k]:.0f} deg/s"
              + (f", {ratio_v[k] * max_speed_mps:.2f} m/s" if metric else " (relative scale: translation not bounded)")
              + f"; bounds {max_angular_deg_s:g} deg/s, {max_speed_mps:g} m/s")
    return worst <= 1.0, worst, detail


def check_rotations(poses: pa.Table, tol: float = 1e-3):
    """ERROR. Quaternions of tracked frames have unit norm (so the rotation matrices are orthonormal)
    and no tracked pose has a non-finite value. value: the largest | |q| - 1 |."""
    tr = _col(poses, "tracked").astype(bool)
    if not tr.any():
        return True, 0.0, "no tracked pose"
    q = np.column_stack([_col(poses, k) for k in ("qx", "qy", "qz", "qw")]).astype(float)[tr]
    c = np.column_stack([_col(poses, k) for k in ("tx", "ty", "tz")]).astype(float)[tr]
    if not (np.isfinite(q).all() and np.isfinite(c).all()):
        bad = int((~(np.isfinite(q).all(1) & np.isfinite(c).all(1))).sum())
        return False, float("inf"), f"{bad} tracked poses have non-finite values"
    dev = float(np.abs(np.linalg.norm(q, axis=1) - 1).max())
    return dev <= tol, dev, f"max | |q| - 1 | = {dev:.2e} over {len(q)} tracked poses (tolerance {tol:g})"
