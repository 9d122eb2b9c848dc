"""Skills (issue 15): the valid segments of every video grouped into skills, before ``lerobot_dataset``.

``skills`` is unpartitioned (over all videos) and sits in the ``dataset`` group, so the dataset job, the
CLI's dataset step and the ``dataset_automation`` sensor build it before the dataset with no click. It
reads each video's ``segments``, ``hand_world`` and ``captions`` from the store, embeds every valid
(segment, hand) (``ego_assets.lib.skills``), and

- with no model yet, or with ``refit: true`` (or another ``n_skills``/``seed``/embedder): fits one
  (k-means, the number of skills by silhouette unless ``n_skills`` is set) and keeps it under
  ``artifacts/skills/model/model.json``;
- otherwise assigns every segment (new videos included) to the kept model's skills: same segments, same
  skills.

It writes the ``skills`` table (one Parquet file per video) and returns a data version of its rows, so a
refit that changes any assignment marks ``lerobot_dataset`` stale; the dataset then carries each
episode's skill_id/skill_label (``skill_map``).
"""


import hashlib
import json
import time

import dagster as dg

from ego_assets.defs.k8s import GPU_POOL, op_tags
from ego_assets.defs.runner import now
from ego_assets.defs.settings import EgoStorage
from ego_assets.lib import schemas
from ego_assets.lib.plots import md_image
from ego_assets.lib.quality import ERROR, CheckDef, CheckInput
from ego_assets.lib.skills import DEFAULT_MAX_SKILLS, DEFAULT_SEED

ASSET = "skills"
GROUP = "dataset"  # the groups over all videos (jobs.ALL_VIDEO_GROUPS): built with the dataset
CODE_VERSION = "1"
MODEL_KEY = "model"  # artifacts/skills/model/model.json
MODEL_FILE = "model.json"
EXAMPLES_PER_SKILL = 2


def _declared_resources():
    """What the configured embedder declares it needs (its step's Kubernetes resources and pool)."""
    from ego_assets.lib.backends import Resources
    from ego_assets.lib.skills import embedder_class

    try:
        return embedder_class().resources
    except ValueError:  # an unknown embedder fails the step with its name, not the definitions
        return Resources()


RESOURCES = _declared_resources()


class SkillsConfig(dg.Config):
    refit: bool = False     # fit the skills again on every current segment (marks the dataset stale)
    n_skills: int = 0       # 0: chosen from the data (silhouette over 2..max_skills)
    max_skills: int = DEFAULT_MAX_SKILLS  # lib/skills.py's defaults, declared there once
    seed: int = DEFAULT_SEED


def model_path(store) -> str:
    return store.artifact(ASSET, MODEL_KEY, MODEL_FILE)


def load_model(store):
    from ego_assets.lib.skills import SkillModel

    p = model_path(store)
    return SkillModel.from_json(store.read_json(p)) if store.exists(p) else None


def _ok(store, asset: str, pk: str) -> bool:
    rows = store.lineage(asset, pk)
    return bool(rows) and rows[-1]["status"] == "ok"


def gather(store, log=None) -> tuple[list, dict[str, str]]:
    """(the valid segments of every video whose segments are materialized, {video: upstream version}).
    A video whose tables cannot be read is left out with a warning; it never fails the others."""
    from ego_assets.lib.skills import segment_inputs

    segs, versions = [], {}
    for pk in store.registered():
        if not (_ok(store, "segments", pk) and store.has_table("segments", pk) and store.has_table("hand_world", pk)):
            continue
        try:
            caps = store.read_table("captions", pk) \
                if _ok(store, "captions", pk) and store.has_table("captions", pk) else None
            segs += segment_inputs(pk, store.read_table("segments", pk), store.read_table("hand_world", pk), caps)
        except Exception as e:  # noqa: BLE001 - this video gets no skills, with the reason; the others do
            if log:
                log.warning(f"{pk}: left out of the skills: {type(e).__name__}: {e}")
            continue
        versions[pk] = "|".join(str((store.lineage(a, pk) or [{}])[-1].get("data_version"))
                                for a in ("segments", "captions"))
    return segs, versions


def refit_reason(model, config: SkillsConfig, embedder_name: str) -> str | None:
    from ego_assets.lib.skills import MODEL_VERSION

    if model is None:
        return "no skill model yet"
    if config.refit:
        return "refit asked for"
    if model.version != MODEL_VERSION:
        return f"model version {model.version} is not this code's {MODEL_VERSION}"
    if model.embedder != embedder_name:
        return f"embedder changed from {model.embedder} to {embedder_name}"
    if config.n_skills and config.n_skills != model.k:
        return f"n_skills {config.n_skills} asked for, the model has {model.k}"
    if config.seed != model.seed:
        return f"seed {config.seed} asked for, the model has {model.seed}"
    return None


def skills_version(store) -> str | None:
    """The data version of the last ``skills`` run (None before any): the dataset records the one its
    episodes carry, so the CLI's dataset step is not skipped after the skills changed."""
    rows = store.lineage(ASSET, MODEL_KEY)
    return rows[-1]["data_version"] if rows else None


def skill_map(store) -> dict[tuple[str, int, str], tuple[int, str]]:
    """{(partition_key, segment_id, hand): (skill_id, skill_label)} from the ``skills`` table (empty before
    skills ran): what the dataset puts into each episode's metadata."""
    out = {}
    for pk in store.registered():
        if store.has_table(ASSET, pk):
            for r in store.read_table(ASSET, pk, ["segment_id", "hand", "skill_id", "skill_label"]).to_pylist():
                out[(pk, int(r["segment_id"]), r["hand"])] = (int(r["skill_id"]), r["skill_label"])
    return out


def _every_segment_assigned(inp: CheckInput):
    """Every valid segment of the video has a row in the ``skills`` table."""
    from ego_assets.lib.skills import segment_inputs

    store, pk = inp.store, inp.pk
    if not (_ok(store, "segments", pk) and inp.has_table("segments") and inp.has_table("hand_world")):
        # the video stopped before segments (its own checks say why): it has no segment to assign
        return True, 0.0, "no segments materialized: nothing to assign"
    caps = inp.table("captions") if inp.has_table("captions") else None
    want = {s.key for s in segment_inputs(pk, inp.table("segments"), inp.table("hand_world"), caps)}
    have = ({(pk, int(r["segment_id"]), r["hand"]) for r in inp.table(ASSET).to_pylist()}
            if inp.has_table(ASSET) else set())
    missing = sorted(want - have)
    if missing:
        return False, float(len(missing)), (f"{len(missing)} of {len(want)} valid segment(s) have no skill "
                                             f"(e.g. segment {missing[0][1]} {missing[0][2]}): run the skills step")
    return True, float(len(want)), f"{len(want)} valid segment(s), each with a skill"


CHECKS = [CheckDef("every_segment_assigned", ASSET, ERROR,
                   "Every valid segment of the video has a skill (the skills table).", _every_segment_assigned)]


def run_skills(store, config: SkillsConfig, log=None, run_id: str | None = None) -> dict:
    """Fit or assign, write the table and the model; returns a summary (rows, model, refit reason, ...)."""
    from ego_assets.lib import skills as sk

    emb = sk.embedder()
    segs, versions = gather(store, log)
    model = load_model(store)
    why = refit_reason(model, config, emb.name)
    if why and segs:
        model, x = sk.fit(segs, emb, n_skills=config.n_skills or None, seed=config.seed,
                          max_k=config.max_skills)
        store.write_json(model_path(store), model.to_json())
        if log:
            log.info(f"skills fitted ({why}): {model.k} skill(s) on {len(segs)} segment(s)")
    else:
        x = emb.embed(segs)
        why = None if model is not None else why
    rows = sk.assignments(model, segs, x) if model is not None else []
    by_pk: dict[str, list[dict]] = {}
    for r in rows:
        by_pk.setdefault(r["partition_key"], []).append({**r, "model_version": model.version})
    for pk in store.registered():
        path = store.table_path(ASSET, pk)
        if pk in by_pk:
            cols = {k: [r[k] for r in by_pk[pk]] for k in by_pk[pk][0] if k != "partition_key"}
            store.write_parquet(path, schemas.conform(ASSET, cols, pk))
        elif store.exists(path):
            store.fs.rm_file(path)
    for pk in versions:  # per video too: `ego-assets check` evaluates the skills check per video
        store.write_lineage(dict(partition_key=pk, asset=ASSET, run_id=run_id, code_version=CODE_VERSION,
                                 data_version=hashlib.sha256(json.dumps(
                                     sorted((r["segment_id"], r["hand"], r["skill_id"], r["skill_label"])
                                            for r in by_pk.get(pk, []))).encode()).hexdigest()[:16],
                                 upstream=versions[pk], status="ok"))
    digest = hashlib.sha256(json.dumps(
        [model.to_json() if model else None,
         sorted((r["partition_key"], r["segment_id"], r["hand"], r["skill_id"]) for r in rows)],
        sort_keys=True).encode()).hexdigest()[:16]
    return dict(rows=rows, model=model, refit=why, x=x, segs=segs, versions=versions, data_version=digest,
                separation=sk.separation(model, x) if model is not None and len(segs) else None)


def _thumbnail(jpg: bytes, max_side: int = 240) -> bytes:
    """A small JPEG of an overlay (the metadata stays small with 2 examples x 10 skills)."""
    import cv2
    import numpy as np

    from ego_assets.lib.plots import jpeg

    img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    return jpg if img is None else jpeg(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), max_side=max_side)


def _examples_md(store, res: dict) -> str:
    """A few example frames per skill (the captions' overlay of the segment's first frame)."""
    model, rows, segs = res["model"], res["rows"], res["segs"]
    overlay = {s.key: s.overlay_uri for s in segs}
    parts = []
    for k, lab in enumerate(model.labels):
        members = sorted((r for r in rows if r["skill_id"] == k), key=lambda r: r["distance"])
        imgs = []
        for r in members:
            uri = overlay.get((r["partition_key"], r["segment_id"], r["hand"]))
            if not uri or len(imgs) >= EXAMPLES_PER_SKILL:
                continue
            try:
                path = uri.split("://", 1)[-1]
                imgs.append(md_image(_thumbnail(store.read_bytes(path)), f"skill {k}", "image/jpeg"))
            except Exception:  # noqa: BLE001 - a missing overlay leaves the skill without an example
                continue
        parts.append(f"**{k}: {lab}** ({len(members)} segment(s))\n\n" + (" ".join(imgs) or "_no overlay_"))
    return "\n\n".join(parts)


@dg.asset(
    name=ASSET, group_name=GROUP, code_version=CODE_VERSION, deps=["segments", "captions"],
    kinds={"sklearn", "parquet"},
    op_tags=op_tags(None, RESOURCES), pool=GPU_POOL if RESOURCES.gpu else None,
    automation_condition=(dg.AutomationCondition.any_deps_updated().since_last_handled()
                          & ~dg.AutomationCondition.any_deps_in_progress()
                          & ~dg.AutomationCondition.in_progress()),
    check_specs=[
        dg.AssetCheckSpec("every_segment_assigned", asset=ASSET,
                          description="Every valid segment of every video has a skill."),
        dg.AssetCheckSpec("skills_separated", asset=ASSET,
                          description="The skills are separated groups (silhouette of the assignment > 0)."),
    ],
    description="The valid segments of every video grouped into skills (embedding of the measured wrist "
                "motion, k-means, a readable label per skill). New videos are assigned to the kept model; "
                "refit with config `refit: true` (marks lerobot_dataset stale). Table `skills`.",
)
def skills(context: dg.AssetExecutionContext, config: SkillsConfig, ego: EgoStorage):
    from ego_assets.lib import skills as sk

    store = ego.store()
    t0, started = time.perf_counter(), now()
    res = run_skills(store, config, context.log, context.run.run_id)
    rows, model = res["rows"], res["model"]
    missing = len(res["segs"]) - len(rows)
    sep = res["separation"]
    store.write_lineage(dict(partition_key=MODEL_KEY, asset=ASSET, run_id=context.run.run_id,
                             code_version=CODE_VERSION, data_version=res["data_version"],
                             upstream=json.dumps(res["versions"], sort_keys=True),
                             params=json.dumps(config.model_dump(), sort_keys=True), status="ok", error=None,
                             started_at=started, finished_at=now()))
    meta = {"segments": len(res["segs"]), "skills": model.k if model else 0, "videos": len(res["versions"]),
            "refit": res["refit"] or "no (assigned to the kept model)",
            "seconds": round(time.perf_counter() - t0, 2)}
    if model is not None:
        meta["model"] = dg.MetadataValue.json({"embedder": model.embedder, "seed": model.seed, "k": model.k,
                                               "fitted_on": model.n_fitted, "k_silhouette": model.k_choice,
                                               "path": store.url(model_path(store))})
        meta["counts"] = dg.MetadataValue.md("| skill_id | skill | segments |\n|---|---|---|\n" + "".join(
            f"| {i} | {lab} | {n} |\n" for i, lab, n in sk.skill_counts(rows)))
        if rows:
            meta["preview"] = dg.MetadataValue.md(md_image(sk.scatter_png(rows, model.labels), "skills, 2-D"))
            meta["examples"] = dg.MetadataValue.md(_examples_md(store, res))
    return dg.MaterializeResult(
        metadata=meta, data_version=dg.DataVersion(res["data_version"]),
        check_results=[
            dg.AssetCheckResult(check_name="every_segment_assigned", passed=missing == 0,
                                severity=dg.AssetCheckSeverity.ERROR,
                                metadata={"segments": len(res["segs"]), "assigned": len(rows)}),
            dg.AssetCheckResult(check_name="skills_separated", passed=sep is None or sep > 0,
                                severity=dg.AssetCheckSeverity.WARN,
                                metadata={"silhouette": "n/a" if sep is None else round(sep, 3)}),
        ])
