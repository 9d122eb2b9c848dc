"""Per-frame CPU of the per-video stages that run OpenCV and the episodes' encoder, on real footage.

Reads a home made by a backfill (``benchmarks/throughput.py --keep`` prints it) and, in one process, for
each of its first N videos, runs the library calls of three steps on the stored inputs:

  calibrations      ``calibration.classify_camera_motion`` (the CPU part of the default calibration)
  camera_poses      ``odometry.estimate``
  lerobot_episodes  ``staging.stage_partition`` (into a temporary folder), and the same with the video
                    writer replaced by one that drops the frames: the difference is the AV1 encoder's
                    share (LeRobot's settings)

The odometry and camera-motion calls run twice, interleaved: with OpenCV's own thread pool ("pool", how
they ran before ``lib/opencv_threads``) and as the code runs them now (one thread); the table gives CPU ms
per frame (process time, every thread: wall time on a shared machine says more about the neighbours)
and says whether both gave the same result. The proxies are decoded first (that decode is the baseline
column's 1.00: ``lib/video`` keeps the frames, so a step's own decode is a conversion of kept frames).

    python benchmarks/stage_costs.py HOME [--videos 4] [--reps 2]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ego_assets.lib.opencv_threads as ot  # noqa: E402

REAL = ot.opencv_threads


def pool_threads(n: int = 1):
    """What the stages did before: OpenCV's own pool (one thread per core)."""
    return contextlib.nullcontext()


class DropFrames:
    """A stand-in for the staging's video writer that encodes nothing (an empty file)."""

    def __init__(self, path: Path, *args, **kwargs):
        path.write_bytes(b"")
        self.container = None

    def write(self, img: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


def main(argv=None) -> int:
    from ego_assets.defs.stages import calib_row, proxy
    from ego_assets.lib.geometry import calibration, odometry
    from ego_assets.lib.lerobot.features import DEFAULT_FPS
    from ego_assets.lib.lerobot import staging
    from ego_assets.lib.storage import Store
    from ego_assets.lib.video import clear_decoded, iter_frames

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("home", help="a home with every per-video asset (throughput.py --keep)")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--reps", type=int, default=2, help="runs of each variant (interleaved)")
    a = ap.parse_args(argv)
    store = Store(a.home)
    root = Path(a.home) / "artifacts" / "lerobot_episodes"
    if not root.is_dir():
        ap.error(f"{a.home!r} has no lerobot_episodes partitions: run benchmarks/throughput.py --keep first")
    keys = sorted(os.listdir(root))[: a.videos]
    cpu = {k: 0.0 for k in ("decode", "calib pool", "calib now", "poses pool", "poses now", "stage",
                            "stage without encoder")}
    same = {"calib": True, "poses": True}
    n_frames = n_staged = 0
    tmp = Path(tempfile.mkdtemp(prefix="ego_stage_costs_"))
    for pk in keys:
        p = proxy(store, pk)
        frames = store.read_table("frames", pk)
        clips, calib, hands = store.read_table("clips", pk), calib_row(store, pk), store.read_table("hand_tracks", pk)
        clear_decoded()
        t = time.process_time()
        for _ in iter_frames(p):  # decoded once, kept for the steps below (as in a run)
            pass
        cpu["decode"] += time.process_time() - t
        n = frames.num_rows
        seen: dict[str, object] = {}
        for _ in range(a.reps):
            for variant, ctx in (("pool", pool_threads), ("now", REAL)):
                ot.opencv_threads = ctx
                try:
                    t = time.process_time()
                    m = calibration.classify_camera_motion(p, n)
                    cpu[f"calib {variant}"] += time.process_time() - t
                    t = time.process_time()
                    r = odometry.estimate(p, frames.select(["frame_index", "t_s"]), clips, calib, hands)
                    cpu[f"poses {variant}"] += time.process_time() - t
                finally:
                    ot.opencv_threads = REAL
                P = np.column_stack([r.poses.column(c).to_numpy(zero_copy_only=False)
                                     for c in ("tx", "ty", "tz", "qx", "qy", "qz", "qw")])
                got = {"calib": (m.label, m.value, tuple(m.pair_values)),
                       "poses": hashlib.sha256(P.tobytes()).hexdigest()}
                for k, v in got.items():
                    same[k] &= seen.setdefault(k, v) == v
        n_frames += n * a.reps
        v = store.read_table("videos", pk).to_pylist()[0]
        inputs = (pk, p, frames, store.read_table("segments", pk), store.read_table("captions", pk),
                  store.read_table("hand_world", pk), store.read_table("camera_poses", pk), {})
        kw = dict(fps=DEFAULT_FPS, undistort=calibration.undistorter(calib), image_size=(640, 480),
                  calibration=calib, source_size=(v.get("display_width") or v["width"],
                                                  v.get("display_height") or v["height"]))
        writer = staging._VideoWriter
        for _ in range(a.reps):
            for variant, w in (("stage", writer), ("stage without encoder", DropFrames)):
                staging._VideoWriter = w
                try:
                    t = time.process_time()
                    sp = staging.stage_partition(*inputs, tmp / pk, **kw)
                    cpu[variant] += time.process_time() - t
                finally:
                    staging._VideoWriter = writer
        n_staged += sp.n_frames * a.reps
        print(f"  {pk}: {n} frames, {sp.n_frames} staged", flush=True)
    clear_decoded()
    per = n_frames / a.reps  # frames per variant run
    dec = 1000 * cpu["decode"] / per
    print(f"\n{len(keys)} videos, {int(per)} proxy frames, {n_staged // a.reps} staged frames; "
          f"CPU ms per frame (process time, all threads)\n")
    print(f"{'step':34s} {'OpenCV pool':>12s} {'now':>8s} {'now/pool':>9s} {'vs decode':>10s} {'same result':>12s}")
    print("-" * 90)
    print(f"{'baseline: bare decode of the proxy':34s} {'':>12s} {dec:8.2f} {'':>9s} {1.0:10.2f}")
    for name, k in (("calibrations (camera motion)", "calib"), ("camera_poses (odometry)", "poses")):
        pool = 1000 * cpu[f"{k} pool"] / n_frames
        now = 1000 * cpu[f"{k} now"] / n_frames
        print(f"{name:34s} {pool:12.2f} {now:8.2f} {now / pool:9.2f} {now / dec:10.2f} {str(same[k]):>12s}")
    if n_staged:
        st, rest = 1000 * cpu["stage"] / n_staged, 1000 * cpu["stage without encoder"] / n_staged
        print(f"{'lerobot_episodes (per staged frame)':34s} {'':>12s} {st:8.2f} {'':>9s} {st / dec:10.2f}")
        print(f"{'  the same without the encoder':34s} {'':>12s} {rest:8.2f} {'':>9s} {rest / dec:10.2f}"
              f"   (the AV1 encoder: {100 * (st - rest) / st:.0f} % of the step)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
