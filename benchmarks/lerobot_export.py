"""LeRobot export: our staging + assembly against LeRobot's own writer, on the same episodes.

Both start from the same inputs (proxy videos + hand/camera/segment/caption tables of synthetic source
videos) and both decode the proxies and compute the same state/action vectors; they differ in how the
dataset is written:

- ours: ``stage_partition`` per source video (frames straight into one encoder per video) then
  ``assemble`` (moves files, writes the tables);
- baseline: ``LeRobotDataset.create`` -> ``add_frame`` per frame -> ``save_episode`` per episode ->
  ``finalize`` (PNG per frame, one encode per episode, re-mux of the growing video file per episode);
- optionally LeRobot with ``streaming_encoding=True`` (no PNGs; LeRobot's fastest recording path).

All use the same codec. Then each result is loaded with ``LeRobotDataset(..., video_backend="pyav")`` and
the first and last frame of every episode is decoded ("bad frames": those that failed; LeRobot's
streaming encoder drops frames when the machine is busy, which breaks those episodes). LeRobot's add_frame cannot take shape-(1,) features
in 0.4.4 (kept for comparison across versions), so the baselines write the same features minus ``pad.action`` and ``source.t_s``.

    .venv/bin/python benchmarks/lerobot_export.py                    # 20 episodes x 50 frames, 320x180
    .venv/bin/python benchmarks/lerobot_export.py --episodes 100 --frames 100 --width 640 --height 360
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ego_assets.lib.lerobot.features import (  # noqa: E402
    ACTION_KEY,
    ACTION_MASK_KEY,
    HAND_MASK_KEY,
    HANDS,
    STATE_KEY,
    VIDEO_KEY,
    dataset_features,
)


def make_inputs(work: Path, episodes: int, frames: int, partitions: int, w: int, h: int):
    from ego_assets_tests.lib.lerobot.synth import make_partition

    per = [episodes // partitions + (1 if i < episodes % partitions else 0) for i in range(partitions)]
    parts = []
    for i, n_ep in enumerate(per):
        # back-to-back segments of `frames` steps (a source frame every ~0.1 s), alternating hands
        span = frames  # source frames per segment at ~9.99 fps -> `frames` steps at 10 fps (minus rounding)
        segs = [(j, HANDS[j % 2], 2 + j * (span + 1), 2 + j * (span + 1) + span) for j in range(n_ep)]
        n_frames = 2 + n_ep * (span + 1) + 25
        parts.append(make_partition(work / "src", f"bench-{i:03d}", n_frames=n_frames, w=w, h=h, segments=segs,
                                    seed=i, textured=True))
    return parts


def run_ours(parts, work: Path, vcodec: str) -> tuple[float, Path, int, int]:
    from ego_assets.lib.lerobot.assembly import assemble
    from ego_assets.lib.lerobot.staging import VideoSettings
    from ego_assets_tests.lib.lerobot.synth import stage

    root = work / "ours"
    t = time.perf_counter()
    staged = [stage(p, work / "staged" / p.key, video=VideoSettings(vcodec=vcodec)) for p in parts]
    res = assemble(root, staged, val_fraction=0.0)
    return time.perf_counter() - t, root, res.n_episodes, res.n_frames


def run_append(parts, work: Path) -> list[tuple[str, float]]:
    """Appending the last source video to a dataset of the others (staged by ``run_ours``): assembled in
    place, and as ``lerobot_dataset`` does it, into a new version (files hard-linked) published by one
    rename once it validates (validation excluded here: it is the same in both)."""
    from ego_assets.lib.lerobot.assembly import assemble
    from ego_assets.lib.lerobot.staging import load_staged
    from ego_assets.lib.lerobot.versions import assemble_versioned

    *base, extra = [load_staged(work / "staged" / p.key) for p in parts]
    out = []
    for name, fn in (("in place", assemble), ("new version + rename", assemble_versioned)):
        root = work / f"append_{len(out)}"
        fn(root, base, val_fraction=0.0)
        t = time.perf_counter()
        fn(root, [extra], val_fraction=0.0)
        out.append((name, time.perf_counter() - t))
    return out


def run_lerobot(parts, work: Path, vcodec: str, streaming: bool, name: str) -> tuple[float, Path, int, int]:
    """The same episodes through LeRobotDataset.create -> add_frame -> save_episode -> finalize."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from ego_assets.lib.lerobot.actions import HandTrack, compute_state_action
    from ego_assets.lib.lerobot.staging import camera_arrays, episode_plans, ffmpeg_logs_off, hand_arrays
    from ego_assets.lib.video import iter_frames

    root = work / name
    t = time.perf_counter()
    feats = None
    ds = None
    n_ep = n_fr = 0
    for p in parts:
        plans, _ = episode_plans(p.frames, p.segments, p.captions, 10)
        n = p.frames.num_rows
        hands = hand_arrays(p.hand_world, n)
        R, c, _ = camera_arrays(p.camera_poses, n)
        with ffmpeg_logs_off():  # same decode work as ours (and the same deadlock guard)
            imgs = {i: img for i, _, img in iter_frames(str(p.proxy))}
        for pl in plans:
            ch = pl.chosen
            tr = {h: HandTrack(hands[h]["valid"][ch], hands[h]["pos"][ch], hands[h]["rv"][ch],
                               hands[h]["finger"][ch], hands[h]["joints"][ch]) for h in HANDS}
            sa = compute_state_action("hands_102", tr, R[ch], c[ch], pl.hand)
            if ds is None:
                hw = imgs[int(ch[0])].shape[:2]
                feats = {k: {**v, "shape": tuple(v["shape"])} for k, v in dataset_features("hands_102", hw).items()
                         if k in (VIDEO_KEY, STATE_KEY, HAND_MASK_KEY, ACTION_KEY, ACTION_MASK_KEY)}
                from lerobot.configs.video import RGBEncoderConfig

                ds = LeRobotDataset.create("bench/lerobot", fps=10, features=feats, root=root,
                                           rgb_encoder=RGBEncoderConfig(vcodec=vcodec),
                                           streaming_encoding=streaming)
            for k, i in enumerate(ch):
                ds.add_frame({VIDEO_KEY: imgs[int(i)], STATE_KEY: sa.state[k], HAND_MASK_KEY: sa.hand_mask[k],
                              ACTION_KEY: sa.action[k], ACTION_MASK_KEY: sa.action_mask[k], "task": pl.task})
            ds.save_episode()
            n_ep += 1
            n_fr += len(ch)
    ds.finalize()
    return time.perf_counter() - t, root, n_ep, n_fr


def load_time(root: Path) -> tuple[float, float, int]:
    """(seconds to construct LeRobotDataset, seconds to decode first+last frame of every episode, number of
    those frames that failed to decode)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    t = time.perf_counter()
    ds = LeRobotDataset("bench/x", root=root, video_backend="pyav")
    t_load = time.perf_counter() - t
    t = time.perf_counter()
    failed = 0
    for e in range(ds.num_episodes):
        ep = ds.meta.episodes[e]
        for idx in (ep["dataset_from_index"], ep["dataset_to_index"] - 1):
            try:
                assert ds[idx][VIDEO_KEY].ndim == 3
            except Exception:  # e.g. LeRobot's streaming encoder drops frames when it falls behind
                failed += 1
    return t_load, time.perf_counter() - t, failed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--frames", type=int, default=50, help="steps per episode")
    ap.add_argument("--partitions", type=int, default=4, help="source videos the episodes come from")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=180)
    ap.add_argument("--vcodec", default="libsvtav1", choices=["h264", "libsvtav1"])
    ap.add_argument("--no-streaming", action="store_true", help="skip the LeRobot streaming_encoding row")
    ap.add_argument("--keep", action="store_true", help="keep the datasets (path printed)")
    a = ap.parse_args()

    import logging
    import warnings

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    t = time.perf_counter()
    import lerobot.datasets.lerobot_dataset  # noqa: F401  (import cost excluded from every timing)
    import torch  # noqa: F401

    print(f"(lerobot import: {time.perf_counter() - t:.1f} s, excluded)")
    work = Path(tempfile.mkdtemp(prefix="lerobot_export_bench_"))
    try:
        parts = make_inputs(work, a.episodes, a.frames, a.partitions, a.width, a.height)
        runs = [("ours: stage + assemble",) + run_ours(parts, work, a.vcodec),
                ("lerobot add_frame (PNG)",) + run_lerobot(parts, work, a.vcodec, False, "lerobot_png")]
        if not a.no_streaming:
            runs.append(("lerobot add_frame (streaming)",) + run_lerobot(parts, work, a.vcodec, True,
                                                                          "lerobot_stream"))
        base = runs[1][1]
        print(f"\n{a.episodes} episodes x ~{a.frames} frames, {a.width}x{a.height}, {a.partitions} source videos, "
              f"vcodec {a.vcodec}\n")
        hdr = f"{'writer':32} {'episodes':>8} {'frames':>7} {'write s':>8} {'ep/s':>7} {'frames/s':>9} " \
              f"{'speed-up vs PNG':>16} {'load s':>7} {'decode s':>9} {'bad frames':>10}"
        print(hdr)
        print("-" * len(hdr))
        for name, sec, root, n_ep, n_fr in runs:
            lt, dt, bad = load_time(root)
            print(f"{name:32} {n_ep:8d} {n_fr:7d} {sec:8.2f} {n_ep / sec:7.2f} {n_fr / sec:9.1f} "
                  f"{base / sec:15.1f}x {lt:7.2f} {dt:9.2f} {bad:10d}")
        if a.partitions >= 2:
            app = run_append(parts, work)
            print(f"\nappend 1 source video to a dataset of {a.partitions - 1}: " + ", ".join(
                f"{name} {sec:.2f} s" for name, sec in app) + f" ({app[1][1] / app[0][1]:.2f}x)")
        sizes = {name: sum(f.stat().st_size for f in root.rglob("*.mp4")) / 1e6 for name, _, root, _, _ in runs}
        print("\nvideo MB: " + ", ".join(f"{k}: {v:.2f}" for k, v in sizes.items()))
        if a.keep:
            print(f"datasets kept under {work}")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
