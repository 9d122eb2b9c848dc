"""Jobs the launcher tests start through Dagster's run worker (importable by the run's process)."""

import os
import sys
import time

import dagster as dg


@dg.op
def record_process() -> None:
    """Writes, beside the instance, this process's pid and which of the launcher's warm modules it had
    imported before this op (the op's own module imports only dagster)."""
    from ego_assets.defs.warm import RUN_WORKER_MODULES

    warm = sorted(m for m in RUN_WORKER_MODULES if m in sys.modules)
    with open(os.path.join(os.environ["DAGSTER_HOME"], "worker.txt"), "w") as f:
        f.write(f"{os.getpid()} {os.getppid()} {','.join(warm)} {os.environ.get('EGO_ASSETS_TEST_MARK', '')}")


@dg.job(executor_def=dg.in_process_executor)  # as the per-video job: the steps in the run's process
def quick():
    record_process()


@dg.op
def wait() -> None:
    time.sleep(120)


@dg.job(executor_def=dg.in_process_executor)  # as the per-video job: the steps in the run's process
def slow():
    wait()


def template_state(q, modules: list[str]) -> None:
    """Puts (threads of this process, ``modules`` not imported) on ``q``: run in a process forked from a
    warm template before anything else runs in it."""
    q.put((len(os.listdir("/proc/self/task")), [m for m in modules if m not in sys.modules]))
