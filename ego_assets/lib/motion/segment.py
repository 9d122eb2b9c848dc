"""Atomic actions: each hand's world-frame trajectory cut at local minima of its wrist speed.

The method of VITRA and Data-Juicer's hand-action segmentation: a person's hand slows down between two
actions (reach, then grasp, then move...), so local minima of the smoothed wrist speed are the natural
boundaries. On top of the cut:

- length limits: pieces shorter than ``min_length`` are merged into the neighbour across the weaker
  boundary (the one where the hand was moving faster); pieces longer than ``max_length`` are split at
  their deepest interior minimum;
- gaps: a missing frame for the hand or an untracked camera pose (no ``hand_world`` row) always ends a
  segment; nothing is merged across it;
- pieces with too little motion (wrist path shorter than ``min_path_length_m``, or never farther than
  ``min_extent_m`` from where it started) are dropped: the hand was resting;
- quality (Ego2Robot-style filtering): each kept segment gets its hand visibility (observed frames /
  length), motion energy (mean squared wrist speed), mean frame sharpness (``frames.blur``, variance of
  the Laplacian: lower = blurrier), and ``valid`` = False with an ``invalid_reason`` when one fails.

``segment_id`` is unique in the partition (both hands) and follows start time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ego_assets.lib.motion.arrow import MotionInputError, require, scalar, schema_without_key, vectors
from ego_assets.lib.motion.world import HANDS, contiguous_runs, smooth_positions


@dataclass(frozen=True)
class SegmentParams:
    """Segmentation and quality thresholds; frame counts are for 10 fps data.

    - ``speed_smooth_window`` (15), ``speed_smooth_polyorder`` (3): Savitzky-Golay window (frames, odd)
      and order applied to the world wrist positions before the speed whose minima are the cuts. Wider
      than the ``hand_world`` smoothing on purpose: the dataset wants faithful positions, the cut
      wants a steady speed (measured on the synthetic benchmark: 1.5 s cubic windows place the cuts best).
    - ``min_distance`` (6): minimum distance in frames between two minima (``find_peaks`` distance).
    - ``min_prominence_mps`` (0.02): a minimum must be at least this much below the speed on both
      sides; keeps jitter of a resting hand from cutting.
    - ``valley_tolerance_mps`` (0.005): a cut goes to the centre of the frames within this much of the
      minimum speed (a pause is a flat valley whose argmin wanders under noise); 0 = the argmin.
    - ``min_length`` (8): shortest segment (frames); shorter pieces merge into a neighbour.
    - ``max_length`` (300): longest segment (frames); longer pieces split at the deepest minimum.
    - ``min_path_length_m`` (0.04): pieces whose wrist path is shorter are dropped (no segment) ...
    - ``min_extent_m`` (0.025): ... and so are pieces whose wrist never gets this far from where it
      started (jitter adds path length, not extent: a resting hand is dropped however long it rests).
    - ``min_visibility`` (0.7): below this share of observed (not interpolated) frames: invalid.
    - ``min_motion_energy`` (2e-4 m^2/s^2, an RMS wrist speed of 1.4 cm/s): slower: invalid (drift).
    - ``max_mean_speed_mps`` (2.5): faster on average is not a hand but a tracking error: invalid.
    - ``min_blur`` (15.0): mean variance of the Laplacian of the segment's frames below this: invalid
      (motion-blurred frames make poor observations). ``None`` disables the test.

    Path, extent, mean speed and motion energy are measured on the segmentation-smoothed wrist.
    """

    speed_smooth_window: int = 15
    speed_smooth_polyorder: int = 3
    min_distance: int = 6
    min_prominence_mps: float = 0.02
    valley_tolerance_mps: float = 0.005
    min_length: int = 8
    max_length: int = 300
    min_path_length_m: float = 0.04
    min_extent_m: float = 0.025
    min_visibility: float = 0.7
    min_motion_energy: float = 2e-4
    max_mean_speed_mps: float = 2.5
    min_blur: float | None = 15.0

    def __post_init__(self):
        if self.speed_smooth_window < 1 or self.speed_smooth_window % 2 == 0:
            raise ValueError(f"SegmentParams.speed_smooth_window must be odd and >= 1, got "
                             f"{self.speed_smooth_window}")
        if not 0 <= self.speed_smooth_polyorder < max(self.speed_smooth_window, 1):
            raise ValueError("SegmentParams.speed_smooth_polyorder must be in [0, speed_smooth_window)")
        if self.min_length < 2 or self.min_distance < 1:
            raise ValueError("SegmentParams: min_length must be >= 2 and min_distance >= 1")
        if self.max_length < 2 * self.min_length:
            raise ValueError(f"SegmentParams.max_length ({self.max_length}) must be at least twice "
                             f"min_length ({self.min_length}) so that a long piece can be split")


def segmentation_speed(wrist: np.ndarray, t: np.ndarray, params: SegmentParams) -> tuple[np.ndarray, np.ndarray]:
    """(smoothed wrist positions, speed in m/s) of one contiguous run, for placing the cuts and for the
    segment measures: positions smoothed with the segmentation window, differentiated against the
    real time stamps. Measuring path and speed on these keeps frame-to-frame jitter (which a resting
    hand has plenty of) from adding up into motion that did not happen."""
    ws = smooth_positions(wrist, params.speed_smooth_window, params.speed_smooth_polyorder)
    if len(wrist) < 2:
        return ws, np.zeros(len(wrist))
    return ws, np.linalg.norm(np.gradient(ws, t, axis=0), axis=1)


def speed_minima(s: np.ndarray, params: SegmentParams) -> np.ndarray:
    """Indices of the local minima of a smoothed speed series (never the first or last sample)."""
    if len(s) < 3:
        return np.zeros(0, int)
    from scipy.signal import find_peaks  # scipy.signal is slow to import: only when used

    idx, _ = find_peaks(-s, distance=params.min_distance, prominence=params.min_prominence_mps)
    tol = params.valley_tolerance_mps
    if tol <= 0 or len(idx) == 0:
        return idx
    # A pause is a flat valley; under noise its argmin wanders across it. Its centre (the frames
    # within ``tol`` of the minimum, contiguous) is the steadier estimate of the boundary.
    out = []
    for m in idx:
        lim = s[m] + tol
        a = m
        while a > 0 and s[a - 1] <= lim:
            a -= 1
        b = m
        while b < len(s) - 1 and s[b + 1] <= lim:
            b += 1
        out.append(min(max((a + b + 1) // 2, 1), len(s) - 1))
    return np.unique(np.array(out, int))


def _merge_short(cuts: list[int], n: int, s: np.ndarray, min_length: int) -> list[int]:
    """Remove cuts until every piece of [0, n) is at least ``min_length`` long (or one piece is left).
    The shortest piece goes first; it joins the neighbour across the weaker cut (where ``s`` is
    higher: the hand paused less there)."""
    cuts = sorted(cuts)
    while cuts:
        edges = [0, *cuts, n]
        lens = np.diff(edges)
        i = int(np.argmin(lens))
        if lens[i] >= min_length:
            break
        left_cut = i - 1 if i > 0 else None  # index into cuts of the piece's start
        right_cut = i if i < len(cuts) else None
        if left_cut is None:
            drop = right_cut
        elif right_cut is None:
            drop = left_cut
        else:
            sl, sr = s[cuts[left_cut]], s[cuts[right_cut]]
            if abs(sl - sr) > 1e-9:
                drop = left_cut if sl > sr else right_cut
            else:  # equally weak boundaries: join the shorter neighbour, pieces stay balanced
                drop = left_cut if lens[i - 1] <= lens[i + 1] else right_cut
        cuts.pop(drop)
    return cuts


def _split_long(a: int, b: int, s: np.ndarray, params: SegmentParams) -> list[int]:
    """Cuts inside [a, b) so that no piece exceeds ``max_length``; each cut is the deepest local
    minimum that leaves ``min_length`` on both sides (the lowest speed there if no local minimum)."""
    if b - a <= params.max_length:
        return []
    lo, hi = a + params.min_length, b - params.min_length  # allowed cut positions: [lo, hi]
    from scipy.signal import find_peaks

    seg = s[a:b]
    cand, _ = find_peaks(-seg)
    cand = cand + a
    cand = cand[(cand >= lo) & (cand <= hi)]
    if len(cand):
        c = int(cand[np.argmin(s[cand])])
    else:
        c = lo + int(np.argmin(s[lo:hi + 1]))
    return _split_long(a, c, s, params) + [c] + _split_long(c, b, s, params)


def cut_run(speed: np.ndarray, params: SegmentParams) -> list[tuple[int, int]]:
    """Pieces ``[start, stop)`` of one contiguous run, given its (smoothed) speed. A run shorter than
    ``min_length`` gives one short piece (the caller drops it)."""
    n = len(speed)
    s = np.nan_to_num(np.asarray(speed, float), nan=0.0)
    cuts = [int(c) for c in speed_minima(s, params)]
    cuts = _merge_short(cuts, n, s, params.min_length)
    edges = [0, *cuts, n]
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        inner = _split_long(a, b, s, params)
        e2 = [a, *inner, b]
        out.extend(zip(e2[:-1], e2[1:]))
    return [(int(a), int(b)) for a, b in out]


def _blur_lookup(frames: pa.Table) -> dict[int, float]:
    require(frames, "frames", ["frame_index"])
    if "blur" not in frames.column_names:
        return {}
    fi = scalar(frames, "frame_index", np.int64)
    bl = scalar(frames, "blur", np.float64, fill=np.nan)
    return dict(zip(fi.tolist(), bl.tolist()))


def segment_by_wrist_speed(hand_world: pa.Table, frames: pa.Table,
                           params: SegmentParams = SegmentParams()) -> tuple[pa.Table, pa.Table]:
    """Cut each hand's trajectory into atomic actions.

    Returns ``(hand_world, segments)``: the input ``hand_world`` (same rows, same order, all its
    columns) with ``segment_id`` filled (null outside kept segments), and the ``segments`` table
    (columns of the contract without partition_key), sorted by ``segment_id``."""
    require(hand_world, "hand_world", ["frame_index", "t_s", "hand", "wrist_pos_world"])
    blur_of = _blur_lookup(frames)
    n_rows = hand_world.num_rows
    fi_all = scalar(hand_world, "frame_index", np.int64)
    t_all = scalar(hand_world, "t_s")
    hands = np.asarray(hand_world.column("hand").to_pylist(), dtype=object)
    unknown = sorted({str(h) for h in hands} - set(HANDS))
    if unknown:
        raise MotionInputError(f"hand_world.hand: values must be 'left' or 'right', got {unknown}")
    wrist_all = vectors(hand_world, "wrist_pos_world", 3, "hand_world")
    observed_all = (scalar(hand_world, "observed", bool, fill=True)
                    if "observed" in hand_world.column_names else np.ones(n_rows, bool))

    found = []  # one dict per kept segment: its rows and measures
    for hand in HANDS:
        rows = np.flatnonzero(hands == hand)
        if len(rows) == 0:
            continue
        rows = rows[np.argsort(fi_all[rows], kind="stable")]
        fi = fi_all[rows]
        if np.any(np.diff(fi) == 0):
            raise MotionInputError(f"hand_world: duplicate rows for the {hand} hand in one frame")
        for a, b in contiguous_runs(fi):
            run = rows[a:b]
            ws_run, s_run = segmentation_speed(wrist_all[run], t_all[run], params)
            for pa_, pb in cut_run(s_run, params):
                r = run[pa_:pb]
                if len(r) < params.min_length:
                    continue
                w = ws_run[pa_:pb]
                path = float(np.linalg.norm(np.diff(w, axis=0), axis=1).sum())
                extent = float(np.linalg.norm(w - w[0], axis=1).max())
                if path < params.min_path_length_m or extent < params.min_extent_m:
                    continue
                sp = s_run[pa_:pb]
                blur_vals = np.array([blur_of.get(int(f), np.nan) for f in fi_all[r]])
                blur = float(np.nanmean(blur_vals)) if np.isfinite(blur_vals).any() else float("nan")
                found.append(dict(
                    hand=hand, rows=r, start_frame=int(fi_all[r[0]]), end_frame=int(fi_all[r[-1]]),
                    start_s=float(t_all[r[0]]), end_s=float(t_all[r[-1]]), path_length_m=path,
                    mean_speed_mps=float(sp.mean()), visibility=float(observed_all[r].mean()),
                    motion_energy=float(np.mean(sp ** 2)), blur=blur))

    found.sort(key=lambda d: (d["start_s"], HANDS.index(d["hand"]), d["start_frame"]))
    seg_col = np.full(n_rows, -1, np.int64)
    for sid, d in enumerate(found):
        d["segment_id"] = sid
        seg_col[d["rows"]] = sid
        reasons = []
        if d["visibility"] < params.min_visibility:
            reasons.append(f"low_visibility {d['visibility']:.2f} < {params.min_visibility:.2f}")
        if d["motion_energy"] < params.min_motion_energy:
            reasons.append(f"low_motion_energy {d['motion_energy']:.2e} < {params.min_motion_energy:.2e}")
        if d["mean_speed_mps"] > params.max_mean_speed_mps:
            reasons.append(f"implausible_speed {d['mean_speed_mps']:.2f} > {params.max_mean_speed_mps:.2f} m/s")
        if params.min_blur is not None and np.isfinite(d["blur"]) and d["blur"] < params.min_blur:
            reasons.append(f"blurry {d['blur']:.1f} < {params.min_blur:.1f}")
        d["valid"] = not reasons
        d["invalid_reason"] = "; ".join(reasons) if reasons else None

    schema = schema_without_key("segments")
    cols = {name: [d[name] for d in found] for name in schema.names}
    cols["blur"] = [None if not np.isfinite(d["blur"]) else d["blur"] for d in found]
    segments = pa.table({name: pa.array(cols[name], schema.field(name).type) for name in schema.names},
                        schema=schema)
    seg_arr = pa.array(seg_col, pa.int32(), mask=seg_col < 0)
    if "segment_id" in hand_world.column_names:
        i = hand_world.column_names.index("segment_id")
        hw = hand_world.set_column(i, pa.field("segment_id", pa.int32()), seg_arr)
    else:
        hw = hand_world.append_column(pa.field("segment_id", pa.int32()), seg_arr)
    return hw, segments
