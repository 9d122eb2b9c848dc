"""Benchmark: throughput of a backfill (`ego-assets run`, every asset and the dataset) on real footage.

Makes (once, cached in a temp folder) N different clips of real egocentric footage from ../shared/data:
each real clip upscaled to 1920x1080 (scaled to cover, centre-cropped), looped forth and back to
--seconds and started at a different offset per clip (so that every clip is a different video), H.264
(x264 `veryfast`, B-frames, like a camera's) at 30 fps. Then, in one process, times

  bare decode   PyAV decode of every frame of every clip (threaded), one after the other: the floor
  backfill      `ego-assets run DIR` into a fresh home (one run per video; workers = cores unless
                --workers / EGO_ASSETS_WORKERS say otherwise)
  no-op rerun   the same command again (everything up to date)

and prints wall, realtime factor (seconds of video per second of wall), core-seconds per asset (the
steps' own wall times from the lineage table), cores used (CPU seconds of the whole process tree / wall),
the share of the cores' time outside asset bodies (orchestration: run start-up, Dagster events, idle
cores; the bodies are every step's, the dataset job's included; the share with the dataset's assembly
and the catalog's refresh counted outside, as stops before measured, follows it) and where it goes (start-up, the videos phase
between the steps' bodies, Dagster between a run's steps and in a run outside its steps, the dataset
tail), peak memory (sum of the RSS of the process tree, sampled every 0.2 s) and the ratio of the
backfill's wall to the bare decode (the machine's speed varies: that ratio compares runs of different
days).

    python benchmarks/throughput.py [--videos 16] [--seconds 15] [--workers N] [--keep]
    python benchmarks/throughput.py --ui [--videos 16] [--seconds 15]

``--ui`` measures the users' other path instead of the CLI: `make ui` (dagster dev: webserver, daemon,
code server) on a fresh home, then the source is added as a user does (sources.yaml), the discovery
sensor requests one run per video, the run queue runs them (one process each, started by the project's
run launcher: warm, or Dagster's own with EGO_ASSETS_RUN_START=fresh), and the dataset automation sensor
assembles the dataset. It prints the sensors' waits apart from the work: the videos phase (first video
run's launch to the last one's end) and its realtime factor, each run's start-up (Dagster's launch to
the run's own start event: the process and its imports), the CPU of each run's process, the machine's
cores busy over the videos phase (system-wide: a quiet machine is needed), peak memory, and the dataset
run.

The machine's load average is printed: figures on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ego_assets_tests.helpers.synth import write_frames  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


# the modules the steps import, compiled once before anything is timed
WARM = ("import ego_assets.definitions, ego_assets.cli, pandas, scipy.optimize, scipy.signal, cv2, mediapipe, "
        "lerobot.datasets.lerobot_dataset")


def make_clip(src: Path, dst: Path, seconds: float, offset_s: float, fps: int = 30) -> None:
    """``src`` upscaled to cover 1920x1080 and centre-cropped, looped forth and back from ``offset_s``
    for ``seconds`` at ``fps``."""
    import av
    import cv2

    frames = []
    with av.open(str(src)) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
    h0, w0 = frames[0].shape[:2]
    scale = max(1920 / w0, 1080 / h0)
    cycle = frames + frames[-2:0:-1]  # forth and back: no jump at the loop
    n = int(round(seconds * fps))
    start = int(round(offset_s * fps))
    tmp = dst.with_suffix(".part.mp4")

    def upscaled():
        for i in range(n):
            img = cycle[(start + i) % len(cycle)]
            big = cv2.resize(img, (int(round(w0 * scale)), int(round(h0 * scale))), interpolation=cv2.INTER_LINEAR)
            y, x = (big.shape[0] - 1080) // 2, (big.shape[1] - 1920) // 2
            yield np.ascontiguousarray(big[y:y + 1080, x:x + 1920])

    # the tests' one encoder; x264 `veryfast` with its default B-frames, like a camera's
    write_frames(tmp, upscaled(), fps=fps, size=(1920, 1080), codec_options={"preset": "veryfast", "crf": "23"},
                 time_base=Fraction(1, fps))
    tmp.rename(dst)


def make_clips(n: int, seconds: float) -> tuple[Path, list[Path]]:
    folder = Path(tempfile.gettempdir()) / "ego_assets_bench" / f"throughput_{seconds:g}s"
    folder.mkdir(parents=True, exist_ok=True)
    reals = sorted(DATA.glob("*.mp4"))
    if not reals:
        sys.exit(f"no real clips under {DATA}")
    out = []
    for i in range(n):
        real = reals[i % len(reals)]
        dst = folder / f"{i:02d}_{real.stem}.mp4"
        if not dst.exists():
            print(f"making {dst.name} ...", file=sys.stderr, flush=True)
            make_clip(real, dst, seconds, offset_s=0.37 * (i // len(reals)))
        out.append(dst)
    return folder, out


def bare_decode(paths: list[Path]) -> tuple[float, float]:
    """(wall, seconds of video) of decoding every frame of every file, one after the other."""
    import av

    t = time.perf_counter()
    dur = 0.0
    for p in paths:
        with av.open(str(p)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            for _ in c.decode(s):
                pass
            dur += float(c.duration or 0) / 1e6
    return time.perf_counter() - t, dur


class TreeSampler:
    """Peak summed RSS of a process and its descendants, sampled every ``every_s``, and the CPU seconds
    each descendant had used when last seen (``cpu``: pid -> s; a process's last ``every_s`` is missed)."""

    def __init__(self, pid: int, every_s: float = 0.2):
        import psutil

        self.proc, self.every, self.peak = psutil.Process(pid), every_s, 0
        self.cpu: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import psutil

        while not self.stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                rss = 0
                for p in procs:
                    try:
                        rss += p.memory_info().rss
                        t = p.cpu_times()
                        self.cpu[p.pid] = t.user + t.system
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, rss)
            except psutil.Error:
                return
            self.stop.wait(self.every)

    def close(self) -> int:
        self.stop.set()
        self.thread.join()
        return self.peak


def run_cli(folder: Path, home: Path, env: dict) -> dict:
    """`ego-assets run folder` in a child process: wall, CPU seconds of its whole tree, peak RSS."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t, t_unix = time.perf_counter(), time.time()
    proc = subprocess.Popen([sys.executable, "-m", "ego_assets.cli", "run", str(folder), "--source", "bench",
                             "--home", str(home)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid)
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    peak = sampler.close()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # the waited-for tree's CPU; the CLI's workers are forked by its template process, which the CLI does
    # not wait for at exit, so the sampled CPU of every process of the tree stands in when it is more
    cpu = max((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), sum(sampler.cpu.values()))
    ok = sum(1 for line in out.splitlines() if line.startswith("ok "))
    if proc.returncode != 0:
        print(err[-3000:], file=sys.stderr)
    return dict(wall=wall, cpu=cpu, peak=peak, ok=ok, rc=proc.returncode, t_start=t_unix, t_end=t_unix + wall)


def lineage_rows(home: Path) -> list[dict]:
    import pyarrow.parquet as pq

    rows = []
    for f in glob.glob(str(home / "lineage" / "*" / "*" / "*.parquet")):
        rows.extend(pq.ParquetFile(f).read().to_pylist())
    return rows


def asset_seconds(rows: list[dict]) -> dict[str, float]:
    """Seconds per asset (sum over videos) of the attempts, from the lineage (a step's own wall)."""
    out: dict[str, float] = {}
    for r in rows:
        if r["status"] not in ("ok", "blocked") or r.get("started_at") is None:
            continue
        out[r["asset"]] = out.get(r["asset"], 0.0) + (r["finished_at"] - r["started_at"]).total_seconds()
    return out


def phases(rows: list[dict], run: dict) -> dict[str, float]:
    """Start-up (command start to the first step), the videos (first step to the last video step's
    end) and the dataset and the rest (the dataset job's steps, from skills on, to the command's end), in
    seconds of wall."""
    vids = [r for r in rows if r["asset"] not in DATASET_STEPS and r.get("started_at") is not None]
    if not vids:
        return {}
    first = min(r["started_at"].timestamp() for r in vids)
    last = max(r["finished_at"].timestamp() for r in vids)
    return {"start-up": first - run["t_start"], "videos": last - first, "dataset and the rest": run["t_end"] - last}


def in_run_gaps(rows: list[dict]) -> float:
    """Seconds, summed over the videos, between a video's first step start and its last step end that
    no step of it covers: Dagster's own work between the steps of a run (events, input versions)."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        if r["asset"] in DATASET_STEPS or r.get("started_at") is None or r["status"] not in ("ok", "blocked"):
            continue
        by.setdefault(r["partition_key"], []).append(r)
    gaps = 0.0
    for rs in by.values():
        span = (max(r["finished_at"] for r in rs) - min(r["started_at"] for r in rs)).total_seconds()
        gaps += span - sum((r["finished_at"] - r["started_at"]).total_seconds() for r in rs)
    return gaps


def idle_cores(rows: list[dict], workers: int) -> tuple[float, float]:
    """Core-seconds of the videos phase when fewer than ``workers`` videos had a run going (a video's run:
    its first step's start to its last step's end): (in all, from the last video's start on: the last
    videos alone at the end). The rest is between a worker's runs (a run's end, the next one's set-up)."""
    spans = []
    by: dict[str, list[dict]] = {}
    for r in rows:
        if r["asset"] not in DATASET_STEPS and r.get("started_at") is not None:
            by.setdefault(r["partition_key"], []).append(r)
    for rs in by.values():
        spans.append((min(r["started_at"].timestamp() for r in rs), max(r["finished_at"].timestamp() for r in rs)))
    if not spans:
        return 0.0, 0.0
    edges = sorted({t for sp in spans for t in sp})
    last_start = max(s for s, _ in spans)
    total = at_end = 0.0
    for a, b in zip(edges, edges[1:]):
        active = sum(1 for s, e in spans if s <= a and e >= b)
        idle = max(0, workers - active) * (b - a)
        total += idle
        at_end += idle if a >= last_start else 0.0
    return total, at_end


# the steps of the dataset job (one run over every video, after them)
DATASET_STEPS = ("skills", "lerobot_dataset")
CATALOG_STEP = "catalog_views"  # the dataset job's last step (no lineage row)


def _on_instance(home: Path, env: dict, code: str) -> dict:
    """The JSON that ``code`` prints (its last line), run in a child process on the home's instance."""
    res = subprocess.run([sys.executable, "-c", "import json, dagster as dg\ni = dg.DagsterInstance.get()\n" + code],
                         env={**env, "DAGSTER_HOME": str(home / "dagster")}, cwd=ROOT, capture_output=True, text=True)
    try:
        import json

        return json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print(res.stderr[-2000:], file=sys.stderr)
        return {}


def dataset_step_seconds(home: Path, env: dict) -> dict[str, float]:
    """Wall seconds of each step of the dataset job's run(s), from Dagster's own step records (the
    lineage does not time every dataset step)."""
    return _on_instance(home, env, (
        "out = {}\n"
        "for r in i.get_runs(dg.RunsFilter(job_name='dataset_job')):\n"
        "    for s in i.get_run_step_stats(r.run_id):\n"
        "        if s.start_time and s.end_time:\n"
        "            out[s.step_key] = out.get(s.step_key, 0.0) + s.end_time - s.start_time\n"
        "print(json.dumps(out))"))


def run_overheads(home: Path, env: dict) -> dict[str, dict]:
    """Per job, from Dagster's own records: the runs' wall (run start to end, summed) and the part of it
    outside their steps (run set-up, start and end events, planned events)."""
    return _on_instance(home, env, (
        "out = {}\n"
        "for r in i.get_runs():\n"
        "    st = i.get_run_stats(r.run_id)\n"
        "    if not (st.start_time and st.end_time):\n"
        "        continue\n"
        "    steps = sum(s.end_time - s.start_time for s in i.get_run_step_stats(r.run_id)\n"
        "                if s.start_time and s.end_time)\n"
        "    o = out.setdefault(r.job_name, {'runs': 0, 'wall': 0.0, 'outside_steps': 0.0})\n"
        "    o['runs'] += 1; o['wall'] += st.end_time - st.start_time\n"
        "    o['outside_steps'] += st.end_time - st.start_time - steps\n"
        "print(json.dumps(out))"))


def run_ui(folder: Path, home: Path, env: dict, n_videos: int, timeout_s: float = 3600.0) -> dict:
    """`make ui` on ``home``, the source added, until every video's run and the dataset's run ended."""
    import psutil

    from ego_assets_tests.e2e.ui_helpers import DagsterDev, free_port

    srv = DagsterDev(home=home, port=free_port(), log_path=home.parent / f"{home.name}_dagster_dev.log", env=env)
    srv.start()
    sampler = TreeSampler(srv.proc.pid)
    out: dict = {}
    try:
        out["ready_s"] = srv.wait_ready(600)
        tmp = home / "sources.yaml.tmp"
        tmp.write_text(f"sources:\n  - name: bench\n    uri: {folder}\n    glob: \"*.mp4\"\n")
        os.replace(tmp, home / "sources.yaml")
        out["t_added"] = time.time()
        cpu_marks: dict[str, object] = {}
        deadline = time.monotonic() + timeout_s
        from dagster import DagsterInstance
        from dagster._core.instance.ref import InstanceRef

        inst = DagsterInstance.from_ref(InstanceRef.from_dir(str(home / "dagster")))
        while time.monotonic() < deadline:
            st = ui_state(inst)
            if st.get("video_runs_started") and "first" not in cpu_marks:
                cpu_marks["first"] = psutil.cpu_times()
            if st.get("video_runs_done", 0) >= n_videos and "last" not in cpu_marks:
                cpu_marks["last"] = psutil.cpu_times()
            if st.get("dataset_done") and st.get("video_runs_done", 0) >= n_videos:
                out.update(st)
                break
            if srv.proc.poll() is not None:
                raise RuntimeError(f"make ui exited:\n{srv.log_tail()}")
            time.sleep(2.0)
        else:
            raise TimeoutError(f"the UI's runs did not end within {timeout_s:.0f} s:\n{srv.log_tail()}")
        if "first" in cpu_marks and "last" in cpu_marks:
            a, b = cpu_marks["first"], cpu_marks["last"]
            busy = (sum(b) - b.idle - b.iowait) - (sum(a) - a.idle - a.iowait)
            out["busy_core_s"] = busy
    finally:
        srv.stop()
        out["peak"] = sampler.close()
        out["run_cpu"] = [sampler.cpu[p] for p in out.get("pids", []) if p in sampler.cpu]
    return out


def ui_state(i) -> dict:
    """The instance ``i``'s state during a UI run, and at its end every figure the table reads (Dagster's
    records): polled in this process (a child per poll would import Dagster on the cores measured)."""
    import dagster as dg

    vids = i.get_runs(dg.RunsFilter(job_name="per_video_job"))
    done = [r for r in vids if r.status.value in ("SUCCESS", "FAILURE", "CANCELED")]
    stats = {r.run_id: i.get_run_stats(r.run_id) for r in done}
    ends = {k: st.end_time or 0.0 for k, st in stats.items()}
    ev = i.get_latest_materialization_event(dg.AssetKey("lerobot_dataset"))
    ds = [i.get_run_by_id(ev.run_id)] if ev is not None else []
    ds = [r for r in ds if r.tags.get("dagster/sensor_name") == "dataset_automation" and r.status.value == "SUCCESS"
          and ends and ev.timestamp > max(ends.values())]
    out = {"video_runs_started": len(vids), "video_runs_done": len(done), "dataset_done": bool(ds)}
    if ds and len(done) == len(vids):
        from ego_assets.defs.monitoring import run_worker_pid

        starts, startup, steps = [], [], 0.0
        pids = [run_worker_pid(i, r.run_id) for r in done]
        for r in done:
            st = stats[r.run_id]
            starts.append(st.launch_time or st.start_time)
            if st.launch_time and st.start_time:
                startup.append(st.start_time - st.launch_time)
            steps += sum(s.end_time - s.start_time for s in i.get_run_step_stats(r.run_id) if s.start_time and s.end_time)
        d = i.get_run_stats(ds[0].run_id)
        out.update(first_start=min(starts), last_end=max(ends.values()), startup=startup, step_s=steps, pids=pids,
                   ok=sum(r.status.value == "SUCCESS" for r in done),
                   dataset_launch=d.launch_time, dataset_start=d.start_time, dataset_end=d.end_time)
    return out


def ui_table(a, res: dict, dec_wall: float, video_s: float, load: tuple) -> list[tuple[str, str]]:
    videos = res["last_end"] - res["first_start"]
    startup = res["startup"] or [0.0]
    return [
        ("videos x seconds (1080p30)", f"{a.videos} x {a.seconds:g} s = {video_s:.0f} s of video"),
        ("path", "make ui + sources.yaml: discovery sensor, run queue, one process per video run"),
        ("bare PyAV decode, wall", f"{dec_wall:.1f} s ({video_s / dec_wall:.2f}x realtime)"),
        ("dagster dev ready after", f"{res['ready_s']:.1f} s"),
        ("source added -> first video run launched", f"{res['first_start'] - res['t_added']:.1f} s (the sensor's tick)"),
        ("videos phase (first run launched -> last run ended)", f"{videos:.1f} s ({res['ok']}/{a.videos} runs ok)"),
        ("videos phase, realtime factor", f"{video_s / videos:.2f}x"),
        ("videos phase / bare decode", f"{videos / dec_wall:.2f}"),
        ("machine's cores busy over the videos phase", f"{res.get('busy_core_s', 0.0) / videos:.2f} of "
                                                        f"{len(os.sched_getaffinity(0))}"),
        ("a run's start-up (launched -> run start event)",
         f"median {np.median(startup):.1f} s, max {max(startup):.1f} s; {sum(startup):.1f} s summed"),
        ("steps (Dagster's step times, summed)", f"{res['step_s']:.1f} s"),
        ("CPU of each video's run process (sampled every 0.2 s)",
         f"median {np.median(res['run_cpu'] or [0]):.1f} s, {sum(res['run_cpu']):.1f} s summed over "
         f"{len(res['run_cpu'])} runs"),
        ("last video run -> dataset run launched", f"{res['dataset_launch'] - res['last_end']:.1f} s "
                                                   "(the automation sensor's tick)"),
        ("dataset run, wall", f"{res['dataset_end'] - res['dataset_launch']:.1f} s"),
        ("peak memory (process tree RSS)", f"{res['peak'] / 2**30:.2f} GiB"),
        ("load average before / after", f"{load[0]:.2f} / {load[1]:.2f}"),
    ]


def print_rows(rows: list[tuple[str, str]]) -> None:
    w = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{w}}  value")
    for k, v in rows:
        print(f"{k:<{w}}  {v}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--workers", type=int, default=0, help="videos at once (default: EGO_ASSETS_WORKERS or cores)")
    ap.add_argument("--keep", action="store_true", help="keep the home (printed)")
    ap.add_argument("--ui", action="store_true", help="the UI's path (make ui, a new source, its sensors)")
    a = ap.parse_args()

    folder, clips = make_clips(a.videos, a.seconds)
    clip_dir = Path(tempfile.mkdtemp(prefix="ego_tp_src_"))
    for c in clips:  # exactly the N clips of this run (hard links: discovery lists regular files)
        try:
            os.link(c, clip_dir / c.name)
        except OSError:  # another filesystem
            shutil.copyfile(c, clip_dir / c.name)
    home = Path(tempfile.mkdtemp(prefix="ego_tp_home_"))
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if a.workers:
        env["EGO_ASSETS_WORKERS"] = str(a.workers)
    if env.pop("PYTHONDONTWRITEBYTECODE", None):
        # an installed environment has its bytecode; this shell forbids writing it into the venv, so the
        # children keep theirs in a cache of their own (else every process compiles pandas, torch, ...)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "ego_assets_bench" / "pycache")
    subprocess.run([sys.executable, "-c", WARM], env=env, cwd=ROOT, check=True)
    workers = int(env.get("EGO_ASSETS_WORKERS") or len(os.sched_getaffinity(0)))
    workers = min(workers, a.videos)
    load0 = os.getloadavg()

    dec_wall, video_s = bare_decode(clips)
    try:
        if a.ui:
            res = run_ui(clip_dir, home, env, a.videos)
            print_rows(ui_table(a, res, dec_wall, video_s, (load0[0], os.getloadavg()[0])))
        else:
            cli_report(a, clip_dir, home, env, workers, dec_wall, video_s, load0)
    finally:
        if a.keep:
            print(f"home: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(clip_dir, ignore_errors=True)


def cli_report(a, clip_dir: Path, home: Path, env: dict, workers: int, dec_wall: float, video_s: float,
               load0: tuple) -> None:
    """The CLI's backfill and its no-op rerun, and their table."""
    first = run_cli(clip_dir, home, env)
    rows = lineage_rows(home)
    per_asset = asset_seconds(rows)
    phase = phases(rows, first)
    gaps = in_run_gaps(rows)
    ds_steps = dataset_step_seconds(home, env)
    per_run = run_overheads(home, env).get("per_video_job", {})
    rerun = run_cli(clip_dir, home, env)
    load1 = os.getloadavg()

    # every asset step's body: the lineage's (each step's own wall, its checks included), and the
    # catalog's refresh, which writes no lineage row (Dagster's step time)
    bodies = sum(per_asset.values()) + ds_steps.get(CATALOG_STEP, 0.0)
    older = sum(v for k, v in per_asset.items() if k != "lerobot_dataset")  # as measured before: the dataset step outside
    video_bodies = sum(v for k, v in per_asset.items() if k not in DATASET_STEPS)
    in_videos = phase.get("videos", 0.0) * workers - video_bodies  # the workers' time between their steps
    idle, idle_end = idle_cores(rows, workers)
    core_time = first["wall"] * workers
    rows = [
        ("videos x seconds (1080p30)", f"{a.videos} x {a.seconds:g} s = {video_s:.0f} s of video"),
        ("workers (videos at once)", f"{workers}"),
        ("bare PyAV decode, wall", f"{dec_wall:.1f} s ({video_s / dec_wall:.2f}x realtime)"),
        ("backfill, wall", f"{first['wall']:.1f} s ({first['ok']}/{a.videos} ok, exit {first['rc']})"),
        ("backfill, realtime factor", f"{video_s / first['wall']:.2f}x"),
        ("backfill / bare decode", f"{first['wall'] / dec_wall:.2f}"),
        ("cores used (CPU s / wall)", f"{first['cpu'] / first['wall']:.2f} of {len(os.sched_getaffinity(0))}"),
        ("orchestration (cores' time outside asset bodies)",
         f"{100 * max(0.0, core_time - bodies) / core_time:.1f} % (the dataset's assembly and the catalog's "
         f"refresh outside too, as before: {100 * max(0.0, core_time - older) / core_time:.1f} %)"),
        ("phases: start-up / videos / dataset and the rest",
         " / ".join(f"{v:.1f} s" for v in phase.values())),
        ("videos phase: workers' time outside the steps' bodies",
         f"{in_videos:.1f} core-s ({100 * in_videos / max(1e-9, phase.get('videos', 0.0) * workers):.0f} % of it)"),
        ("Dagster between a run's steps (summed over videos)", f"{gaps:.1f} core-s ({100 * gaps / core_time:.0f} %)"),
        ("cores without a video's run: between runs / the last videos alone",
         f"{idle - idle_end:.1f} / {idle_end:.1f} core-s ({100 * idle / core_time:.0f} % in all)"),
        ("Dagster in a video's run outside its steps (summed)",
         f"{per_run.get('outside_steps', 0.0):.1f} core-s ({100 * per_run.get('outside_steps', 0.0) / core_time:.0f} %, "
         f"{per_run.get('runs', 0)} runs)"),
        ("dataset job steps (Dagster's step times)",
         ", ".join(f"{k} {v:.1f} s" for k, v in sorted(ds_steps.items())) or "none"),
        ("peak memory (process tree RSS)", f"{first['peak'] / 2**30:.2f} GiB"),
        ("no-op rerun, wall", f"{rerun['wall']:.1f} s ({rerun['ok']}/{a.videos} ok)"),
        ("load average before / after", f"{load0[0]:.2f} / {load1[0]:.2f}"),
    ]
    print_rows(rows)
    print(f"\n{'asset':<18} {'core-s':>8} {'share':>6}")
    total = sum(per_asset.values()) or 1.0
    for k, v in sorted(per_asset.items(), key=lambda kv: -kv[1]):
        print(f"{k:<18} {v:8.1f} {100 * v / total:5.0f}%")


if __name__ == "__main__":
    main()
