"""The features of the exported LeRobot dataset, named once.

Key names that LeRobot itself defines (``observation.state``, ``action``, ``observation.images``) come from
``format`` (the format without LeRobot: the pipeline runs without torch; a test compares them with LeRobot's).

Why the padding/mask features are not called ``action_is_pad`` / ``action_mask``: LeRobot's policy factory
(``dataset_to_policy_features``) treats every key that starts with ``action`` as a policy *output* and every
key that starts with ``observation`` as an input, and ``action_is_pad`` is the key LeRobot's own
``delta_timestamps`` padding writes into batches (ACT and Diffusion read it as a bool mask). A dataset feature
of that name would be normalised as an action and would collide with that padding, so ours live under the
neutral ``pad.`` / ``mask.`` prefixes, which the policy factory ignores.
"""

from __future__ import annotations

from dataclasses import dataclass

from ego_assets.lib import settings
from ego_assets.lib.lerobot.format import ACTION, OBS_IMAGES, OBS_STATE

HANDS = ("left", "right")
ACTION_SPACES = ("hands_102", "eef_7", "bimanual_24")
# the settings every episode of one dataset shares (lib/settings.py declares them and their defaults;
# staging and assembly read the same ones): EGO_ASSETS_DATASET_FPS, _IMAGE_SIZE ("WIDTHxHEIGHT"), _ACTION_SPACE
DEFAULT_ACTION_SPACE = settings.SETTINGS["DATASET_ACTION_SPACE"].default
DEFAULT_FPS = settings.SETTINGS["DATASET_FPS"].default


def parse_image_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in str(text).lower().replace(" ", "").split("x"))
    except ValueError:
        raise ValueError(f"dataset image size {text!r}: write it as WIDTHxHEIGHT, e.g. 640x480") from None
    return w, h


# (width, height) of every episode's frames, whatever the source: 4:3 at 640 px, the size of the frames
# proxy's long side, so a 4:3 head-mounted camera's frames go in unresampled; other aspects are
# letterboxed (the whole field of view is kept: no hand is cropped away). README "The dataset" says why.
DEFAULT_IMAGE_SIZE = parse_image_size(settings.SETTINGS["DATASET_IMAGE_SIZE"].default)

# Per-episode camera columns of meta/episodes (LeRobot keeps extra columns; ``ds.meta.episodes[i][...]``):
# intrinsics in dataset pixels (after undistortion and letterbox), horizontal field of view, the
# distortion model that was removed, static/moving camera, and the source's displayed frame size.
CAMERA_COLUMNS = ("fx", "fy", "cx", "cy", "hfov_deg", "distortion_model", "camera_motion",
                  "source_width", "source_height")
CAMERA_PREFIX = "camera/"

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

# thumb tip and index tip in MediaPipe's 21-joint order (docs/architecture.md §2)
THUMB_TIP, INDEX_TIP = 4, 8
# pinch aperture (thumb tip - index tip distance, metres) mapped to gripper 0 (closed) .. 1 (open)
GRIPPER_CLOSED_M = 0.015
GRIPPER_OPEN_M = 0.10

# bimanual_24: per hand one curl per finger (human order), from the finger_pose joints
CURL_FINGERS = ("thumb", "index", "middle", "ring", "pinky")
BIMANUAL_PER_HAND = 3 + 3 + 1 + len(CURL_FINGERS)

# dimensions that are constant by design (validation does not flag their zero variance)
CONSTANT_BY_DESIGN = ("pad",)


def _hand_state_names(hand: str) -> list[str]:
    return ([f"{hand}.wrist.{a}" for a in AXES] + [f"{hand}.wrist.r{a}" for a in AXES]
            + [f"{hand}.finger.{j}.r{a}" for j in FINGER_JOINTS for a in AXES])


def _hand_action_names(hand: str) -> list[str]:
    return ([f"{hand}.wrist.d{a}" for a in AXES] + [f"{hand}.wrist.dr{a}" for a in AXES]
            + [f"{hand}.finger_next.{j}.r{a}" for j in FINGER_JOINTS for a in AXES])


def _bimanual_names(hand: str, action: bool) -> list[str]:
    d = "d" if action else ""
    return ([f"{hand}.wrist.{d}{a}" for a in AXES] + [f"{hand}.wrist.{d}r{a}" for a in AXES]
            + [f"{hand}.gripper"] + [f"{hand}.curl.{f}" for f in CURL_FINGERS])


def state_names(action_space: str) -> list[str]:
    check_action_space(action_space)
    if action_space == "hands_102":
        return [n for h in HANDS for n in _hand_state_names(h)]
    if action_space == "bimanual_24":
        return [n for h in HANDS for n in _bimanual_names(h, action=False)]
    return ["x", "y", "z", "roll", "pitch", "yaw", "pad", "gripper"]


def action_names(action_space: str) -> list[str]:
    check_action_space(action_space)
    if action_space == "hands_102":
        return [n for h in HANDS for n in _hand_action_names(h)]
    if action_space == "bimanual_24":
        return [n for h in HANDS for n in _bimanual_names(h, action=True)]
    return ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]


@dataclass(frozen=True)
class DatasetFormat:
    """What every episode of one dataset shares: frame size (width, height), rate and action space. A
    staged video fits a dataset when its format is the dataset's."""

    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
    fps: int = DEFAULT_FPS
    action_space: str = DEFAULT_ACTION_SPACE

    def __post_init__(self):
        w, h = self.image_size
        if not (isinstance(w, int) and isinstance(h, int)) or w < 16 or h < 16 or w % 2 or h % 2:
            raise ValueError(f"dataset image size {w}x{h}: width and height must be even integers >= 16 "
                             "(yuv420p video)")
        if not isinstance(self.fps, int) or self.fps <= 0:
            raise ValueError(f"dataset fps {self.fps!r} must be a positive integer")
        check_action_space(self.action_space)

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.image_size[1], self.image_size[0]

    def label(self) -> str:
        return f"{self.image_size[0]}x{self.image_size[1]}@{self.fps}fps/{self.action_space}"

    def as_dict(self) -> dict:
        return {"image_size": list(self.image_size), "fps": self.fps, "action_space": self.action_space}


def dataset_format(env: dict | None = None) -> DatasetFormat:
    """The configured format: ``EGO_ASSETS_DATASET_IMAGE_SIZE`` (WxH), ``EGO_ASSETS_DATASET_FPS``,
    ``EGO_ASSETS_DATASET_ACTION_SPACE`` (their defaults: lib/settings.py)."""
    return DatasetFormat(parse_image_size(settings.get("DATASET_IMAGE_SIZE", env)),
                         settings.get("DATASET_FPS", env), settings.get("DATASET_ACTION_SPACE", env))


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
    "bimanual_24": (
        "Both hands as two end effectors with a gripper, 24 dims: fits the 32 state/action dims of pi0, pi05 "
        "and SmolVLA (zero-padded by them). observation.state (24) = per hand (left, then right; 12 each) the "
        "wrist position (x, y, z, metres) and orientation (rx, ry, rz, axis-angle) in the camera frame of the "
        "current step, the gripper (thumb-tip to index-tip distance mapped linearly from "
        f"{GRIPPER_CLOSED_M} m = 0, closed, to {GRIPPER_OPEN_M} m = 1, open, clipped) and one curl per finger "
        "(thumb, index, middle, ring, pinky: the sum of the rotation angles of the finger's three joints "
        "in finger_pose, radians; 0 = straight). action (24) = per hand [dx, dy, dz] as in hands_102 (camera "
        "motion removed), [drx, dry, drz] = axis-angle of the rotation from this step's to the next step's "
        "wrist orientation expressed in this step's camera frame (R_delta = R_next R_now^T, as an "
        "operational-space controller applies it; no Euler wrap-around), and the gripper and curls of the "
        "next step (absolute targets). A hand not tracked has zeros; observation.hand_mask / mask.action say "
        "which hand is real; pad.action marks the last frame. meta/stats.json carries min/max/mean/std and "
        "the q01..q99 quantiles that pi05's quantile normalisation reads."),
}
