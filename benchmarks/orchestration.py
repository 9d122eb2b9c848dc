"""Benchmark: the per-video step's time outside the asset bodies (issue 17.9, issue 20's "orchestration
<= 10 % of wall"), on the bundled clip.

1. Runs every per-video asset of ``sample_data/egoloc_pour_water_rgb.mp4`` in-process (one run, a fresh
   home, an ephemeral Dagster instance) and prints per asset: the step's wall (Dagster's step start to
   step success), the body's time, the time of ``run_partitions`` minus the body (the runner: skip
   rule, data version, checks, quality and lineage rows) and the rest of the step (Dagster's own
   events). ``run_partitions`` is timed by wrapping it before the definitions load, so the same script
   measures an older checkout too (``PYTHONPATH=<checkout> python benchmarks/orchestration.py``).
2. On the partition just written, in the same process, times the data path of the runner after a body
   as it was (each table read back whole to hash the data version, each check reading its tables from
   the store again) against as it is (the digests taken while writing, every check on the tables in
   memory): median of 5 repetitions, and their ratio.

    python benchmarks/orchestration.py [--keep]

Figures on a shared machine are noisy: the machine's load average is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "sample_data" / "egoloc_pour_water_rgb.mp4"


TIMES: dict[str, tuple[float, float]] = {}  # asset -> (run_partitions s, body s)


def _time_run_partitions() -> None:
    """Wrap ``runner.run_partitions`` (before any asset module imports it) to time it and its body."""
    import ego_assets.defs.runner as runner

    orig = runner.run_partitions

    def timed(context, store, body, **kw):
        spent = [0.0]

        def timed_body(pk):
            t = time.perf_counter()
            try:
                return body(pk)
            finally:
                spent[0] += time.perf_counter() - t

        t = time.perf_counter()
        try:
            return orig(context, store, timed_body, **kw)
        finally:
            TIMES[context.asset_key.to_user_string()] = (time.perf_counter() - t, spent[0])

    runner.run_partitions = timed


def run_pipeline(home: str):
    import dagster as dg

    from ego_assets.definitions import defs
    from ego_assets.defs.execute import materialize_videos
    from ego_assets.defs.partitions import videos
    from ego_assets.lib.sources import Source, discover_file
    from ego_assets.lib.storage import Store

    store = Store(home)
    d = discover_file(Source(name="bench", uri=str(CLIP.parent)), str(CLIP))
    store.register_video(d.partition_key, d.record())
    pk = d.partition_key
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(videos.name, [pk])
    t0 = time.perf_counter()
    status = materialize_videos(defs, instance, store, [pk])
    wall = time.perf_counter() - t0
    assert status[pk].status == "ok", status[pk]
    return store, pk, instance, wall


def step_rows(instance, pk: str) -> list[tuple]:
    from ego_assets.definitions import defs
    from ego_assets.defs.execute import per_video_assets

    (run,) = instance.get_runs()
    starts, ends = {}, {}
    for rec in instance.all_logs(run.run_id):
        ev = rec.dagster_event
        if ev is None or ev.step_key is None:
            continue
        if ev.event_type_value == "STEP_START":
            starts[ev.step_key] = rec.timestamp
        elif ev.event_type_value == "STEP_SUCCESS":
            ends[ev.step_key] = rec.timestamp
    rows = []
    for asset in per_video_assets(defs):
        total, body = TIMES[asset]
        wall = ends[asset] - starts[asset]
        rows.append((asset, wall, body, total - body, wall - total))
    return rows


def data_path(store, pk: str, reps: int = 5) -> list[tuple]:
    """(asset, old s, new s) for each per-video asset with checks."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ego_assets.definitions import ASSET_MODULES
    from ego_assets.lib import schemas

    try:
        from ego_assets.lib.quality import CheckInput
    except ImportError:  # an older checkout: its checks read the store (fn(store, pk))
        return []

    checks: dict[str, list] = {}
    for m in ASSET_MODULES:
        for c in getattr(m, "CHECKS", []):
            checks.setdefault(c.asset, []).append(c)
    out = []
    for asset, cs in checks.items():
        tables = [t for t, spec in schemas.TABLES.items() if spec.asset == asset and store.has_table(t, pk)]
        if not tables or not store.committed(asset, pk):
            continue
        produced = {t: store.read_table(t, pk) for t in tables}  # what the body has just written
        buffers = {}
        for t, tbl in produced.items():
            sink = pa.BufferOutputStream()
            pq.write_table(tbl, sink, compression="zstd")
            buffers[t] = sink.getvalue()

        def old():
            h = hashlib.sha256()
            for t in sorted(tables):
                h.update(store.read_bytes(store.table_path(t, pk)))
            return [c.evaluate(CheckInput(store, pk, asset)) for c in cs]  # each check reads again

        def new():
            {t: hashlib.sha256(b).hexdigest() for t, b in buffers.items()}  # hashed as written
            inp = CheckInput(store, pk, asset, produced=produced)
            return [c.evaluate(inp) for c in cs]

        assert [o.passed for o in old()] == [o.passed for o in new()]
        t_old, t_new = [], []
        for _ in range(reps):
            t = time.perf_counter()
            old()
            t_old.append(time.perf_counter() - t)
            t = time.perf_counter()
            new()
            t_new.append(time.perf_counter() - t)
        out.append((asset, statistics.median(t_old), statistics.median(t_new)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the home folder")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ego_orch_")
    home = os.path.join(tmp, "home")
    os.environ["EGO_ASSETS_HOME"] = home
    _time_run_partitions()
    import ego_assets

    print(f"code: {Path(ego_assets.__file__).parent}")
    print(f"load average {os.getloadavg()[0]:.2f}; clip {CLIP.name}")
    store, pk, instance, wall = run_pipeline(home)
    rows = step_rows(instance, pk)
    print(f"\nper-video run: {wall:.1f} s wall (one run, in-process)\n")
    print(f"{'asset':16s} {'step s':>8s} {'body s':>8s} {'runner s':>9s} {'dagster s':>10s} {'outside %':>10s}")
    tot = [0.0, 0.0, 0.0, 0.0]
    for asset, w, body, over, rest in rows:
        print(f"{asset:16s} {w:8.2f} {body:8.2f} {over:9.3f} {rest:10.3f} {100 * (w - body) / w:9.1f}%")
        for i, v in enumerate((w, body, over, rest)):
            tot[i] += v
    print(f"{'all steps':16s} {tot[0]:8.2f} {tot[1]:8.2f} {tot[2]:9.3f} {tot[3]:10.3f} "
          f"{100 * (tot[0] - tot[1]) / tot[0]:9.1f}%")
    paths = data_path(store, pk)
    if not paths:
        print("\n(this checkout's checks read the store: no data-path comparison)")
    else:
        print("\nthe runner's data path after a body, same partition, same process (median of 5):\n")
        print(f"{'asset':16s} {'read back s':>12s} {'from memory s':>14s} {'ratio':>7s}")
        so = sn = 0.0
        for asset, o, n in paths:
            so, sn = so + o, sn + n
            print(f"{asset:16s} {o:12.4f} {n:14.4f} {o / max(n, 1e-9):6.1f}x")
        print(f"{'all':16s} {so:12.4f} {sn:14.4f} {so / max(sn, 1e-9):6.1f}x")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"\nhome kept: {home}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
