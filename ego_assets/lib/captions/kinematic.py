"""The offline captioner: an instruction composed from the segment's measured motion.

It is not a vision model and says so (captioner ``kinematic``, model ``kinematic-v2``, and the reasoning
lists the measured numbers): it cannot name objects, only what the hand did - the main direction of travel
in the camera axes of the segment's first frame (where the person was looking when the action began) and
whether the grasp closed or opened.

The instruction is the task a policy is conditioned on, so it uses a small, closed vocabulary (``vocabulary()``:
2 hands x 7 motions x 3 grasp changes = 42 sentences) and no numbers: episodes with the same motion share
one task. The measured numbers (distance, direction vector, path, speed, aperture, flexion) go into the
caption's ``details`` (JSON), which the dataset keeps in each episode's provenance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ego_assets.lib.captions.base import NA, SegmentView

MODEL = "kinematic-v2"
PROMPT_VERSION = "kinematic-v2"  # version of the sentence templates below

# camera axes (OpenCV: x right, y down, z forward) -> words, for + and - travel
_AXIS_WORDS = {0: ("to the right", "to the left"), 1: ("down", "up"), 2: ("forward", "back toward the camera")}
MOTIONS = tuple(w for pair in _AXIS_WORDS.values() for w in pair) + ("in place",)
GRASPS = (None, "close", "open")
_THUMB_TIP, _INDEX_TIP = 4, 8


@dataclass(frozen=True)
class KinematicParams:
    """- ``min_path_length_m`` (0.05): a shorter wrist path is no meaningful action -> N/A.
    - ``min_net_displacement_m`` (0.03): below this (but a long path) the hand moved about in place.
    - ``secondary_ratio`` (0.5): a second direction is named when its component is at least this share
      of the main one ("forward and to the left").
    - ``grasp_aperture_m`` (0.015): thumb-index tip distance change that counts as closing / opening.
    - ``grasp_flexion_deg`` (8.0): mean finger-joint flexion change that counts as closing / opening.
    - ``edge_frames`` (3): frames averaged at each end for the grasp measures.
    """

    min_path_length_m: float = 0.05
    min_net_displacement_m: float = 0.03
    secondary_ratio: float = 0.5
    grasp_aperture_m: float = 0.015
    grasp_flexion_deg: float = 8.0
    edge_frames: int = 3


def direction_words(d_cam: np.ndarray, secondary_ratio: float = 0.5) -> str:
    """'forward', 'forward and to the left', ... for a displacement in camera axes."""
    mags = np.abs(d_cam)
    order = np.argsort(-mags)
    words = []
    for rank, ax in enumerate(order[:2]):
        if rank == 1 and mags[ax] < secondary_ratio * mags[order[0]]:
            break
        words.append(_AXIS_WORDS[int(ax)][0 if d_cam[ax] > 0 else 1])
    return " and ".join(words)


def grasp_change(view: SegmentView, params: KinematicParams) -> tuple[str | None, dict]:
    """'close', 'open' or None, from the thumb-index aperture and the finger flexion at both ends."""
    e = max(1, min(params.edge_frames, len(view.frame_index) // 3 or 1))
    aperture = np.linalg.norm(view.joints[:, _THUMB_TIP] - view.joints[:, _INDEX_TIP], axis=1)
    flex = np.rad2deg(np.linalg.norm(view.finger_pose.reshape(-1, 15, 3), axis=2).mean(axis=1))
    a0, a1 = float(aperture[:e].mean()), float(aperture[-e:].mean())
    f0, f1 = float(flex[:e].mean()), float(flex[-e:].mean())
    votes = 0
    if a1 - a0 < -params.grasp_aperture_m:
        votes += 1
    elif a1 - a0 > params.grasp_aperture_m:
        votes -= 1
    if f1 - f0 > params.grasp_flexion_deg:
        votes += 1
    elif f1 - f0 < -params.grasp_flexion_deg:
        votes -= 1
    change = "close" if votes > 0 else ("open" if votes < 0 else None)
    return change, dict(aperture_start_m=a0, aperture_end_m=a1, flexion_start_deg=f0, flexion_end_deg=f1)


def instruction(hand: str, motion: str, grasp: str | None) -> str:
    """The task sentence for a hand, a motion (one of ``MOTIONS``) and a grasp change (``GRASPS``)."""
    if motion not in MOTIONS or grasp not in GRASPS:
        raise ValueError(f"motion {motion!r} / grasp {grasp!r} not in the vocabulary")
    if motion == "in place":
        text = {None: f"Move the {hand} hand around in place", "close": f"Close the grasp of the {hand} hand",
                "open": f"Open the grasp of the {hand} hand"}[grasp]
    else:
        text = f"Move the {hand} hand {motion}" + {None: "", "close": " and close the grasp",
                                                    "open": " and open the grasp"}[grasp]
    return text + "."


def vocabulary() -> list[str]:
    """Every instruction the kinematic captioner can produce."""
    return [instruction(h, m, g) for h in ("left", "right") for m in MOTIONS for g in GRASPS]


def describe(view: SegmentView, params: KinematicParams = KinematicParams()) -> dict:
    """instruction, reasoning, valid, details (JSON of the measured numbers) for one segment."""
    hand = view.hand
    dur = view.duration_s
    path = view.path_length_m
    if path < params.min_path_length_m:
        return dict(instruction=NA, valid=False, details=json.dumps({"path_length_m": round(path, 4),
                                                                     "duration_s": round(dur, 3)}),
                    reasoning=(f"Kinematic caption (measured trajectory, no vision model): the {hand} wrist "
                               f"path is {path * 100:.1f} cm over {dur:.1f} s, below "
                               f"{params.min_path_length_m * 100:.0f} cm: no meaningful action."))
    f0 = int(view.frame_index[0])
    if f0 in view.poses:
        r0 = view.poses[f0][0]
        frame_note = f"camera axes of frame {f0}"
    else:  # no pose for the first frame (cannot happen for hand_world rows): world axes
        r0 = np.eye(3)
        frame_note = "world axes (no camera pose at the first frame)"
    d_w = view.wrist[-1] - view.wrist[0]
    d_c = r0.T @ d_w
    net = float(np.linalg.norm(d_w))
    change, g = grasp_change(view, params)
    words = direction_words(d_c, params.secondary_ratio)
    motion = words.split(" and ")[0] if net >= params.min_net_displacement_m else "in place"
    text = instruction(hand, motion, change)
    reasoning = (
        f"Kinematic caption (measured trajectory, no vision model). Wrist net displacement "
        f"{net * 100:.1f} cm in the {frame_note} (x right {d_c[0] * 100:+.1f}, y down {d_c[1] * 100:+.1f}, "
        f"z forward {d_c[2] * 100:+.1f} cm; {words}); path {path * 100:.1f} cm over {dur:.1f} s"
        + (f" (mean {view.mean_speed_mps:.2f} m/s)" if np.isfinite(view.mean_speed_mps) else "")
        + f"; thumb-index aperture {g['aperture_start_m'] * 100:.1f} -> {g['aperture_end_m'] * 100:.1f} cm; "
        f"mean finger flexion {g['flexion_start_deg']:.0f} -> {g['flexion_end_deg']:.0f} deg"
        + (f": grasp {'closing' if change == 'close' else 'opening'}." if change else ": grasp unchanged."))
    details = {"motion": motion, "directions": words, "grasp": change, "net_displacement_m": round(net, 4),
               "displacement_cam_m": [round(float(x), 4) for x in d_c], "axes": frame_note,
               "path_length_m": round(path, 4), "duration_s": round(dur, 3),
               "mean_speed_mps": round(float(view.mean_speed_mps), 4) if np.isfinite(view.mean_speed_mps) else None,
               **{k: round(v, 4) for k, v in g.items()}}
    return dict(instruction=text, reasoning=reasoning, valid=True, details=json.dumps(details))
