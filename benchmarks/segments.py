"""Segmentation accuracy on synthetic trajectories with known action boundaries.

Each trajectory is a chain of reach -> grasp -> move -> release minimum-jerk phases (speed zero between
phases: the true boundaries) of one hand, seen by a moving head camera, with camera-frame noise (more in
depth, as monocular lifting gives), 30 cm depth outliers and dropouts (frames where the hand is not seen).
The full path runs: hand tracks x camera poses -> hand_world (outliers, smoothing) -> segments.

Boundaries are scored within +-2 frames (one-to-one matching); boundaries at dropouts are excluded on
both sides (a gap always cuts). Compared in the same process with two baselines:

- ``raw-minima``: local minima of the raw (unfiltered, no outlier rejection) world wrist speed, with the
  same minimum distance;
- ``fixed-window``: cuts every L frames, L = the true median phase length (an oracle-informed window).

    .venv/bin/python benchmarks/segments.py            # ~30 s
    .venv/bin/python benchmarks/segments.py --n 200 --noise 1.5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ego_assets.lib.motion.arrow import scalar, vectors  # noqa: E402
from ego_assets.lib.motion.segment import SegmentParams, segment_by_wrist_speed  # noqa: E402
from ego_assets.lib.motion.synthetic import reach_grasp_sequence, synthetic_tables  # noqa: E402
from ego_assets.lib.motion.world import MotionParams, build_hand_world, contiguous_runs  # noqa: E402

TOL = 2


def make_case(rng: np.random.Generator, noise: float, seed: int):
    seq = reach_grasp_sequence(rng, n_cycles=3, phase_frames=(10, 25))
    n = len(seq.wrist_world)
    n_out = int(round(0.02 * n))
    outliers = sorted(rng.choice(np.arange(5, n - 5), n_out, replace=False).tolist())
    gaps = []
    for _ in range(int(rng.integers(1, 3))):
        a = int(rng.integers(10, n - 15))
        gaps.append((a, a + int(rng.integers(3, 9))))
    sc = synthetic_tables([seq], moving_camera=True, noise_m=0.004 * noise, depth_noise_m=0.012 * noise,
                          rot_noise_deg=3.0 * noise, outlier_frames={"right": outliers}, outlier_m=0.3,
                          dropouts={"right": gaps}, t_jitter_s=0.005, seed=seed)
    return seq, sc


def internal_cuts(frame_index: np.ndarray, starts: list[int]) -> set[int]:
    """Cut positions that are not run (gap) edges."""
    run_edges = set()
    for a, b in contiguous_runs(frame_index):
        run_edges.add(int(frame_index[a]))
        run_edges.add(int(frame_index[b - 1]) + 1)
    return {int(s) for s in starts} - run_edges


def truth_cuts(seq, frame_index: np.ndarray, min_length: int) -> set[int]:
    """True boundaries that a segmentation with segments of at least ``min_length`` frames can show:
    at least ``min_length`` frames from a gap or an end of the track (closer, the piece between is
    too short to be a segment, and a gap cuts anyway)."""
    present = set(frame_index.tolist())
    out = set()
    for b in seq.boundaries:
        if all(f in present for f in range(b - min_length, b + min_length)):
            out.add(int(b))
    return out


def match(pred: set[int], truth: set[int], tol: int = TOL) -> tuple[int, list[int]]:
    pairs = sorted((abs(p - t), p, t) for p in pred for t in truth if abs(p - t) <= tol)
    used_p, used_t, offs = set(), set(), []
    for d, p, t in pairs:
        if p not in used_p and t not in used_t:
            used_p.add(p)
            used_t.add(t)
            offs.append(d)
    return len(offs), offs


def ours(sc, mp: MotionParams, sp: SegmentParams):
    hw = build_hand_world(sc.hand_tracks, sc.camera_poses, sc.frames, mp)
    _, seg = segment_by_wrist_speed(hw, sc.frames, sp)
    fi = scalar(hw, "frame_index", np.int64)
    starts = scalar(seg, "start_frame", np.int64).tolist() + (scalar(seg, "end_frame", np.int64) + 1).tolist()
    return fi, internal_cuts(fi, starts)


def raw_world(sc):
    """World wrist positions straight from the composition (no clean-up)."""
    from scipy.spatial.transform import Rotation

    ht = sc.hand_tracks
    fi = scalar(ht, "frame_index", np.int64)
    jc = vectors(ht, "joints_cam", 63)[:, :3]
    cp = sc.camera_poses
    pose_fi = scalar(cp, "frame_index", np.int64)
    q = np.stack([scalar(cp, c) for c in ("qx", "qy", "qz", "qw")], 1)
    t = np.stack([scalar(cp, c) for c in ("tx", "ty", "tz")], 1)
    tracked = scalar(cp, "tracked", bool)
    idx = {int(f): i for i, f in enumerate(pose_fi) if tracked[i]}
    keep = np.array([int(f) in idx for f in fi])
    fi, jc = fi[keep], jc[keep]
    rows = [idx[int(f)] for f in fi]
    w = Rotation.from_quat(q[rows]).apply(jc) + t[rows]
    ts = dict(zip(scalar(sc.frames, "frame_index", np.int64).tolist(), scalar(sc.frames, "t_s").tolist()))
    return fi, w, np.array([ts[int(f)] for f in fi])


def raw_minima(sc, sp: SegmentParams):
    from scipy.signal import find_peaks

    fi, w, t = raw_world(sc)
    starts = []
    for a, b in contiguous_runs(fi):
        if b - a < 3:
            continue
        v = np.linalg.norm(np.gradient(w[a:b], t[a:b], axis=0), axis=1)
        idx, _ = find_peaks(-v, distance=sp.min_distance)
        starts += fi[a + idx].tolist()
    return fi, internal_cuts(fi, starts)


def fixed_window(sc, length: int):
    fi = scalar(sc.hand_tracks, "frame_index", np.int64)
    starts = []
    for a, b in contiguous_runs(fi):
        starts += fi[a:b:length].tolist()
    return fi, internal_cuts(fi, starts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40, help="trajectories (12 phases each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=1.0, help="scale of the tracking noise")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    cases = [make_case(rng, args.noise, args.seed * 1000 + i) for i in range(args.n)]
    phase_len = int(np.median([np.median(np.diff([0, *s.boundaries, len(s.wrist_world)])) for s, _ in cases]))
    mp, sp = MotionParams(), SegmentParams()
    methods = {
        "wrist-speed minima (ours)": lambda sc: ours(sc, mp, sp),
        "raw-minima (baseline)": lambda sc: raw_minima(sc, sp),
        f"fixed-window L={phase_len}": lambda sc: fixed_window(sc, phase_len),
    }
    results = {}
    for name, fn in methods.items():
        fn(cases[0][1])  # warm-up: first-use imports are not the method's cost
        tp = n_pred = n_true = 0
        offs: list[int] = []
        t0 = time.perf_counter()
        for seq, sc in cases:
            fi, pred = fn(sc)
            truth = truth_cuts(seq, fi, sp.min_length)
            m, o = match(pred, truth)
            tp += m
            offs += o
            n_pred += len(pred)
            n_true += len(truth)
        dt = time.perf_counter() - t0
        p = tp / max(n_pred, 1)
        r = tp / max(n_true, 1)
        f1 = 2 * p * r / max(p + r, 1e-12)
        results[name] = dict(p=p, r=r, f1=f1, off=float(np.mean(offs)) if offs else float("nan"),
                             ms=1000 * dt / len(cases), n_true=n_true, n_pred=n_pred)

    base = results["raw-minima (baseline)"]
    n_frames = sum(len(s.wrist_world) for s, _ in cases)
    print(f"{len(cases)} trajectories, {n_frames} frames at 10 fps, noise x{args.noise}: "
          f"{sum(len(s.boundaries) for s, _ in cases)} true boundaries, {base['n_true']} scored (>= "
          f"{sp.min_length} frames from a gap or an end); tolerance +-{TOL} frames")
    hdr = (f"{'method':<28} {'precision':>9} {'recall':>7} {'F1':>6} {'|offset|':>8} {'ms/traj':>8} "
           f"{'F1 vs raw':>9} {'time vs raw':>11}")
    print(hdr)
    print("-" * len(hdr))
    for name, v in results.items():
        print(f"{name:<28} {v['p']:>9.3f} {v['r']:>7.3f} {v['f1']:>6.3f} {v['off']:>8.2f} {v['ms']:>8.1f} "
              f"{v['f1'] / max(base['f1'], 1e-12):>8.2f}x {v['ms'] / max(base['ms'], 1e-12):>10.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
