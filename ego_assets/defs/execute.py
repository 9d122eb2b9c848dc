"""In-process execution for the CLI: the same one-video runs of the per-video job that the sensor and a
UI backfill launch, on the local Dagster instance; each video's status is its run's outcome as Dagster
recorded it (DESIGN §7, §8, §10)."""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from ego_assets.defs.monitoring import HOST_TAG, fail_dead_runs
from ego_assets.lib.storage import Store

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def use_local_instance(store: Store) -> dg.DagsterInstance:
    """The SQLite instance under <home>/dagster with the project's dagster.yaml (unless DAGSTER_HOME is
    set), the same one `make ui` shows, so CLI runs appear in the UI."""
    if not os.environ.get("DAGSTER_HOME"):
        if not store.is_local:
            raise RuntimeError("set DAGSTER_HOME when EGO_ASSETS_HOME is an object store URL")
        dh = Path(store.root) / "dagster"
        dh.mkdir(parents=True, exist_ok=True)
        src = PROJECT_ROOT / "dagster.yaml"
        if src.exists() and (not (dh / "dagster.yaml").exists()
                             or (dh / "dagster.yaml").read_bytes() != src.read_bytes()):
            shutil.copyfile(src, dh / "dagster.yaml")
        os.environ["DAGSTER_HOME"] = str(dh)
    return dg.DagsterInstance.get()


@dataclass
class VideoStatus:
    partition_key: str
    status: str  # ok | failed
    asset: str | None = None
    error: str | None = None
    run_id: str | None = None


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
                       assets: list[str] | None = None) -> dict[str, VideoStatus]:
    """Run every per-video asset for ``keys``: one in-process run per video, as the sensor and a UI
    backfill launch them (models load once per process, see ego_assets.defs.stages). A video that
    fails stops there; the others are complete. Runs of this machine left STARTED by a killed process
    are marked failed first. ``assets``: a subset of the per-video assets (default: all)."""
    fail_dead_runs(instance)
    job = defs.resolve_job_def("per_video_job")
    status: dict[str, VideoStatus] = {}
    for pk in keys:
        result = job.execute_in_process(instance=instance, partition_key=pk,
                                        asset_selection=[dg.AssetKey(a) for a in assets] if assets else None,
                                        tags={HOST_TAG: socket.gethostname()},
                                        run_config=_with_quiet_logs(run_config), raise_on_error=False)
        status[pk] = run_status(instance, result.run_id, pk)
        if on_run:
            on_run([pk], result)
    return status


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
    level = os.environ.get("EGO_ASSETS_LOG_LEVEL", "CRITICAL")
    cfg = dict(run_config or {})
    cfg.setdefault("loggers", {"console": {"config": {"log_level": level}}})
    return cfg
