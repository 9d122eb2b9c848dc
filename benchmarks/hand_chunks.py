"""Benchmark: the hands stage on one video with the machine to itself (a video running alone: one long
video, or the last of a backfill) on 1 core vs every core (``lib.parallel``: contiguous chunks of frames
in threads, each with its own landmarkers), in the same process, alternating.

The video: the real clip ``../shared/data/egoloc_pour_water_rgb.mp4`` played forth and back to
``--seconds`` (10 fps, long side 640 px, as the frames stage writes proxies), kept decoded as in a
pipeline step (a proxy larger than the decode cache is decoded by each chunk). Printed per setting: wall, CPU (all threads), and how far the chunked detections are from
the unsplit ones (frames with the same number of hands; median and 90th-percentile keypoint distance).

    python benchmarks/hand_chunks.py [--seconds 60] [--repeat 2]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CLIP = REPO.parent / "shared" / "data" / "egoloc_pour_water_rgb.mp4"


def make_proxy(seconds: float, dst: Path):
    from ego_assets_tests.helpers.synth import sample_frames, write_frames

    images, _ = sample_frames(CLIP)
    loop = images + images[::-1][1:-1]
    n = int(round(seconds * 10))
    frames = [loop[i % len(loop)] for i in range(n)]
    times = [i * 0.1 for i in range(n)]
    write_frames(dst, frames, fps=10, times=times, codec_options={"crf": "18", "preset": "veryfast"})
    return times


def _matched_px(h1: np.ndarray, h2: np.ndarray) -> float:
    return min(np.mean([np.linalg.norm(h1[i] - h2[j], axis=-1).mean() for i, j in enumerate(p)])
               for p in itertools.permutations(range(len(h2))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    if not CLIP.is_file():
        sys.exit(f"real clip {CLIP} not found")
    import warnings

    import pyarrow as pa

    warnings.filterwarnings("ignore")
    from ego_assets.lib import parallel
    from ego_assets.lib.hands.backends import MediaPipeHands
    from ego_assets.lib.video import is_cached, iter_frames

    tmp = Path(tempfile.mkdtemp(prefix="ego_hand_chunks_"))
    proxy = tmp / "proxy.mp4"
    times = make_proxy(a.seconds, proxy)
    frames = pa.table({"frame_index": np.arange(len(times)), "t_s": np.asarray(times)})
    for _ in iter_frames(str(proxy)):
        pass
    cached = is_cached(str(proxy))  # as a pipeline step finds it: kept decoded if it fits the cache
    from ego_assets_tests.lib.hands.conftest import pinhole_calib

    calib = pinhole_calib(hfov_deg=65.0)
    backend = MediaPipeHands()
    cores = parallel.machine_cores()
    runs: dict[int, list[tuple[float, float]]] = {1: [], cores: []}
    dets = {}
    for _ in range(a.repeat):
        for k in runs:
            with parallel.using(k):
                w0, c0 = time.perf_counter(), time.process_time()
                dets[k] = backend.detect(str(proxy), frames, calib)
                runs[k].append((time.perf_counter() - w0, time.process_time() - c0))
    n = len(times)
    one, many = dets[1], dets[cores]
    same = sum((one.frame_index == f).sum() == (many.frame_index == f).sum() for f in range(n))
    d = [_matched_px(one.kp2d[one.frame_index == f], many.kp2d[many.frame_index == f]) for f in range(n)
         if (one.frame_index == f).sum() == (many.frame_index == f).sum() and (one.frame_index == f).any()]
    print(f"{a.seconds:g} s of real footage at 10 fps ({n} frames, {'kept decoded' if cached else 'decoded by each chunk'}), "
          f"{cores} cores, load average "
          f"{os.getloadavg()[0]:.1f}, best of {a.repeat}\n")
    print(f"{'cores':>5} {'chunks':>6} {'wall s':>8} {'CPU s':>8} {'wall ratio':>10}")
    base = min(w for w, _ in runs[1])
    for k, rs in runs.items():
        w, c = min(rs)
        print(f"{k:>5} {dets[k].timing['chunks']:>6} {w:>8.2f} {c:>8.2f} {w / base:>10.2f}")
    print(f"\nchunked vs unsplit: same number of hands on {same}/{n} frames; keypoints median "
          f"{statistics.median(d):.2f} px, 90th percentile {np.percentile(d, 90):.2f} px")


if __name__ == "__main__":
    main()
