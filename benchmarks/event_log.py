"""Benchmark: Dagster's own cost per one-video run on the SQLite instance, with Dagster's event log storage
(a new SQLAlchemy engine per connection) against the project's (``ego_assets.defs.instance_storage``: one
engine per database), in the same process, alternating.

The job has the shape of ``per_video_job`` without its work: ten assets in a chain, partitioned by a
dynamic partition (``videos``'s kind), each with one blocking asset check and a few metadata entries; each
run materializes one partition in-process (as ``ego-assets run`` and its workers do). Printed: CPU seconds
per run (process time: the same on a busy machine), wall, events stored per run, and the ratio.

    python benchmarks/event_log.py [--runs 6] [--assets 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_defs(n_assets: int):
    import dagster as dg

    parts = dg.DynamicPartitionsDefinition(name="bench_videos")
    assets = []
    prev = None
    for i in range(n_assets):
        name = f"a{i:02d}"

        def body(context):
            return dg.MaterializeResult(
                metadata={"rows": 10, "seconds": 0.1, "note": f"{context.asset_key} {context.partition_key}"},
                check_results=[dg.AssetCheckResult(check_name="ok", passed=True,
                                                   severity=dg.AssetCheckSeverity.ERROR)])

        assets.append(dg.asset(name=name, partitions_def=parts, deps=[prev] if prev else [],
                               check_specs=[dg.AssetCheckSpec("ok", asset=name, blocking=True)])(body))
        prev = name
    job = dg.define_asset_job("bench_job", selection=[a.key for a in assets])
    return dg.Definitions(assets=assets, jobs=[job]), parts


def instance_for(home: Path, ours: bool):
    import dagster as dg

    home.mkdir(parents=True)
    yaml = "telemetry:\n  enabled: false\n"
    if ours:
        yaml += "event_log_storage:\n  module: ego_assets.defs.instance_storage\n  class: EventLogStorage\n"
    (home / "dagster.yaml").write_text(yaml)
    return dg.DagsterInstance.from_config(str(home))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--assets", type=int, default=10)
    args = ap.parse_args()
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("dagster").setLevel(logging.ERROR)
    defs, parts = make_defs(args.assets)
    job = defs.resolve_job_def("bench_job")
    tmp = Path(tempfile.mkdtemp(prefix="ego_evlog_"))
    kinds = {"dagster": False, "ego_assets": True}
    instances = {k: instance_for(tmp / k, ours) for k, ours in kinds.items()}
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    wall: dict[str, list[float]] = {k: [] for k in kinds}
    events: dict[str, int] = {}
    try:
        for r in range(args.runs + 1):  # run 0 of each warms imports and creates the index: not counted
            for k, inst in instances.items():
                pk = f"v{r:03d}"
                inst.add_dynamic_partitions(parts.name, [pk])
                c0, w0 = time.process_time(), time.perf_counter()
                res = job.execute_in_process(instance=inst, partition_key=pk, run_config=quiet)
                c1, w1 = time.process_time(), time.perf_counter()
                assert res.success
                if r:
                    cpu[k].append(c1 - c0)
                    wall[k].append(w1 - w0)
                events[k] = len(inst.all_logs(res.run_id))
        print(f"{args.runs} one-partition runs of {args.assets} assets with a blocking check each, per instance "
              f"(load average {os.getloadavg()[0]:.2f})\n")
        print(f"{'event log storage':<40} {'CPU s/run':>10} {'wall s/run':>11} {'events/run':>11}")
        for k in kinds:
            name = {"dagster": "Dagster's SqliteEventLogStorage", "ego_assets": "ego_assets EventLogStorage"}[k]
            print(f"{name:<40} {statistics.median(cpu[k]):>10.3f} {statistics.median(wall[k]):>11.3f} "
                  f"{events[k]:>11d}")
        print(f"\nratio (ego_assets / Dagster): CPU {statistics.median(cpu['ego_assets']) / statistics.median(cpu['dagster']):.2f}, "
              f"wall {statistics.median(wall['ego_assets']) / statistics.median(wall['dagster']):.2f}")
    finally:
        for inst in instances.values():
            inst.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
