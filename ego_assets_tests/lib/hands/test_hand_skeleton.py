"""Wrist frame, finger pose (MANO order), chirality and view cues on hands with known geometry."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ego_assets.lib.hands import skeleton as sk

ROTS = Rotation.random(8, random_state=3).as_matrix()


def _place(j: np.ndarray, R: np.ndarray, t=(0.05, 0.02, 0.4)) -> np.ndarray:
    return j @ R.T + np.asarray(t)


@pytest.mark.parametrize("hand", ["left", "right"])
def test_flat_hand_has_zero_finger_pose_in_any_placement(hand):
    flat = sk.template_hand(hand)
    J = np.stack([_place(flat, R) for R in ROTS])
    fp = sk.finger_pose(J, hand)
    assert fp.shape == (8, 15, 3)
    assert np.abs(fp).max() < 1e-9


@pytest.mark.parametrize("hand", ["left", "right"])
@pytest.mark.parametrize("joint,deg", [("index2", 60.0), ("middle1", 35.0), ("ring3", 20.0),
                                       ("pinky2", 90.0), ("thumb2", 45.0)])
def test_bent_joint_gives_that_angle_at_that_joint_only(hand, joint, deg):
    J = np.stack([_place(sk.template_hand(hand, {joint: deg}), R) for R in ROTS])
    fp = sk.finger_pose(J, hand)
    k = sk.MANO_JOINT_NAMES.index(joint)
    ang = np.degrees(np.linalg.norm(fp, axis=-1))
    np.testing.assert_allclose(ang[:, k], deg, atol=1e-6)
    others = np.delete(ang, k, axis=1)
    assert others.max() < 1e-6
    # flexion towards the palm is a rotation about (rest direction x palm normal): about -y for the
    # fingers, for both hands (the thumb's metacarpal points ~40 deg off x)
    axis = fp[:, k] / np.linalg.norm(fp[:, k], axis=-1, keepdims=True)
    T = sk.template_hand(hand)
    base = sk.FINGER_CHAINS[joint[:-1]][1]
    expected = np.cross(T[base] / np.linalg.norm(T[base]), [0.0, 0.0, 1.0])
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(axis, np.broadcast_to(expected, axis.shape), atol=1e-9)
    if joint[:-1] != "thumb":
        assert (axis[:, 1] < -0.9).all()


def test_chained_flexion_is_relative_to_the_parent_bone():
    J = sk.template_hand("right", 20.0)  # every joint bent 20 deg: each bone 20 deg from its parent
    ang = np.degrees(np.linalg.norm(sk.finger_pose(J, "right"), axis=-1))
    np.testing.assert_allclose(ang, 20.0, atol=1e-6)


def test_mano_order_and_names():
    assert sk.MANO_JOINT_NAMES[:3] == ("index1", "index2", "index3")
    assert sk.MANO_JOINT_NAMES[6:9] == ("pinky1", "pinky2", "pinky3")
    assert sk.MANO_JOINT_NAMES[9:12] == ("ring1", "ring2", "ring3")
    assert sk.MANO_JOINT_NAMES[12:] == ("thumb1", "thumb2", "thumb3")
    # pinky comes before ring in MANO: bending the pinky PIP shows at index 7
    fp = sk.finger_pose(sk.template_hand("right", {"pinky2": 50}), "right")
    assert np.linalg.norm(fp[7]) > 0.8 and np.linalg.norm(fp[10]) < 1e-9


@pytest.mark.parametrize("hand", ["left", "right"])
def test_wrist_frame_follows_the_hand(hand):
    T = sk.template_hand(hand, 15.0)
    np.testing.assert_allclose(sk.wrist_frame(T, hand), np.eye(3), atol=1e-12)
    J = np.stack([_place(T, R) for R in ROTS])
    np.testing.assert_allclose(sk.wrist_frame(J, hand), ROTS, atol=1e-9)
    rv = sk.wrist_rotvec(J, hand)
    np.testing.assert_allclose(Rotation.from_rotvec(rv).as_matrix(), ROTS, atol=1e-9)
    # z is the palm normal for both hands: the fingertips curl towards +z
    R = sk.wrist_frame(J, hand)
    tip_dir = J[:, 8] - J[:, 5]
    assert ((tip_dir[:, None, :] @ R[:, :, 2:3])[:, 0, 0] > 0).all()


def test_chirality_of_mirrored_hands():
    right = np.stack([_place(sk.template_hand("right", 25.0), R) for R in ROTS])
    left = np.stack([_place(sk.template_hand("left", 25.0), R) for R in ROTS])
    assert (sk.chirality_score(right) > 0.3).all()
    assert (sk.chirality_score(left) < -0.3).all()
    mirror = np.diag([-1.0, 1.0, 1.0])  # a mirror image (e.g. a flipped selfie) swaps chirality
    np.testing.assert_allclose(sk.chirality_score(right @ mirror), -sk.chirality_score(right), atol=1e-12)
    assert abs(sk.chirality_score(sk.template_hand("right"))) < 1e-9  # flat hand: no evidence


def test_view_score_under_the_back_of_hand_prior():
    # fingers up in the image (x_hand -> -y_cam), palm normal away from the camera (z_hand -> +z_cam):
    # the camera sees the back of the hand, as a head-worn camera usually does
    R = np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]])
    K = np.array([[320.0, 0, 320], [0, 320, 240], [0, 0, 1]])

    def kp(hand):
        P = _place(sk.template_hand(hand, 20.0), R, (0.0, 0.05, 0.4))
        x = P @ K.T
        return x[:, :2] / x[:, 2:]

    assert sk.view_score(kp("right")) > 0.3
    assert sk.view_score(kp("left")) < -0.3
    flipped = kp("right") * np.array([-1, 1]) + np.array([640, 0])  # mirrored image
    assert sk.view_score(flipped) < -0.3


def test_bad_inputs():
    with pytest.raises(ValueError, match="expected 'left' or 'right'"):
        sk.wrist_frame(sk.template_hand(), "Left")
    with pytest.raises(ValueError, match="shape"):
        sk.finger_pose(np.zeros((5, 20, 3)), "right")
