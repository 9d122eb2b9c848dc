"""Quality checks of the ``hand_tracks`` table, as pure functions the Dagster wiring and
``ego-assets check`` call. Each returns ``(passed, value, detail)``; the severity the wiring should
give each check is in :data:`SEVERITY`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ego_assets.lib.arrow import vectors
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
    "handedness_cues_agree": "ERROR",
}

# A video fails handedness_cues_agree when more than this share of its detections lie in tracks whose
# network cue and image cues name different hands, or when, over its clear detections, the two agree
# less often than MIN_CUE_AGREEMENT (they agree on 93-100 % of the detections of the real clips, and a
# chance-level 50 % means at least one of them is wrong on a large part of the video).
MAX_CONTESTED_FRACTION = 0.25
MIN_CUE_AGREEMENT = 0.6


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
    J = vectors(tracks, "joints_cam", 63, "hand_tracks").reshape(n, 21, 3)
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


def check_handedness_cues_agree(detections: pa.Table, max_contested: float = MAX_CONTESTED_FRACTION,
                                min_agreement: float = MIN_CUE_AGREEMENT) -> tuple[bool, float, str]:
    """ERROR: the left/right of the video rests on cues that agree. Reads ``hand_detections``
    (``track_id``, ``cue_network``, ``cue_image``): per track, the network's belief (label and 3D
    shape, one cue) against the image cues (thumb side, forearm side), see
    :mod:`ego_assets.lib.hands.tracking`. A whole video with its hands swapped shows up here as
    tracks on which the network and the image disagree throughout, which no per-row check sees.
    The value is the video's agreement (share of clear detections where both name the same hand);
    the detail names the contested tracks. Failing excludes the video from the dataset."""
    from ego_assets.lib.hands.tracking import cue_agreement, video_agreement

    need = {"track_id", "cue_network", "cue_image"}
    if detections.num_rows == 0:
        return True, float("nan"), "no detections"
    if not need <= set(detections.column_names):
        return False, float("nan"), f"hand_detections has no {sorted(need - set(detections.column_names))}"
    tid = detections.column("track_id").fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    cn = detections.column("cue_network").to_numpy(zero_copy_only=False).astype(float)
    ci = detections.column("cue_image").to_numpy(zero_copy_only=False).astype(float)
    ok_rows = (tid >= 0) & np.isfinite(cn) & np.isfinite(ci)
    per, n_rows = {}, {}
    for t in np.unique(tid[ok_rows]):
        m = ok_rows & (tid == t)
        per[int(t)] = cue_agreement(cn[m], ci[m])
        n_rows[int(t)] = int(m.sum())
    if not per:
        return True, float("nan"), "no tracked detections"
    v = video_agreement(per, n_rows)
    agree, contested = v["agreement"], v["contested_fraction"]
    bad = [t for t, c in per.items() if c.contested]
    ok = contested <= max_contested and not (np.isfinite(agree) and agree < min_agreement)
    detail = (f"network and image cues agree on {agree:.0%} of clear detections" if np.isfinite(agree)
              else "no detection with clear cues")
    detail += f"; {contested:.0%} of detections in contested tracks (limit {max_contested:.0%})"
    if bad:
        detail += "; contested tracks " + ", ".join(
            f"{t} (network {per[t].network_vote:+.1f}, image {per[t].image_vote:+.1f}, {n_rows[t]} det.)"
            for t in bad[:5])
    if not ok:
        detail += ": left/right of this video is not trustworthy (swapped hands are possible)"
    return ok, agree, detail
