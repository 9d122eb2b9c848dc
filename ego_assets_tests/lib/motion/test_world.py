"""World-frame composition, clean-up and smoothing of hand motion, against synthetic ground truth."""

import numpy as np
import pyarrow as pa
import pytest
from scipy.spatial.transform import Rotation

from ego_assets.lib import schemas
from ego_assets.lib.motion.arrow import MotionInputError
from ego_assets.lib.motion.synthetic import SyntheticSequence, reach_grasp_sequence, synthetic_tables
from ego_assets.lib.motion.world import (MotionParams, build_hand_world, contiguous_runs,
                                         windowed_rotation_mean)


def _static(n=60, hand="right", pos=(0.1, 0.1, 0.5)):
    rot = Rotation.from_euler("xyz", [-50, 20, 10], degrees=True)
    return SyntheticSequence(hand, np.tile(np.array(pos, float), (n, 1)), Rotation.concatenate([rot] * n),
                             np.zeros(n), [])


def _rows(hw, hand):
    return hw.filter(pa.compute.equal(hw["hand"], hand))


def _wrist(hw, hand):
    return np.array(_rows(hw, hand)["wrist_pos_world"].to_pylist())


def test_static_hand_moving_camera_is_fixed_in_world():
    seq = _static()
    sc = synthetic_tables([seq], moving_camera=True)
    # the hand moves in the camera frame because the head moves ...
    cam_wrist = np.array(sc.hand_tracks["joints_cam"].to_pylist())[:, :3]
    assert np.ptp(cam_wrist, axis=0).max() > 0.05
    hw = build_hand_world(sc.hand_tracks, sc.camera_poses, sc.frames)
    w = _wrist(hw, "right")
    # ... but not in the world (float32 joints_cam: ~1e-7 m)
    assert np.abs(w - seq.wrist_world).max() < 1e-5
    speed = np.array(hw["speed_mps"].to_pylist())
    assert speed.max() < 1e-4
    rv = np.array(hw["wrist_rotvec_world"].to_pylist())
    err = (Rotation.from_rotvec(rv) * seq.rot_world.inv()).magnitude()
    assert np.rad2deg(err).max() < 1e-3
    # the result conforms to the contract
    t = schemas.conform("hand_world", hw, "p1")
    assert t.num_rows == 60 and t.column("segment_id").null_count == 60
    assert all(hw["observed"].to_pylist())


def test_moving_hand_moving_camera_matches_ground_truth():
    seq = reach_grasp_sequence(np.random.default_rng(3), n_cycles=2)
    sc = synthetic_tables([seq], moving_camera=True)
    hw = build_hand_world(sc.hand_tracks, sc.camera_poses, sc.frames)
    w = _wrist(hw, "right")
    # Savitzky-Golay (order 2) barely bends a minimum-jerk path
    assert np.abs(w - seq.wrist_world).max() < 0.005
    # speed from the real time stamps: compare with the analytic speed of the ground truth
    t = sc.frames["t_s"].to_numpy()
    true_speed = np.linalg.norm(np.gradient(seq.wrist_world, t, axis=0), axis=1)
    speed = _rows(hw, "right")["speed_mps"].to_numpy()
    assert np.abs(speed - true_speed).max() < 0.05
    assert speed.max() > 0.2  # reaches of 15-30 cm in 1-2.5 s
    joints = np.array(hw["joints_world"].to_pylist()).reshape(-1, 21, 3)
    assert np.allclose(joints[:, 0], w)


def test_speed_uses_real_timestamps():
    # constant world velocity 0.2 m/s, frames at irregular times
    n = 40
    sc0 = synthetic_tables([_static(n)], moving_camera=True, t_jitter_s=0.03, seed=5)
    t = sc0.frames["t_s"].to_numpy()
    assert np.ptp(np.diff(t)) > 0.02  # really irregular
    wrist = np.array([0.0, 0.1, 0.5]) + np.outer(t - t[0], [0.2, 0.0, 0.0])
    seq = SyntheticSequence("right", wrist, _static(n).rot_world, np.zeros(n), [])
    sc = synthetic_tables([seq], moving_camera=True, t_jitter_s=0.03, seed=5)
    hw = build_hand_world(sc.hand_tracks, sc.camera_poses, sc.frames,
                          MotionParams(savgol_window=1, savgol_polyorder=0))
    speed = hw["speed_mps"].to_numpy()
    assert np.allclose(speed, 0.2, rtol=1e-3)
    # index / fps would be wrong by the jitter
    naive = np.linalg.norm(np.gradient(wrist, axis=0), axis=1) * 10.0
    assert np.abs(naive - 0.2).max() > 0.02


def test_rotation_smoothing_stays_on_so3_and_reduces_jitter():
    rng = np.random.default_rng(0)
    n = 200
    true = Rotation.from_rotvec(np.outer(np.linspace(0, 1, n), [0.3, 2.5, -0.4]))  # a slow 145 deg turn
    noisy = true * Rotation.from_rotvec(rng.normal(size=(n, 3)) * np.deg2rad(4.0))
    q = noisy.as_quat()
    q[rng.random(n) < 0.5] *= -1  # the sign of a quaternion is arbitrary: must not matter
    noisy = Rotation.from_quat(q)
    sm = windowed_rotation_mean(noisy, 5)
    qs = sm.as_quat()
    assert np.allclose(np.linalg.norm(qs, axis=1), 1.0, atol=1e-9)
    err_in = np.rad2deg((noisy * true.inv()).magnitude())
    err_out = np.rad2deg((sm * true.inv()).magnitude())
    assert err_out.mean() < 0.6 * err_in.mean()
    # jitter = frame-to-frame rotation change
    jit_in = np.rad2deg((noisy[1:] * noisy[:-1].inv()).magnitude()).mean()
    jit_out = np.rad2deg((sm[1:] * sm[:-1].inv()).magnitude()).mean()
    assert jit_out < 0.5 * jit_in
    # component-wise averaging of the sign-flipped quaternions is far off; the chordal mean is not
    kernel = np.ones(5) / 5
    naive = np.stack([np.convolve(q[:, i], kernel, mode="same") for i in range(4)], axis=1)
    err_naive = np.rad2deg((Rotation.from_quat(naive[2:-2]) * true[2:-2].inv()).magnitude())
    assert err_naive.max() > 30.0
    assert err_out.max() < 10.0


def test_outliers_are_replaced():
    seq = reach_grasp_sequence(np.random.default_rng(7), n_cycles=2)
    bad = [12, 30, 31, 55]
    sc = synthetic_tables([seq], moving_camera=True, noise_m=0.002, outlier_frames={"right": bad},
                          outlier_m=0.3)
    stats = {}
    hw = build_hand_world(sc.hand_tracks, sc.camera_poses, sc.frames, stats=stats)
    w = _wrist(hw, "right")
    assert stats["outlier_frames"] == len(bad)
    assert np.abs(w[bad] - seq.wrist_world[bad]).max() < 0.02
    # without the Hampel stage the 30 cm jumps leak through the smoother
    hw_raw = build_hand_world(sc.hand_tracks, sc.camera_poses, sc.frames,
                              MotionParams(outlier_min_dev_m=10.0))
    assert np.abs(_wrist(hw_raw, "right")[bad] - seq.wrist_world[bad]).max() > 0.05


def test_rotation_outlier_is_replaced():
    seq = _static(40)
    rv = seq.rot_world.as_rotvec()
    q = seq.rot_world.as_quat()
    flipped = (seq.rot_world[20] * Rotation.from_euler("z", 170, degrees=True)).as_quat()
    q[20] = flipped
    seq.rot_world = Rotation.from_quat(q)
    sc = synthetic_tables([seq], moving_camera=True)
    stats = {}
    hw = build_hand_world(sc.hand_tracks, sc.camera_poses, sc.frames, stats=stats)
    out = Rotation.from_rotvec(np.array(hw["wrist_rotvec_world"].to_pylist()))
    assert stats["rotation_outlier_frames"] == 1
    assert np.rad2deg((out * Rotation.from_rotvec(rv).inv()).magnitude()).max() < 1.0


def test_gaps_untracked_and_interpolated():
    rng = np.random.default_rng(1)
    seq = reach_grasp_sequence(rng, n_cycles=2)
    n = len(seq.wrist_world)
    # the hand teleports during the dropout: smoothing across the gap would blend the two sides
    seq.wrist_world[50:] += np.array([0.3, 0.0, 0.0])
    sc = synthetic_tables([seq], moving_camera=True, dropouts={"right": [(45, 50)]},
                          untracked=[(70, 73)], interpolated={"right": [(20, 24)]})
    hw = build_hand_world(sc.hand_tracks, sc.camera_poses, sc.frames)
    fi = hw["frame_index"].to_numpy()
    assert not set(range(45, 50)) & set(fi.tolist())
    assert not set(range(70, 73)) & set(fi.tolist())
    assert len(fi) == n - 5 - 3
    obs = dict(zip(fi.tolist(), hw["observed"].to_pylist()))
    assert [obs[i] for i in range(20, 24)] == [False] * 4 and obs[19] and obs[24]
    w = dict(zip(fi.tolist(), _wrist(hw, "right")))
    for i in (43, 44, 50, 51):
        assert np.linalg.norm(w[i] - seq.wrist_world[i]) < 0.01
    speed = dict(zip(fi.tolist(), hw["speed_mps"].to_numpy()))
    assert speed[50] < 1.0 and speed[44] < 1.0  # no 0.3 m jump differentiated across the gap
    assert contiguous_runs(fi) == [(0, 45), (45, 65), (65, n - 8)]


def test_two_hands_sorted_and_separate():
    rng = np.random.default_rng(2)
    r = reach_grasp_sequence(rng, 1, "right")
    left = reach_grasp_sequence(rng, 1, "left")
    sc = synthetic_tables([r, left], moving_camera=True)
    hw = build_hand_world(sc.hand_tracks, sc.camera_poses, sc.frames)
    fi = hw["frame_index"].to_numpy()
    assert np.all(np.diff(fi) >= 0)
    assert np.abs(_wrist(hw, "left") - left.wrist_world).max() < 0.005
    assert np.abs(_wrist(hw, "right") - r.wrist_world).max() < 0.005


def test_bad_inputs_name_the_problem():
    sc = synthetic_tables([_static(20)], moving_camera=False)
    with pytest.raises(MotionInputError, match="hand_tracks.*joints_cam"):
        build_hand_world(sc.hand_tracks.drop_columns(["joints_cam"]), sc.camera_poses, sc.frames)
    bad_hand = sc.hand_tracks.set_column(2, "hand", pa.array(["Right"] * 20))
    with pytest.raises(MotionInputError, match="'left' or 'right'"):
        build_hand_world(bad_hand, sc.camera_poses, sc.frames)
    with pytest.raises(MotionInputError, match="not in the frames table"):
        build_hand_world(sc.hand_tracks, sc.camera_poses, sc.frames.slice(0, 10))
    with pytest.raises(ValueError, match="odd"):
        MotionParams(savgol_window=6)
    # an empty input gives an empty table of the right columns
    empty = build_hand_world(sc.hand_tracks.slice(0, 0), sc.camera_poses, sc.frames)
    assert empty.num_rows == 0 and "joints_world" in empty.column_names


def test_world_scale_follows_the_camera_poses_and_is_checked():
    from ego_assets.lib.motion.checks import check_world_is_metric

    seq = _static()
    sc = synthetic_tables([seq], moving_camera=True)
    hw = build_hand_world(sc.hand_tracks, sc.camera_poses, sc.frames)
    assert set(hw["world_scale"].to_pylist()) == {"metric"}
    assert schemas.conform("hand_world", hw, "p").column("world_scale").null_count == 0
    assert check_world_is_metric(hw)[:2] == (True, 1.0)
    n = sc.camera_poses.num_rows
    rel = sc.camera_poses.set_column(sc.camera_poses.schema.get_field_index("scale"), "scale",
                                     pa.array(["relative"] * n))
    hw_rel = build_hand_world(sc.hand_tracks, rel, sc.frames)
    assert set(hw_rel["world_scale"].to_pylist()) == {"relative"}
    ok, value, detail = check_world_is_metric(hw_rel)
    assert not ok and value == 0.0 and "relative" in detail
    mixed = sc.camera_poses.set_column(sc.camera_poses.schema.get_field_index("scale"), "scale",
                                       pa.array(["metric"] * (n - 1) + ["relative"]))
    with pytest.raises(MotionInputError, match="one scale per video"):
        build_hand_world(sc.hand_tracks, mixed, sc.frames)


def test_which_dataset_features_depend_on_the_world_scale():
    """issue 13.5: the dataset's state (hand in the step's camera frame), rotation actions and finger
    actions are the same whatever the scale of the camera path; the translation action (the hand's world
    displacement to the next step, expressed in this step's camera frame) carries the camera's
    translation, so it is metric only when the poses are."""
    from ego_assets.lib.lerobot.actions import HandTrack, compute_state_action

    seq = reach_grasp_sequence(np.random.default_rng(5), n_cycles=1)
    sc = synthetic_tables([seq], moving_camera=True)

    def state_action(unit: float):
        poses = sc.camera_poses
        for k in ("tx", "ty", "tz"):
            poses = poses.set_column(poses.schema.get_field_index(k), k,
                                     pa.array(poses[k].to_numpy() * unit))
        hw = _rows(build_hand_world(sc.hand_tracks, poses, sc.frames), "right")
        n = hw.num_rows
        q = np.column_stack([poses[k].to_numpy() for k in ("qx", "qy", "qz", "qw")])[:n]
        t = np.column_stack([poses[k].to_numpy() for k in ("tx", "ty", "tz")])[:n]
        right = HandTrack(np.ones(n, bool), np.array(hw["wrist_pos_world"].to_pylist()),
                          np.array(hw["wrist_rotvec_world"].to_pylist()), np.array(hw["finger_pose"].to_pylist()),
                          np.array(hw["joints_world"].to_pylist()).reshape(n, 21, 3))
        left = HandTrack(np.zeros(n, bool), np.zeros((n, 3)), np.zeros((n, 3)), np.zeros((n, 45)),
                         np.zeros((n, 21, 3)))
        return compute_state_action("hands_102", dict(left=left, right=right),
                                    Rotation.from_quat(q).as_matrix(), t, "right"), q, t

    assert np.ptp(sc.camera_poses["tx"].to_numpy()) > 0.02  # the head translates
    (a, q, t), (b, _, _) = state_action(1.0), state_action(0.4)  # metric; the same path, unknown scale
    r = slice(51, 102)  # the right hand
    # state: position and rotation in the camera frame (smoothing in the world frame aside: < 3 mm)
    assert np.abs(a.state[:, r][:, :3] - b.state[:, r][:, :3]).max() < 0.003
    np.testing.assert_allclose(a.state[:, r][:, 3:], b.state[:, r][:, 3:], atol=1e-3)
    # rotation and finger actions: identical
    np.testing.assert_allclose(a.action[:-1, r][:, 3:], b.action[:-1, r][:, 3:], atol=1e-3)
    # translation actions: off by the part of the camera's translation between steps the scale missed
    missed = Rotation.from_quat(q[:-1]).inv().apply(np.diff(t, axis=0)) * (1 - 0.4)
    assert np.abs(missed).max() > 0.003
    np.testing.assert_allclose(a.action[:-1, r][:, :3] - b.action[:-1, r][:, :3], missed, atol=1e-3)
