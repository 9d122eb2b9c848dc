"""Benchmark: the `frames` stage against a bare PyAV decode of the same file, in the same process.

Makes (once, cached in a temp folder) a 60 s 1080p30 H.264 video of a moving texture (no B-frames), or
takes ``--real``: the 1080p clips of real footage ``throughput.py`` makes (x264 with B-frames, like a
camera's), then times
  baseline:        decode every frame with PyAV (threaded, as `frames` does) and nothing else
  frames, full:    ego_assets.lib.frames.sample_frames with every frame decoded (skip_unsampled=False)
  frames:          the same as it runs (frames that are neither sampled nor referred to are not decoded)
and prints wall, CPU (process time, every thread) and their ratios to the bare decode; the two
``frames`` rows must give the same columns (checked: "same").

    python benchmarks/frames.py [--seconds 60] [--height 1080] [--repeat 2] [--real N]
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
    ap.add_argument("--real", type=int, default=0, metavar="N",
                    help="N clips of real footage (throughput.py's, --seconds long) instead of the texture")
    a = ap.parse_args()
    cache = Path(tempfile.gettempdir()) / "ego_assets_bench"
    cache.mkdir(exist_ok=True)
    if a.real:
        from benchmarks.throughput import make_clips

        srcs = make_clips(a.real, a.seconds)[1]
    else:
        src = cache / f"bench_{a.seconds}s_{a.height}p30.mp4"
        if not src.exists():
            print(f"making {src.name} ...", flush=True)
            make_source(src, a.seconds, a.height)
        srcs = [src]
    from ego_assets.lib.probe import probe_video

    names = ("bare PyAV decode", "frames, every frame decoded", "frames (as it runs)")
    wall = {k: [0.0] * a.repeat for k in names}
    cpu = {k: [0.0] * a.repeat for k in names}
    n = n_out = skipped = 0
    same = True
    for src in srcs:
        row, _ = probe_video(str(src))
        for r in range(a.repeat):
            t, c = time.perf_counter(), time.process_time()
            k = bare_decode(src)
            wall[names[0]][r] += time.perf_counter() - t
            cpu[names[0]][r] += time.process_time() - c
            outs = []
            for name, skip in ((names[1], False), (names[2], True)):
                with tempfile.TemporaryDirectory() as d:
                    t, c = time.perf_counter(), time.process_time()
                    cols, st = frames_lib.sample_frames(
                        str(src), os.path.join(d, "p.mp4"), row["width"], row["height"], row["rotation_deg"],
                        frames_lib.FrameParams(skip_unsampled=skip))
                    wall[name][r] += time.perf_counter() - t
                    cpu[name][r] += time.process_time() - c
                    outs.append(cols)
            same &= outs[0] == outs[1]
            if r == 0:
                n, n_out, skipped = n + k, n_out + len(outs[1]["t_s"]), skipped + st["n_skipped"]
    base_w, base_c = min(wall[names[0]]), min(cpu[names[0]])
    what = f"{len(srcs)} real clips" if a.real else "texture"
    print(f"\nsource: {what}, {a.seconds} s each, {row['width']}x{row['height']} {row['fps']:.0f} fps H.264, "
          f"{n} frames; frames stage output: {n_out} frames at 640 px, {skipped} source frames not decoded; "
          f"same columns: {same}; {os.cpu_count()} cores")
    print(f"{'method':<30} {'wall s':>7} {'source fps':>11} {'wall ratio':>11} {'CPU s':>7} {'CPU ratio':>10}")
    for k in names:
        w, c = min(wall[k]), min(cpu[k])
        print(f"{k:<30} {w:7.2f} {n / w:11.1f} {w / base_w:10.2f}x {c:7.2f} {c / base_c:9.2f}x")


if __name__ == "__main__":
    main()
