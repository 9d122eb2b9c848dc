"""Benchmark: the `frames` stage against a bare PyAV decode of the same file, in the same process.

Makes (once, cached in a temp folder) a 60 s 1080p30 H.264 video of a moving texture, then times
  baseline: decode every frame with PyAV (threaded, as `frames` does) and nothing else
  frames:   ego_assets.lib.frames.sample_frames (decode + 10 fps sampling + 640-px proxy encode + metrics)
and prints both, with the ratio (target: frames within 1.5x of the bare decode).

    python benchmarks/frames.py [--seconds 60] [--height 1080] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ego_assets.lib import frames as frames_lib  # noqa: E402
from ego_assets_tests.helpers.synth import write_frames  # noqa: E402


def make_source(path: Path, seconds: int, height: int, fps: int = 30) -> None:
    import cv2

    width = height * 16 // 9
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (height // 16, width // 16, 3), dtype=np.uint8),
                      (width * 2, height), interpolation=cv2.INTER_CUBIC)
    frames = (np.ascontiguousarray(base[:, (i * 7) % width: (i * 7) % width + width])
              for i in range(seconds * fps))
    write_frames(path, frames, fps=fps, size=(width, height), gop=2 * fps, time_base=Fraction(1, fps),
                 codec_options={"preset": "ultrafast", "crf": "23"})


def bare_decode(path: Path) -> int:
    import av

    n = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for _ in c.decode(s):
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    cache = Path(tempfile.gettempdir()) / "ego_assets_bench"
    cache.mkdir(exist_ok=True)
    src = cache / f"bench_{a.seconds}s_{a.height}p30.mp4"
    if not src.exists():
        print(f"making {src.name} ...", flush=True)
        make_source(src, a.seconds, a.height)
    from ego_assets.lib.probe import probe_video

    row, _ = probe_video(str(src))
    res = {"bare PyAV decode": [], "frames (sample+proxy+metrics)": []}
    n_out = 0
    for _ in range(a.repeat):
        t = time.perf_counter()
        n = bare_decode(src)
        res["bare PyAV decode"].append(time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            cols, _ = frames_lib.sample_frames(str(src), os.path.join(d, "p.mp4"), row["width"],
                                               row["height"], row["rotation_deg"])
            res["frames (sample+proxy+metrics)"].append(time.perf_counter() - t)
            n_out = len(cols["t_s"])
    base = min(res["bare PyAV decode"])
    print(f"\nsource: {a.seconds} s {row['width']}x{row['height']} {row['fps']:.0f} fps H.264, "
          f"{n} frames; frames stage output: {n_out} frames at 640 px; {os.cpu_count()} cores")
    print(f"{'method':<32} {'best s':>8} {'source fps':>11} {'ratio':>7}")
    for k, v in res.items():
        best = min(v)
        print(f"{k:<32} {best:8.2f} {n / best:11.1f} {best / base:7.2f}x")


if __name__ == "__main__":
    main()
