"""Segmentation at wrist-speed minima, length limits, gaps, quality flags and the checks."""

import numpy as np
import pyarrow as pa
import pytest

from ego_assets.lib import schemas
from ego_assets.lib.motion.checks import check_min_length, check_no_overlap
from ego_assets.lib.motion.segment import SegmentParams, cut_run, segment_by_wrist_speed
from ego_assets.lib.motion.synthetic import SyntheticSequence, reach_grasp_sequence, synthetic_tables
from ego_assets.lib.motion.world import build_hand_world


def _segment(sc, params=SegmentParams()):
    hw = build_hand_world(sc.hand_tracks, sc.camera_poses, sc.frames)
    hw2, seg = segment_by_wrist_speed(hw, sc.frames, params)
    return hw, hw2, seg


def _cuts(seg, hand):
    rows = [r for r in seg.to_pylist() if r["hand"] == hand]
    return sorted(r["start_frame"] for r in rows)[1:], rows


def _match(pred, truth, tol=2):
    return sum(any(abs(p - t) <= tol for p in pred) for t in truth)


def test_recovers_known_boundaries():
    rng = np.random.default_rng(11)
    seq = reach_grasp_sequence(rng, n_cycles=3)
    sc = synthetic_tables([seq], moving_camera=True, noise_m=0.002, depth_noise_m=0.006, rot_noise_deg=2,
                          seed=3)
    _, hw2, seg = _segment(sc)
    cuts, rows = _cuts(seg, "right")
    truth = seq.boundaries
    assert len(truth) == 11
    hits = _match(cuts, truth)
    assert hits >= 10, (cuts, truth)  # recall
    assert len(cuts) <= len(truth) + 1  # precision
    # segments tile the track (no resting frames here) and carry real measures
    assert rows[0]["start_frame"] == 0 and rows[-1]["end_frame"] == len(seq.wrist_world) - 1
    true_path = np.linalg.norm(np.diff(seq.wrist_world, axis=0), axis=1)
    for r in rows:
        p = true_path[r["start_frame"]:r["end_frame"]].sum()
        assert abs(r["path_length_m"] - p) < 0.2 * p + 0.01
        assert r["mean_speed_mps"] > 0.01 and r["valid"] and r["invalid_reason"] is None
        assert r["visibility"] == 1.0 and r["blur"] == pytest.approx(120.0)
    # segment ids in hand_world match the table
    fi = hw2["frame_index"].to_numpy()
    sid = np.array(hw2["segment_id"].to_pylist())
    for r in rows:
        assert set(sid[(fi >= r["start_frame"]) & (fi <= r["end_frame"])]) == {r["segment_id"]}
    schemas.conform("segments", seg, "p")
    schemas.conform("hand_world", hw2, "p")


def test_ids_unique_across_hands_in_start_order():
    rng = np.random.default_rng(5)
    sc = synthetic_tables([reach_grasp_sequence(rng, 2, "right"), reach_grasp_sequence(rng, 2, "left")],
                          moving_camera=True)
    _, _, seg = _segment(sc)
    ids = seg["segment_id"].to_pylist()
    assert ids == list(range(len(ids)))
    starts = seg["start_s"].to_numpy()
    assert np.all(np.diff(starts) >= 0)
    assert set(seg["hand"].to_pylist()) == {"left", "right"}
    assert check_no_overlap(seg)[0]


def test_min_length_merges_short_pieces():
    # speed minima every 4 frames: every piece is too short and must merge into >= 8-frame segments
    n = 60
    speed = 0.2 + 0.15 * np.cos(2 * np.pi * np.arange(n) / 4.0)
    p = SegmentParams(min_distance=1, min_prominence_mps=0.0, valley_tolerance_mps=0.0, min_length=8)
    pieces = cut_run(speed, p)
    lengths = [b - a for a, b in pieces]
    assert min(lengths) >= 8 and sum(lengths) == n
    assert pieces[0][0] == 0 and all(pieces[i][1] == pieces[i + 1][0] for i in range(len(pieces) - 1))
    assert len(pieces) >= 3  # merged, not collapsed into one


def test_max_length_splits_at_deepest_minimum():
    n = 150
    x = np.arange(n)
    # no prominent minimum for the regular cut; two shallow dips, the deeper at frame 90
    speed = 0.5 - 0.05 * np.exp(-0.5 * ((x - 40) / 3) ** 2) - 0.1 * np.exp(-0.5 * ((x - 90) / 3) ** 2)
    p = SegmentParams(min_prominence_mps=0.5, max_length=100, min_length=8, valley_tolerance_mps=0.0)
    assert cut_run(speed, p) == [(0, 90), (90, 150)]
    # very long monotone motion: split without minima, all pieces within the limits
    p2 = SegmentParams(max_length=40, min_length=8)
    pieces = cut_run(np.linspace(0.1, 1.0, 170), p2)
    assert all(8 <= b - a <= 40 for a, b in pieces) and pieces[-1][1] == 170


def test_max_length_end_to_end():
    # a long continuous sweep (one 30 s circular motion, no pauses) -> split into pieces <= max_length
    n = 300
    t = np.arange(n) / 10.0
    wrist = np.stack([0.15 * np.cos(0.4 * t), 0.1 + 0.05 * np.sin(0.8 * t), 0.5 + 0.1 * np.sin(0.4 * t)], 1)
    base = reach_grasp_sequence(np.random.default_rng(0), 1)
    seq = SyntheticSequence("right", wrist, base.rot_world[np.zeros(n, int)], np.zeros(n), [])
    sc = synthetic_tables([seq], moving_camera=True)
    _, _, seg = _segment(sc, SegmentParams(max_length=80))
    lengths = (seg["end_frame"].to_numpy() - seg["start_frame"].to_numpy() + 1)
    assert lengths.max() <= 80 and lengths.min() >= 8 and lengths.sum() == n
    assert check_min_length(seg, 8)[0]


def test_gaps_split_segments():
    rng = np.random.default_rng(8)
    seq = reach_grasp_sequence(rng, n_cycles=2)
    n = len(seq.wrist_world)
    drop = (40, 44)
    untracked = (90, 93)
    sc = synthetic_tables([seq], moving_camera=True, dropouts={"right": [drop]}, untracked=[untracked])
    _, hw2, seg = _segment(sc)
    fi_present = set(hw2["frame_index"].to_pylist())
    assert not fi_present & (set(range(*drop)) | set(range(*untracked)))
    for r in seg.to_pylist():
        span = set(range(r["start_frame"], r["end_frame"] + 1))
        assert span <= fi_present, r  # never across a gap
    # without the gaps, some segment would have covered these frames
    _, _, seg_full = _segment(synthetic_tables([seq], moving_camera=True))
    covers = lambda s, f: any(r["start_frame"] <= f <= r["end_frame"] for r in s.to_pylist())  # noqa: E731
    assert covers(seg_full, 41) and covers(seg_full, 91)
    assert seg["end_frame"].to_numpy().max() <= n - 1


def test_resting_hand_gives_no_segment():
    n = 80
    base = reach_grasp_sequence(np.random.default_rng(0), 1)
    seq = SyntheticSequence("right", np.tile([0.1, 0.1, 0.5], (n, 1)), base.rot_world[np.zeros(n, int)],
                            np.zeros(n), [])
    # monocular depth jitter of 1 cm: tens of cm of path over 8 s, but no extent
    sc = synthetic_tables([seq], moving_camera=True, noise_m=0.002, depth_noise_m=0.01, seed=1)
    _, hw2, seg = _segment(sc)
    assert seg.num_rows == 0
    assert hw2["segment_id"].null_count == n
    assert check_min_length(seg, 8) == (True, 0.0, "no segments")


def test_quality_flags():
    rng = np.random.default_rng(21)
    seq = reach_grasp_sequence(rng, n_cycles=2)
    n = len(seq.wrist_world)
    blur = np.full(n, 150.0)
    blur[60:] = 4.0  # the second half is motion-blurred
    sc = synthetic_tables([seq], moving_camera=True, blur=blur, interpolated={"right": [(0, 14)]})
    _, _, seg = _segment(sc)
    rows = seg.to_pylist()
    by_start = {r["start_frame"]: r for r in rows}
    first = by_start[0]
    assert first["visibility"] < 0.7 and not first["valid"]
    assert "low_visibility" in first["invalid_reason"]
    late = [r for r in rows if r["start_frame"] >= 60]
    assert late and all(not r["valid"] and "blurry" in r["invalid_reason"] for r in late)
    assert all(r["blur"] == pytest.approx(4.0) for r in late)
    mid = [r for r in rows if r["start_frame"] > 14 and r["end_frame"] < 60]
    assert mid and all(r["valid"] for r in mid)
    # the thresholds are parameters
    _, _, seg2 = _segment(sc, SegmentParams(min_blur=None, min_visibility=0.0))
    assert all(seg2["valid"].to_pylist())
    # motion energy: a slow drift of 6 cm over 25 s is kept (path > 3 cm) but flagged
    m = 250
    drift = np.stack([np.linspace(0, 0.06, m), np.full(m, 0.1), np.full(m, 0.5)], 1)
    seq2 = SyntheticSequence("right", drift, seq.rot_world[np.zeros(m, int)], np.zeros(m), [])
    _, _, seg3 = _segment(synthetic_tables([seq2], moving_camera=True))
    assert seg3.num_rows >= 1
    assert all("low_motion_energy" in (r["invalid_reason"] or "") for r in seg3.to_pylist())


def test_checks_catch_violations():
    good = pa.table({"segment_id": [0, 1, 2], "hand": ["right", "right", "left"],
                     "start_frame": [0, 10, 5], "end_frame": [9, 25, 30]})
    assert check_min_length(good, 8)[0] and check_no_overlap(good)[0]
    bad = pa.table({"segment_id": [0, 1, 2], "hand": ["right", "right", "left"],
                    "start_frame": [0, 9, 5], "end_frame": [9, 12, 30]})
    ok, value, detail = check_min_length(bad, 8)
    assert not ok and value == 1 and "1 (4 frames)" in detail
    ok, value, detail = check_no_overlap(bad)
    assert not ok and value == 1 and "right: 0 & 1" in detail
    # an overlap hidden behind a long segment
    nested = pa.table({"segment_id": [0, 1, 2], "hand": ["left"] * 3, "start_frame": [0, 10, 40],
                       "end_frame": [100, 20, 50]})
    assert check_no_overlap(nested)[1] == 2


def test_bad_params_and_inputs():
    with pytest.raises(ValueError, match="max_length"):
        SegmentParams(min_length=10, max_length=15)
    with pytest.raises(ValueError, match="hand_world"):
        segment_by_wrist_speed(pa.table({"frame_index": [1]}), pa.table({"frame_index": [1]}))
