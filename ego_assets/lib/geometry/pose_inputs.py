"""Inputs of the camera pose stage: the error that names a bad input, the checks of the frames table and
the calibration row, and the clips' frame ranges. (Arrow vector columns are read with ``lib/arrow.vectors``.)"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


class PoseInputError(ValueError):
    """An input of the pose stage is unusable; the message names it and says why."""


def clip_ranges(frames_t: np.ndarray, clips: pa.Table | None) -> list[tuple[int, int]]:
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


def validate_inputs(frames: pa.Table, calib: dict) -> tuple[np.ndarray, np.ndarray]:
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
