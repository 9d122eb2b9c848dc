"""The per-partition loop every partitioned asset shares.

A run may carry many partitions (``context.partition_keys``). Each partition is processed on its own: a
failure (bad video, failed upstream, blocking check) is recorded in ``lineage`` and does not stop the
others. Dagster cannot mark single partitions of a ranged step as failed, so when some fail, the good ones
are reported as materializations one by one and the step then fails naming every bad file and reason;
``ego-assets run`` reruns the good ones downstream. Partitions whose inputs, code and parameters are
unchanged since their last success are skipped (resumable runs).
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import dagster as dg

from ego_assets.lib import catalog
from ego_assets.lib.quality import ERROR, CheckDef, CheckOutcome
from ego_assets.lib.storage import Store


@dataclass
class PartitionOutput:
    """What an asset body returns for one partition."""

    metadata: dict = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)  # tables written (for the catalog and data version)


class UpstreamNotReady(RuntimeError):
    pass


def _now() -> datetime:
    return datetime.now(timezone.utc)


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


def _data_version(store: Store, asset: str, pk: str, code_version: str, params: dict,
                  upstream: dict, tables: list[str]) -> str:
    h = hashlib.sha256(json.dumps([code_version, params, upstream], sort_keys=True).encode())
    for t in sorted(tables):
        h.update(store.read_bytes(store.table_path(t, pk)))
    return h.hexdigest()[:16]


def run_partitions(
    context: dg.AssetExecutionContext,
    store: Store,
    asset: str,
    body: Callable[[str], PartitionOutput],
    *,
    code_version: str,
    params: dict | Callable[[str], dict],  # or per video: params(pk) (e.g. its camera hints)
    upstream: list[str],
    checks: list[CheckDef] = (),
    force: bool = False,
) -> dg.MaterializeResult:
    keys = list(context.partition_keys) if context.has_partition_key_range or context.has_partition_key \
        else []
    ok_meta: dict[str, dict] = {}
    versions: dict[str, str] = {}
    failures: dict[str, str] = {}
    blocked: dict[str, list[CheckOutcome]] = {}
    outcomes: dict[str, list[CheckOutcome]] = {}
    t_all = time.perf_counter()
    for n, pk in enumerate(keys, 1):
        started = _now()
        up: dict = {}
        p_pk: dict = {}
        try:
            p_pk = params(pk) if callable(params) else params
            up = upstream_versions(store, upstream, pk)
            prev = latest_ok(store, asset, pk)
            if (not force and prev is not None and prev["status"] == "ok"
                    and prev["code_version"] == code_version
                    and json.loads(prev["upstream"] or "{}") == up
                    and json.loads(prev["params"] or "{}") == json.loads(json.dumps(p_pk))
                    and store.committed(asset, pk)):
                context.log.info(f"[{n}/{len(keys)}] {pk}: up to date (data version "
                                 f"{prev['data_version']}), skipped")
                ok_meta[pk] = {"skipped": "up to date", "data_version": prev["data_version"]}
                versions[pk] = prev["data_version"]
                # the checks still report on this run (cheap: they read the stored tables)
                outcomes[pk] = [c.evaluate(store, pk) for c in checks]
                continue
            context.log.info(f"[{n}/{len(keys)}] {pk}: {asset} started")
            t0 = time.perf_counter()
            out = body(pk)
            for t in out.tables:
                catalog.ensure_view(store, t)
            dv = _data_version(store, asset, pk, code_version, p_pk, up, out.tables)
            results = [c.evaluate(store, pk) for c in checks]
            store.write_quality(asset, pk, [r.row(asset) for r in results])
            outcomes[pk] = results
            bad = [r for r in results if not r.passed and r.severity == ERROR]
            status = "blocked" if bad else "ok"
            err = "; ".join(f"check {r.check_name} failed: {r.detail}" for r in bad) or None
            store.write_lineage(dict(partition_key=pk, asset=asset, run_id=context.run.run_id,
                                     code_version=code_version, data_version=dv,
                                     upstream=json.dumps(up, sort_keys=True),
                                     params=json.dumps(p_pk, sort_keys=True), status=status, error=err,
                                     started_at=started, finished_at=_now()))
            meta = dict(out.metadata)
            meta["seconds"] = round(time.perf_counter() - t0, 3)
            meta["data_version"] = dv
            if bad:
                blocked[pk] = bad
                failures[pk] = err
                context.log.error(f"[{n}/{len(keys)}] {pk}: {asset} blocked: {err}")
            else:
                context.log.info(f"[{n}/{len(keys)}] {pk}: {asset} done in {meta['seconds']} s")
            ok_meta[pk] = meta
            versions[pk] = dv
        except Exception as e:  # noqa: BLE001 - one video's failure must not stop the others
            msg = _describe(store, pk, e)
            failures[pk] = msg
            status = "skipped" if isinstance(e, UpstreamNotReady) else "failed"
            store.write_lineage(dict(partition_key=pk, asset=asset, run_id=context.run.run_id,
                                     code_version=code_version, data_version=None,
                                     upstream=json.dumps(up, sort_keys=True),
                                     params=json.dumps(p_pk, sort_keys=True), status=status,
                                     error=msg, started_at=started, finished_at=_now()))
            context.log.error(f"[{n}/{len(keys)}] {pk}: {asset} {status}: {msg}")
            if not isinstance(e, (ValueError, UpstreamNotReady, FileNotFoundError)):
                context.log.debug(traceback.format_exc())

    check_results = _check_results(context, outcomes)
    summary = {"partitions": len(keys), "failed": len(failures),
               "total_seconds": round(time.perf_counter() - t_all, 3)}
    if failures:
        for pk, meta in ok_meta.items():
            if pk not in blocked:
                context.log_event(dg.AssetMaterialization(
                    asset_key=context.asset_key, partition=pk, metadata=_clean(meta)))
        lines = "\n".join(f"- {pk} ({store.video_uri(pk)}): {msg}" for pk, msg in failures.items())
        raise dg.Failure(
            description=(f"{asset}: {len(failures)} of {len(keys)} video(s) failed:\n{lines}\n"
                         "Fix or remove these files; the other videos of this run are materialized. "
                         "Rerun the downstream assets for them (ego-assets run does this for you)."),
            metadata={"failed": dg.MetadataValue.json(failures), **summary},
            allow_retries=False,
        )
    if len(keys) == 1:
        meta = ok_meta[keys[0]]
        return dg.MaterializeResult(metadata=_clean(meta), data_version=dg.DataVersion(versions[keys[0]]),
                                    check_results=check_results)
    # A range run: each partition's materialization event carries its own metadata (preview, counts,
    # data version), as a one-partition run would; the run's summary is added to every event.
    for pk, meta in ok_meta.items():
        context.add_asset_metadata(_clean(meta), partition_key=pk)
    return dg.MaterializeResult(metadata={f"run_{k}": v for k, v in summary.items()},
                                check_results=check_results)


def progress_logger(context, asset: str, pk: str, unit: str = "frames", every_s: float = 5.0):
    """A ``progress(done, total)`` callback for lib functions: logs through Dagster's logger every few
    seconds (with the rate) and feeds the CLI's progress bar."""
    from ego_assets.lib import progress

    state = {"last": 0.0, "t0": time.monotonic()}

    def cb(done: int, total: int) -> None:
        progress.report(asset, pk, done, total)
        now = time.monotonic()
        if now - state["last"] >= every_s or done >= total:
            state["last"] = now
            rate = done / max(now - state["t0"], 1e-6)
            context.log.info(f"{pk}: {asset} {done}/{total} {unit} ({100 * done / max(total, 1):.0f}%, "
                             f"{rate:.1f} {unit}/s)")

    return cb


def _check_results(context, outcomes: dict[str, list[CheckOutcome]]) -> list[dg.AssetCheckResult]:
    """One result per check for the run: passed when it passed on every partition of the run."""
    by_check: dict[str, list[tuple[str, CheckOutcome]]] = {}
    for pk, rs in outcomes.items():
        for r in rs:
            by_check.setdefault(r.check_name, []).append((pk, r))
    out = []
    spec_names = {k.name for k in context.assets_def.check_keys} if context.assets_def else set()
    for name, items in by_check.items():
        if name not in spec_names:
            continue
        failed = [(pk, r) for pk, r in items if not r.passed]
        sev = items[0][1].severity
        meta = {pk: f"{'ok' if r.passed else 'FAILED'}: {r.detail}" for pk, r in items}
        if len(items) == 1:
            meta["value"] = items[0][1].value if items[0][1].value is not None else float("nan")
        out.append(dg.AssetCheckResult(
            check_name=name, passed=not failed,
            severity=dg.AssetCheckSeverity.ERROR if sev == ERROR else dg.AssetCheckSeverity.WARN,
            metadata=meta))
    return out


def _describe(store: Store, pk: str, e: Exception) -> str:
    msg = str(e) or type(e).__name__
    if isinstance(e, (ValueError, UpstreamNotReady, FileNotFoundError)):
        return msg
    return f"{type(e).__name__}: {msg}"


def _clean(meta: dict) -> dict:
    out = {}
    for k, v in meta.items():
        if isinstance(v, dg.MetadataValue) or isinstance(v, (int, float, str, bool)):
            out[k] = v
        elif isinstance(v, (dict, list)):
            out[k] = dg.MetadataValue.json(v)
        elif v is None:
            continue
        else:
            out[k] = str(v)
    return out


def check_specs(asset_key, checks: list[CheckDef]) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(c.name, asset=asset_key, description=c.description,
                              blocking=c.severity == ERROR) for c in checks]
