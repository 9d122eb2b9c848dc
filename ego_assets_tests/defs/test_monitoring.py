"""Issue 16.10: a run whose process is killed does not stay STARTED on the embedded default."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from ego_assets.defs.monitoring import LocalRunLauncher, fail_dead_runs

ROOT = Path(__file__).resolve().parents[2]

SLOW_RUN = textwrap.dedent("""
    import time, dagster as dg

    @dg.op
    def wait():
        time.sleep(120)

    @dg.job
    def slow():
        wait()

    slow.execute_in_process(instance=dg.DagsterInstance.get())
""")


@pytest.mark.slow
def test_a_killed_run_is_marked_failed(tmp_path):
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert isinstance(instance.run_launcher, LocalRunLauncher)  # dagster.yaml names it
            deadline = time.monotonic() + 60
            runs = []
            while time.monotonic() < deadline:
                runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
                if runs:
                    break
                time.sleep(0.5)
            assert len(runs) == 1, "the run did not start within 60 s"
            run = runs[0]
            # alive: run monitoring leaves it alone, the sweep too
            assert instance.run_launcher.check_run_worker_health(run).status.value == "RUNNING"
            assert fail_dead_runs(instance) == []
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            health = instance.run_launcher.check_run_worker_health(run)
            assert health.status.value == "FAILED" and f"pid {proc.pid}" in health.msg
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED  # before
            assert fail_dead_runs(instance) == [run.run_id]
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
