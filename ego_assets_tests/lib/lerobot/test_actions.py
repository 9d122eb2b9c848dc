"""State/action maths on analytic trajectories (no video, no LeRobot)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ego_assets.lib.lerobot.actions import HandTrack, compute_state_action, gripper_aperture
from ego_assets.lib.lerobot.features import GRIPPER_CLOSED_M, GRIPPER_OPEN_M, action_names, state_names
from ego_assets_tests.lib.lerobot import synth

T = np.arange(12) * 0.1


def tracks(t=T, valid_right=None):
    out = {}
    for h in ("left", "right"):
        v = np.ones(len(t), bool) if (h == "left" or valid_right is None) else valid_right
        out[h] = HandTrack(v, synth.wrist_pos(h, t), synth.wrist_rot(h, t).as_rotvec(), synth.finger_pose(h, t),
                           synth.joints(h, t))
    return out


def static_camera(n):
    return np.repeat(np.eye(3)[None], n, 0), np.zeros((n, 3))


def test_hands_102_static_camera_action_is_next_state_minus_state():
    R, c = static_camera(len(T))
    sa = compute_state_action("hands_102", tracks(), R, c, "right")
    s, a = sa.state.astype(np.float64), sa.action.astype(np.float64)
    assert s.shape == (12, 102) and a.shape == (12, 102)
    assert len(state_names("hands_102")) == 102 and len(action_names("hands_102")) == 102
    for i, h in enumerate(("left", "right")):
        o = 51 * i
        # state = the known world pose (camera = world)
        np.testing.assert_allclose(s[:, o:o + 3], synth.wrist_pos(h, T), atol=1e-6)
        np.testing.assert_allclose(s[:, o + 6:o + 51], synth.finger_pose(h, T), atol=1e-6)
        # translation: next_state - state
        np.testing.assert_allclose(a[:-1, o:o + 3], s[1:, o:o + 3] - s[:-1, o:o + 3], atol=1e-6)
        # rotation about a fixed body axis at 0.3 rad/s: log(R_t^T R_t+1) = axis * 0.3 * dt
        axis = np.array([0.0, 0.6, 0.8])
        np.testing.assert_allclose(a[:-1, o + 3:o + 6], np.outer(0.3 * np.diff(T), axis), atol=1e-6)
        # and it is the proper relative rotation, not a rotvec subtraction
        W = Rotation.from_rotvec(s[:, o + 3:o + 6])
        np.testing.assert_allclose(a[:-1, o + 3:o + 6], (W[:-1].inv() * W[1:]).as_rotvec(), atol=1e-5)
        # fingers: absolute targets of the next step
        np.testing.assert_allclose(a[:-1, o + 6:o + 51], s[1:, o + 6:o + 51], atol=1e-6)
    assert sa.action_pad.tolist() == [False] * 11 + [True]
    assert np.all(a[-1] == 0)
    assert sa.hand_mask.tolist() == [[1, 1]] * 12
    assert sa.action_mask.tolist() == [[1, 1]] * 11 + [[0, 0]]


def test_hands_102_moving_camera_uses_camera_frame_of_current_step():
    R_wc, c = synth.camera(T)
    sa = compute_state_action("hands_102", tracks(), R_wc.as_matrix(), c, "left")
    s, a = sa.state.astype(np.float64), sa.action.astype(np.float64)
    Rm = R_wc.as_matrix()
    p = synth.wrist_pos("left", T)
    # state: wrist in the camera frame, R^T (p - c)
    np.testing.assert_allclose(s[:, 0:3], np.einsum("kji,kj->ki", Rm, p - c), atol=1e-6)
    # action: world displacement seen in the camera frame of step t (camera motion removed)
    dp = np.einsum("kji,kj->ki", Rm[:-1], p[1:] - p[:-1])
    np.testing.assert_allclose(a[:-1, 0:3], dp, atol=1e-6)
    # ... which differs from the naive difference of camera-frame states when the camera moves
    assert np.abs(a[:-1, 0:3] - (s[1:, 0:3] - s[:-1, 0:3])).max() > 1e-3
    # orientation in the camera frame; rotation delta unchanged by the camera (body frame)
    W = synth.wrist_rot("left", T)
    np.testing.assert_allclose(Rotation.from_rotvec(s[:, 3:6]).as_matrix(), (R_wc.inv() * W).as_matrix(),
                               atol=1e-5)
    np.testing.assert_allclose(a[:-1, 3:6], np.outer(0.3 * np.diff(T), [0.0, 0.6, 0.8]), atol=1e-6)


def test_hands_102_missing_hand_is_masked_and_zero():
    v = np.ones(12, bool)
    v[4:7] = False
    R, c = static_camera(12)
    sa = compute_state_action("hands_102", tracks(valid_right=v), R, c, "left")
    assert sa.hand_mask[:, 1].tolist() == v.astype(float).tolist()
    # right action real only where the hand is seen now and next step
    want = np.r_[v[:-1] & v[1:], False]
    assert sa.action_mask[:, 1].astype(bool).tolist() == want.tolist()
    assert np.all(sa.state[4:7, 51:] == 0) and np.all(sa.action[~want, 51:] == 0)
    assert np.all(sa.action[:-1, :51] != 0).any()  # left unaffected


def test_eef_7_state_action_and_gripper():
    R_wc, c = synth.camera(T)
    sa = compute_state_action("eef_7", tracks(), R_wc.as_matrix(), c, "right")
    s, a = sa.state.astype(np.float64), sa.action.astype(np.float64)
    assert s.shape == (12, 8) and a.shape == (12, 7)
    assert state_names("eef_7") == ["x", "y", "z", "roll", "pitch", "yaw", "pad", "gripper"]
    g = np.clip((synth.aperture_m(T) - GRIPPER_CLOSED_M) / (GRIPPER_OPEN_M - GRIPPER_CLOSED_M), 0, 1)
    np.testing.assert_allclose(s[:, 7], g, atol=1e-6)
    assert 0.05 < g.min() < g.max() < 0.95  # the known aperture sweeps the range
    np.testing.assert_allclose(a[:-1, 6], g[1:], atol=1e-6)
    assert np.all(s[:, 6] == 0)
    Rm = R_wc.as_matrix()
    p = synth.wrist_pos("right", T)
    np.testing.assert_allclose(s[:, 0:3], np.einsum("kji,kj->ki", Rm, p - c), atol=1e-6)
    np.testing.assert_allclose(a[:-1, 0:3], np.einsum("kji,kj->ki", Rm[:-1], p[1:] - p[:-1]), atol=1e-6)
    # rpy state and the spatial delta: R_delta * R_c(t) = orientation at t+1 seen from camera t
    Rc = Rotation.from_euler("xyz", s[:, 3:6])
    W = synth.wrist_rot("right", T)
    np.testing.assert_allclose(Rc.as_matrix(), (R_wc.inv() * W).as_matrix(), atol=1e-5)
    Rd = Rotation.from_euler("xyz", a[:-1, 3:6])
    np.testing.assert_allclose((Rd * Rc[:-1]).as_matrix(), (R_wc[:-1].inv() * W[1:]).as_matrix(), atol=1e-5)
    assert sa.action_mask[:, 0].sum() == 0 and sa.action_mask[:-1, 1].all()
    assert sa.action_pad[-1] and not sa.action_pad[:-1].any()


def test_gripper_aperture_bounds():
    j = np.zeros((3, 21, 3))
    j[:, 8, 0] = [0.0, (GRIPPER_CLOSED_M + GRIPPER_OPEN_M) / 2, 1.0]
    np.testing.assert_allclose(gripper_aperture(j), [0.0, 0.5, 1.0])


def test_bad_action_space():
    R, c = static_camera(12)
    with pytest.raises(ValueError, match="action_space"):
        compute_state_action("joints_21", tracks(), R, c, "left")
    with pytest.raises(ValueError, match="hand"):
        compute_state_action("eef_7", tracks(), R, c, "both")


def test_bimanual_24_both_hands_wrist_gripper_curls_under_32_dims():
    R_wc, c = synth.camera(T)
    valid_right = np.ones(len(T), bool)
    valid_right[5:7] = False
    tr = tracks(valid_right=valid_right)
    sa = compute_state_action("bimanual_24", tr, R_wc.as_matrix(), c, "left")
    s, a = sa.state.astype(np.float64), sa.action.astype(np.float64)
    names_s, names_a = state_names("bimanual_24"), action_names("bimanual_24")
    assert s.shape == a.shape == (12, 24) and len(names_s) == len(names_a) == 24 <= 32
    assert len(set(names_s)) == 24 and len(set(names_a)) == 24
    assert names_s[:12] == ["left.wrist.x", "left.wrist.y", "left.wrist.z", "left.wrist.rx", "left.wrist.ry",
                            "left.wrist.rz", "left.gripper", "left.curl.thumb", "left.curl.index",
                            "left.curl.middle", "left.curl.ring", "left.curl.pinky"]
    assert names_a[12:15] == ["right.wrist.dx", "right.wrist.dy", "right.wrist.dz"]
    Rm = R_wc.as_matrix()
    for i, h in enumerate(("left", "right")):
        o = 12 * i
        v = tr[h].valid
        p_c = np.einsum("kji,kj->ki", Rm, synth.wrist_pos(h, T) - c)  # R_wc^T (p_w - c)
        np.testing.assert_allclose(s[v, o:o + 3], p_c[v], atol=1e-5)
        R_c = R_wc.inv() * synth.wrist_rot(h, T)
        np.testing.assert_allclose(Rotation.from_rotvec(s[v, o + 3:o + 6]).as_matrix(), R_c[v].as_matrix(),
                                   atol=1e-5)
        g = np.clip((synth.aperture_m(T) - GRIPPER_CLOSED_M) / (GRIPPER_OPEN_M - GRIPPER_CLOSED_M), 0, 1)
        np.testing.assert_allclose(s[v, o + 6], g[v], atol=1e-5)
        # curls: summed joint angles per finger; the MANO order is index, middle, pinky, ring, thumb
        ang = np.linalg.norm(synth.finger_pose(h, T).reshape(-1, 5, 3, 3), axis=-1).sum(-1)
        np.testing.assert_allclose(s[v, o + 7:o + 12], ang[v][:, [4, 0, 1, 3, 2]], atol=1e-5)
        av = sa.action_mask[:, i].astype(bool)
        # translation in this step's camera frame; rotation delta R_next R_now^T in this camera frame
        dp = np.einsum("kji,kj->ki", Rm[:-1], synth.wrist_pos(h, T)[1:] - synth.wrist_pos(h, T)[:-1])
        np.testing.assert_allclose(a[:-1][av[:-1], o:o + 3], dp[av[:-1]], atol=1e-5)
        R_delta = (R_wc[:-1].inv() * synth.wrist_rot(h, T)[1:]) * R_c[:-1].inv()
        np.testing.assert_allclose(a[:-1][av[:-1], o + 3:o + 6], R_delta[av[:-1]].as_rotvec(), atol=1e-5)
        # gripper and curls: the next step's state
        np.testing.assert_allclose(a[:-1][av[:-1], o + 6:o + 12], s[1:][av[:-1], o + 6:o + 12], atol=1e-6)
        assert np.all(a[~av, o:o + 12] == 0)
    # the right hand is lost at steps 5-6: its state is zero there, its actions 4-6 are masked
    assert np.all(s[5:7, 12:] == 0) and sa.hand_mask[:, 1].tolist() == valid_right.astype(float).tolist()
    assert sa.action_mask[:, 1].tolist() == [1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0]
    assert sa.action_mask[:, 0].tolist() == [1] * 11 + [0]
    assert sa.action_pad.tolist() == [False] * 11 + [True]
