"""Benchmark: memory and time of the whole per-video job against the video's length.

The real clip ``../shared/data/egoloc_pour_water_rgb.mp4`` (10 s) is looped, without re-encoding, into
videos of several lengths; each one goes through every per-video asset (source_videos ... captions, the
`per_video_job` in process, exactly as `ego-assets run` runs it) in a fresh child process, whose peak
resident memory (``ru_maxrss``) and wall time are reported. Baseline: the shortest video, in the same
benchmark run; the ratios say whether memory grows with length (it should not: frames are streamed,
hands run frame by frame, poses clip by clip) and whether time grows linearly.

    .venv/bin/python benchmarks/long_video.py [--minutes 1,2,4] [--keep DIR]
    .venv/bin/python benchmarks/long_video.py --minutes 1,10     # the 10-minute case of issue 4
    .venv/bin/python benchmarks/long_video.py --minutes 1,10 --stages   # hands and poses, each alone

With ``--stages`` the two heavy stages run alone, each in its own child process on the 10 fps proxy
that the frames stage makes of each video: ``hand_tracks`` (MediaPipe + lifting + tracking) and
``camera_poses`` (clip-by-clip odometry and stitching), so that their own peak memory can be compared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLIP = ROOT.parent / "shared" / "data" / "egoloc_pour_water_rgb.mp4"


def loop_video(src: Path, dst: Path, seconds: float) -> int:
    """Concatenate ``src``'s video packets until ``seconds`` are covered (stream copy, timestamps
    shifted by the clip's span on each pass). Returns the number of frames written."""
    import av

    n, shift, done = 0, 0, False
    with av.open(str(dst), "w") as out:
        ost = None
        while not done:
            with av.open(str(src)) as inp:
                ins = inp.streams.video[0]
                if ost is None:
                    ost = out.add_stream_from_template(ins)
                tb = ins.time_base
                last = first = None
                for p in inp.demux(ins):
                    if p.size == 0 or p.pts is None:
                        continue
                    first = p.pts if first is None else first
                    pts = p.pts - first + shift
                    if pts * tb >= seconds:
                        done = True
                        break
                    dts = None if p.dts is None else p.dts - first + shift
                    p.pts, p.dts, p.stream = pts, dts, ost
                    out.mux(p)
                    n += 1
                    last = pts
                step = int(round(1 / (float(ins.average_rate) * tb)))
                shift = last + step
    return n


def child(video: str, home: str) -> None:
    """Run every per-video asset on ``video`` and print one JSON line with the figures."""
    import resource

    os.environ["EGO_ASSETS_HOME"] = home
    import dagster as dg

    from ego_assets.definitions import defs
    from ego_assets.defs.execute import materialize_videos
    from ego_assets.defs.partitions import videos
    from ego_assets.lib.sources import Source, discover_file
    from ego_assets.lib.storage import Store

    rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store = Store(home)
    d = discover_file(Source(name="long", uri=str(Path(video).parent)), video)
    store.register_video(d.partition_key, d.record())
    t = time.perf_counter()
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(videos.name, [d.partition_key])
        status = materialize_videos(defs, instance, store, [d.partition_key])
    wall = time.perf_counter() - t
    st = status[d.partition_key]
    per_asset = {}
    for a in ("frames", "hand_tracks", "camera_poses", "segments", "captions"):
        rows = store.lineage(a, d.partition_key)
        if rows:
            r = rows[-1]
            per_asset[a] = (r["finished_at"] - r["started_at"]).total_seconds()
    n_frames = store.read_table("frames", d.partition_key, ["frame_index"]).num_rows
    print(json.dumps(dict(status=st.status, error=st.error, wall=wall, frames=n_frames,
                          rss_import_mb=rss_import / 1024,
                          rss_peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                          per_asset=per_asset)), flush=True)
    # MediaPipe's native threads can abort the interpreter's teardown ("terminate called ..."); the
    # figures are out, so leave at once (as the ego-assets command does).
    os._exit(0)


def stage_child(stage: str, video: str, work: str) -> None:
    """One heavy stage alone on the proxy of ``video``; prints one JSON line."""
    import resource

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ego_assets.lib import backends, clips as clips_lib, frames as frames_lib
    from ego_assets.lib.geometry import calibration, odometry
    from ego_assets.lib.probe import probe_video

    proxy, ftab = os.path.join(work, "proxy.mp4"), os.path.join(work, "frames.parquet")
    if not os.path.exists(ftab):
        row, _ = probe_video(video)
        cols, _ = frames_lib.sample_frames(video, proxy, row["width"], row["height"], row["rotation_deg"])
        pq.write_table(pa.table(cols), ftab)
    frames = pq.read_table(ftab)
    from ego_assets.lib.video import iter_frames

    h, w = next(iter_frames(proxy))[2].shape[:2]
    f = 0.5 * w / np.tan(np.radians(90) / 2)  # the egocentric prior's 90 degrees
    intr = calibration.Intrinsics(f, f, (w - 1) / 2, (h - 1) / 2, w, h, method="benchmark")
    calib = calibration.calibration_table(
        intr, calibration.CameraMotion("moving", np.nan, [], 0)).to_pylist()[0]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if stage == "hand_tracks":
        backends.create("hands").track(proxy, frames, calib)
    else:
        dur = float(frames.column("t_s")[-1].as_py()) + 0.1
        win = clips_lib.plan_windows(dur)
        clips = pa.table(dict(clip_index=pa.array(range(len(win)), pa.int32()),
                              start_s=[a for a, _ in win], end_s=[b for _, b in win]))
        odometry.estimate(proxy, frames, clips, calib, None)
    print(json.dumps(dict(stage=stage, frames=frames.num_rows, wall=time.perf_counter() - t,
                          rss_before_mb=before / 1024,
                          rss_peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)), flush=True)
    os._exit(0)


def _child_json(args: list[str]) -> dict | None:
    env = dict(os.environ, EGO_ASSETS_LOG_LEVEL="CRITICAL")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    out = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not line:
        print(out.stdout[-2000:], out.stderr[-4000:], file=sys.stderr)
        return None
    return json.loads(line[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", default="1,2,4", help="comma-separated video lengths in minutes")
    ap.add_argument("--keep", help="folder for the looped videos (reused by later runs)")
    ap.add_argument("--stages", action="store_true", help="hand_tracks and camera_poses alone, per length")
    ap.add_argument("--child", nargs=2, metavar=("VIDEO", "HOME"), help=argparse.SUPPRESS)
    ap.add_argument("--stage-child", nargs=3, metavar=("STAGE", "VIDEO", "WORK"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return 0
    if a.stage_child:
        stage_child(*a.stage_child)
        return 0
    if not CLIP.exists():
        print(f"missing {CLIP} (the shared real clip)", file=sys.stderr)
        return 2
    work = Path(a.keep or tempfile.mkdtemp(prefix="ego_long_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for m in [float(x) for x in a.minutes.split(",")]:
        vdir = work / f"v{m:g}min"
        vdir.mkdir(exist_ok=True)
        video = vdir / f"loop_{m:g}min.mp4"
        if not video.exists():
            loop_video(CLIP, video, m * 60)
        if a.stages:
            for stage in ("hand_tracks", "camera_poses"):
                print(f"{m:g} min: {stage} alone ...", flush=True)
                r = _child_json(["--stage-child", stage, str(video), str(vdir)])
                if r is None:
                    return 1
                rows.append((m, r))
            continue
        with tempfile.TemporaryDirectory(prefix="ego_long_home_") as home:
            print(f"{m:g} min: running every per-video asset ...", flush=True)
            r = _child_json(["--child", str(video), home])
            if r is None:
                return 1
            if r["status"] != "ok":
                print(f"{m:g} min: {r['status']}: {r['error']}", file=sys.stderr)
                return 1
            rows.append((m, r))
    if a.stages:
        print("\nheavy stages alone on the looped real clip's 10 fps proxy; baseline: the same stage on "
              "the shortest video")
        print(f"{'stage':<13} {'video':>7} {'frames':>7} {'wall s':>8} {'peak RSS MB':>12} {'RSS ratio':>10} "
              f"{'growth MB':>10}")
        for stage in ("hand_tracks", "camera_poses"):
            mine = [(m, r) for m, r in rows if r["stage"] == stage]
            b = mine[0][1]
            for m, r in mine:
                print(f"{stage:<13} {m:>5g} m {r['frames']:>7} {r['wall']:>8.1f} {r['rss_peak_mb']:>12.0f} "
                      f"{r['rss_peak_mb'] / b['rss_peak_mb']:>9.2f}x {r['rss_peak_mb'] - b['rss_peak_mb']:>10.0f}")
        return 0
    base_m, base = rows[0]
    print(f"\nper-video job on the real clip looped (10 fps proxy); baseline: the {base_m:g} min video")
    hdr = (f"{'video':>7} {'frames':>7} {'wall s':>8} {'s/min':>6} {'peak RSS MB':>12} {'RSS ratio':>10} "
           f"{'after import MB':>16}  per asset (s)")
    print(hdr)
    for m, r in rows:
        per = ", ".join(f"{k} {v:.0f}" for k, v in r["per_asset"].items())
        print(f"{m:>5g} m {r['frames']:>7} {r['wall']:>8.1f} {r['wall'] / m:>6.1f} {r['rss_peak_mb']:>12.0f} "
              f"{r['rss_peak_mb'] / base['rss_peak_mb']:>9.2f}x {r['rss_import_mb']:>16.0f}  {per}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
