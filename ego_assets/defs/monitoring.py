"""Runs whose process died (killed, out of memory) are marked failed, on the embedded default too.

Dagster's run monitoring asks the run launcher whether a STARTED run's worker is alive; the default
launcher cannot tell, so such a run would stay STARTED forever. :class:`LocalRunLauncher` (named in
``dagster.yaml``) answers from the process that logged the run's start (the run worker under
``dagster dev``, the ``ego-assets`` process for the CLI's in-process runs) on this machine. The CLI
calls :func:`fail_dead_runs` when it starts, for runs no daemon watched. Only dagster is imported
here: the webserver and the daemon load this module.

It also starts each run's process warm (:meth:`LocalRunLauncher.launch_run`): forked from a template
process that imported the libraries every run imports, instead of a fresh interpreter per run. The daemon,
which launches the queued runs, starts that template as it starts (:class:`LocalRunCoordinator`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import DagsterRun

from ego_assets.defs import warm
from ego_assets.lib.parallel import pid_alive

HOST_TAG = "ego_assets/host"  # the machine a run's process runs on (set by the CLI and the launcher)
WORKER_TAG = "ego_assets/worker_pid"  # the process of a run started warm (LocalRunLauncher.launch_run)


def run_worker_pid(instance: DagsterInstance, run_id: str) -> int | None:
    """The process that logged the run's start (its worker), if any."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_START, limit=1).records
    return records[0].event_log_entry.dagster_event.pid if records else None


def dead_worker(instance: DagsterInstance, run: DagsterRun) -> str | None:
    """Why a STARTED run's process is known to be gone, or None (alive, or on another machine)."""
    if run.tags.get(HOST_TAG, socket.gethostname()) != socket.gethostname():
        return None
    pid = run_worker_pid(instance, run.run_id)
    if pid is None or pid_alive(pid):
        return None
    return f"the run's process (pid {pid}) is gone: killed or out of memory"


def fail_dead_runs(instance: DagsterInstance) -> list[str]:
    """Marks every STARTED run of this machine whose process is gone as failed; returns their ids."""
    failed = []
    for run in instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        why = dead_worker(instance, run)
        if why:
            instance.report_run_failed(run, why)
            failed.append(run.run_id)
    return failed


# the runs that hold, or are about to take, one of the run queue's slots
OCCUPYING = (DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED)


def running_here(instance: DagsterInstance) -> int:
    """How many runs of this machine are running now or about to (STARTED, and the UI's QUEUED and
    STARTING runs; a run without a host tag, launched by the UI's launcher, is this machine's). A run
    counts itself.

    In a UI backfill or a sensor's runs, a slot of the run queue that one video's run just left is taken
    by the next one seconds later (the queue's next tick, then the run process's start-up): counting only
    STARTED runs, a step that began in that gap took every core for its whole length (OpenCV's pool, the
    hands' chunks) beside the next run's work."""
    host = socket.gethostname()
    return sum(1 for run in instance.get_runs(filters=RunsFilter(statuses=list(OCCUPYING)))
               if run.tags.get(HOST_TAG, host) == host)


_log = logging.getLogger(__name__)
_lock = threading.Lock()


def _run_worker(args_json: str, environ: dict[str, str]) -> None:
    """A run's process, forked from the template: what ``dagster api execute_run`` runs (Dagster's run
    worker: the run's steps, its events, SIGINT cancels it), in the launcher's environment at launch
    (the template's is the one it started with; multiprocessing sets the working folder and sys.path)."""
    from dagster._cli.api import execute_run_command

    warm.adopt_environment(environ)
    sys.argv = ["dagster", "api", "execute_run"]
    execute_run_command.callback(input_json=args_json, compressed_input_json=None)


def start_warm_worker(args_json: str) -> int:
    """Start :func:`_run_worker` in a process forked from the warm template; returns its pid."""
    ctx = warm.template()
    with _lock:
        proc = ctx.Process(target=_run_worker, args=(args_json, dict(os.environ)), name="dagster-run-worker")
        proc.start()
        # the run outlives this launch: not joined at this process's exit (the daemon's shutdown), and
        # its end is the run's status, which run monitoring reads
        multiprocessing.process._children.discard(proc)
        return proc.pid


def in_daemon(argv: list[str] | None = None) -> bool:
    """Whether this process is Dagster's daemon (``dagster-daemon run``, or ``python -m dagster._daemon
    run`` as ``dagster dev`` starts it): the one that launches the queued runs."""
    argv = sys.argv if argv is None else argv
    if len(argv) < 2 or argv[1] != "run":
        return False
    prog = os.path.normpath(argv[0])
    return os.path.basename(prog) == "dagster-daemon" or prog.endswith(os.path.join("dagster", "_daemon", "__main__.py"))


def warm_start() -> bool:
    """Whether the UI's runs start warm (``EGO_ASSETS_RUN_START``, and a platform with a forkserver)."""
    from ego_assets.lib import settings

    return settings.get("RUN_START") == "warm" and warm.available()


class LocalRunCoordinator(QueuedRunCoordinator):
    """Dagster's run queue (the same configuration, named in ``dagster.yaml``). In the daemon it also
    starts the warm template the run launcher forks each run's process from, as the daemon starts: the
    template's imports (3-5 s) are then done before the first run is launched, instead of delaying the
    first runs of a backfill or of a sensor's batch (each waited for them)."""

    def register_instance(self, instance) -> None:
        super().register_instance(instance)
        if in_daemon() and warm_start():
            try:
                warm.template(start=True)
            except Exception:  # noqa: BLE001 - only a head start: the first launch starts it otherwise
                _log.exception("the warm template did not start with the daemon")


class LocalRunLauncher(DefaultRunLauncher):
    """Dagster's default launcher (a run worker process per run) that can tell run monitoring whether
    the worker still lives, and starts the run worker warm.

    Dagster's own launcher asks the code server to start each run in a fresh interpreter, which imports
    Dagster, its storage, the project and the steps' libraries (MediaPipe, OpenCV, SciPy, ...) again:
    about 3 s of start-up and more in the first steps, per run, i.e. per video, on the cores the other
    videos need (``benchmarks/throughput.py --ui``: ~7 CPU-s per 15 s video). Here the run's process is
    forked from a template that imported them once; the run worker itself is Dagster's (``dagster api
    execute_run``), with the run's own code origin. A code location in another Python environment gets Dagster's own launch, and so
    does any run whose warm start fails (logged). ``EGO_ASSETS_RUN_START=fresh`` turns it off."""

    def launch_run(self, context) -> None:
        from dagster._grpc.types import ExecuteRunArgs
        from dagster._serdes import serialize_value

        run = context.dagster_run
        origin = run.job_code_origin
        if not warm_start() or origin is None or \
                os.path.realpath(origin.executable_path or "") != os.path.realpath(sys.executable):
            return super().launch_run(context)
        try:
            pid = start_warm_worker(serialize_value(ExecuteRunArgs(
                job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref(),
                set_exit_code_on_failure=True)))
        except Exception:  # noqa: BLE001 - the run still starts, the usual way
            _log.exception("warm start of run %s failed; Dagster's own launch instead", run.run_id)
            return super().launch_run(context)
        self._instance.add_run_tags(run.run_id, {WORKER_TAG: str(pid)})
        self._run_ids.add(run.run_id)

    def terminate(self, run_id: str) -> bool:
        """A warm run's process gets SIGINT, as Dagster's code server does to its runs: the run worker
        stops its step and marks the run canceled."""
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is None or WORKER_TAG not in run.tags:
            return super().terminate(run_id)
        if run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        try:
            os.kill(int(run.tags[WORKER_TAG]), signal.SIGINT)
        except ProcessLookupError:
            return False
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        why = dead_worker(self._instance, run)
        if why:
            return CheckRunHealthResult(WorkerStatus.FAILED, why)
        return CheckRunHealthResult(WorkerStatus.RUNNING)
