"""Runs whose process died (killed, out of memory) are marked failed, on the embedded default too.

Dagster's run monitoring asks the run launcher whether a STARTED run's worker is alive; the default
launcher cannot tell, so such a run would stay STARTED forever. :class:`LocalRunLauncher` (named in
``dagster.yaml``) answers from the process that logged the run's start (the run worker under
``dagster dev``, the ``ego-assets`` process for the CLI's in-process runs) on this machine. The CLI
calls :func:`fail_dead_runs` when it starts, for runs no daemon watched. Only dagster is imported
here: the webserver and the daemon load this module.
"""

from __future__ import annotations

import os
import socket

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun

HOST_TAG = "ego_assets/host"  # the machine a run's process runs on (set by the CLI and the launcher)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # zombies are dead
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True


def run_worker_pid(instance: DagsterInstance, run_id: str) -> int | None:
    """The process that logged the run's start (its worker), if any."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_START, limit=1).records
    return records[0].event_log_entry.dagster_event.pid if records else None


def dead_worker(instance: DagsterInstance, run: DagsterRun) -> str | None:
    """Why a STARTED run's process is known to be gone, or None (alive, or on another machine)."""
    if run.tags.get(HOST_TAG, socket.gethostname()) != socket.gethostname():
        return None
    pid = run_worker_pid(instance, run.run_id)
    if pid is None or _alive(pid):
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


def running_here(instance: DagsterInstance) -> int:
    """How many runs of this machine are running now (STARTED; a run without a host tag, launched by
    the UI's launcher, is this machine's). A run counts itself."""
    host = socket.gethostname()
    return sum(1 for run in instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED]))
               if run.tags.get(HOST_TAG, host) == host)


class LocalRunLauncher(DefaultRunLauncher):
    """Dagster's default launcher (a run worker process per run) that can tell run monitoring whether
    the worker still lives."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        why = dead_worker(self._instance, run)
        if why:
            return CheckRunHealthResult(WorkerStatus.FAILED, why)
        return CheckRunHealthResult(WorkerStatus.RUNNING)
