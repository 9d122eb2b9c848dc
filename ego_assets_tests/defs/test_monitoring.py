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
from ego_assets.lib.parallel import pid_alive

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


def _project_home(tmp_path) -> Path:
    """A DAGSTER_HOME holding the project's dagster.yaml."""
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    return home


@pytest.mark.slow
def test_a_killed_run_is_marked_failed(tmp_path):
    home = _project_home(tmp_path)
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


def _launch(instance, job_name: str):
    from dagster._core.launcher import LaunchRunContext

    from ego_assets_tests.helpers import run_jobs

    recon = dg.reconstructable(getattr(run_jobs, job_name))
    run = instance.create_run_for_job(job_def=recon.get_definition(), job_code_origin=recon.get_python_origin(),
                                      remote_job_origin=None)
    instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    return instance.get_run_by_id(run.run_id)


def _wait_status(instance, run_id: str, statuses, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run.status in statuses:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still {instance.get_run_by_id(run_id).status} after {timeout_s} s")


@pytest.mark.slow
def test_runs_start_warm_and_can_be_canceled(tmp_path, monkeypatch):
    """The launcher forks each run's process from a template that imported the run's libraries: the run
    is Dagster's own run worker (its events, its status), in a process that is not the launcher's, with
    the warm modules already imported; terminating it (the UI's "Terminate") cancels it; a dead worker is
    seen by run monitoring."""
    from ego_assets.defs import monitoring, warm

    home = _project_home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for mark in ("first", "second"):  # the second run sees the launcher's environment of its launch
            monkeypatch.setenv("EGO_ASSETS_TEST_MARK", mark)
            run = _launch(instance, "quick")
            pid = int(run.tags[monitoring.WORKER_TAG])
            done = _wait_status(instance, run.run_id, (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE))
            assert done.status == dg.DagsterRunStatus.SUCCESS
            worker_pid, parent, imported, seen = (home / "worker.txt").read_text().split(" ")
            assert int(worker_pid) == pid and pid != os.getpid() and int(parent) != os.getpid()  # the template's
            assert set(imported.split(",")) == set(warm.RUN_WORKER_MODULES) and seen == mark
            assert monitoring.run_worker_pid(instance, run.run_id) == pid  # run monitoring finds the process

        slow = _launch(instance, "slow")
        _wait_status(instance, slow.run_id, (dg.DagsterRunStatus.STARTED,))
        assert instance.run_launcher.check_run_worker_health(
            instance.get_run_by_id(slow.run_id)).status.value == "RUNNING"
        assert instance.run_launcher.terminate(slow.run_id)
        ended = _wait_status(instance, slow.run_id, (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE), 60)
        assert ended.status == dg.DagsterRunStatus.CANCELED
        deadline = time.monotonic() + 30
        while pid_alive(int(slow.tags[monitoring.WORKER_TAG])) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not pid_alive(int(slow.tags[monitoring.WORKER_TAG]))


def test_runs_about_to_start_count_as_running_here(tmp_path):
    """A step's cores (defs.per_video.step_cores) divide the machine by running_here: a run the queue
    holds (QUEUED) or is starting (STARTING) takes its slot within seconds, so it counts; finished runs
    and another machine's runs do not."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    from ego_assets.defs.monitoring import HOST_TAG, running_here

    origin = RemoteJobOrigin(RemoteRepositoryOrigin(InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="ego_assets.definitions")), "__repository__"), "per_video_job")
    S = dg.DagsterRunStatus
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert running_here(instance) == 0
        for st, tags in ((S.STARTED, {}), (S.QUEUED, {}), (S.STARTING, {}), (S.SUCCESS, {}), (S.FAILURE, {}),
                         (S.STARTED, {HOST_TAG: "another-machine"}), (S.NOT_STARTED, {})):
            instance.add_run(DagsterRun(job_name="per_video_job", status=st, tags=tags, remote_job_origin=origin))
        assert running_here(instance) == 3


@pytest.mark.slow
def test_fresh_run_start_is_dagsters_own_launch(tmp_path, monkeypatch):
    """EGO_ASSETS_RUN_START=fresh: the launcher takes Dagster's own path (the code server's new
    interpreter), which needs the UI's workspace: without one it says so, where the warm start would
    have started the run."""
    from dagster._core.errors import DagsterInvariantViolationError

    home = _project_home(tmp_path)
    monkeypatch.setenv("EGO_ASSETS_RUN_START", "fresh")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        with pytest.raises(DagsterInvariantViolationError, match="workspace"):
            _launch(instance, "quick")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc (Linux)")
@pytest.mark.parametrize("extra", ["", "PROJECT_MODULES"])  # the UI launcher's template, the CLI workers'
def test_the_template_runs_no_thread(extra):
    """Forking is safe only from a process that runs one thread: importing RUN_WORKER_MODULES (and, for
    the CLI's workers, the project's definitions) must start none (a module that starts a thread at
    import does not belong in the template). Each template in a fresh interpreter: a process has one."""
    code = textwrap.dedent(f"""
        from ego_assets.defs import warm
        from ego_assets_tests.helpers.run_jobs import template_state

        if __name__ == "__main__":
            extra = {"warm." + extra if extra else "()"}
            ctx = warm.template(extra)
            q = ctx.Queue()
            p = ctx.Process(target=template_state, args=(q, [*warm.RUN_WORKER_MODULES, *extra]))
            p.start()
            print(repr(q.get(timeout=120)))
            p.join(30)
        """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    assert out.returncode == 0, out.stderr[-3000:]
    threads, missing = eval(out.stdout.strip().splitlines()[-1])
    assert missing == [] and threads == 1


def test_only_the_daemon_counts_as_the_daemon():
    from ego_assets.defs.monitoring import in_daemon

    main = os.path.join("venv", "lib", "python3.12", "site-packages", "dagster", "_daemon", "__main__.py")
    assert in_daemon([main, "run", "--log-level", "info"])  # as dagster dev starts it
    assert in_daemon([os.path.join("venv", "bin", "dagster-daemon"), "run"])
    assert not in_daemon([os.path.join("venv", "bin", "dagster-daemon"), "liveness-check"])
    assert not in_daemon([os.path.join("venv", "bin", "dagster"), "dev"])
    assert not in_daemon([os.path.join("venv", "bin", "ego-assets"), "run", "videos/"])


def _proc(pid: int) -> tuple[int, bytes]:
    """(parent pid, command line) of a live process."""
    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return ppid, Path(f"/proc/{pid}/cmdline").read_bytes()


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads the UI's processes from /proc (Linux)")
def test_the_daemon_starts_the_template_before_any_run(tmp_path):
    """`make ui`: the daemon (the process that launches the queued runs) starts the warm template as it
    starts, with no run yet, so the first runs do not wait for its imports; the UI's stop ends it too."""
    from ego_assets_tests.e2e.ui_helpers import DagsterDev, free_port

    srv = DagsterDev(home=tmp_path / "home", port=free_port(), log_path=tmp_path / "ui.log")
    srv.start()
    found = []
    try:
        srv.wait_ready(300)
        deadline = time.monotonic() + 60
        while not found and time.monotonic() < deadline:
            for pid in srv.group_alive():
                try:
                    ppid, cmd = _proc(pid)
                    if b"multiprocessing.forkserver" in cmd and b"dagster._daemon" in _proc(ppid)[1]:
                        found.append(pid)
                except (OSError, IndexError, ValueError):
                    continue
            time.sleep(0.5)
        with dg.DagsterInstance.from_config(str(tmp_path / "home" / "dagster")) as instance:
            assert instance.get_runs() == []  # nothing was launched: the daemon started it by itself
    finally:
        srv.stop()
    assert found, srv.log_tail()
    assert srv.group_alive() == []
