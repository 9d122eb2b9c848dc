"""In-process execution for the CLI: batched runs of the per-video job on the local Dagster instance,
rerunning the good videos when some videos of a batch fail (DESIGN §7, §10)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from ego_assets.defs.partitions import MAX_PARTITIONS_PER_RUN, videos
from ego_assets.defs.sensors import chunks, range_tags
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
    status: str  # ok | failed | incomplete
    asset: str | None = None
    error: str | None = None


def per_video_assets(defs: dg.Definitions) -> list[str]:
    job = defs.resolve_job_def("per_video_job")
    graph = defs.resolve_asset_graph()
    keys = set(job.asset_layer.executable_asset_keys)
    order = graph.toposorted_asset_keys
    return [k.to_user_string() for k in order if k in keys]


def video_status(store: Store, assets: list[str], pk: str, run_ids: set[str]) -> VideoStatus:
    for a in assets:
        rows = store.lineage(a, pk)
        last = rows[-1] if rows else None
        if last is None:
            return VideoStatus(pk, "incomplete", a)
        if last["status"] in ("failed", "blocked"):
            return VideoStatus(pk, "failed", a, last["error"])
        if last["status"] != "ok":
            return VideoStatus(pk, "incomplete", a, last["error"])
    return VideoStatus(pk, "ok")


def contiguous_groups(ordered: list[str], wanted: set[str]) -> list[list[str]]:
    groups, cur = [], []
    for k in ordered:
        if k in wanted:
            cur.append(k)
        elif cur:
            groups.append(cur)
            cur = []
    if cur:
        groups.append(cur)
    return groups


def materialize_videos(defs: dg.Definitions, instance: dg.DagsterInstance, store: Store,
                       keys: list[str], run_config: dict | None = None,
                       per_run: int = MAX_PARTITIONS_PER_RUN, on_run=None) -> dict[str, VideoStatus]:
    """Run every per-video asset for ``keys`` in batched in-process runs. Videos that fail stop where
    they failed; the others are completed, if need be by further runs without the failed ones."""
    job = defs.resolve_job_def("per_video_job")
    assets = per_video_assets(defs)
    pending = set(keys)
    status: dict[str, VideoStatus] = {}
    run_ids: set[str] = set()
    for _attempt in range(len(assets) + 2):
        if not pending:
            break
        ordered = instance.get_dynamic_partitions(videos.name)
        for group in contiguous_groups(ordered, pending):
            for batch in chunks(group, per_run):
                result = job.execute_in_process(instance=instance, tags=range_tags(batch),
                                                run_config=_with_quiet_logs(run_config),
                                                raise_on_error=False)
                run_ids.add(result.run_id)
                if on_run:
                    on_run(batch, result)
        progressed = False
        for pk in list(pending):
            st = video_status(store, assets, pk, run_ids)
            if st.status != "incomplete":
                status[pk] = st
                pending.discard(pk)
                progressed = True
        if not progressed:
            break
    for pk in pending:
        status[pk] = video_status(store, assets, pk, run_ids)
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
