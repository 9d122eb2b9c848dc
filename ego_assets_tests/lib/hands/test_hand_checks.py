"""The hand_tracks checks on tables with known defects, and the skeleton preview."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ego_assets.lib.hands import checks
from ego_assets.lib.hands.backends import TRACKS_SCHEMA, _table
from ego_assets.lib.hands.preview import COLORS, draw_skeletons
from ego_assets.lib.hands.skeleton import template_hand

K = np.array([[320.0, 0, 319.5], [0, 320.0, 239.5], [0, 0, 1]])
R_BACK = np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]])


def tracks_table(frames, hands, track_ids, joints=None, interpolated=None) -> pa.Table:
    n = len(frames)
    if joints is None:
        joints = []
        for h in hands:
            T = template_hand(h, 20.0)
            joints.append((T - T[0]) @ R_BACK.T + [(-0.1 if h == "left" else 0.1), 0.08, 0.4])
        joints = np.array(joints)
    p = joints @ K.T
    kp = p[..., :2] / p[..., 2:]
    return _table(TRACKS_SCHEMA, dict(
        frame_index=np.asarray(frames), t_s=np.asarray(frames) * 0.1, hand=list(hands),
        score=np.full(n, 0.9), kp2d=kp.reshape(n, 42), joints_cam=joints.reshape(n, 63),
        wrist_rotvec_cam=np.zeros((n, 3)), finger_pose=np.zeros((n, 45)), track_id=np.asarray(track_ids),
        handedness_conf=np.full(n, 0.95),
        interpolated=np.zeros(n, bool) if interpolated is None else np.asarray(interpolated)))


def two_hands(joints) -> pa.Table:
    """10 frames of a left and a right hand (track ids 0 and 1) with the given (20, 21, 3) joints."""
    return tracks_table([f for f in range(10) for _ in (0, 1)], ["left", "right"] * 10, [0, 1] * 10, joints)


def good_table(n_frames=10):
    frames = [f for f in range(n_frames) for _ in (0, 1)]
    hands = ["left", "right"] * n_frames
    return tracks_table(frames, hands, [0, 1] * n_frames)


def test_detection_rate_warn_and_error():
    t = tracks_table([0, 1, 2, 3], ["left"] * 4, [0] * 4, interpolated=[False, True, False, False])
    ok, v, detail = checks.check_detection_rate(t, 10)
    assert not ok and v == pytest.approx(0.3)  # the interpolated frame does not count
    assert "30%" in detail
    assert checks.check_detection_rate(t, 5)[0]
    empty = t.slice(0, 0)
    ok, v, detail = checks.check_hands_found(empty, 100, 10.0)
    assert not ok and v == 0.0 and "no hand" in detail
    assert checks.check_hands_found(empty, 20, 2.0)[0]  # too short to require hands
    assert checks.check_hands_found(t, 100, 10.0)[0]
    assert checks.SEVERITY["hands_found"] == "ERROR" and checks.SEVERITY["hand_detection_rate"] == "WARN"


def test_joints_plausible():
    t = good_table()
    ok, v, _ = checks.check_joints_plausible(t)
    assert ok and v == 0.0
    J = np.array(t.column("joints_cam").to_pylist()).reshape(-1, 21, 3)
    giant = J.copy()
    giant[:4] = giant[:4] * 5.0  # four rows lifted at 5x scale (a 45 cm palm)
    ok, v, detail = checks.check_joints_plausible(two_hands(giant))
    assert not ok and v == pytest.approx(0.2) and "palm" in detail
    nan = J.copy()
    nan[3, 7, 2] = np.nan
    ok, v, detail = checks.check_joints_plausible(two_hands(nan))
    assert not ok and "non-finite" in detail
    collapsed = J.copy()
    collapsed[0, 8] = collapsed[0, 7]  # a zero-length bone in one row of 20: 5 % tolerated, not 10
    collapsed[1, 8] = collapsed[1, 7]
    ok, v, detail = checks.check_joints_plausible(two_hands(collapsed))
    assert not ok and v == pytest.approx(0.1) and "bone 7-8" in detail


def test_handedness_consistency():
    assert checks.check_handedness_consistent(good_table()) == (
        True, 0.0, "each track has one hand; at most one left and one right per frame")
    mixed = tracks_table([0, 1, 2], ["left", "left", "right"], [4, 4, 4])
    ok, v, detail = checks.check_handedness_consistent(mixed)
    assert not ok and v == 1 and "[4]" in detail
    twice = tracks_table([0, 0], ["right", "right"], [1, 2])
    ok, v, detail = checks.check_handedness_consistent(twice)
    assert not ok and "two rows of the same hand" in detail


def test_draw_skeletons():
    t = good_table(1)
    img = np.zeros((480, 640, 3), np.uint8)
    out = draw_skeletons(img, t)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert img.max() == 0  # the input is not modified
    kp = np.array(t.column("kp2d").to_pylist()).reshape(2, 21, 2)
    for i, hand in enumerate(["left", "right"]):
        # the middle of the wrist -> middle-MCP bone is drawn in the hand's colour
        m = np.round((kp[i, 0] + kp[i, 9]) / 2).astype(int)
        patch = out[m[1] - 2:m[1] + 3, m[0] - 2:m[0] + 3].reshape(-1, 3).astype(int)
        assert np.abs(patch - np.array(COLORS[hand])).sum(1).min() < 40, hand
    # far from both hands nothing is drawn
    assert out[:100, :100].max() == 0
    # rows as dicts work too, and a bad image is refused
    assert draw_skeletons(img, t.to_pylist()).sum() == out.sum()
    with pytest.raises(ValueError, match="HxWx3"):
        draw_skeletons(np.zeros((10, 10)), [])


def test_handedness_cues_check_thresholds_and_inputs():


    def det(tids, net, img):
        return pa.table({"track_id": pa.array(tids, pa.int32()), "cue_network": pa.array(net, pa.float32()),
                         "cue_image": pa.array(img, pa.float32())})

    # two tracks of 10 detections: the first agrees throughout, the second disagrees throughout
    tids = [0] * 10 + [1] * 10
    img = [1.5] * 10 + [-1.5] * 10
    ok, v, detail = checks.check_handedness_cues_agree(det(tids, [0.9] * 10 + [0.9] * 10, img))
    assert not ok and v == 0.5 and "contested tracks 1" in detail  # 50 % of detections contested
    # a short disagreement inside a long agreeing track: not contested, agreement 90 % -> pass
    ok, v, _ = checks.check_handedness_cues_agree(det([0] * 20, [0.9] * 18 + [-0.9] * 2, [1.5] * 20))
    assert ok and v == pytest.approx(0.9)
    # unclear cues are not counted; duplicates (track -1) are ignored
    ok, v, _ = checks.check_handedness_cues_agree(det([0] * 5 + [-1] * 5, [0.1] * 5 + [-0.9] * 5, [1.5] * 10))
    assert ok and np.isnan(v)
    assert checks.check_handedness_cues_agree(det([], [], []))[0]
    ok, _, detail = checks.check_handedness_cues_agree(pa.table({"track_id": pa.array([0], pa.int32())}))
    assert not ok and "cue_image" in detail
