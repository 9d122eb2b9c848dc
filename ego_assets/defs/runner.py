"""The per-video step every partitioned asset shares.

A run carries one video (the discovery sensor, a UI backfill and ``ego-assets run`` all request one run
per video): whatever happens to a video is its own run's outcome, so Dagster holds the truth per video
(docs/architecture.md §8) and a bad video never stops the others. A video that fails (bad file, failed upstream)
fails its step with the file and the reason, and its checks fail with that reason; a blocking check
that fails is a failed ERROR check result of that partition, and Dagster stops the video there. Every
attempt is also recorded in ``lineage``/``quality``. A video whose inputs, code and parameters are
unchanged since its last success is not recomputed (resumable runs); its materialization keeps the
last computed one's metadata and previews.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import dagster as dg

from ego_assets.lib.quality import ERROR, CheckDef, CheckInput, CheckOutcome
from ego_assets.lib.storage import PartitionWriter, Store


@dataclass
class PartitionOutput:
    """What an asset body returns for one partition: its metadata, and what it wrote. ``written`` (set
    by :mod:`ego_assets.defs.per_video` from ``Step.write``) carries the tables as written, with their
    digests: the data version and the checks take them from memory. A body that wrote its tables some
    other way names them in ``tables`` (their files are then hashed and the checks read the store)."""

    metadata: dict = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)
    written: PartitionWriter | None = None

    def digests(self, store: Store, pk: str) -> dict[str, str]:
        out = dict(self.written.digests) if self.written is not None else {}
        for t in self.tables:
            if t not in out:
                out[t] = store.table_digest(t, pk)
        return out

    def produced(self) -> dict:
        return dict(self.written.tables) if self.written is not None else {}


class UpstreamNotReady(RuntimeError):
    pass


def now() -> datetime:
    return datetime.now(timezone.utc)


_now = now  # transitional: defs/dataset.py imports this name until it takes ``now``


def latest_ok(store: Store, asset: str, pk: str) -> dict | None:
    rows = [r for r in store.lineage(asset, pk) if r["status"] in ("ok", "blocked")]
    return rows[-1] if rows else None


def upstream_versions(store: Store, upstream: list[str], pk: str) -> dict[str, str]:
    out = {}
    for a in upstream:
        rows = store.lineage(a, pk)
        last = rows[-1] if rows else None
        if last is None:
            raise UpstreamNotReady(f"upstream asset {a} has not been materialized for this video")
        if last["status"] != "ok":
            raise UpstreamNotReady(f"upstream asset {a} {last['status']} for this video"
                                   + (f": {last['error']}" if last.get("error") else ""))
        out[a] = last["data_version"]
    return out


def data_version(code_version: str, params: dict, upstream: dict, digests: dict[str, str]) -> str:
    """A partition's data version: its code, parameters, upstream versions and the SHA-256 of each table
    it wrote (taken as the tables were written)."""
    return hashlib.sha256(json.dumps([code_version, params, upstream, sorted(digests.items())],
                                     sort_keys=True).encode()).hexdigest()[:16]


def declared(context: dg.AssetExecutionContext) -> tuple[str, str, list[str]]:
    """The asset's name, code version and upstream assets as its decorator declares them: the one
    place they are written (the UI's lineage and staleness and the body's inputs cannot disagree)."""
    return declaration(context.assets_def, context.asset_key)


def declaration(ad: dg.AssetsDefinition, key: dg.AssetKey) -> tuple[str, str, list[str]]:
    code_version = ad.code_versions_by_key.get(key)
    if not code_version:
        raise ValueError(f"asset {key.to_user_string()} declares no code_version")
    upstream = sorted(k.to_user_string() for k in ad.asset_deps.get(key, ()))
    return key.to_user_string(), code_version, upstream


def reusable(store: Store, asset: str, pk: str, prev: dict | None, code_version: str, up: dict,
             params=None) -> bool:
    """Whether the attempt ``prev`` (a lineage row) still holds for this asset of this video: it
    succeeded with this code version on these upstream data versions (and these parameters, unless
    ``params`` is None) and its partition is committed. The one rule of a skipped step and of a
    video found up to date before its run (``defs.execute``)."""
    return (prev is not None and prev["status"] == "ok"
            and prev["code_version"] == code_version
            and json.loads(prev["upstream"] or "{}") == up
            and (params is None or json.loads(prev["params"] or "{}") == json.loads(json.dumps(params)))
            and store.committed(asset, pk))


@dataclass
class Settled:
    """What a run of a video would find (:func:`video_settled`): every asset up to date (``blocked`` is
    None), or up to date up to ``blocked``, stopped there by its blocking check with ``error``."""

    run_ids: list[str]  # the runs of the latest attempts considered
    blocked: str | None = None
    error: str | None = None


def video_settled(store: Store, declarations: list[tuple[str, str, list[str]]], pk: str) -> Settled | None:
    """Whether a run of video ``pk`` would change nothing, parameters aside (the caller runs with the
    default configuration): every asset (``declarations`` in dependency order) up to date by
    :func:`reusable` on its latest attempt, or up to date up to one whose latest attempt, with the same
    code on the same inputs, was blocked by its check (a run would compute it again only to be stopped
    there again; what follows it cannot run). None: the video needs its run."""
    run_ids = []
    for asset, code_version, upstream in declarations:
        try:
            up = upstream_versions(store, upstream, pk)
        except UpstreamNotReady:
            return None
        rows = store.lineage(asset, pk)
        last = rows[-1] if rows else None
        if last is None:
            return None
        run_ids.append(last["run_id"])
        if reusable(store, asset, pk, last, code_version, up):
            continue
        if last["status"] == "blocked" and reusable(store, asset, pk, {**last, "status": "ok"}, code_version, up):
            return Settled(run_ids, asset, last["error"])
        return None
    return Settled(run_ids)


@dataclass
class _Outcome:
    status: str  # ok | skipped | blocked | failed
    metadata: dict = field(default_factory=dict)
    data_version: str | None = None
    results: list[CheckOutcome] = field(default_factory=list)
    error: str | None = None


def run_partitions(
    context: dg.AssetExecutionContext,
    store: Store,
    body: Callable[[str], PartitionOutput],
    *,
    params: dict | Callable[[str], dict],  # or per video: params(pk) (e.g. its camera hints)
    checks: list[CheckDef] = (),
    force: bool = False,
):
    """Materialize the run's partitions of the calling asset (name, code version and upstream assets
    come from its declaration, see :func:`declared`).

    A run normally carries one video (docs/architecture.md §8: Dagster holds the truth per video): the result is
    then Dagster's own. A video that fails raises :class:`dagster.Failure` naming the file and the
    reason (its partition is failed in the UI, with its checks failed and the reason); a blocking
    check that fails is reported as an ERROR check result of the partition and Dagster stops the video
    there. A run carrying several videos reports every partition's check results and materialization
    (with its own data version) and fails, naming each bad file, if any video failed.
    """
    asset, code_version, upstream = declared(context)
    keys = list(context.partition_keys) if context.has_partition_key_range or context.has_partition_key \
        else []
    outcomes: dict[str, _Outcome] = {}
    t_all = time.perf_counter()
    for n, pk in enumerate(keys, 1):
        outcomes[pk] = _run_one(context, store, asset, body, pk, f"[{n}/{len(keys)}]",
                                code_version=code_version, upstream=upstream, params=params,
                                checks=checks, force=force)
    failures = {pk: o.error for pk, o in outcomes.items()
                if o.status == "failed" or (o.status == "blocked" and len(keys) > 1)}
    spec_names = {k.name for k in context.assets_def.check_keys if k.asset_key == context.asset_key}

    if len(keys) == 1 and outcomes[keys[0]].status != "failed":
        # Dagster's own path: the check results belong to this partition's materialization, and a
        # failed blocking check stops this video's downstream assets (the step fails after it).
        o = outcomes[keys[0]]
        return dg.MaterializeResult(
            metadata=_clean(o.metadata), data_version=dg.DataVersion(o.data_version),
            check_results=[_check_result(r) for r in o.results if r.check_name in spec_names])

    if not failures:
        return _range_done(context, outcomes, spec_names)
    # A failed video (or a run of several videos with a failed one): each partition's check results
    # and each good partition's materialization (with its own data version and upstream versions) are
    # logged one by one, then the step fails naming every bad file and reason.
    for pk, o in outcomes.items():
        for r in o.results:
            if r.check_name in spec_names:
                context.log_event(_check_evaluation(context.asset_key, pk, r))
        if o.status in ("ok", "skipped"):
            context.log_event(dg.AssetMaterialization(
                asset_key=context.asset_key, partition=pk, metadata=_clean(o.metadata),
                tags=_version_tags(context, code_version, upstream, pk, o.data_version)))
    lines = "\n".join(f"- {msg}" if _names_file(store, pk, msg) else f"- {store.video_uri(pk)}: {msg}"
                      for pk, msg in failures.items())
    raise dg.Failure(
        description=f"{asset} failed for {len(failures)} of {len(keys)} video(s):\n{lines}",
        metadata={"failed": dg.MetadataValue.json(failures),
                  "seconds": round(time.perf_counter() - t_all, 1)},
        allow_retries=False,
    )


def _range_done(context, outcomes: dict[str, _Outcome], spec_names: set[str]) -> dg.MaterializeResult:
    """A run of several videos that all succeeded (runs carry one video; this serves a run launched
    by hand over a range): Dagster's output event, one materialization per partition with that
    partition's metadata (its data version in the metadata), and each partition's check results."""
    for pk, o in outcomes.items():
        context.add_asset_metadata(_clean(o.metadata), partition_key=pk)
        for r in o.results:
            if r.check_name in spec_names:
                context.log_event(_check_evaluation(context.asset_key, pk, r))
    results = {}
    for o in outcomes.values():
        for r in o.results:
            if r.check_name in spec_names:
                prev = results.get(r.check_name)
                results[r.check_name] = r if prev is None or prev.passed else prev
    return dg.MaterializeResult(check_results=[_check_result(r) for r in results.values()])


@contextlib.contextmanager
def partition_lock(store: Store, asset: str, pk: str, context=None):
    """One writer per asset partition on a local home: a second run of the same video (another
    ``ego-assets run``, a UI run) waits here, then finds the partition up to date instead of computing
    it again. On object stores the instance's run queue keeps one run per video (dagster.yaml)."""
    if not store.is_local:
        yield
        return
    import fcntl

    path = os.path.join(store.root, ".locks", asset, f"{pk}.lock")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if context is not None:
                context.log.info(f"{pk}: {asset} is being written by another run; waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_one(context, store: Store, asset: str, body, pk: str, prefix: str, *, code_version: str,
             upstream: list[str], params, checks, force: bool) -> _Outcome:
    with partition_lock(store, asset, pk, context):
        return _attempt(context, store, asset, body, pk, prefix, code_version=code_version,
                        upstream=upstream, params=params, checks=checks, force=force)


def _attempt(context, store: Store, asset: str, body, pk: str, prefix: str, *, code_version: str,
             upstream: list[str], params, checks, force: bool) -> _Outcome:
    started = now()
    up: dict = {}
    p_pk: dict = {}
    try:
        p_pk = params(pk) if callable(params) else params
        up = upstream_versions(store, upstream, pk)
        prev = latest_ok(store, asset, pk)
        if not force and reusable(store, asset, pk, prev, code_version, up, p_pk):
            dv = prev["data_version"]
            context.log.info(f"{prev_fmt(prefix, pk)}: up to date (data version {dv}), skipped")
            # this attempt, with the current configuration, is the video's latest: a failure of an
            # earlier attempt with another configuration no longer speaks for it
            store.write_lineage(dict(partition_key=pk, asset=asset, run_id=context.run.run_id,
                                     code_version=code_version, data_version=dv,
                                     upstream=json.dumps(up, sort_keys=True),
                                     params=json.dumps(p_pk, sort_keys=True), status="ok",
                                     error=None, started_at=started, finished_at=now()))
            # the previews of the materialization being reused stay on the latest event
            meta = {**last_real_metadata(context, pk),
                    "reused": f"up to date since run {prev['run_id'][:8]}"}
            inp = CheckInput(store, pk, asset, params=p_pk)  # each table read once for all the checks
            return _Outcome("skipped", meta, dv, [c.evaluate(inp) for c in checks])
        # (no "started" line: Dagster's own step-start event says it; every log line is a stored event)
        t0 = time.perf_counter()
        out = body(pk)
        t_body = time.perf_counter() - t0
        dv = data_version(code_version, p_pk, up, out.digests(store, pk))
        inp = CheckInput(store, pk, asset, produced=out.produced(), params=p_pk)
        results = [c.evaluate(inp) for c in checks]
        store.write_quality(asset, pk, [r.row(asset) for r in results])
        bad = [r for r in results if not r.passed and r.severity == ERROR]
        err = "; ".join(f"check {r.check_name} failed: {r.detail}" for r in bad) or None
        store.write_lineage(dict(partition_key=pk, asset=asset, run_id=context.run.run_id,
                                 code_version=code_version, data_version=dv,
                                 upstream=json.dumps(up, sort_keys=True),
                                 params=json.dumps(p_pk, sort_keys=True),
                                 status="blocked" if bad else "ok", error=err,
                                 started_at=started, finished_at=now()))
        seconds = time.perf_counter() - t0
        # the step's own time outside the body (data version, checks, quality and lineage rows)
        meta = {**out.metadata, "seconds": round(seconds, 1), "data_version": dv,
                "body_s": round(t_body, 3), "overhead_s": round(seconds - t_body, 3)}
        if bad:
            context.log.error(f"{prev_fmt(prefix, pk)}: {asset} blocked: {err}")
            return _Outcome("blocked", meta, dv, results, err)
        # no "done" line either: Dagster's step-success event carries the duration, the
        # materialization its seconds
        return _Outcome("ok", meta, dv, results)
    except Exception as e:  # noqa: BLE001 - one video's failure is reported as that video's
        msg = _describe(store, pk, e)
        status = "skipped" if isinstance(e, UpstreamNotReady) else "failed"
        store.write_lineage(dict(partition_key=pk, asset=asset, run_id=context.run.run_id,
                                 code_version=code_version, data_version=None,
                                 upstream=json.dumps(up, sort_keys=True),
                                 params=json.dumps(p_pk, sort_keys=True), status=status,
                                 error=msg, started_at=started, finished_at=now()))
        context.log.error(f"{prev_fmt(prefix, pk)}: {asset} {status}: {msg}")
        if not isinstance(e, (ValueError, UpstreamNotReady, FileNotFoundError)):
            context.log.debug(traceback.format_exc())
        # the asset's checks cannot pass on nothing: each says why, on this video's check page
        results = [CheckOutcome(c.name, False, c.severity, None, f"{asset} {status}: {msg}")
                   for c in checks]
        store.write_quality(asset, pk, [r.row(asset) for r in results])
        return _Outcome("failed", {}, None, results, msg)


def _names_file(store: Store, pk: str, msg: str) -> bool:
    try:
        return store.video_record(pk)["name"] in msg
    except Exception:  # noqa: BLE001 - no record: say which video it is
        return False


def prev_fmt(prefix: str, pk: str) -> str:
    return f"{prefix} {pk}" if prefix != "[1/1]" else pk


def last_real_metadata(context, pk: str) -> dict:
    """The metadata of the partition's latest materialization (a reuse carries the computed one's
    forward), so that a no-op rerun keeps the previews on the latest event."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[pk]), limit=1).records
    mat = records[0].asset_materialization if records else None
    return {k: v for k, v in mat.metadata.items() if k != "reused"} if mat is not None else {}


def _version_tags(context, code_version: str, upstream: list[str], pk: str, dv: str) -> dict:
    """The data-version tags Dagster writes for a one-partition step, for one partition of a logged
    materialization: its own data version and the versions of its upstream partitions (staleness)."""
    from dagster._core.definitions.data_version import (
        CODE_VERSION_TAG, DATA_VERSION_IS_USER_PROVIDED_TAG, DATA_VERSION_TAG,
        get_input_data_version_tag, get_input_event_pointer_tag)

    tags = {CODE_VERSION_TAG: code_version, DATA_VERSION_TAG: dv, DATA_VERSION_IS_USER_PROVIDED_TAG: "true"}
    for a in upstream:
        key = dg.AssetKey.from_user_string(a)
        recs = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[pk]), limit=1).records
        if recs:
            # as Dagster records a partitioned input: the SHA-256 of its partitions' data versions
            up_dv = recs[0].asset_materialization.tags.get(DATA_VERSION_TAG, "")
            tags[get_input_data_version_tag(key)] = hashlib.sha256(up_dv.encode()).hexdigest()
            tags[get_input_event_pointer_tag(key)] = str(recs[0].storage_id)
    return tags


def _severity(r: CheckOutcome) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.ERROR if r.severity == ERROR else dg.AssetCheckSeverity.WARN


def _check_metadata(r: CheckOutcome) -> dict:
    meta = {"reason": dg.MetadataValue.text(r.detail)}
    if r.value is not None:
        meta["value"] = dg.MetadataValue.float(round(float(r.value), 4))
    return meta


def _check_result(r: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(check_name=r.check_name, passed=r.passed, severity=_severity(r),
                               description=r.detail, metadata=_check_metadata(r))


def _check_evaluation(asset_key: dg.AssetKey, pk: str, r: CheckOutcome):
    """A check result for one partition of a multi-video or failed step (``AssetCheckResult`` only
    targets the step's single partition)."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation

    return AssetCheckEvaluation(asset_key=asset_key, check_name=r.check_name, passed=r.passed,
                                metadata=_check_metadata(r), severity=_severity(r),
                                description=r.detail, blocking=r.severity == ERROR, partition=pk)


# How often a step's progress becomes a line of the run's log. Each line is an event stored in the
# instance's database (a few ms of CPU each, benchmarks/throughput.py): a line per 30 s keeps a long video's
# progress visible in the UI at a negligible cost; the CLI's bar is fed on every report.
PROGRESS_LOG_EVERY_S = 30.0


def progress_logger(context, asset: str, pk: str, unit: str = "frames", every_s: float = PROGRESS_LOG_EVERY_S):
    """A ``progress(done, total)`` callback for lib functions: logs through Dagster's logger every
    ``every_s`` (with the rate; not at the end: the step's "done" line follows) and feeds the CLI's
    progress bar on every call."""
    from ego_assets.lib import progress

    state = {"last": time.monotonic()}
    state["t0"] = state["last"]

    def cb(done: int, total: int) -> None:
        progress.report(asset, pk, done, total)
        now = time.monotonic()
        if now - state["last"] >= every_s and done < total:
            state["last"] = now
            rate = done / max(now - state["t0"], 1e-6)
            context.log.info(f"{pk}: {asset} {done}/{total} {unit} ({100 * done / max(total, 1):.0f}%, "
                             f"{rate:.1f} {unit}/s)")

    return cb


def _describe(store: Store, pk: str, e: Exception) -> str:
    msg = str(e) or type(e).__name__
    if isinstance(e, (ValueError, UpstreamNotReady, FileNotFoundError)):
        return msg
    return f"{type(e).__name__}: {msg}"


def _clean(meta: dict) -> dict:
    """Metadata as a person reads it: previews (Markdown) first, floats rounded, no empty values."""
    out = {}
    items = sorted(meta.items(), key=lambda kv: not isinstance(kv[1], dg.MarkdownMetadataValue))
    for k, v in items:
        if isinstance(v, float):
            out[k] = round(v, 3)
        elif isinstance(v, dg.MetadataValue) or isinstance(v, (int, str, bool)):
            out[k] = v
        elif isinstance(v, (dict, list)):
            out[k] = dg.MetadataValue.json(v)
        elif v is None:
            continue
        else:
            out[k] = str(v)
    return out


def check_specs(asset_key, checks: list[CheckDef]) -> list[dg.AssetCheckSpec]:
    """Partitioned like the asset (one result per video in the UI); ERROR checks block that video."""
    from ego_assets.defs.partitions import videos

    return [dg.AssetCheckSpec(c.name, asset=asset_key, description=c.description,
                              blocking=c.severity == ERROR, partitions_def=videos) for c in checks]
