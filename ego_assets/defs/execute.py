"""In-process execution for the CLI: the same one-video runs of the per-video job that the sensor and a
UI backfill launch, on the local Dagster instance; each video's status is its run's outcome as Dagster
recorded it (docs/architecture.md §7, §8, §10)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from ego_assets.defs.monitoring import HOST_TAG, fail_dead_runs
from ego_assets.lib import parallel
from ego_assets.lib.storage import Store

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def use_local_instance(store: Store) -> dg.DagsterInstance:
    """The SQLite instance under <home>/dagster with the project's dagster.yaml (unless DAGSTER_HOME is
    set), the same one `make ui` shows, so CLI runs appear in the UI."""
    if not os.environ.get("DAGSTER_HOME"):
        if not store.is_local:
            raise RuntimeError("set DAGSTER_HOME when EGO_ASSETS_HOME is an object store URL")
        dh = Path(store.root) / "dagster"
        install_instance_yaml(dh)
        os.environ["DAGSTER_HOME"] = str(dh)
    return open_instance()


# Dagster's local compute logs (its default), under the names a dagster.yaml may give them
_DAGSTER_LOCAL_LOGS = {("dagster._core.storage.local_compute_log_manager", "LocalComputeLogManager"),
                       ("dagster.core.storage.local_compute_log_manager", "LocalComputeLogManager")}


def open_instance() -> dg.DagsterInstance:
    """The instance at ``DAGSTER_HOME`` as ``DagsterInstance.get()`` opens it, for the CLI's runs (its own
    process and its workers): where its compute logs are Dagster's local ones, the steps' stdout and
    stderr go to the same files (the UI shows them) but not also to the terminal
    (``instance_storage.FileComputeLogManager``), unless ``EGO_ASSETS_SHOW_STEP_OUTPUT`` is set (``-v``).
    Other compute log managers (a dagster.yaml's) are left as they are."""
    from ego_assets.lib import settings

    home = os.path.expanduser(os.environ.get("DAGSTER_HOME") or "")
    if settings.get("SHOW_STEP_OUTPUT") or not (os.path.isabs(home) and os.path.isdir(home)):
        return dg.DagsterInstance.get()  # (which says what is wrong with DAGSTER_HOME)
    from dagster._core.instance.ref import InstanceRef
    from dagster._serdes import ConfigurableClassData

    from ego_assets.defs.instance_storage import FileComputeLogManager

    ref = InstanceRef.from_dir(home)
    logs = ref.compute_logs_data
    if (logs.module_name, logs.class_name) in _DAGSTER_LOCAL_LOGS:
        ref = ref._replace(compute_logs_data=ConfigurableClassData(
            FileComputeLogManager.__module__, FileComputeLogManager.__name__, logs.config_yaml))
    return dg.DagsterInstance.from_ref(ref)


def instance_yaml() -> str | None:
    """The project's ``dagster.yaml`` for this machine: its run queue runs as many runs (videos) at once
    as the CLI runs workers (:func:`lib.parallel.default_workers`, with the machine's total memory: the file stays the
    same from one call to the next). None without the project's file."""
    import re

    src = PROJECT_ROOT / "dagster.yaml"
    if not src.exists():
        return None
    runs = parallel.default_workers(1 << 30, memory=parallel.total_memory_gib)
    return re.sub(r"(?m)^(\s*max_concurrent_runs:\s*)\d+", lambda m: f"{m.group(1)}{runs}", src.read_text(), count=1)


def install_instance_yaml(dagster_home: Path) -> None:
    """Write :func:`instance_yaml` into ``dagster_home`` (made if missing) where it differs (the UI and the
    CLI share the instance)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    text = instance_yaml()
    dst = dagster_home / "dagster.yaml"
    if text is not None and (not dst.exists() or dst.read_text() != text):
        dst.write_text(text)


@dataclass
class VideoStatus:
    partition_key: str
    status: str  # ok | failed
    asset: str | None = None
    error: str | None = None
    run_id: str | None = None
    up_to_date: bool = False  # a run would change nothing: none was launched (the status is the last run's)


def per_video_assets(defs: dg.Definitions) -> list[str]:
    job = defs.resolve_job_def("per_video_job")
    graph = defs.resolve_asset_graph()
    keys = set(job.asset_layer.executable_asset_keys)
    order = graph.toposorted_asset_keys
    return [k.to_user_string() for k in order if k in keys]


def run_status(instance: dg.DagsterInstance, run_id: str, pk: str) -> VideoStatus:
    """A one-video run's outcome from its Dagster events: ok, or failed with the first failed step's
    asset and reason (a failed blocking check: its name, value and reason)."""
    run = instance.get_run_by_id(run_id)
    if run is not None and run.status == dg.DagsterRunStatus.SUCCESS:
        return VideoStatus(pk, "ok", run_id=run_id)
    checks = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    failures = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    for rec in failures:
        ev = rec.event_log_entry.dagster_event
        asset = ev.step_key
        bad = [c.event_log_entry.dagster_event.event_specific_data for c in checks
               if c.event_log_entry.dagster_event.step_key == asset]
        bad = [c for c in bad if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR]
        user = ev.step_failure_data.user_failure_data
        failed = user.metadata.get("failed") if user is not None else None
        if failed is not None and pk in failed.value:
            error = failed.value[pk]  # the runner's Failure: this video's reason
        elif bad:
            error = "; ".join(f"check {c.check_name} failed: {c.description}" for c in bad)
        else:
            error = ev.step_failure_data.error.message.strip() if ev.step_failure_data.error else "failed"
        return VideoStatus(pk, "failed", asset, error, run_id)
    status = run.status.value.lower() if run is not None else "missing"
    return VideoStatus(pk, "failed", None, f"run {run_id[:8]} {status}", run_id)


def materialize_videos(defs: dg.Definitions, instance: dg.DagsterInstance, store: Store,
                       keys: list[str], run_config: dict | None = None, on_run=None,
                       assets: list[str] | None = None, workers: int = 1,
                       skip_up_to_date: bool | list[str] = False) -> dict[str, VideoStatus]:
    """Run every per-video asset for ``keys``: one run per video, as the sensor and a UI backfill
    launch them. A video that fails stops there; the others are complete. Runs of this machine left
    STARTED by a killed process are marked failed first. ``assets``: a subset of the per-video assets
    (default: all).

    ``workers`` > 1 (the CLI: one per core) runs that many videos at once, each in-process run in one of
    ``workers`` long-lived processes that load the project's definitions and each model once (a run
    worker per video would load them per video); the run queue's rule holds: never two runs of one
    video at once (each key is given to one worker). It needs the project's own definitions (the
    workers import them); other definitions run in this process, one video after the other.
    ``on_run(keys, result)`` is called after each run in this process (``result`` is the in-process
    result), or with the run's :class:`VideoStatus` when it ran in a worker.

    ``skip_up_to_date`` (the CLI, with the default configuration): a video a run would not change
    (:func:`up_to_date_videos`: every asset up to date, or stopped by a blocking check on unchanged
    inputs) gets no run at all; its status is its last run's (``ok``, or ``failed`` at the blocked
    asset with the recorded reason), with ``up_to_date``. A list: every video but those (e.g. whose
    camera hints just changed)."""
    fail_dead_runs(instance)
    status: dict[str, VideoStatus] = {}
    if skip_up_to_date is not False and not assets:
        must_run = set(skip_up_to_date) if isinstance(skip_up_to_date, list) else set()
        status.update(up_to_date_videos(defs, instance, store, [k for k in keys if k not in must_run]))
    todo = [k for k in keys if k not in status]
    if not todo:
        return status
    if workers > 1:
        todo = longest_first(store, todo)
    status.update(_materialize(defs, instance, todo, run_config, assets, workers, on_run))
    return {pk: status[pk] for pk in keys}


def longest_first(store: Store, keys: list[str]) -> list[str]:
    """The videos in the order their runs start when several run at once: the largest files first
    (a file's size stands for its work), so that the last to finish is a short one and no worker
    waits long, alone, at the end of a backfill (longest-processing-time-first scheduling). Ties
    keep their order; a video whose record cannot be read goes last."""
    def size(pk: str) -> int:
        try:
            return int(store.video_record(pk).get("size_bytes") or 0)
        except Exception:  # noqa: BLE001 - its own run reports what is wrong with it
            return -1

    sizes = {pk: size(pk) for pk in keys}
    return sorted(keys, key=lambda pk: -sizes[pk])


def _materialize(defs, instance, keys, run_config, assets, workers, on_run) -> dict[str, VideoStatus]:
    from ego_assets import definitions

    workers = max(1, min(workers, len(keys)))
    if workers > 1 and defs is definitions.defs and os.environ.get("DAGSTER_HOME"):
        return _materialize_in_workers(keys, run_config, assets, workers, on_run)
    status: dict[str, VideoStatus] = {}
    for i, pk in enumerate(keys):
        if i == len(keys) - 1 and not assets and parallel.machine_cores() > 1:
            preload_dataset_modules()  # the last video leaves a core free: the dataset's imports use it
        result = _execute_one(defs, instance, pk, run_config, assets)
        status[pk] = run_status(instance, result.run_id, pk)
        if on_run:
            on_run([pk], result)
    return status


def up_to_date_videos(defs: dg.Definitions, instance: dg.DagsterInstance, store: Store,
                      keys: list[str]) -> dict[str, VideoStatus]:
    """The status of each video a run would not change: every per-video asset up to date by the steps'
    own rule (``runner.reusable``: latest attempt ok with this code version, on its upstream's latest
    data versions, committed), or up to date up to an asset its blocking check stopped on the same
    inputs (failed there, with the recorded reason); and every latest attempt made by a run without op
    configuration (so with the default parameters, as the CLI runs)."""
    from ego_assets.defs.runner import declaration, video_settled

    graph = defs.resolve_asset_graph()
    decls = [declaration(graph.get(dg.AssetKey.from_user_string(a)).assets_def, dg.AssetKey.from_user_string(a))
             for a in per_video_assets(defs)]
    default_run: dict[str, bool] = {}

    def by_default(run_id: str) -> bool:
        if run_id not in default_run:
            run = instance.get_run_by_id(run_id)
            default_run[run_id] = run is not None and not (run.run_config or {}).get("ops")
        return default_run[run_id]

    out = {}
    for pk in keys:
        settled = video_settled(store, decls, pk)
        if settled is None or not all(by_default(r) for r in set(settled.run_ids)):
            continue
        last_run = settled.run_ids[-1]
        out[pk] = (VideoStatus(pk, "ok", run_id=last_run, up_to_date=True) if settled.blocked is None else
                   VideoStatus(pk, "failed", settled.blocked, settled.error, last_run, up_to_date=True))
    return out


def _execute_one(defs, instance, pk: str, run_config, assets):
    from ego_assets.lib.video import clear_decoded

    job = defs.resolve_job_def("per_video_job")
    try:
        return job.execute_in_process(instance=instance, partition_key=pk,
                                      asset_selection=[dg.AssetKey(a) for a in assets] if assets else None,
                                      tags={HOST_TAG: socket.gethostname()},
                                      run_config=_with_quiet_logs(run_config), raise_on_error=False)
    finally:
        clear_decoded()  # the video's proxy frames, kept for its steps (lib/video.py)


def _materialize_in_workers(keys, run_config, assets, workers: int, on_run) -> dict[str, VideoStatus]:
    """The videos' one-video runs spread over ``workers`` processes, the next video to whichever worker
    is free. The workers are forked from the warm template (``defs.warm``: it imported Dagster, the
    steps' libraries and the project's definitions once, and runs no thread; the CLI starts it early, so
    that its imports run beside the CLI's own), else spawned (no forkserver on this platform): no
    inherited SQLite connections or threads either way. Each gets this process's environment as it is
    now (the template's is the one it started with). Progress reports of the workers come back through
    a queue to this process's hook (the CLI's bar)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from ego_assets.defs import warm
    from ego_assets.lib import progress

    ctx = warm.template(warm.PROJECT_MODULES) if warm.available() else mp.get_context("spawn")
    q = ctx.Queue()

    started: set[int] = set()  # the workers' pids (each says so as it starts)

    def relay():
        while (item := q.get()) is not None:
            if item[0] == _WORKER_STARTED:
                started.add(item[1])
            else:
                progress.report(*item)

    relay_thread = threading.Thread(target=relay, name="progress-relay", daemon=True)
    relay_thread.start()
    status: dict[str, VideoStatus] = {}
    if not assets:
        preload_dataset_modules()  # this process only waits for the workers: its imports are done early
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                               initargs=(q, dict(os.environ), os.getpid()))
    interrupted, broken = True, False
    try:
        futures = {pool.submit(_worker_run, pk, run_config, assets): pk for pk in keys}
        for fut in as_completed(futures):
            pk = futures[fut]
            try:
                status[pk] = fut.result()
            except Exception as e:  # noqa: BLE001 - a worker died (killed, out of memory)
                broken = broken or isinstance(e, BrokenProcessPool)
                status[pk] = VideoStatus(pk, "failed", None, f"run worker failed: {type(e).__name__}: {e}")
            if on_run:
                on_run([pk], status[pk])
        if broken:
            # a worker died, so the pool failed every video it had not finished and now waits for the
            # others' exit, holding its lock (submit and shutdown wait on it): its SIGTERM does not end
            # them (Dagster's runs leave SIGTERM raising KeyboardInterrupt in the main thread, which a
            # worker blocked reading its next task may never see), so they are killed here. A run left
            # STARTED by one is marked failed by the next `ego-assets run`
            for pid in started:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        # the videos are done: a free worker folds their catalog rows while this process goes on with
        # the dataset's run (on one core), whose catalog_views step then waits on the catalog's lock and
        # folds only the dataset's own rows (no wait here: the lock orders the two)
        interrupted = False
        with contextlib.suppress(BrokenProcessPool):  # a worker died: the refresh folds them itself
            pool.submit(_fold_catalog)
    finally:
        # the workers' exit (~1.5 s: their models, threads and interpreter) overlaps what comes next; the
        # interpreter still waits for them before it exits. Interrupted: the videos not started are dropped
        pool.shutdown(wait=False, cancel_futures=interrupted)
        q.put(None)
        relay_thread.join(timeout=5)
    return {pk: status[pk] for pk in keys}


# What the dataset's steps import (lerobot's dataset loader, which brings torch, for the validation: ~11
# core-seconds), loaded in this process while the videos run: from the start where they run in worker
# processes (this one only waits for them), else when the last one starts (its steps leave the other core
# free), so that it overlaps the videos instead of following them on one core.
DATASET_MODULES = ("ego_assets.lib.skills", "sklearn.cluster", "sklearn.metrics",  # the skills' fit: ~1.5 s
                   "ego_assets.lib.lerobot.assembly", "ego_assets.lib.lerobot.validate",
                   "lerobot.datasets.lerobot_dataset", "matplotlib.pyplot")  # the skills preview: ~0.9 s
_preloading: threading.Thread | None = None


def preload_dataset_modules() -> None:
    """Import :data:`DATASET_MODULES` in a background thread (once per process; a module that is not
    installed is skipped: its step reports that itself)."""
    global _preloading
    if _preloading is not None:
        return

    def load():
        import importlib
        import logging
        import sys
        import warnings

        if sys.platform == "linux":
            # Only a head start: the workers' steps come first. Linux's nice value is per thread; this
            # one then takes what the workers leave idle (their start-up, the gaps between their runs, the
            # last video's spare core) instead of a core they wait for (~6 CPU-s: lerobot brings torch)
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)

        # Importing holds the GIL for up to the switch interval (5 ms) at a time: a step running beside it
        # (the frames loop: a few GIL hand-offs per frame) then waits that long at each. 1 ms while it
        # loads: a 60 s video's frames step 15.0 s -> 12.6 s beside it (8.9 s alone)
        interval = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, 0.001))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for name in DATASET_MODULES:
                    try:
                        importlib.import_module(name)
                    except Exception as e:  # noqa: BLE001 - only a head start: the step imports it again
                        logging.getLogger(__name__).debug("preload of %s failed: %s", name, e)
        finally:
            sys.setswitchinterval(interval)

    _preloading = threading.Thread(target=load, name="preload-dataset-modules", daemon=True)
    _preloading.start()


_WORKER_STARTED = "worker started"  # a worker's first message on the progress queue: its pid


def _worker_init(q, environ: dict[str, str], cli_pid: int) -> None:
    import logging
    import warnings

    from ego_assets.defs import warm
    from ego_assets.lib import progress

    warm.adopt_environment(environ)
    q.put((_WORKER_STARTED, os.getpid()))
    threading.Thread(target=_exit_with, args=(cli_pid,), name="exit-with-cli", daemon=True).start()
    warnings.filterwarnings("ignore")
    for name in ("dagster", "dagster.builtin"):
        logging.getLogger(name).setLevel(logging.ERROR)
    progress.set_hook(_Forward(q))


def _exit_with(cli_pid: int, every_s: float = 1.0) -> None:
    """A worker's watch on the CLI's process: when it is gone (killed: SIGKILL, SIGTERM, the OOM killer),
    the worker ends too, within ``every_s``, instead of waiting for work forever with its models in
    memory (a worker's parent is the template, not the CLI, and the pool cannot tell it). Its run, left
    STARTED, is marked failed by the next ``ego-assets run`` (:func:`monitoring.fail_dead_runs`)."""
    import time

    while parallel.pid_alive(cli_pid):
        time.sleep(every_s)
    os._exit(1)


class _Forward:
    """A worker's progress hook: a step's report goes to the CLI's process at most every
    ``every_s`` (and its last one always), not one queue message per frame."""

    def __init__(self, q, every_s: float = 0.5):
        import time

        self.q, self.every, self.clock, self.last = q, every_s, time.monotonic, {}

    def __call__(self, stage: str, key: str, done: int, total: int) -> None:
        now = self.clock()
        if done >= total or now - self.last.get((stage, key), -1e9) >= self.every:
            self.last[(stage, key)] = now
            if done >= total:
                self.last.pop((stage, key), None)
            self.q.put((stage, key, done, total))


_worker_instance: dg.DagsterInstance | None = None


def _fold_catalog() -> None:
    """In a worker, its last task: the catalog's new rows folded into its segments (``catalog.fold``),
    at the lowest priority, so that the dataset's skills step (scikit-learn's threads on every core)
    is not slowed and the fold takes the core its single-threaded steps leave (dataset run 3.9-4.2 s
    -> 3.3 s on 16 videos; 3.5-3.8 s at normal priority). A failure leaves the rows to the refresh that
    follows, which folds them itself."""
    from ego_assets.lib import catalog

    try:
        if hasattr(os, "nice"):
            os.nice(19)
        catalog.fold(Store())
    except Exception:  # noqa: BLE001 - nothing is lost: the refresh does the same work
        pass


def _worker_run(pk: str, run_config, assets) -> VideoStatus:
    from ego_assets.definitions import defs

    global _worker_instance
    if _worker_instance is None:
        _worker_instance = open_instance()  # DAGSTER_HOME came with the environment
    instance = _worker_instance
    result = _execute_one(defs, instance, pk, run_config, assets)
    return run_status(instance, result.run_id, pk)


def dataset_up_to_date(store: Store) -> bool:
    """Whether the published dataset already holds exactly the videos that passed ``lerobot_episodes``
    at their current data versions, with this dataset code version and format: its step would
    assemble the same dataset again."""
    from ego_assets.defs import dataset
    from ego_assets.lib import settings

    rows = store.lineage("lerobot_dataset", "dataset")
    last = rows[-1] if rows else None
    if last is None or last["status"] != "ok" or last["code_version"] != dataset.DATASET_CODE_VERSION:
        return False
    ready, versions, _ = dataset.ready_partitions(store)
    params = json.loads(last["params"] or "{}")
    fmt = dataset.dataset_format().as_dict()
    return (json.loads(last["upstream"] or "{}") == {pk: versions[pk] for pk in ready}
            and {k: params.get(k) for k in fmt} == json.loads(json.dumps(fmt))
            and params.get("skills") == _skills_version(store) and (_skills_version(store) or not ready)
            and params.get("shard", "") == (settings.get("DATASET_SHARD") or "")
            and bool(roots := dataset.dataset_roots(store))
            and all(store.exists(root) for root in roots.values()))


def _skills_version(store: Store) -> str | None:
    from ego_assets.defs.skills import skills_version

    return skills_version(store)


def materialize_dataset(defs: dg.Definitions, instance: dg.DagsterInstance, run_config=None):
    """Build the unpartitioned dataset asset(s), if the definitions have them."""
    try:
        job = defs.resolve_job_def("dataset_job")
    except Exception:  # noqa: BLE001 - no dataset stage in these definitions
        return None
    return job.execute_in_process(instance=instance, run_config=_with_quiet_logs(run_config),
                                  raise_on_error=False)


def _with_quiet_logs(run_config: dict | None) -> dict:
    """The CLI prints its own status lines and progress bar; Dagster's console log keeps warnings.
    Everything is still in the run's event log (the UI shows CLI runs too)."""
    from ego_assets.lib import settings

    level = settings.get("LOG_LEVEL")
    cfg = dict(run_config or {})
    cfg.setdefault("loggers", {"console": {"config": {"log_level": level}}})
    return cfg
