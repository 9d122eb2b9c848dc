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


def _run(home, folder, **kw):
    env = dict(os.environ, EGO_ASSETS_HOME=str(home))
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
