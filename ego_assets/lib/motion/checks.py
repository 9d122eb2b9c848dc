"""Checks on the ``segments`` table as pure functions returning ``(passed, value, detail)``.

Suggested severities for the wiring: both ERROR (a violation means the segmenter is broken, and the
dataset builder would write overlapping or too-short episodes).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ego_assets.lib.motion.arrow import require, scalar


def check_min_length(segments: pa.Table, min_length: int) -> tuple[bool, float, str]:
    """No segment shorter than ``min_length`` frames. value = number of short segments."""
    require(segments, "segments", ["segment_id", "start_frame", "end_frame"])
    if segments.num_rows == 0:
        return True, 0.0, "no segments"
    length = scalar(segments, "end_frame", np.int64) - scalar(segments, "start_frame", np.int64) + 1
    short = np.flatnonzero(length < min_length)
    ids = scalar(segments, "segment_id", np.int64)
    if len(short):
        shown = ", ".join(f"{ids[i]} ({length[i]} frames)" for i in short[:5])
        return False, float(len(short)), f"{len(short)} segment(s) shorter than {min_length} frames: {shown}"
    return True, 0.0, f"{len(length)} segments, shortest {int(length.min())} frames (minimum {min_length})"


def check_no_overlap(segments: pa.Table) -> tuple[bool, float, str]:
    """Segments of the same hand share no frame. value = number of overlapping pairs (adjacent in
    start order, which is where an overlap must show)."""
    require(segments, "segments", ["segment_id", "hand", "start_frame", "end_frame"])
    hands = np.asarray(segments.column("hand").to_pylist(), dtype=object)
    start = scalar(segments, "start_frame", np.int64)
    end = scalar(segments, "end_frame", np.int64)
    ids = scalar(segments, "segment_id", np.int64)
    bad = []
    for hand in sorted(set(hands.tolist())):
        r = np.flatnonzero(hands == hand)
        r = r[np.lexsort((end[r], start[r]))]
        running_end = -np.inf
        prev = None
        for i in r:
            if start[i] <= running_end:
                bad.append((hand, ids[prev], ids[i]))
            if end[i] > running_end:
                running_end, prev = end[i], i
    if bad:
        shown = ", ".join(f"{h}: {a} & {b}" for h, a, b in bad[:5])
        return False, float(len(bad)), f"{len(bad)} overlapping pair(s): {shown}"
    return True, 0.0, f"{segments.num_rows} segments, no overlap within a hand"


def check_world_is_metric(hand_world: pa.Table) -> tuple[bool, float, str]:
    """The world frame of ``hand_world`` is metric (``world_scale`` = 'metric'). value = 1 when metric,
    else 0. With 'relative' camera poses the world positions, speeds and segment path lengths mix
    metric hands with a camera path of unknown scale; the dataset's state and rotation actions do not
    depend on it, its translation actions do (they carry the camera's translation between steps)."""
    if hand_world.num_rows == 0:
        return True, 1.0, "no hand rows"
    if "world_scale" not in hand_world.column_names:
        return False, 0.0, "hand_world has no world_scale column (built before it existed): rerun segments"
    values = sorted({str(v) for v in hand_world.column("world_scale").to_pylist()})
    if values == ["metric"]:
        return True, 1.0, "world frame metric"
    return False, 0.0, (f"world frame {'/'.join(values)}: the camera poses have no metric scale (no depth "
                        "backend, no still hand seen while the head moved); world positions, speeds and "
                        "translation actions are in units of unknown scale")
