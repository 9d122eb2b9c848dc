"""A small captioning scene: two hands with known motion, seen by a turned camera, and its proxy video."""

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest
from scipy.spatial.transform import Rotation

from ego_assets.lib.motion.segment import segment_by_wrist_speed
from ego_assets.lib.motion.synthetic import SyntheticSequence, min_jerk, synthetic_tables
from ego_assets.lib.motion.world import build_hand_world
from ego_assets_tests.helpers import synth

SIZE = (160, 120)
# the camera looks along world +x (turned 90 deg about y): camera axes differ from world axes, so a
# captioner that forgot to use the camera frame would name the wrong direction
CAMERA_BASE = Rotation.from_euler("y", 90, degrees=True)


def write_proxy(path, t_s: np.ndarray, size=SIZE, seed=0) -> None:
    """An H.264 proxy with pts = t_s in ms, textured frames."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.kron(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    synth.write_frames(path, [np.roll(base, i, axis=1) for i in range(len(t_s))], fps=10, times=list(t_s),
                       codec_options={})


def _in_camera(p_cam0: np.ndarray) -> np.ndarray:
    """Points given in the first camera's axes -> world."""
    return CAMERA_BASE.apply(p_cam0)


def _move(n_rest0, n_move, n_rest1, a, b, g0, g1):
    s = np.concatenate([np.zeros(n_rest0), min_jerk(n_move - 1), np.ones(n_rest1)])
    a, b = np.asarray(a, float), np.asarray(b, float)
    return a + s[:, None] * (b - a), g0 + s * (g1 - g0)


@dataclass
class Scene:
    tables: object
    hand_world: pa.Table
    segments: pa.Table
    proxy: str
    calib: dict


def build_scene(tmp_path, moving_camera=False) -> Scene:
    n = 30
    rot_r = CAMERA_BASE * Rotation.from_euler("x", -60, degrees=True)
    # right hand: forward (camera +z) 20 cm, closing the grasp
    w_r, g_r = _move(6, 16, 8, [0.08, 0.1, 0.35], [0.08, 0.1, 0.55], 0.0, 1.0)
    # left hand: to the left (camera -x) 15 cm, opening the grasp
    w_l, g_l = _move(6, 16, 8, [-0.02, 0.1, 0.45], [-0.17, 0.1, 0.45], 1.0, 0.0)
    seqs = [SyntheticSequence("right", _in_camera(w_r), Rotation.concatenate([rot_r] * n), g_r, []),
            SyntheticSequence("left", _in_camera(w_l), Rotation.concatenate([rot_r] * n), g_l, [])]
    sc = synthetic_tables(seqs, moving_camera=moving_camera, camera_base=CAMERA_BASE, size=SIZE)
    hw = build_hand_world(sc.hand_tracks, sc.camera_poses, sc.frames)
    hw, seg = segment_by_wrist_speed(hw, sc.frames)
    proxy = tmp_path / "proxy.mp4"
    write_proxy(proxy, sc.frames["t_s"].to_numpy())
    K = sc.K
    calib = dict(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2], width=SIZE[0], height=SIZE[1],
                 distortion_model="none", dist_coeffs=[], rect_fx=K[0, 0], rect_fy=K[1, 1], rect_cx=K[0, 2],
                 rect_cy=K[1, 2])
    return Scene(sc, hw, seg, str(proxy), calib)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return build_scene(tmp_path_factory.mktemp("scene"))
