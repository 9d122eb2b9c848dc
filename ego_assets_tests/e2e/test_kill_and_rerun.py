"""A step killed in the middle of its writes: the rerun converges to the same result, nothing partial."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from ego_assets_tests.helpers import synth

BIN = Path(sys.executable).parent


def _run(home, folder, env_extra=None, **kw):
    env = dict(os.environ, EGO_ASSETS_HOME=str(home), **(env_extra or {}))
    env.pop("DAGSTER_HOME", None)
    return subprocess.Popen([str(BIN / "ego-assets"), "run", str(folder), "--source", "kill"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw)


def test_kill_during_frames_then_rerun(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    synth.make_video(folder / "long.mp4", n_frames=600, fps=30, size=(960, 540), gop=30)
    killed_home, clean_home = tmp_path / "killed", tmp_path / "clean"
    p = _run(killed_home, folder)
    staging = killed_home / ".staging" / "frames"
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        # the proxy is being written into the staging folder: kill the whole process group now
        if staging.exists() and any(staging.glob("*/proxy.mp4")):
            time.sleep(0.3)
            os.killpg(p.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL, "the step finished before it could be killed"
    assert not (killed_home / "artifacts" / "frames").exists() or not any(
        (killed_home / "artifacts" / "frames").iterdir())
    assert any(staging.iterdir())  # a partial leftover exists...
    r = _run(killed_home, folder)
    out, _ = r.communicate(timeout=600)
    # the synthetic texture has no hands: the run goes through frames and then stops, as it must, at the
    # blocking hands_found check of a 20 s video; everything up to there is complete
    assert r.returncode == 1 and "hand_tracks: check hands_found failed" in out, out
    assert not any(staging.iterdir())  # ...and the rerun removed it
    c = _run(clean_home, folder)
    out, _ = c.communicate(timeout=600)
    assert c.returncode == 1 and "hand_tracks: check hands_found failed" in out, out
    a = pq.read_table(next((killed_home / "artifacts" / "frames").glob("*/frames.parquet")))
    b = pq.read_table(next((clean_home / "artifacts" / "frames").glob("*/frames.parquet")))
    assert a.num_rows == b.num_rows == 200
    assert a.equals(b)
    # the killed attempt left no lineage row claiming success
    rows = [pq.read_table(f).to_pylist()[0] for f in (killed_home / "lineage" / "frames").rglob("*.parquet")]
    assert [r["status"] for r in rows] == ["ok"]


def _group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (zombies left out)."""
    from ego_assets.lib.parallel import pid_alive

    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.getpgid(int(d)) == pgid and pid_alive(int(d)):
                    out.append(int(d))
            except ProcessLookupError:
                pass
    return out


def _two_workers_past_frames(tmp_path, victim: str):
    """`ego-assets run` (two workers) on two long videos without hands, returned (home, folder, process)
    once both videos are past frames: both workers are then in their calibrations or hands (~10 s of hand
    search on 600 frames without a hand), the moment to kill ``victim``."""
    folder = tmp_path / "v"
    folder.mkdir()
    for i in range(2):
        synth.make_video(folder / f"long{i}.mp4", n_frames=600, fps=30, size=(960, 540), gop=30, seed=i)
    home = tmp_path / "home"
    p = _run(home, folder, env_extra={"EGO_ASSETS_WORKERS": "2"})
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if len(list((home / "lineage" / "frames").glob("*/*.parquet"))) >= 2:
            break
        time.sleep(0.05)
    assert p.poll() is None, f"the videos finished before {victim} could be killed:\n" + p.communicate()[0]
    return home, folder, p


def test_killing_the_cli_ends_its_workers_and_the_rerun_completes(tmp_path):
    """`ego-assets run` killed alone (SIGKILL: the OOM killer, `kill -9`), while its two workers run videos:
    the workers and the template they were forked from end too (else they would wait for work forever,
    with their models in memory), and the next run marks the killed runs failed and completes."""
    if not os.path.isdir("/proc"):
        import pytest

        pytest.skip("lists the process group's processes from /proc (Linux)")
    home, folder, p = _two_workers_past_frames(tmp_path, "the CLI")
    assert len(_group(p.pid)) >= 4  # the CLI, the template, two workers (and Dagster's log tails)
    os.kill(p.pid, signal.SIGKILL)  # the CLI alone, not its group
    p.wait(timeout=60)
    deadline = time.time() + 30
    while _group(p.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert _group(p.pid) == []
    r = _run(home, folder)
    out, _ = r.communicate(timeout=600)
    assert r.returncode == 1 and out.count("hand_tracks: check hands_found failed") == 2, out
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        # the killed runs were marked failed: none is left STARTED, and each video's last run failed
        assert instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])) == []
        runs = instance.get_runs(dg.RunsFilter(job_name="per_video_job"))
        assert len(runs) >= 3 and all(r.status == dg.DagsterRunStatus.FAILURE for r in runs)


def test_a_killed_worker_fails_its_videos_not_the_cli(tmp_path):
    """A worker killed (the OOM killer) while the two workers run videos: the pool breaks, and the CLI
    reports each video it could not finish as failed by its worker, with no traceback, and exits 1."""
    if not os.path.isdir("/proc"):
        import pytest

        pytest.skip("finds the workers from /proc (Linux)")
    from ego_assets.lib.parallel import pid_alive

    _, _, p = _two_workers_past_frames(tmp_path, "a worker")

    def ppid(pid: int) -> int:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])

    group = _group(p.pid)
    template = next(q for q in group if b"forkserver" in Path(f"/proc/{q}/cmdline").read_bytes())
    workers = [q for q in group if ppid(q) == template and pid_alive(q)]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    out, _ = p.communicate(timeout=600)
    failed = [ln for ln in out.splitlines() if ln.startswith("FAILED")]
    assert p.returncode == 1 and "Traceback" not in out, out
    assert len(failed) == 2 and any("run worker failed" in ln for ln in failed), out
