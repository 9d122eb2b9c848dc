"""State and action vectors of an episode from world-frame hand motion and camera poses.

Everything is computed per dataset step ``k`` from the hand and camera state of the source frame chosen for
that step. Conventions: see ``features.ACTION_SPACE_DOC`` (the same text goes into the dataset card).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from ego_assets.lib.lerobot.features import (
    BIMANUAL_PER_HAND,
    CURL_FINGERS,
    GRIPPER_CLOSED_M,
    GRIPPER_OPEN_M,
    HANDS,
    INDEX_TIP,
    THUMB_TIP,
    check_action_space,
)


@dataclass
class HandTrack:
    """One hand over the K steps of an episode; rows where ``valid`` is false are ignored (any values)."""

    valid: np.ndarray  # (K,) bool
    pos_w: np.ndarray  # (K, 3) wrist position, world frame, metres
    rotvec_w: np.ndarray  # (K, 3) wrist orientation, world frame, axis-angle
    finger: np.ndarray  # (K, 45) finger pose, axis-angle per joint (hand-local)
    joints_w: np.ndarray  # (K, 21, 3) joints, world frame, metres


@dataclass
class StateAction:
    state: np.ndarray  # (K, S) float32
    action: np.ndarray  # (K, A) float32
    hand_mask: np.ndarray  # (K, 2) float32
    action_mask: np.ndarray  # (K, 2) float32
    action_pad: np.ndarray  # (K,) bool


def _rotations(rotvecs: np.ndarray, valid: np.ndarray) -> Rotation:
    """Rotations for every row; invalid or non-finite rows become identity so nothing downstream is NaN."""
    rv = np.where((valid[:, None]) & np.isfinite(rotvecs), rotvecs, 0.0)
    return Rotation.from_rotvec(rv)


def gripper_aperture(joints_w: np.ndarray) -> np.ndarray:
    """Thumb-tip to index-tip distance mapped to [0, 1] (0 closed, 1 open) with fixed metric bounds, so the
    value means the same in every episode (a per-episode min-max would not)."""
    d = np.linalg.norm(joints_w[:, THUMB_TIP] - joints_w[:, INDEX_TIP], axis=-1)
    return np.clip((d - GRIPPER_CLOSED_M) / (GRIPPER_OPEN_M - GRIPPER_CLOSED_M), 0.0, 1.0)


def finger_curl(finger_pose: np.ndarray) -> np.ndarray:
    """(K, 45) finger pose (15 joints x axis-angle, MANO order) -> (K, 5) curl per finger in
    ``CURL_FINGERS`` order: the summed rotation angles of the finger's three joints (radians)."""
    from ego_assets.lib.hands.skeleton import MANO_FINGER_ORDER

    angles = np.linalg.norm(np.asarray(finger_pose, np.float64).reshape(-1, 15, 3), axis=-1)
    per_finger = angles.reshape(-1, len(MANO_FINGER_ORDER), 3).sum(-1)
    return per_finger[:, [MANO_FINGER_ORDER.index(f) for f in CURL_FINGERS]]


def compute_state_action(action_space: str, hands: dict[str, HandTrack], R_wc: np.ndarray, t_wc: np.ndarray,
                         main_hand: str) -> StateAction:
    """State/action of one episode. ``R_wc`` (K,3,3) and ``t_wc`` (K,3): camera-to-world pose per step.
    ``main_hand``: the segment's hand (the only hand of ``eef_7``)."""
    check_action_space(action_space)
    if main_hand not in HANDS:
        raise ValueError(f"hand {main_hand!r} is not one of {HANDS}")
    K = len(R_wc)
    cam = Rotation.from_matrix(R_wc)
    cam_inv = cam.inv()
    hand_mask = np.zeros((K, 2), np.float32)
    action_mask = np.zeros((K, 2), np.float32)
    pad = np.zeros(K, bool)
    pad[-1] = True
    per_hand = {}
    for i, h in enumerate(HANDS):
        tr = hands[h]
        v = np.asarray(tr.valid, bool) & np.isfinite(tr.pos_w).all(1)
        hand_mask[:, i] = v
        av = np.zeros(K, bool)
        av[:-1] = v[:-1] & v[1:]
        action_mask[:, i] = av
        W = _rotations(tr.rotvec_w, v)
        pos_w = np.where(v[:, None], tr.pos_w, 0.0)
        p_c = cam_inv.apply(pos_w - t_wc)  # R_wc^T (p_w - t_wc)
        R_c = cam_inv * W  # orientation in the camera frame of the step
        # translation to the next step in this step's camera frame (camera motion excluded)
        dp = np.zeros((K, 3))
        dp[:-1] = cam_inv[:-1].apply(pos_w[1:] - pos_w[:-1])
        per_hand[h] = dict(v=v, av=av, W=W, p_c=p_c, R_c=R_c, dp=dp)

    if action_space == "hands_102":
        state = np.zeros((K, 102))
        action = np.zeros((K, 102))
        for i, h in enumerate(HANDS):
            d, tr = per_hand[h], hands[h]
            o = 51 * i
            finger = np.where(d["v"][:, None], tr.finger, 0.0)
            state[:, o:o + 3] = d["p_c"]
            state[:, o + 3:o + 6] = d["R_c"].as_rotvec()
            state[:, o + 6:o + 51] = finger
            state[~d["v"], o:o + 51] = 0.0
            # body-frame rotation delta log(R_t^T R_{t+1}): the same in every frame, no wrap-around
            dr = np.zeros((K, 3))
            dr[:-1] = (d["W"][:-1].inv() * d["W"][1:]).as_rotvec()
            action[:-1, o:o + 3] = d["dp"][:-1]
            action[:-1, o + 3:o + 6] = dr[:-1]
            action[:-1, o + 6:o + 51] = finger[1:]
            action[~d["av"], o:o + 51] = 0.0
    elif action_space == "bimanual_24":
        n = BIMANUAL_PER_HAND
        state = np.zeros((K, 2 * n))
        action = np.zeros((K, 2 * n))
        for i, h in enumerate(HANDS):
            d, tr = per_hand[h], hands[h]
            o = n * i
            g = np.where(d["v"], gripper_aperture(np.where(d["v"][:, None, None], tr.joints_w, 0.0)), 0.0)
            curl = finger_curl(np.where(d["v"][:, None], tr.finger, 0.0))
            state[:, o:o + 3] = d["p_c"]
            state[:, o + 3:o + 6] = d["R_c"].as_rotvec()
            state[:, o + 6] = g
            state[:, o + 7:o + n] = curl
            state[~d["v"], o:o + n] = 0.0
            # spatial rotation delta in this step's camera frame, as in eef_7 but as axis-angle
            R_delta = (cam_inv[:-1] * d["W"][1:]) * d["R_c"][:-1].inv()
            action[:-1, o:o + 3] = d["dp"][:-1]
            action[:-1, o + 3:o + 6] = R_delta.as_rotvec()
            action[:-1, o + 6] = g[1:]
            action[:-1, o + 7:o + n] = curl[1:]
            action[~d["av"], o:o + n] = 0.0
    else:
        i = HANDS.index(main_hand)
        d, tr = per_hand[main_hand], hands[main_hand]
        g = np.where(d["v"], gripper_aperture(np.where(d["v"][:, None, None], tr.joints_w, 0.0)), 0.0)
        state = np.zeros((K, 8))
        state[:, 0:3] = d["p_c"]
        state[:, 3:6] = d["R_c"].as_euler("xyz")
        state[:, 7] = g
        state[~d["v"]] = 0.0
        action = np.zeros((K, 7))
        # spatial delta in this step's camera frame: R_delta = R_c(t+1 seen from t) R_c(t)^T
        R_next_in_t = cam_inv[:-1] * d["W"][1:]
        R_delta = R_next_in_t * d["R_c"][:-1].inv()
        action[:-1, 0:3] = d["dp"][:-1]
        action[:-1, 3:6] = R_delta.as_euler("xyz")
        action[:-1, 6] = g[1:]
        action[~d["av"]] = 0.0
        # only the main hand acts in eef_7
        action_mask[:, 1 - i] = 0.0
    return StateAction(state.astype(np.float32), action.astype(np.float32), hand_mask, action_mask, pad)
