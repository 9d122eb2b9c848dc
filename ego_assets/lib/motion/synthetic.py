"""Synthetic hand trajectories with known action boundaries (for tests and the segmentation benchmark).

A sequence is a chain of reach -> grasp -> move -> release phases. Each phase is a minimum-jerk movement
(speed zero at both ends, bell-shaped in between), so the true boundaries are the speed minima that the
segmenter should find. ``synthetic_tables`` renders a sequence into the stage inputs (``hand_tracks`` in
the camera frame of a moving head camera, ``camera_poses``, ``frames``), with optional noise, outliers
and dropouts, so the whole path (composition, clean-up, segmentation) is exercised against ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from scipy.spatial.transform import Rotation, Slerp

from ego_assets.lib.motion.arrow import fixed, schema_without_key

PHASES = ("reach", "grasp", "move", "release")

# An open right hand in its own frame (metres): x toward the thumb side, y along the fingers, z out of
# the palm. Joints in MediaPipe order: wrist, thumb 1-4, index 5-8, middle 9-12, ring 13-16, pinky 17-20.
_BASES = np.array([[0.035, 0.02, 0.0], [0.025, 0.09, 0.0], [0.0, 0.095, 0.0], [-0.02, 0.09, 0.0],
                   [-0.038, 0.08, 0.0]])
_DIRS = np.array([[0.7, 0.7, 0.0], [0.1, 1.0, 0.0], [0.0, 1.0, 0.0], [-0.1, 1.0, 0.0], [-0.25, 1.0, 0.0]])
_LENS = np.array([[0.03, 0.03, 0.025], [0.04, 0.025, 0.02], [0.045, 0.028, 0.022], [0.04, 0.026, 0.02],
                  [0.03, 0.02, 0.018]])
_FLEX_MAX = np.deg2rad(np.array([30.0, 45.0, 40.0] + [45.0, 55.0, 35.0] * 4))


def hand_joints(grasp: float, hand: str = "right") -> np.ndarray:
    """(21, 3) joints in the hand frame; ``grasp`` 0 = open, 1 = closed (fingers curl toward the palm,
    the thumb swings across to meet the index)."""
    palm = np.array([0.0, 0.0, -1.0])
    pts = [np.zeros(3)]
    for f in range(5):
        d = _DIRS[f] / np.linalg.norm(_DIRS[f])
        if f == 0:
            d = d + grasp * np.array([-1.2, 0.3, -0.4])
            d /= np.linalg.norm(d)
        p = _BASES[f].copy()
        pts.append(p.copy())
        ang = 0.0
        for k in range(3):
            ang += grasp * _FLEX_MAX[3 * f + k]
            p = p + _LENS[f, k] * (np.cos(ang) * d + np.sin(ang) * palm)
            pts.append(p.copy())
    j = np.array(pts)
    if hand == "left":
        j[:, 0] *= -1.0
    return j


def finger_pose(grasp: float) -> np.ndarray:
    """(45,) axis-angle of the 15 finger joints: flexion about the local x axis."""
    fp = np.zeros((15, 3))
    fp[:, 0] = grasp * _FLEX_MAX
    return fp.reshape(-1)


def min_jerk(n: int) -> np.ndarray:
    """Normalised minimum-jerk profile s(tau) at n+1 samples from 0 to 1 (both ends included)."""
    tau = np.linspace(0.0, 1.0, n + 1)
    return 10 * tau**3 - 15 * tau**4 + 6 * tau**5


@dataclass
class SyntheticSequence:
    """A ground-truth hand trajectory in the world frame, one sample per frame."""

    hand: str
    wrist_world: np.ndarray  # (N, 3)
    rot_world: Rotation  # (N,)
    grasp: np.ndarray  # (N,) 0 open .. 1 closed
    boundaries: list[int]  # frames where a phase starts: the rest frame, speed zero (0 excluded)
    phases: list[str] = field(default_factory=list)


def reach_grasp_sequence(rng: np.random.Generator, n_cycles: int = 3, hand: str = "right",
                         phase_frames: tuple[int, int] = (10, 25), start=(0.15, 0.15, 0.5),
                         big_move_m: tuple[float, float] = (0.15, 0.30),
                         small_move_m: tuple[float, float] = (0.04, 0.08)) -> SyntheticSequence:
    """Chain ``n_cycles`` x (reach, grasp, move, release) minimum-jerk phases. Reach and move cover
    ``big_move_m``; grasp (closing) and release (opening) ``small_move_m``. Waypoints stay in a box in
    front of the first camera."""
    lo, hi = np.array([-0.3, -0.1, 0.3]), np.array([0.3, 0.3, 0.75])
    p = np.array(start, float)
    if hand == "left":
        p[0] = -p[0]
    g = 0.0
    rot = Rotation.from_euler("xyz", [-60.0, 0.0, 0.0], degrees=True)
    wrist, grasp, rots, boundaries, names = [p.copy()], [g], [rot], [], []
    for _ in range(n_cycles):
        for ph in PHASES:
            n = int(rng.integers(phase_frames[0], phase_frames[1] + 1))
            rng_m = big_move_m if ph in ("reach", "move") else small_move_m
            for _try in range(50):
                d = rng.normal(size=3)
                d /= np.linalg.norm(d)
                q = p + d * rng.uniform(*rng_m)
                if np.all(q > lo) and np.all(q < hi):
                    break
            else:
                q = np.clip(q, lo, hi)
            g_to = 1.0 if ph == "grasp" else (0.0 if ph == "release" else g)
            rot_to = rot * Rotation.from_rotvec(rng.normal(size=3) * np.deg2rad(15.0))
            s = min_jerk(n)[1:]
            boundaries.append(len(wrist) - 1)  # the rest frame between two phases (speed zero)
            names.append(ph)
            sl = Slerp([0.0, 1.0], Rotation.concatenate([rot, rot_to]))
            for si in s:
                wrist.append(p + si * (q - p))
                grasp.append(g + si * (g_to - g))
                rots.append(sl([si])[0])
            p, g, rot = q, g_to, rot_to
    boundaries = boundaries[1:]
    return SyntheticSequence(hand, np.array(wrist), Rotation.concatenate(rots), np.array(grasp),
                             boundaries, names)


def camera_trajectory(n: int, t: np.ndarray, moving: bool = True, amp_m: float = 0.08,
                      amp_deg: float = 12.0) -> tuple[Rotation, np.ndarray]:
    """T_wc for n frames: identity at frame 0, then smooth head motion (sway + turn) when ``moving``."""
    if not moving:
        return Rotation.identity(n), np.zeros((n, 3))
    tt = t - t[0]
    tr = np.stack([amp_m * np.sin(0.9 * tt), 0.3 * amp_m * np.sin(1.7 * tt), 0.5 * amp_m * np.sin(0.6 * tt)],
                  axis=1)
    ang = np.stack([0.5 * np.sin(1.1 * tt), np.sin(0.7 * tt), 0.3 * np.sin(1.3 * tt)], axis=1)
    return Rotation.from_euler("xyz", np.deg2rad(amp_deg) * ang), tr


@dataclass
class SyntheticScene:
    hand_tracks: pa.Table
    camera_poses: pa.Table
    frames: pa.Table
    sequences: dict[str, SyntheticSequence]
    dropped: dict[str, np.ndarray]  # frames where each hand has no row
    untracked: np.ndarray  # frames whose camera pose is not tracked
    K: np.ndarray


def synthetic_tables(sequences: list[SyntheticSequence], fps: float = 10.0, moving_camera: bool = True,
                     noise_m: float = 0.0, depth_noise_m: float = 0.0, rot_noise_deg: float = 0.0,
                     outlier_frames: dict[str, list[int]] | None = None, outlier_m: float = 0.25,
                     dropouts: dict[str, list[tuple[int, int]]] | None = None,
                     untracked: list[tuple[int, int]] | None = None,
                     interpolated: dict[str, list[tuple[int, int]]] | None = None,
                     t_jitter_s: float = 0.0, blur: float | np.ndarray = 120.0, seed: int = 0,
                     size: tuple[int, int] = (640, 480),
                     camera_base: Rotation | None = None) -> SyntheticScene:
    """Render world-frame sequences into the stage inputs. Ranges are ``[a, b)`` frame ranges.

    Noise is added in the camera frame (``depth_noise_m`` along z, as monocular lifting does);
    ``outlier_frames`` get a jump of ``outlier_m`` in depth; ``dropouts`` remove the hand's rows;
    ``untracked`` marks camera poses tracked=False; ``interpolated`` flags rows as filled in;
    ``camera_base`` turns the whole camera path (the camera then looks along ``camera_base`` applied to
    +z at frame 0); ``blur`` may be per frame."""
    rng = np.random.default_rng(seed)
    n = max(len(s.wrist_world) for s in sequences)
    t = np.arange(n) / fps + 0.5
    if t_jitter_s:
        t = t + rng.uniform(-t_jitter_s, t_jitter_s, n)
    r_wc, t_wc = camera_trajectory(n, t, moving_camera)
    if camera_base is not None:
        r_wc = camera_base * r_wc
    w, h = size
    fx = 0.8 * w
    K = np.array([[fx, 0, w / 2], [0, fx, h / 2], [0, 0, 1.0]])
    untracked_mask = np.zeros(n, bool)
    for a, b in untracked or []:
        untracked_mask[a:b] = True

    rows = {k: [] for k in ("frame_index", "t_s", "hand", "score", "kp2d", "joints_cam", "wrist_rotvec_cam",
                            "finger_pose", "track_id", "handedness_conf", "interpolated")}
    dropped = {}
    for ti, seq in enumerate(sequences):
        m = len(seq.wrist_world)
        keep = np.ones(m, bool)
        for a, b in (dropouts or {}).get(seq.hand, []):
            keep[a:b] = False
        dropped[seq.hand] = np.flatnonzero(~keep)
        interp = np.zeros(m, bool)
        for a, b in (interpolated or {}).get(seq.hand, []):
            interp[a:b] = True
        outl = np.array(sorted(set((outlier_frames or {}).get(seq.hand, []))), int)
        idx = np.flatnonzero(keep)
        k = len(idx)
        jh = np.stack([hand_joints(g, seq.hand) for g in seq.grasp[idx]])
        jw = np.einsum("nij,nkj->nki", seq.rot_world[idx].as_matrix(), jh) + seq.wrist_world[idx][:, None]
        jc = np.einsum("nji,nkj->nki", r_wc[idx].as_matrix(), jw - t_wc[idx][:, None])  # R^T (p - t)
        off = np.zeros((k, 3))
        if noise_m:
            off += rng.normal(scale=noise_m, size=(k, 3))
        if depth_noise_m:
            off[:, 2] += rng.normal(scale=depth_noise_m, size=k)
        off[np.isin(idx, outl), 2] += outlier_m
        jc = jc + off[:, None, :]
        rc = r_wc[idx].inv() * seq.rot_world[idx]
        if rot_noise_deg:
            rc = rc * Rotation.from_rotvec(rng.normal(size=(k, 3)) * np.deg2rad(rot_noise_deg))
        uv = jc @ K.T
        uv = uv[..., :2] / uv[..., 2:3]
        rows["frame_index"].append(idx)
        rows["t_s"].append(t[idx])
        rows["hand"].append(np.full(k, seq.hand, dtype=object))
        rows["score"].append(np.full(k, 0.9))
        rows["kp2d"].append(uv.reshape(k, -1))
        rows["joints_cam"].append(jc.reshape(k, -1))
        rows["wrist_rotvec_cam"].append(rc.as_rotvec().reshape(k, 3))
        rows["finger_pose"].append(np.stack([finger_pose(g) for g in seq.grasp[idx]]).reshape(k, 45))
        rows["track_id"].append(np.full(k, ti))
        rows["handedness_conf"].append(np.full(k, 0.95))
        rows["interpolated"].append(interp[idx])
    rows = {key: np.concatenate(v) for key, v in rows.items()}
    ht_schema = schema_without_key("hand_tracks")
    hand_tracks = pa.table({
        "frame_index": pa.array(rows["frame_index"], pa.int32()),
        "t_s": pa.array(rows["t_s"], pa.float64()),
        "hand": pa.array(rows["hand"].tolist(), pa.string()),
        "score": pa.array(rows["score"], pa.float32()),
        "kp2d": fixed(np.array(rows["kp2d"]).reshape(-1, 42), ht_schema.field("kp2d").type),
        "joints_cam": fixed(np.array(rows["joints_cam"]).reshape(-1, 63), ht_schema.field("joints_cam").type),
        "wrist_rotvec_cam": fixed(np.array(rows["wrist_rotvec_cam"]).reshape(-1, 3),
                                  ht_schema.field("wrist_rotvec_cam").type),
        "finger_pose": fixed(np.array(rows["finger_pose"]).reshape(-1, 45), ht_schema.field("finger_pose").type),
        "track_id": pa.array(rows["track_id"], pa.int32()),
        "handedness_conf": pa.array(rows["handedness_conf"], pa.float32()),
        "interpolated": pa.array(rows["interpolated"], pa.bool_()),
    }, schema=ht_schema)
    q = r_wc.as_quat()
    camera_poses = pa.table({
        "frame_index": pa.array(np.arange(n), pa.int32()), "t_s": pa.array(t, pa.float64()),
        "tx": t_wc[:, 0], "ty": t_wc[:, 1], "tz": t_wc[:, 2],
        "qx": q[:, 0], "qy": q[:, 1], "qz": q[:, 2], "qw": q[:, 3],
        "tracked": pa.array(~untracked_mask), "scale": pa.array(["metric"] * n),
    })
    frames = pa.table({
        "frame_index": pa.array(np.arange(n), pa.int32()), "t_s": pa.array(t, pa.float64()),
        "is_keyframe": pa.array(np.arange(n) % 10 == 0),
        "blur": pa.array(np.broadcast_to(np.asarray(blur, np.float64), (n,)), pa.float32()),
        "brightness": pa.array(np.full(n, 0.5), pa.float32()),
        "motion": pa.array(np.full(n, 0.01), pa.float32()),
    })
    return SyntheticScene(hand_tracks, camera_poses, frames, {s.hand: s for s in sequences}, dropped,
                          np.flatnonzero(untracked_mask), K)
