"""Quality checks of the ``hand_tracks`` table, as pure functions the Dagster wiring and
``ego-assets check`` call. Each returns ``(passed, value, detail)``; the severity the wiring should
give each check is in :data:`SEVERITY`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ego_assets.lib.hands.skeleton import BONES, TEMPLATE_BONE_LENGTHS

# Each bone must be within these factors of the template adult hand's bone (MediaPipe's joint
# convention): wide enough for the landmarker's per-finger noise (on the real test clip 1 % of its
# index PIP-DIP bones are below 0.2x), narrow enough to catch collapsed or exploded hands; and the
# palm (wrist -> middle MCP) must be a human palm, which catches a hand lifted at the wrong scale.
BONE_RANGE_FACTORS = (0.15, 3.0)
PALM_RANGE_M = (0.05, 0.16)

SEVERITY = {
    "hand_detection_rate": "WARN",
    "hands_found": "ERROR",
    "hand_joints_plausible": "ERROR",
    "handedness_consistent": "ERROR",
}


def _observed(tracks: pa.Table) -> pa.Table:
    if "interpolated" in tracks.column_names:
        interp = np.asarray(tracks.column("interpolated").fill_null(False).to_numpy(zero_copy_only=False))
        return tracks.filter(pa.array(~interp))
    return tracks


def detection_rate(tracks: pa.Table, n_frames: int) -> float:
    """Fraction of sampled frames with at least one observed (not interpolated) hand."""
    if n_frames <= 0:
        return float("nan")
    obs = _observed(tracks)
    return len(np.unique(obs.column("frame_index").to_numpy())) / n_frames


def check_detection_rate(tracks: pa.Table, n_frames: int, warn_below: float = 0.5) -> tuple[bool, float, str]:
    """WARN: hands found in fewer than ``warn_below`` of the frames (a video mostly without hands
    makes few episodes; worth a look, not a failure)."""
    r = detection_rate(tracks, n_frames)
    if n_frames <= 0:
        return False, float("nan"), "no frames"
    ok = r >= warn_below
    return ok, r, f"hands in {r:.0%} of {n_frames} frames ({'>=' if ok else '<'} {warn_below:.0%})"


def check_hands_found(tracks: pa.Table, n_frames: int, duration_s: float,
                      min_duration_s: float = 3.0) -> tuple[bool, float, str]:
    """ERROR: no hand at all in a video long enough to expect some (a wrong video, a broken proxy or
    a model that failed to load silently). Short videos pass: a 1 s clip may truly show none."""
    r = detection_rate(tracks, n_frames) if n_frames > 0 else 0.0
    if duration_s < min_duration_s:
        return True, r, f"{duration_s:.1f} s video, shorter than {min_duration_s:.0f} s: not required"
    ok = r > 0
    return ok, r, (f"hands in {r:.0%} of {n_frames} frames" if ok
                   else f"no hand detected in any of {n_frames} frames of a {duration_s:.1f} s video")


def check_joints_plausible(tracks: pa.Table, max_bad_fraction: float = 0.05) -> tuple[bool, float, str]:
    """ERROR: every joint finite, and bone lengths within the human range
    (:data:`BONE_RANGE_FACTORS` x an adult template) in all but ``max_bad_fraction`` of the rows.
    The value is the fraction of rows with a bone out of range."""
    n = tracks.num_rows
    if n == 0:
        return True, 0.0, "no rows"
    J = np.asarray(tracks.column("joints_cam").combine_chunks().flatten().to_numpy(zero_copy_only=False),
                   float).reshape(n, 21, 3)
    finite = np.isfinite(J).all(axis=(1, 2))
    if not finite.all():
        return False, 1.0, f"{int((~finite).sum())} of {n} rows have non-finite joints"
    a = np.array([b[0] for b in BONES])
    c = np.array([b[1] for b in BONES])
    L = np.linalg.norm(J[:, c] - J[:, a], axis=-1)
    lo, hi = np.array(BONE_RANGE_FACTORS)[:, None] * TEMPLATE_BONE_LENGTHS[None]
    palm = np.linalg.norm(J[:, 9] - J[:, 0], axis=-1)
    bad_palm = (palm < PALM_RANGE_M[0]) | (palm > PALM_RANGE_M[1])
    bad = ((L < lo) | (L > hi)).any(axis=1) | bad_palm
    frac = float(bad.mean())
    ok = frac <= max_bad_fraction
    detail = (f"{int(bad.sum())} of {n} rows with a bone outside {BONE_RANGE_FACTORS[0]}-"
              f"{BONE_RANGE_FACTORS[1]}x adult length or a palm outside {PALM_RANGE_M[0]}-{PALM_RANGE_M[1]} m"
              f" ({int(bad_palm.sum())} palms)")
    if bad.any():
        worst = np.argmax(np.max(np.maximum(L / hi, lo / np.maximum(L, 1e-9)), axis=0))
        detail += f" (most often bone {BONES[worst][0]}-{BONES[worst][1]})"
    return ok, frac, detail


def check_handedness_consistent(tracks: pa.Table) -> tuple[bool, float, str]:
    """ERROR: no track_id carries both 'left' and 'right', and no frame has two rows of one hand.
    The value is the number of violations."""
    if tracks.num_rows == 0:
        return True, 0.0, "no rows"
    hand = np.asarray(tracks.column("hand").to_pylist(), dtype=object)
    bad_hand = sorted({h for h in hand if h not in ("left", "right")}, key=str)
    if bad_hand:
        return False, float(len(bad_hand)), f"hand values {bad_hand}: must be 'left' or 'right'"
    fi = tracks.column("frame_index").to_numpy()
    tid = (tracks.column("track_id").to_numpy(zero_copy_only=False)
           if "track_id" in tracks.column_names else None)
    mixed = []
    if tid is not None:
        for t in np.unique(tid[~np.isnan(tid.astype(float))] if tid.dtype.kind == "f" else tid):
            if len(set(hand[tid == t])) > 1:
                mixed.append(int(t))
    keys = [f"{f}:{h}" for f, h in zip(fi, hand)]
    _, counts = np.unique(keys, return_counts=True)
    dup = int((counts > 1).sum())
    v = len(mixed) + dup
    if v == 0:
        return True, 0.0, "each track has one hand; at most one left and one right per frame"
    parts = []
    if mixed:
        parts.append(f"track_ids with both labels: {mixed[:10]}")
    if dup:
        parts.append(f"{dup} frame(s) with two rows of the same hand")
    return False, float(v), "; ".join(parts)
