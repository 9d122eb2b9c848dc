"""Dataset group: lerobot_dataset, all valid episodes of every video as one LeRobot v3.0 dataset
(DESIGN §1; issue 6). Partitions are staged one by one (reused while their inputs are unchanged) and
assembled cheaply: new videos are added without re-encoding what is there; a re-materialized video
replaces its episodes."""

import json
import os
import shutil
import tempfile
import time

import dagster as dg

from ego_assets.defs.k8s import op_tags, pool
from ego_assets.defs.runner import _now
from ego_assets.lib.backends import Resources
from ego_assets.defs.settings import EgoStorage
from ego_assets.defs.stages import calib_row, proxy
from ego_assets.lib import catalog, schemas

GROUP = "dataset"
DATASET_NAME = "ego_assets"
INPUTS = ["frames", "calibrations", "camera_poses", "segments", "captions"]
WARN_ONLY = {"stats_nondegenerate"}  # a dimension no episode moves (e.g. an absent hand) is reported


class DatasetConfig(dg.Config):
    action_space: str = "hands_102"  # or "eef_7"
    fps: int = 10
    val_fraction: float = 0.1
    repo_id: str = "local/ego_assets"
    rebuild: bool = False


# Rebuilt once the videos it depends on have changed and none of them is still being processed: a
# backfill of many videos leads to one assembly at its end, not one per run. `since_last_handled` keeps
# an update seen during the backfill pending until the dataset is requested.
DATASET_CONDITION = (dg.AutomationCondition.any_deps_updated().since_last_handled()
                     & ~dg.AutomationCondition.any_deps_in_progress()
                     & ~dg.AutomationCondition.in_progress())


def dataset_dir(store) -> str:
    return store.datasets_dir(DATASET_NAME)


def ready_partitions(store) -> tuple[list[str], dict[str, dict]]:
    """Videos whose every input asset's latest materialization is ok, with those data versions."""
    ready, versions = [], {}
    for pk in store.registered():
        v = {}
        for a in INPUTS:
            rows = store.lineage(a, pk)
            if not rows or rows[-1]["status"] != "ok":
                break
            v[a] = rows[-1]["data_version"]
        else:
            ready.append(pk)
            versions[pk] = v
    return ready, versions


@dg.asset(
    group_name=GROUP, code_version="1", deps=["captions", "segments", "camera_poses", "frames"],
    kinds={"lerobot", "parquet"}, op_tags=op_tags(None, Resources(cpu=2, memory_gib=8)), pool=pool(None),
    automation_condition=DATASET_CONDITION,
    check_specs=[
        dg.AssetCheckSpec("lerobot_dataset_valid", asset="lerobot_dataset", blocking=True,
                          description="Loads with LeRobotDataset; first and last frame of every episode "
                                      "decode; lengths match the episodes table; stats finite; tasks "
                                      "non-empty; timestamps on the fps grid."),
        dg.AssetCheckSpec("stats_nondegenerate", asset="lerobot_dataset",
                          description="No state/action dimension with zero variance (reported by name)."),
    ],
    description="Every valid segment of every video as one episode of a LeRobot v3.0 dataset "
                "(observation.images.ego, state/action in the chosen action space, the caption as task), "
                "with stats, splits by source video, provenance and a dataset card.",
)
def lerobot_dataset(context: dg.AssetExecutionContext, config: DatasetConfig, ego: EgoStorage):
    store = ego.store()
    t0 = time.perf_counter()
    remote_root = dataset_dir(store)
    # The LeRobot writer and loader need a filesystem: on an object store the dataset is assembled in
    # a local working copy and published back (meta/ last, so readers never see new metadata before
    # its files); on a local or mounted root it is assembled in place.
    with store.working_copy(remote_root, publish_last=("meta/",)) as root, \
            tempfile.TemporaryDirectory(prefix="ego_assets_staged_") as scratch:
        return _assemble(context, config, store, root, remote_root, scratch, t0)


def _assemble(context, config: DatasetConfig, store, root: str, remote_root: str, scratch: str, t0: float):
    from ego_assets.lib.geometry.calibration import undistorter
    from ego_assets.lib.lerobot import writer
    from ego_assets.lib.lerobot.validate import validate_dataset

    ready, versions = ready_partitions(store)
    staged, n_staged, n_reused = [], 0, 0
    params = dict(action_space=config.action_space, fps=config.fps)
    in_dataset_versions = _partition_versions(root)
    for i, pk in enumerate(ready, 1):
        key = json.dumps([versions[pk], params], sort_keys=True)
        sdir = store.artifact("lerobot_dataset", pk, "staged")
        manifest = f"{sdir}/{writer.STAGED_MANIFEST}"
        prev_m = store.read_json(manifest) if store.exists(manifest) else {}
        if prev_m.get("ego_assets_inputs") == key and not config.rebuild:
            # reused: what the assembly reads of it is its manifest and episodes, unless the dataset
            # lacks this version of it (then its files too)
            whole = in_dataset_versions.get(pk) != prev_m.get("version")
            staged.append(writer.load_staged(_local_staged(store, sdir, scratch, pk, whole)))
            n_reused += 1
            continue
        rec = store.video_record(pk)
        calib = calib_row(store, pk)
        prov = dict(source=rec["source"], uri=rec["uri"], name=rec["name"], license=rec.get("license"),
                    inputs=versions[pk], backends=_backends(store, pk))
        started = _now()
        with store.write_partition("lerobot_dataset", pk) as w:
            sp = writer.stage_partition(
                pk, proxy(store, pk), store.read_table("frames", pk), store.read_table("segments", pk),
                store.read_table("captions", pk), store.read_table("hand_world", pk),
                store.read_table("camera_poses", pk), prov, w.path("staged"), fps=config.fps,
                action_space=config.action_space, undistort=undistorter(calib))
            mpath = os.path.join(w.path("staged"), writer.STAGED_MANIFEST)
            m = json.load(open(mpath))
            m["ego_assets_inputs"] = key
            with open(mpath, "w") as f:
                json.dump(m, f, indent=1, sort_keys=True)
            if not store.is_local:  # the committed copy is remote: keep a local one for the assembly
                shutil.copytree(w.path("staged"), os.path.join(scratch, pk))
        staged.append(writer.load_staged(sdir if store.is_local else os.path.join(scratch, pk)))
        n_staged += 1
        store.write_lineage(dict(partition_key=pk, asset="lerobot_dataset", run_id=context.run.run_id,
                                 code_version="1", data_version=sp.version,
                                 upstream=json.dumps(versions[pk], sort_keys=True),
                                 params=json.dumps(params, sort_keys=True), status="ok", error=None,
                                 started_at=started, finished_at=_now()))
        context.log.info(f"[{i}/{len(ready)}] {pk}: staged {sp.n_episodes} episode(s), {sp.n_frames} frames")
    in_dataset = sorted(in_dataset_versions)
    removed = sorted(set(in_dataset) - set(ready))
    if not in_dataset and sum(sp.n_episodes for sp in staged) == 0:
        # Nothing to publish yet (no video has a valid, captioned segment): no dataset is written, and
        # there is nothing for LeRobot to load or for the validation to check.
        context.log.warning(f"no episodes in {len(ready)} ready video(s): the dataset is not written yet")
        detail = f"no dataset yet: 0 episodes from {len(ready)} video(s)"
        return dg.MaterializeResult(
            metadata={"episodes": 0, "videos": len(ready), "staged": n_staged, "reused": n_reused,
                      "path": dg.MetadataValue.path(store.url(remote_root)), "note": detail},
            check_results=[
                dg.AssetCheckResult(check_name="lerobot_dataset_valid", passed=True,
                                    severity=dg.AssetCheckSeverity.ERROR, metadata={"detail": detail}),
                dg.AssetCheckResult(check_name="stats_nondegenerate", passed=True,
                                    severity=dg.AssetCheckSeverity.WARN, metadata={"detail": detail})])
    res = writer.assemble(root, staged, remove=removed, repo_id=config.repo_id,
                          val_fraction=config.val_fraction, rebuild=config.rebuild,
                          card_info=_card_info(store, ready))
    for pk in ready:
        store.write_parquet(store.table_path("episodes", pk),
                            schemas.conform("episodes", res.episodes_of(pk), pk))
    for pk in removed:
        if store.exists(store.table_path("episodes", pk)):
            store.fs.rm_file(store.table_path("episodes", pk))
    catalog.ensure_view(store, "episodes")
    checks = validate_dataset(root, res.episodes, repo_id=config.repo_id,
                              max_episodes=int(os.environ.get("EGO_ASSETS_VALIDATE_MAX_EPISODES", "200")))
    errors = [c for c in checks if not c[1] and c[0] not in WARN_ONLY]
    warns = [c for c in checks if not c[1] and c[0] in WARN_ONLY]
    rows = [dict(asset="lerobot_dataset", check_name=c[0], passed=bool(c[1]),
                 severity="WARN" if c[0] in WARN_ONLY else "ERROR",
                 value=None if c[2] is None else float(c[2]), detail=str(c[3])) for c in checks]
    store.write_quality("lerobot_dataset", "dataset", rows)
    store.write_lineage(dict(partition_key="dataset", asset="lerobot_dataset", run_id=context.run.run_id,
                             code_version="1", data_version=_dataset_version(res),
                             upstream=json.dumps({pk: versions[pk] for pk in ready}, sort_keys=True),
                             params=json.dumps({**params, "val_fraction": config.val_fraction},
                                               sort_keys=True),
                             status="blocked" if errors else "ok",
                             error="; ".join(f"{c[0]}: {c[3]}" for c in errors) or None,
                             started_at=_now(), finished_at=_now()))
    meta = {
        "path": dg.MetadataValue.path(store.url(remote_root)),
        "episodes": res.n_episodes, "frames": res.n_frames, "tasks": res.n_tasks,
        "videos": len(ready), "staged": n_staged, "reused": n_reused,
        "added": len(res.added), "replaced": len(res.replaced), "removed": len(res.removed),
        "splits": dg.MetadataValue.json(res.splits), "action_space": config.action_space,
        "seconds": round(time.perf_counter() - t0, 2),
        "per_source": dg.MetadataValue.md(_counts_md(res.episodes, store)),
        "load_with": dg.MetadataValue.md(
            f"`LeRobotDataset('{config.repo_id}', root='{remote_root}', video_backend='pyav')`" if store.is_local
            else f"download `{store.url(remote_root)}`, then `LeRobotDataset('{config.repo_id}', "
                 "root=<that folder>, video_backend='pyav')`"),
    }
    return dg.MaterializeResult(
        metadata=meta, data_version=dg.DataVersion(_dataset_version(res)),
        check_results=[
            dg.AssetCheckResult(check_name="lerobot_dataset_valid", passed=not errors,
                                severity=dg.AssetCheckSeverity.ERROR,
                                metadata={c[0]: f"{'ok' if c[1] else 'FAILED'}: {c[3]}" for c in checks
                                          if c[0] not in WARN_ONLY}),
            dg.AssetCheckResult(check_name="stats_nondegenerate", passed=not warns,
                                severity=dg.AssetCheckSeverity.WARN,
                                metadata={c[0]: str(c[3]) for c in checks if c[0] in WARN_ONLY}),
        ])


def _partition_versions(root: str) -> dict[str, str]:
    """The staged version of every partition in the dataset at ``root`` (from its state file)."""
    from ego_assets.lib.lerobot.writer import STATE_PATH

    p = os.path.join(root, STATE_PATH)
    if not os.path.exists(p):
        return {}
    return {k: v.get("version") for k, v in json.load(open(p)).get("partitions", {}).items()}


def _local_staged(store, sdir: str, scratch: str, pk: str, whole: bool) -> str:
    """A local folder with a staged partition: the store's folder itself, or (object stores) a download
    of its manifest and episodes, or of every file when ``whole``."""
    from ego_assets.lib.lerobot import writer

    if store.is_local:
        return sdir
    names = (writer.STAGED_MANIFEST, writer.STAGED_EPISODES) + (
        (writer.STAGED_DATA, writer.STAGED_VIDEO) if whole else ())
    dst = os.path.join(scratch, pk)
    os.makedirs(dst, exist_ok=True)
    for name in names:
        if store.exists(f"{sdir}/{name}"):
            store.fs.get_file(f"{sdir}/{name}", os.path.join(dst, name))
    return dst


def _dataset_version(res) -> str:
    import hashlib

    h = hashlib.sha256(json.dumps([res.n_episodes, res.n_frames, sorted(res.kept + res.added +
                                                                          res.replaced)]).encode())
    return h.hexdigest()[:16]


def _backends(store, pk) -> dict:
    out = {}
    for a in ("calibrations", "hand_tracks", "camera_poses", "segments", "captions"):
        rows = store.lineage(a, pk)
        if rows:
            out[a] = rows[-1]["code_version"]
    return out


def _card_info(store, ready) -> dict:
    sources = {}
    for pk in ready:
        rec = store.video_record(pk)
        s = sources.setdefault(rec["source"], {"videos": 0, "license": rec.get("license")})
        s["videos"] += 1
    return {"description": "Egocentric hand-object interaction episodes made by ego_assets."}


def _counts_md(episodes, store) -> str:
    rows = episodes.to_pylist()
    by_source: dict = {}
    by_task: dict = {}
    for r in rows:
        src = store.video_record(r["partition_key"])["source"]
        by_source[src] = by_source.get(src, 0) + 1
        by_task[r["task"]] = by_task.get(r["task"], 0) + 1
    md = "| source | episodes |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in sorted(by_source.items()))
    md += "\n| task | episodes |\n|---|---|\n" + "".join(
        f"| {k} | {v} |\n" for k, v in sorted(by_task.items(), key=lambda kv: -kv[1])[:15])
    return md
