"""The features of the exported LeRobot dataset, named once.

Key names that LeRobot itself defines (``observation.state``, ``action``, ``observation.images``) come from
``lerobot.utils.constants``: a constants-only module (no torch, ~0.3 s) so importing this module stays cheap
for the Dagster definitions. Everything that needs ``lerobot.datasets`` (torch, ``datasets``) is imported
inside the functions that use it.

Why the padding/mask features are not called ``action_is_pad`` / ``action_mask``: LeRobot's policy factory
(``dataset_to_policy_features``) treats every key that starts with ``action`` as a policy *output* and every
key that starts with ``observation`` as an input, and ``action_is_pad`` is the key LeRobot's own
``delta_timestamps`` padding writes into batches (ACT and Diffusion read it as a bool mask). A dataset feature
of that name would be normalised as an action and would collide with that padding, so ours live under the
neutral ``pad.`` / ``mask.`` prefixes, which the policy factory ignores.
"""

from __future__ import annotations

from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE  # constants only: no torch

HANDS = ("left", "right")
ACTION_SPACES = ("hands_102", "eef_7")
DEFAULT_ACTION_SPACE = "hands_102"
DEFAULT_FPS = 10

VIDEO_KEY = f"{OBS_IMAGES}.ego"
STATE_KEY = OBS_STATE
ACTION_KEY = ACTION
HAND_MASK_KEY = "observation.hand_mask"  # (2,) 1.0 where the hand is tracked in this frame
ACTION_MASK_KEY = "mask.action"  # (2,) 1.0 where this hand's action is real (hand seen now and next step)
ACTION_PAD_KEY = "pad.action"  # bool: the action of this frame is padding (last frame of the episode)
SOURCE_T_KEY = "source.t_s"  # float64: presentation time in the source video of the frame shown

# 15 finger joints x axis-angle, in the order of the ``finger_pose`` column of hand_tracks/hand_world
FINGER_JOINTS = tuple(f"j{j:02d}" for j in range(15))
AXES = ("x", "y", "z")

# thumb tip and index tip in MediaPipe's 21-joint order (DESIGN §2)
THUMB_TIP, INDEX_TIP = 4, 8
# pinch aperture (thumb tip - index tip distance, metres) mapped to gripper 0 (closed) .. 1 (open)
GRIPPER_CLOSED_M = 0.015
GRIPPER_OPEN_M = 0.10

# dimensions that are constant by design (validation does not flag their zero variance)
CONSTANT_BY_DESIGN = ("pad",)


def _hand_state_names(hand: str) -> list[str]:
    return ([f"{hand}.wrist.{a}" for a in AXES] + [f"{hand}.wrist.r{a}" for a in AXES]
            + [f"{hand}.finger.{j}.r{a}" for j in FINGER_JOINTS for a in AXES])


def _hand_action_names(hand: str) -> list[str]:
    return ([f"{hand}.wrist.d{a}" for a in AXES] + [f"{hand}.wrist.dr{a}" for a in AXES]
            + [f"{hand}.finger_next.{j}.r{a}" for j in FINGER_JOINTS for a in AXES])


def state_names(action_space: str) -> list[str]:
    check_action_space(action_space)
    if action_space == "hands_102":
        return [n for h in HANDS for n in _hand_state_names(h)]
    return ["x", "y", "z", "roll", "pitch", "yaw", "pad", "gripper"]


def action_names(action_space: str) -> list[str]:
    check_action_space(action_space)
    if action_space == "hands_102":
        return [n for h in HANDS for n in _hand_action_names(h)]
    return ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]


def check_action_space(action_space: str) -> str:
    if action_space not in ACTION_SPACES:
        raise ValueError(f"action_space {action_space!r} is not known; choose one of {', '.join(ACTION_SPACES)}")
    return action_space


def dataset_features(action_space: str, image_hw: tuple[int, int]) -> dict[str, dict]:
    """The ``features`` of info.json without LeRobot's default index features (added at assembly, as
    ``LeRobotDatasetMetadata.create`` does). ``image_hw`` = (height, width) of the episode videos."""
    h, w = image_hw
    s_names, a_names = state_names(action_space), action_names(action_space)
    return {
        VIDEO_KEY: {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"]},
        STATE_KEY: {"dtype": "float32", "shape": [len(s_names)], "names": s_names},
        HAND_MASK_KEY: {"dtype": "float32", "shape": [2], "names": list(HANDS)},
        ACTION_KEY: {"dtype": "float32", "shape": [len(a_names)], "names": a_names},
        ACTION_MASK_KEY: {"dtype": "float32", "shape": [2], "names": list(HANDS)},
        ACTION_PAD_KEY: {"dtype": "bool", "shape": [1], "names": None},
        SOURCE_T_KEY: {"dtype": "float64", "shape": [1], "names": None},
    }


ACTION_SPACE_DOC = {
    "hands_102": (
        "VITRA-style, both hands. observation.state (102) = per hand (left, then right) the wrist position "
        "(3, metres) and wrist orientation (3, axis-angle) in the camera frame of the current step (OpenCV: "
        "x right, y down, z forward) and the finger pose (45 = 15 joints x axis-angle). action (102) = per "
        "hand the wrist translation from this step to the next, expressed in the camera frame of this step "
        "(R_wc(t)^T (p_w(t+1) - p_w(t)): camera motion removed), the wrist rotation delta in the wrist's own "
        "frame (log(R_t^T R_{t+1}) as axis-angle, frame-independent) and the finger pose of the next step "
        "(absolute targets). A hand not tracked in this or the next step has zeros and mask.action = 0; "
        "observation.hand_mask says which hand is tracked in this frame; the last frame of an episode has no "
        "next step: its action is zero and pad.action is true."),
    "eef_7": (
        "LIBERO-style end effector, one hand (the segment's). observation.state (8) = [x, y, z, roll, pitch, "
        "yaw, pad, gripper]: wrist position and orientation (scipy 'xyz' Euler angles) in the camera frame of "
        "the current step, a constant 0 pad, and the gripper = thumb-tip to index-tip distance mapped linearly "
        f"from {GRIPPER_CLOSED_M} m (0, closed) to {GRIPPER_OPEN_M} m (1, open), clipped. action (7) = "
        "[dx, dy, dz] as in hands_102, [droll, dpitch, dyaw] = Euler angles of the rotation from this step's "
        "to the next step's orientation expressed in this step's camera frame (R_delta = R_next R_now^T, as "
        "an operational-space controller applies it), and the gripper of the next step. Padding and masks as "
        "in hands_102."),
}
