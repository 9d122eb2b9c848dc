"""Dataset group (docs/architecture.md §1; issues 6, 12): every video's episodes, then one LeRobot v3.0 dataset.

- ``lerobot_episodes`` (per video, group ``episodes``, part of the per-video job): the video's valid,
  captioned segments staged as episodes in the dataset's format: frames undistorted and letterboxed to the
  one dataset frame size, the camera in dataset pixels. Its blocking checks say why a video cannot join
  the dataset (``fits_dataset``) or has no episode (``has_episodes``): that video's partition fails with
  the reason (UI, ``lineage``, the CLI's line for it); no other video is affected.
- ``lerobot_dataset`` (unpartitioned): assembles the staged episodes of every video whose
  ``lerobot_episodes`` passed. It only moves files and rewrites small tables (new videos are added without
  re-encoding the others) into a new version of the dataset that is published in one step after it
  validated; readers never see a half-assembled dataset.
"""

import hashlib
import json
import os
import shutil
import tempfile
import time
from datetime import timedelta
from dataclasses import dataclass, field

import dagster as dg

from ego_assets.defs.k8s import op_tags, pool
from ego_assets.defs.per_video import Step, per_video_asset
from ego_assets.defs.runner import PartitionOutput, now
from ego_assets.defs.settings import EgoStorage
from ego_assets.defs.stages import calib_row, proxy
from ego_assets.lib import schemas, settings
from ego_assets.lib.backends import Resources
from ego_assets.lib.quality import ERROR, CheckDef, CheckInput

GROUP = "dataset"
EPISODES_GROUP = "episodes"  # per video: in the per-video job (which takes every group but "dataset")
DATASET_NAME = "ego_assets"
EPISODES_ASSET = "lerobot_episodes"
EPISODES_CODE_VERSION = "2"
DATASET_CODE_VERSION = "2"
INPUTS = ["frames", "calibrations", "camera_poses", "segments", "captions"]
# lerobot_load_check: lerobot is not installed (the checks ran on the files); stats_nondegenerate: a dimension
# no episode moves (e.g. an absent hand) is reported
WARN_ONLY = {"stats_nondegenerate", "lerobot_load_check"}
STAGED = "staged"
REJECTED = "rejected.json"  # why staging failed: the video cannot join the dataset


class DatasetConfig(dg.Config):
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


SHARDS_SUFFIX = "-shards"  # <home>/datasets/ego_assets-shards/<shard>/: each a LeRobot dataset
SHARD_ASSIGNMENT = "assignment.json"  # {video: shard} of N-video shards (videos stay where they were put)


def shards_dir(store) -> str:
    return store.datasets_dir(DATASET_NAME + SHARDS_SUFFIX)


def dataset_roots(store) -> dict[str, str]:
    """The published datasets: {"": the one dataset} unsharded (EGO_ASSETS_DATASET_SHARD unset), else
    {shard: its folder} for every shard of the current sharding with a dataset in it (what checks and the
    CLI go through). Shards of an earlier sharding (the setting changed since) are not listed."""
    from ego_assets.lib.lerobot.layout import STATE_PATH

    spec = settings.get("DATASET_SHARD")
    if not spec:
        return {"": dataset_dir(store)}
    base = shards_dir(store)
    names = sorted(set(_shard_assignment(store, spec).values()))
    return {n: f"{base}/{n}" for n in names if store.exists(f"{base}/{n}/{STATE_PATH}")}


def shard_videos(store) -> dict[str, set[str]]:
    """{shard: its videos} of the current sharding ({} unsharded): which rows of the ``episodes`` table
    each shard's validation compares with."""
    spec = settings.get("DATASET_SHARD")
    out: dict[str, set[str]] = {}
    for pk, shard in (_shard_assignment(store, spec) if spec else {}).items():
        out.setdefault(shard, set()).add(pk)
    return out


def _shard_assignment(store, spec: str) -> dict[str, str]:
    """{video: shard} recorded by the last sharded assembly under the same sharding ({} after a change)."""
    p = f"{shards_dir(store)}/{SHARD_ASSIGNMENT}"
    kept = store.read_json(p) if store.exists(p) else {}
    return dict(kept.get("videos") or {}) if kept.get("by") == spec else {}


@dataclass
class _Target:
    """One dataset the step assembles: the dataset, or one shard (its videos, its folder, its repo id);
    a shard's lineage and quality rows are kept to be merged into the step's one record."""

    root: str
    repo_id: str
    name: str = ""
    keys: set[str] | None = None  # the shard's videos (None: every ready video)
    left_out: dict[str, str] | None = None  # the shard's left-out videos (None: every one)
    lineage: list[dict] = field(default_factory=list)
    quality: list[dict] = field(default_factory=list)

    def write_lineage(self, store, row: dict) -> None:
        if self.name:
            self.lineage.append(row)
        else:
            store.write_lineage(row)

    def write_quality(self, store, rows: list[dict]) -> None:
        if self.name:
            self.quality.extend(rows)
        else:
            store.write_quality("lerobot_dataset", "dataset", rows)


def dataset_format():
    """The configured format every episode shares (EGO_ASSETS_DATASET_IMAGE_SIZE, _FPS, _ACTION_SPACE). It is
    part of lerobot_episodes' code version: changing it marks every video's episodes stale in the UI."""
    from ego_assets.lib.lerobot.features import dataset_format as fmt

    return fmt()


def staged_dir(store, pk: str) -> str:
    return store.artifact(EPISODES_ASSET, pk, STAGED)


# -- per video: lerobot_episodes ----------------------------------------------------------------------

def _manifest(store, pk: str) -> dict | None:
    from ego_assets.lib.lerobot.layout import STAGED_MANIFEST

    rej = store.artifact(EPISODES_ASSET, pk, REJECTED)
    if store.exists(rej):
        return None
    return store.read_json(f"{staged_dir(store, pk)}/{STAGED_MANIFEST}")


def _rejected(store, pk: str) -> str | None:
    rej = store.artifact(EPISODES_ASSET, pk, REJECTED)
    return store.read_json(rej)["reason"] if store.exists(rej) else None


def misfit(manifest: dict, fmt) -> str | None:
    """Why a staged video does not fit a dataset of format ``fmt`` (None when it fits)."""
    from ego_assets.lib.lerobot.features import VIDEO_KEY

    if not manifest.get("features"):
        return None  # no episode: nothing to fit
    h, w = manifest["features"][VIDEO_KEY]["shape"][:2]
    got = f"{w}x{h}@{manifest['fps']}fps/{manifest['action_space']}"
    return None if got == fmt.label() else f"staged as {got}, the dataset is {fmt.label()}"


def _fits_dataset(inp: CheckInput):
    store, pk = inp.store, inp.pk
    why = _rejected(store, pk)
    if why is not None:
        return False, None, f"cannot join the dataset: {why}"
    fmt = dataset_format()
    m = _manifest(store, pk)
    bad = misfit(m, fmt)
    if bad:
        return False, None, f"does not fit the dataset: {bad}; rerun lerobot_episodes for this video"
    cam = m.get("camera") or {}
    hfov = f", hfov {cam['hfov_deg']:.1f} deg" if cam.get("hfov_deg") else ""
    return True, float(m["n_episodes"]), f"{fmt.label()}{hfov}"


def _has_episodes(inp: CheckInput):
    store, pk = inp.store, inp.pk
    why = _rejected(store, pk)
    if why is not None:
        return False, 0.0, f"no episode: staging failed ({why})"
    m = _manifest(store, pk)
    n = int(m["n_episodes"])
    if n:
        return True, float(n), f"{n} episode(s), {m['n_frames']} frames"
    return False, 0.0, "no episode: " + no_episode_reason(m.get("skipped") or [])


def no_episode_reason(skipped: list[dict]) -> str:
    if not skipped:
        return "no hand-action segment was found in this video"
    counts: dict[str, int] = {}
    for s in skipped:
        counts[s["reason"]] = counts.get(s["reason"], 0) + 1
    return (f"none of its {len(skipped)} segment(s) is usable: "
            + ", ".join(f"{v} x {k}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))


EPISODE_CHECKS = [
    CheckDef("fits_dataset", EPISODES_ASSET, ERROR,
             "The video's episodes can join the dataset: staged in the dataset's frame size, rate and action "
             "space (else the reason it cannot join).", _fits_dataset),
    CheckDef("has_episodes", EPISODES_ASSET, ERROR,
             "The video gives at least one episode (a valid, captioned hand-action segment of >= 2 dataset "
             "steps); else why none.", _has_episodes),
]
CHECKS = EPISODE_CHECKS


@per_video_asset(
    name=EPISODES_ASSET, group=EPISODES_GROUP,
    code_version=f"{EPISODES_CODE_VERSION}+{dataset_format().label()}", deps=INPUTS,
    kinds={"lerobot", "parquet"}, checks=EPISODE_CHECKS, params=lambda step: dataset_format().as_dict(),
    description="The video's valid, captioned segments as LeRobot episodes in the dataset's format: frames "
                "undistorted and letterboxed to the dataset frame size (EGO_ASSETS_DATASET_IMAGE_SIZE, "
                "default 640x480), state/action, per-episode camera in dataset pixels. A video that cannot "
                "join the dataset fails here with the reason.",
)
def lerobot_episodes(step: Step) -> PartitionOutput:
    return PartitionOutput(metadata=stage_video(step, dataset_format()))


def stage_video(step: Step, fmt) -> dict:
    """Stage one video's episodes (committed atomically); a video that cannot be staged is committed as
    rejected with the reason, which its checks report. Returns the partition's metadata."""
    from ego_assets.lib.geometry.calibration import undistorter
    from ego_assets.lib.lerobot.staging import stage_partition

    store, pk = step.store, step.pk
    rec = store.video_record(pk)
    inputs = {a: store.lineage(a, pk)[-1]["data_version"] for a in INPUTS}
    prov = dict(source=rec["source"], uri=rec["uri"], name=rec["name"], license=rec.get("license"),
                inputs=inputs, backends=_backends(store, pk))
    with step.write() as w:
        try:
            calib = calib_row(store, pk)
            v = store.read_table("videos", pk).to_pylist()[0]
            src = (v.get("display_width") or v["width"], v.get("display_height") or v["height"])
            sp = stage_partition(
                pk, proxy(store, pk), store.read_table("frames", pk), store.read_table("segments", pk),
                store.read_table("captions", pk), store.read_table("hand_world", pk),
                store.read_table("camera_poses", pk), prov, w.path(STAGED), fps=fmt.fps,
                action_space=fmt.action_space, undistort=undistorter(calib), image_size=fmt.image_size,
                calibration=calib, source_size=src)
        except Exception as e:  # noqa: BLE001 - whatever the reason, this video is left out, with it
            reason = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
            with open(w.path(REJECTED), "w") as f:
                json.dump({"reason": reason}, f)
            return {"episodes": 0, "rejected": reason}
    m = sp.manifest
    cam = m.get("camera") or {}
    meta = {"episodes": sp.n_episodes, "frames": sp.n_frames, "format": fmt.label(),
            "skipped_segments": len(sp.skipped)}
    if sp.skipped:
        meta["skipped"] = dg.MetadataValue.json(sp.skipped[:50])
    if cam.get("fx") is not None:
        meta["camera"] = dg.MetadataValue.json(cam)
    if m.get("image_transform"):
        meta["image_transform"] = dg.MetadataValue.json(m["image_transform"])
    return meta


# -- the dataset --------------------------------------------------------------------------------------

def ready_partitions(store) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """(videos whose lerobot_episodes passed, their staged data versions, {left-out video: reason})."""
    ready, versions, left_out = [], {}, {}
    for pk in store.registered():
        rows = store.lineage(EPISODES_ASSET, pk)
        last = rows[-1] if rows else None
        if last is not None and last["status"] == "ok" and store.committed(EPISODES_ASSET, pk):
            ready.append(pk)
            versions[pk] = last["data_version"]
        elif last is not None:
            left_out[pk] = f"{EPISODES_ASSET} {last['status']}: {last['error']}"
        else:
            left_out[pk] = f"{EPISODES_ASSET} has not run for this video yet"
    return ready, versions, left_out


@dg.asset(
    group_name=GROUP, code_version=DATASET_CODE_VERSION,
    deps=[EPISODES_ASSET, "captions", "segments", "camera_poses", "frames", "skills"],
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
    description="The staged episodes of every video that passed lerobot_episodes as one LeRobot v3.0 "
                "dataset (observation.images.ego at one frame size, state/action, the caption as task, "
                "per-episode camera), with stats, splits by source video, provenance and a dataset card; "
                "published as one step once it validates.",
)
def lerobot_dataset(context: dg.AssetExecutionContext, config: DatasetConfig, ego: EgoStorage):
    store = ego.store()
    t0 = time.perf_counter()
    started = now()
    try:
        with tempfile.TemporaryDirectory(prefix="ego_assets_staged_") as scratch:
            spec = settings.get("DATASET_SHARD")
            if spec:
                return _assemble_shards(context, config, store, scratch, t0, spec)
            return _assemble(context, config, store, scratch, t0,
                             _Target(root=dataset_dir(store), repo_id=config.repo_id))
    except Exception as e:  # noqa: BLE001 - recorded where the CLI's hint looks, then the step fails
        reason = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        store.write_lineage(dict(partition_key="dataset", asset="lerobot_dataset", run_id=context.run.run_id,
                                 code_version=DATASET_CODE_VERSION, data_version=None, upstream=None, params=None,
                                 status="failed", error=reason, started_at=started, finished_at=now()))
        raise dg.Failure(description=f"lerobot_dataset: {reason}", allow_retries=False) from e


def _started(t0: float):
    """When the step began (``t0``: its perf_counter at the start): the lineage row times the whole step."""
    return now() - timedelta(seconds=time.perf_counter() - t0)


def _assemble(context, config: DatasetConfig, store, scratch: str, t0: float, target: _Target):
    from ego_assets.lib.lerobot.assembly import assemble
    from ego_assets.lib.lerobot.layout import STAGED_MANIFEST
    from ego_assets.lib.lerobot.staging import load_staged
    from ego_assets.lib.lerobot.versions import assemble_versioned

    fmt = dataset_format()
    remote_root, repo_id = target.root, target.repo_id
    ready, versions, left_out = ready_partitions(store)
    if target.keys is not None:
        ready = [pk for pk in ready if pk in target.keys]
    if target.left_out is not None:
        left_out = target.left_out
    published = _published_state(store, remote_root)
    in_dataset_versions = {k: v.get("version") for k, v in (published or {}).get("partitions", {}).items()}
    rebuild, why_rebuild = bool(config.rebuild), "asked for" if config.rebuild else None
    if published and not rebuild:
        why_rebuild = _rebuild_reason(published, fmt)
        rebuild = why_rebuild is not None
        if rebuild:
            context.log.warning(f"the dataset is rebuilt: {why_rebuild}")
    staged, n_new = [], 0
    # Object stores: new, re-staged and removed videos change the published dataset in place (their files,
    # the data files after a removed one, the metadata; no other video: incremental.update_dataset); a
    # rebuild, a format change or a first dataset is assembled in a working copy. Local homes assemble a
    # new version next to the published one with the files hard-linked (versions.assemble_versioned).
    appendable = not store.is_local and bool(published) and not rebuild
    unchanged: list[str] = []
    to_append: list[tuple[str, str]] = []
    for pk in ready:
        sdir = staged_dir(store, pk)
        m = store.read_json(f"{sdir}/{STAGED_MANIFEST}")
        bad = misfit(m, fmt)
        if bad:  # staged under another format; its lerobot_episodes reruns with the current one
            left_out[pk] = f"{EPISODES_ASSET}: {bad}"
            continue
        # what the assembly reads of a staged video already in the dataset is its manifest and episodes
        whole = rebuild or in_dataset_versions.get(pk) != m.get("version")
        n_new += whole
        if appendable and not whole:
            unchanged.append(pk)  # in the dataset at this version: nothing of it is read
            continue
        if appendable:
            to_append.append((pk, sdir))
            continue
        staged.append(load_staged(_local_staged(store, sdir, scratch, pk, whole)))
    for pk, why in left_out.items():
        context.log.warning(f"{pk} ({store.video_uri(pk)}) is left out of the dataset: {why}")
    if appendable:
        gone = sorted(set(in_dataset_versions) - set(unchanged) - {pk for pk, _ in to_append})
        done = _append(context, config, store, target, to_append, gone, unchanged, in_dataset_versions, versions,
                       left_out, fmt, scratch, t0)
        if done is not None:
            return done
        # only the full assembly can make this change (every staged partition)
        staged = [load_staged(_local_staged(store, staged_dir(store, pk), scratch, pk, pk not in unchanged))
                  for pk in unchanged + [pk for pk, _ in to_append]]
    members = [s.partition_key for s in staged]
    removed = sorted(set(in_dataset_versions) - set(members))
    params = {**fmt.as_dict(), "val_fraction": config.val_fraction, "skills": _skills_version(store)}
    base_meta = {"videos": len(members), "left_out": len(left_out),
                 "path": dg.MetadataValue.path(store.url(remote_root))}
    if left_out:
        base_meta["left_out_videos"] = dg.MetadataValue.json(
            {pk: f"{store.video_uri(pk)}: {why}" for pk, why in sorted(left_out.items())})
    if not in_dataset_versions and sum(sp.n_episodes for sp in staged) == 0:
        # Nothing to publish yet (no video has a valid, captioned segment): no dataset is written, and
        # there is nothing for LeRobot to load or for the validation to check.
        detail = f"no dataset yet: 0 episodes from {len(members)} video(s), {len(left_out)} left out"
        context.log.warning(detail)
        return dg.MaterializeResult(
            metadata={**base_meta, "episodes": 0, "note": detail},
            check_results=[
                dg.AssetCheckResult(check_name="lerobot_dataset_valid", passed=True,
                                    severity=dg.AssetCheckSeverity.ERROR, metadata={"detail": detail}),
                dg.AssetCheckResult(check_name="stats_nondegenerate", passed=True,
                                    severity=dg.AssetCheckSeverity.WARN, metadata={"detail": detail})])
    checks: list = []
    kwargs = dict(remove=removed, repo_id=repo_id, val_fraction=config.val_fraction, rebuild=rebuild,
                  card_info=_card_info(store, members), skills=_skill_map(store))

    def accept(root, res) -> bool:
        from ego_assets.lib.lerobot.validate import validate_dataset

        checks.extend(validate_dataset(
            root, res.episodes, repo_id=repo_id,
            max_episodes=settings.get("VALIDATE_MAX_EPISODES")))
        return not [c for c in checks if not c.passed and c.name not in WARN_ONLY]

    if store.is_local:
        # a new version next to the published one (files hard-linked), published in one rename once valid
        res, _, published_now = assemble_versioned(remote_root, staged, accept=accept, **kwargs)
    else:
        # The LeRobot writer and loader need a filesystem: on an object store the dataset is assembled in
        # a local working copy and uploaded, meta/ last (readers open it first)
        with store.working_copy(remote_root, publish_last=("meta/",)) as root:
            res = assemble(root, staged, **kwargs)
            published_now = accept(root, res)
    errors = [c for c in checks if not c.passed and c.name not in WARN_ONLY]
    warns = [c for c in checks if not c.passed and c.name in WARN_ONLY]
    if published_now:
        for pk in members:
            store.write_parquet(store.table_path("episodes", pk),
                                schemas.conform("episodes", res.episodes_of(pk), pk))
        for pk in set(removed) | (set(left_out) - set(members)):
            if store.exists(store.table_path("episodes", pk)):
                store.fs.rm_file(store.table_path("episodes", pk))
    rows = [dict(asset="lerobot_dataset", check_name=c.name, passed=bool(c.passed),
                 severity="WARN" if c.name in WARN_ONLY else "ERROR",
                 value=None if c.value is None else float(c.value), detail=str(c.detail)) for c in checks]
    target.write_quality(store, rows)
    err = "; ".join(f"{c.name}: {c.detail}" for c in errors) or None
    if err and store.is_local:
        err += " (not published: the previous version of the dataset stays)"
    target.write_lineage(store, dict(
                             partition_key="dataset", asset="lerobot_dataset", run_id=context.run.run_id,
                             code_version=DATASET_CODE_VERSION, data_version=res.version,
                             upstream=json.dumps({pk: versions[pk] for pk in members}, sort_keys=True),
                             params=json.dumps(params, sort_keys=True),
                             status="blocked" if errors else "ok", error=err,
                             started_at=_started(t0), finished_at=now()))
    meta = {
        **base_meta,
        "episodes": res.n_episodes, "frames": res.n_frames, "tasks": res.n_tasks, "format": fmt.label(),
        "new_or_changed": n_new, "added": len(res.added), "replaced": len(res.replaced),
        "removed": len(res.removed), "published": published_now,
        "splits": dg.MetadataValue.json(res.splits), "seconds": round(time.perf_counter() - t0, 2),
        "per_source": dg.MetadataValue.md(_counts_md(res.episodes, store)),
        "load_with": dg.MetadataValue.md(
            f"`LeRobotDataset('{repo_id}', root='{remote_root}', video_backend='pyav')`" if store.is_local
            else f"download `{store.url(remote_root)}`, then `LeRobotDataset('{repo_id}', "
                 "root=<that folder>, video_backend='pyav')`"),
    }
    if why_rebuild:
        meta["rebuilt"] = why_rebuild
    return dg.MaterializeResult(
        metadata=meta, data_version=dg.DataVersion(res.version[:16]),
        check_results=[
            dg.AssetCheckResult(check_name="lerobot_dataset_valid", passed=not errors,
                                severity=dg.AssetCheckSeverity.ERROR,
                                metadata={c.name: f"{'ok' if c.passed else 'FAILED'}: {c.detail}" for c in checks
                                          if c.name not in WARN_ONLY}),
            dg.AssetCheckResult(check_name="stats_nondegenerate", passed=not warns,
                                severity=dg.AssetCheckSeverity.WARN,
                                metadata={c.name: str(c.detail) for c in checks if c.name in WARN_ONLY}),
        ])


def _assemble_shards(context, config: DatasetConfig, store, scratch: str, t0: float, spec: str):
    """EGO_ASSETS_DATASET_SHARD set: one LeRobot dataset per shard (lib/lerobot/shards.py), each assembled,
    appended to, validated and published as the one dataset is; the step records one lineage row (every
    shard's videos), one quality row per check (every shard's outcome) and one materialization."""
    from ego_assets.lib.lerobot import shards

    ready, versions, left_out = ready_partitions(store)
    base = shards_dir(store)
    previous = _shard_assignment(store, spec)
    if not previous and store.exists(f"{base}/{SHARD_ASSIGNMENT}"):
        context.log.warning(f"the sharding changed to {spec!r}: the shards of the earlier one stay in {base} "
                            "(no longer listed or checked; delete them when they are not needed)")

    def source_of(pk: str) -> str:
        return store.video_record(pk)["source"]

    shard_of = shards.assign(spec, ready, source_of, previous)
    # a video keeps its shard while it is left out for a while (N-video shards are not renumbered)
    store.write_json(f"{base}/{SHARD_ASSIGNMENT}", {"by": spec, "videos": {**previous, **shard_of}})
    out_of = {pk: source_of(pk) if spec == "source" else previous.get(pk) for pk in left_out}
    # a shard is assembled while it has a ready video; one whose videos are all left out keeps its version
    names = sorted(set(shard_of.values()))
    results: dict[str, dg.MaterializeResult] = {}
    targets: dict[str, _Target] = {}
    for name in names:
        targets[name] = t = _Target(
            root=f"{base}/{name}", repo_id=f"{config.repo_id}-{name}", name=name,
            keys={pk for pk, n in shard_of.items() if n == name},
            left_out={pk: why for pk, why in left_out.items() if out_of[pk] == name})
        context.log.info(f"shard {name}: {len(t.keys)} video(s) at {store.url(t.root)}")
        results[name] = _assemble(context, config, store, scratch, t0, t)
    for pk in sorted(pk for pk, n in out_of.items() if n not in targets):
        context.log.warning(f"{pk} ({store.video_uri(pk)}) is left out of the dataset: {left_out[pk]}")
    return _merge_shards(context, store, spec, targets, results, left_out, t0)


def merge_shard_quality(per_shard: dict[str, list[dict]]) -> list[dict]:
    """The shards' ``quality`` rows as the dataset's: one row per check, passed when it passed on every
    shard, each shard's detail kept (``shard <name>: ...``)."""
    by_check: dict[str, list] = {}
    for n, rows in per_shard.items():
        for q in rows:
            by_check.setdefault(q["check_name"], []).append((n, q))
    return [dict(qs[0][1], passed=all(q["passed"] for _, q in qs), value=None,
                 detail="; ".join(f"shard {n}: {q['detail']}" for n, q in qs)) for qs in by_check.values()]


def _merge_shards(context, store, spec: str, targets: dict, results: dict, left_out: dict, t0: float):
    """The shards' records as the step's one: lineage (blocked if any shard is), quality and checks (a
    check passes when it passes on every shard; each shard's detail kept), metadata (totals and per shard)."""
    rows = [(n, r) for n, t in targets.items() for r in t.lineage]
    if rows:
        upstream: dict = {}
        for _, r in rows:
            upstream.update(json.loads(r["upstream"] or "{}"))
        params = {**json.loads(rows[0][1]["params"] or "{}"), "shard": spec}
        errors = [f"shard {n}: {r['error']}" for n, r in rows if r["error"]]
        store.write_lineage(dict(
            partition_key="dataset", asset="lerobot_dataset", run_id=context.run.run_id,
            code_version=DATASET_CODE_VERSION,
            data_version=hashlib.sha256(json.dumps({n: r["data_version"] for n, r in rows},
                                                   sort_keys=True).encode()).hexdigest(),
            upstream=json.dumps(upstream, sort_keys=True), params=json.dumps(params, sort_keys=True),
            status="blocked" if any(r["status"] != "ok" for _, r in rows) else "ok",
            error="; ".join(errors) or None, started_at=_started(t0), finished_at=now()))
    store.write_quality("lerobot_dataset", "dataset",
                        merge_shard_quality({n: t.quality for n, t in targets.items()}))
    checks: dict[str, dict] = {}
    for n, res in results.items():
        for c in res.check_results or []:
            entry = checks.setdefault(c.check_name, {"passed": True, "severity": c.severity, "metadata": {}})
            entry["passed"] &= bool(c.passed)
            entry["metadata"].update({f"{n}: {k}": getattr(v, "value", v) for k, v in (c.metadata or {}).items()})
    total = {k: sum(int(getattr(res.metadata.get(k), "value", res.metadata.get(k)) or 0) for res in results.values())
             for k in ("videos", "episodes", "frames")}
    per_shard = {n: {k: getattr(v, "value", v) for k, v in res.metadata.items()
                     if k in ("videos", "episodes", "frames", "published", "appended", "added", "removed")}
                 | {"path": store.url(targets[n].root), "repo_id": targets[n].repo_id}
                 for n, res in results.items()}
    meta = {**total, "left_out": len(left_out), "shards": len(results), "shard_by": spec,
            "path": dg.MetadataValue.path(store.url(shards_dir(store))),
            "per_shard": dg.MetadataValue.json(per_shard), "seconds": round(time.perf_counter() - t0, 2),
            "train_on_several": dg.MetadataValue.md(
                "LeRobot 0.6.1's `lerobot-train` takes one dataset: merge shards with `lerobot-edit-dataset "
                "--operation.type merge`, or load them with `MultiLeRobotDataset` in a loop of your own.")}
    if not results:  # no video is ready yet: no shard to publish, nothing to validate
        detail = f"no dataset yet: no video ready, {len(left_out)} left out"
        context.log.warning(detail)
        meta["note"] = detail
        checks = {name: {"passed": True, "severity": sev, "metadata": {"detail": detail}} for name, sev in
                  (("lerobot_dataset_valid", dg.AssetCheckSeverity.ERROR),
                   ("stats_nondegenerate", dg.AssetCheckSeverity.WARN))}
    versions = {n: str(getattr(r.data_version, "value", "") or "") for n, r in results.items()}
    return dg.MaterializeResult(
        metadata=meta,
        data_version=dg.DataVersion(hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()[:16]),
        check_results=[dg.AssetCheckResult(check_name=name, passed=c["passed"], severity=c["severity"],
                                           metadata={k: str(v) for k, v in c["metadata"].items()})
                       for name, c in checks.items()])


def _append(context, config: DatasetConfig, store, target: _Target, to_append, gone, unchanged, in_dataset_versions,
            versions, left_out, fmt, scratch: str, t0: float):
    """Object stores: change the published dataset in place (``incremental.update_dataset``): new videos
    appended, re-staged ones replaced (their episodes move to the end), ``gone`` ones removed; what is read
    and written is their files, the metadata and (after a removal) the data files after the removed one,
    never another video. The ``episodes`` table rows of every video whose rows changed are written again.
    None when only the full assembly can make the change (nothing was changed)."""
    from ego_assets.lib.lerobot import incremental

    remote_root = target.root
    replacing = [pk for pk, _ in to_append if pk in in_dataset_versions]
    try:
        res = incremental.update_dataset(
            store.fs, remote_root, remove=gone + replacing, append=[sdir for _, sdir in to_append],
            scratch=scratch, repo_id=target.repo_id, skills=_skill_map(store) if to_append else None)
    except incremental.NeedsFullAssembly as e:
        context.log.warning(f"the dataset is assembled in full: {e}")
        return None
    changed = sorted(set(res.episodes["partition_key"].to_pylist()))
    for pk in changed:
        store.write_parquet(store.table_path("episodes", pk), schemas.conform("episodes", res.episodes_of(pk), pk))
    for pk in res.removed:
        if store.exists(store.table_path("episodes", pk)):
            store.fs.rm_file(store.table_path("episodes", pk))
    members = sorted(unchanged + res.added + res.replaced + res.kept)
    renumbered = sorted(set(res.data_written) - set(res.added) - set(res.replaced))
    detail = (f"{len(res.added)} video(s) appended, {len(res.replaced)} replaced, {len(res.removed)} removed "
              f"({res.n_episodes} episodes, {res.n_frames} frames); their files, "
              f"{len(renumbered)} later data file(s) renumbered and the metadata written, no other video touched")
    # no local copy for LeRobot's load: what its lookup relies on, read back from the store
    from ego_assets.lib.lerobot.validate import check_published

    published = check_published(store.fs, remote_root, changed)
    valid = all(c.passed for c in published)
    if not valid:
        context.log.error("the dataset changed in place fails its checks: "
                          + "; ".join(f"{c.name}: {c.detail}" for c in published if not c.passed))
    target.write_quality(store, [dict(
        asset="lerobot_dataset", check_name="lerobot_dataset_valid", passed=valid, severity="ERROR",
        value=float(sum(not c.passed for c in published)),
        detail=detail + "; " + "; ".join(f"{c.name}: {c.detail}" for c in published))])
    params = {**fmt.as_dict(), "val_fraction": config.val_fraction, "skills": _skills_version(store)}
    target.write_lineage(store, dict(
                             partition_key="dataset", asset="lerobot_dataset", run_id=context.run.run_id,
                             code_version=DATASET_CODE_VERSION, data_version=res.version,
                             upstream=json.dumps({pk: versions[pk] for pk in members}, sort_keys=True),
                             params=json.dumps(params, sort_keys=True), status="ok", error=None,
                             started_at=_started(t0), finished_at=now()))
    meta = {"videos": len(members), "left_out": len(left_out), "path": dg.MetadataValue.path(store.url(remote_root)),
            "episodes": res.n_episodes, "frames": res.n_frames, "tasks": res.n_tasks,
            "format": fmt.label(), "new_or_changed": len(to_append), "added": len(res.added),
            "replaced": len(res.replaced), "removed": len(res.removed), "renumbered": len(renumbered),
            "published": True, "appended": True, "seconds": round(time.perf_counter() - t0, 2)}
    return dg.MaterializeResult(
        metadata=meta, data_version=dg.DataVersion(res.version[:16]),
        check_results=[
            dg.AssetCheckResult(check_name="lerobot_dataset_valid", passed=valid, severity=dg.AssetCheckSeverity.ERROR,
                                metadata={"append": detail, **{c.name: c.detail for c in published}}),
            dg.AssetCheckResult(check_name="stats_nondegenerate", passed=True, severity=dg.AssetCheckSeverity.WARN,
                                metadata={"append": "stats merged from the appended episodes' stats, or aggregated "
                                                    "again from every episode's stats after a removal"})])


def _published_state(store, remote_root: str) -> dict | None:
    from ego_assets.lib.lerobot.layout import STATE_PATH

    from ego_assets.lib.lerobot.layout import APPENDED_DIR

    p = f"{remote_root}/{STATE_PATH}"
    if not store.exists(p):
        return None
    state = store.read_json(p)
    d = f"{remote_root}/{APPENDED_DIR}"  # videos appended since the last full assembly (one entry each)
    if store.exists(d):
        for f in store.fs.find(d):
            state["partitions"][f.rsplit("/", 1)[-1][:-5]] = store.read_json(f)
    return state


def _rebuild_reason(state: dict, fmt) -> str | None:
    """Why the published dataset cannot be extended with episodes of format ``fmt`` (None: it can)."""
    from ego_assets.lib.lerobot.features import VIDEO_KEY
    from ego_assets.lib.lerobot.layout import STATE_FORMAT

    if state.get("format") != STATE_FORMAT:
        return f"its state format {state.get('format')!r} is not this code's {STATE_FORMAT}"
    feats = state.get("features")
    if not feats:
        return None
    h, w = feats[VIDEO_KEY]["shape"][:2]
    was = f"{w}x{h}@{state.get('fps')}fps/{state.get('action_space')}"
    return None if was == fmt.label() else f"format changed from {was} to {fmt.label()}"


def _local_staged(store, sdir: str, scratch: str, pk: str, whole: bool) -> str:
    """A local folder with a staged partition: the store's folder itself, or (object stores) a download
    of its manifest and episodes, or of every file when ``whole``."""
    from ego_assets.lib.lerobot.layout import STAGED_DATA, STAGED_EPISODES, STAGED_MANIFEST, STAGED_VIDEO

    if store.is_local:
        return sdir
    names = (STAGED_MANIFEST, STAGED_EPISODES) + (
        (STAGED_DATA, STAGED_VIDEO) if whole else ())
    dst = os.path.join(scratch, pk)
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst, exist_ok=True)
    for name in names:
        if store.exists(f"{sdir}/{name}"):
            store.fs.get_file(f"{sdir}/{name}", os.path.join(dst, name))
    return dst


def dataset_outcome(result) -> tuple[bool, str]:
    """For the CLI: (ok, one line) on a run of the dataset job: the episode count and where, or the actual
    reason it failed and a query that shows it."""
    from dagster import AssetCheckSeverity, AssetKey, DagsterEventType

    mats = [m for m in result.asset_materializations_for_node("lerobot_dataset")
            if m.asset_key == AssetKey("lerobot_dataset")]
    failed = [e for e in result.get_asset_check_evaluations()
              if not e.passed and e.severity == AssetCheckSeverity.ERROR]
    if failed:
        def why(e) -> str:
            return "; ".join(str(v.value) for v in e.metadata.values() if "FAILED" in str(v.value))

        return False, ("check " + "; ".join(f"{e.check_name} failed ({why(e)})" for e in failed)
                       + "; see `ego-assets catalog \"select check_name, detail from quality where "
                       "asset='lerobot_dataset' and not passed\"`")
    if not result.success or not mats:
        why = "the step failed"
        for ev in result.all_events:
            if ev.event_type == DagsterEventType.STEP_FAILURE and ev.step_key == "lerobot_dataset":
                data = ev.step_failure_data
                why = (data.user_failure_data.description if data.user_failure_data and
                       data.user_failure_data.description else data.error.message.strip() if data.error else why)
        return False, (f"{why}; see `ego-assets catalog \"select finished_at, error from lineage where "
                       "asset='lerobot_dataset' and status <> 'ok' order by finished_at desc limit 1\"`")
    md = mats[-1].metadata
    n = md["episodes"].value if "episodes" in md else 0
    out = md["left_out"].value if "left_out" in md else 0
    return True, f"{n} episode(s)" + (f", {out} video(s) left out (their lines say why)" if out else "")


def _backends(store, pk) -> dict:
    out = {}
    for a in ("calibrations", "hand_tracks", "camera_poses", "segments", "captions"):
        rows = store.lineage(a, pk)
        if rows:
            out[a] = rows[-1]["code_version"]
    return out


def _skills_version(store) -> str | None:
    from ego_assets.defs.skills import skills_version  # the skills the episodes carry (issue 15)

    return skills_version(store)


def _skill_map(store) -> dict:
    from ego_assets.defs.skills import skill_map  # the episodes' skill_id/skill_label (issue 15)

    return skill_map(store)


def _card_info(store, ready) -> dict:
    return {"description": "Egocentric hand-object interaction episodes made by ego_assets, from "
                           f"{len(ready)} video(s)."}


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
