"""Synthetic partitions with known ground truth for the LeRobot export tests and benchmark.

A partition has a proxy video whose frame ``i`` shows a known gray level (so a decoded frame tells which
source frame it came from), slightly irregular timestamps (~9.99 fps, like a 29.97 fps source sampled at
10 Hz), hands moving on analytic trajectories and a camera rotating about its y axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy.spatial.transform import Rotation

from ego_assets_tests.helpers.synth import write_frames

SRC_FPS = 9.99


def gray_of(i: int) -> int:
    """Gray level of source frame ``i`` (distinct for neighbouring frames, robust to compression)."""
    return int(16 + (i * 23) % 224)


_TEXTURES: dict[tuple[int, int], np.ndarray] = {}


def _texture(w: int, h: int) -> np.ndarray:
    """A smooth random colour texture (camera-like content for the encoder), fixed per size."""
    if (w, h) not in _TEXTURES:
        import cv2

        small = np.random.default_rng(7).integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
        _TEXTURES[(w, h)] = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return _TEXTURES[(w, h)]


def frame_image(i: int, w: int, h: int, textured: bool = False) -> np.ndarray:
    """Frame ``i``: the bottom-right 8x8 block has gray level ``gray_of(i)``."""
    if textured:
        img = np.roll(_texture(w, h), 3 * i, axis=1).copy()
        img[-16:, -16:] = gray_of(i)
    else:
        img = np.full((h, w, 3), gray_of(i), np.uint8)
        img[: h // 4, : w // 4] = (i * 5) % 256  # a little texture
    return img


def write_proxy(path: Path, t_s: np.ndarray, w: int, h: int, textured: bool = False) -> None:
    write_frames(path, (frame_image(i, w, h, textured) for i in range(len(t_s))), fps=10,
                 times=[float(t) for t in t_s], size=(w, h),
                 codec_options={"crf": "18", "preset": "ultrafast", "bf": "0", "g": "10"})


def wrist_pos(hand: str, t: np.ndarray) -> np.ndarray:
    s = -1.0 if hand == "left" else 1.0
    return np.stack([s * 0.2 + 0.1 * t, 0.05 * np.sin(t), 0.5 + 0.02 * t], 1)


def wrist_rot(hand: str, t: np.ndarray) -> Rotation:
    """Rotation about a fixed tilted axis at 0.3 rad/s after a hand-specific base orientation."""
    axis = np.array([0.0, 0.6, 0.8])
    base = Rotation.from_rotvec([0.1, 0.2, 0.3] if hand == "left" else [-0.2, 0.1, 0.4])
    return base * Rotation.from_rotvec(np.outer(0.3 * t, axis))


def finger_pose(hand: str, t: np.ndarray) -> np.ndarray:
    k = np.arange(45)
    return 0.1 * np.sin(np.outer(t, np.ones(45)) + k / 7.0 + (0.5 if hand == "left" else 0.0))


def aperture_m(t: np.ndarray) -> np.ndarray:
    """Thumb-index distance: 0.02 .. 0.09 m."""
    return 0.055 + 0.035 * np.sin(0.7 * t)


def joints(hand: str, t: np.ndarray) -> np.ndarray:
    p = wrist_pos(hand, t)
    j = np.repeat(p[:, None, :], 21, 1) + np.linspace(0, 0.08, 21)[None, :, None] * np.array([0, 0, 1.0])
    j[:, 4] = p + np.array([0.05, 0.0, 0.0])
    j[:, 8] = j[:, 4] + np.stack([np.zeros_like(t), aperture_m(t), np.zeros_like(t)], 1)
    return j


def camera(t: np.ndarray) -> tuple[Rotation, np.ndarray]:
    """T_wc: yaw about the camera y axis at 0.2 rad/s, sliding along x."""
    R = Rotation.from_rotvec(np.outer(0.2 * t, [0.0, 1.0, 0.0]))
    c = np.stack([0.05 * t, np.zeros_like(t), 0.01 * t], 1)
    return R, c


@dataclass
class SynthPartition:
    key: str
    proxy: Path
    frames: pa.Table
    segments: pa.Table
    captions: pa.Table
    hand_world: pa.Table
    camera_poses: pa.Table
    provenance: dict
    t_s: np.ndarray


def _fixed(a: np.ndarray, dtype=np.float32) -> pa.Array:
    a = np.asarray(a, dtype)
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


def make_partition(tmp: Path, key: str, n_frames: int = 60, w: int = 64, h: int = 48,
                   segments: list[tuple[int, str, int, int]] | None = None, seed: int = 0,
                   task_prefix: str = "", source: str = "synth", drop: dict[str, tuple[int, int]] | None = None,
                   licence: str = "CC-BY-4.0", textured: bool = False) -> SynthPartition:
    """``segments``: (segment_id, hand, start_frame, end_frame). Also adds one invalid segment and one without
    caption (neither may become an episode). ``drop``: hand -> frames [a, b) without a row for that hand."""
    rng = np.random.default_rng(seed)
    t_s = np.arange(n_frames) / SRC_FPS + rng.uniform(-0.004, 0.004, n_frames)
    t_s[0] = 0.0
    tmp.mkdir(parents=True, exist_ok=True)
    proxy = tmp / f"{key}.mp4"
    write_proxy(proxy, t_s, w, h, textured)
    frames = pa.table({"frame_index": pa.array(np.arange(n_frames), pa.int32()), "t_s": pa.array(t_s)})
    if segments is None:
        segments = [(0, "right", 2, 20), (1, "left", 10, 35), (2, "right", 30, 55)]
    rows = list(segments) + [(90, "right", 5, 15), (91, "left", n_frames - 20, n_frames - 10)]
    seg = pa.table({
        "segment_id": pa.array([r[0] for r in rows], pa.int32()), "hand": [r[1] for r in rows],
        "start_frame": pa.array([r[2] for r in rows], pa.int32()),
        "end_frame": pa.array([r[3] for r in rows], pa.int32()),
        "start_s": [float(t_s[r[2]]) for r in rows], "end_s": [float(t_s[r[3]]) for r in rows],
        "valid": [True] * len(segments) + [False, True],
    })
    cap_rows = [r for r in rows if r[0] != 91]  # 91 has no caption
    captions = pa.table({
        "segment_id": pa.array([r[0] for r in cap_rows], pa.int32()), "hand": [r[1] for r in cap_rows],
        "instruction": [f"{task_prefix}move the {r[1]} hand ({r[0] % 2})" for r in cap_rows],
        "valid": [True] * len(cap_rows),
    })
    hw = {"frame_index": [], "hand": [], "wrist_pos_world": [], "wrist_rotvec_world": [], "finger_pose": [],
          "joints_world": []}
    fi = np.arange(n_frames)
    for hand in ("left", "right"):
        keep = np.ones(n_frames, bool)
        if drop and hand in drop:
            keep[drop[hand][0]:drop[hand][1]] = False
        t = t_s[keep]
        hw["frame_index"].append(fi[keep])
        hw["hand"] += [hand] * int(keep.sum())
        hw["wrist_pos_world"].append(wrist_pos(hand, t))
        hw["wrist_rotvec_world"].append(wrist_rot(hand, t).as_rotvec())
        hw["finger_pose"].append(finger_pose(hand, t))
        hw["joints_world"].append(joints(hand, t).reshape(-1, 63))
    hand_world = pa.table({
        "frame_index": pa.array(np.concatenate(hw["frame_index"]), pa.int32()), "hand": hw["hand"],
        "wrist_pos_world": _fixed(np.concatenate(hw["wrist_pos_world"]), np.float64),
        "wrist_rotvec_world": _fixed(np.concatenate(hw["wrist_rotvec_world"]), np.float64),
        "finger_pose": _fixed(np.concatenate(hw["finger_pose"])),
        "joints_world": _fixed(np.concatenate(hw["joints_world"])),
    })
    R, c = camera(t_s)
    q = R.as_quat()
    cam = pa.table({"frame_index": pa.array(fi, pa.int32()), "t_s": t_s, "tx": c[:, 0], "ty": c[:, 1],
                    "tz": c[:, 2], "qx": q[:, 0], "qy": q[:, 1], "qz": q[:, 2], "qw": q[:, 3]})
    prov = {"source": source, "uri": f"file:///videos/{key}.mp4", "licence": licence,
            "backends": {"hands": "mediapipe@1", "poses": "opencv_vo@1", "captions": "kinematic@1"}}
    return SynthPartition(key, proxy, frames, seg, captions, hand_world, cam, prov, t_s)


def stage(sp: SynthPartition, out: Path, **kw):
    from ego_assets.lib.lerobot.staging import stage_partition

    return stage_partition(sp.key, sp.proxy, sp.frames, sp.segments, sp.captions, sp.hand_world,
                           sp.camera_poses, sp.provenance, out, **kw)
