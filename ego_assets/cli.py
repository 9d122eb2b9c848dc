"""The `ego-assets` command (docs/architecture.md §10)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = PROJECT_ROOT / "sample_data"


def _store(args):
    from ego_assets.lib.storage import Store

    if getattr(args, "home", None):
        os.environ["EGO_ASSETS_HOME"] = args.home
    return Store()


class _Bar:
    """The progress hook of the CLI (lib/progress): one tqdm bar on stderr per long step (frames decoded,
    hands tracked, ...) of a video, closed when the step is done; redrawn at most every 0.2 s on a
    terminal, every 5 s in a log."""

    def __init__(self):
        self.bars: dict = {}
        self.interval = 0.2 if sys.stderr.isatty() else 5.0

    def __call__(self, stage: str, key: str, done: int, total: int):
        from tqdm import tqdm

        bar = self.bars.get((stage, key))
        if bar is None:
            bar = self.bars[(stage, key)] = tqdm(total=total, desc=f"  {stage:<13} {key[:40]}", file=sys.stderr,
                                                 mininterval=self.interval, dynamic_ncols=True, leave=True)
        bar.total = total
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            del self.bars[(stage, key)]


def _quiet_dagster():
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("dagster", "dagster.builtin"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


def printable(text) -> str:
    """One line, whatever a file name holds: control characters (a newline in a name would split the
    one-line-per-video output) are written as escapes."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def one_line_error(e: BaseException) -> str:
    """The file and the reason of an error, on one line (the root cause of a chained error: e.g. a
    database error raised while writing to a read-only or full disk)."""
    root = e
    while root.__cause__ is not None or (root.__context__ is not None and not root.__suppress_context__):
        root = root.__cause__ or root.__context__
    for err in (root, e):
        if isinstance(err, OSError) and err.strerror:
            where = err.filename or ""
            return f"{where}: {err.strerror}" if where else err.strerror
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"{type(e).__name__}: {msg}"


def run_videos(paths: list[str], source: str, hints: dict, verbose: bool = False,
               run_config: dict | None = None) -> int:
    """Register every video under ``paths`` as partitions of ``source`` and materialize everything.
    ``verbose``: the steps' own output (stdout, stderr) is printed too (``EGO_ASSETS_SHOW_STEP_OUTPUT``)."""
    from ego_assets.defs import warm
    from ego_assets.lib import progress, settings
    from ego_assets.lib.parallel import default_workers
    from ego_assets.lib.sources import Source, SourcesError, contains_home, discover_file, list_files
    from ego_assets.lib.storage import Store, StorageError

    if verbose:
        os.environ[settings.var("SHOW_STEP_OUTPUT")] = "1"  # (the workers take this environment)
    store = Store()
    try:
        store.check_writable()
    except StorageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    found, bad_paths = [], []
    identities = store.identities()
    try:
        for p in paths:
            src = Source(name=source, uri=os.path.abspath(p), **hints)
            if not os.path.exists(p):
                bad_paths.append(f"{printable(p)}: no such file or folder")
                continue
            home = store.url(store.root)
            if contains_home(src, home):
                print(f"note: {printable(p)} contains the storage home {printable(home)}; the files "
                      "ego_assets wrote there are not sources", file=sys.stderr)
            for uri in list_files(src, exclude=[home]):
                try:
                    found.append(discover_file(src, uri, identities))
                except OSError as e:
                    bad_paths.append(f"{printable(uri)}: cannot read ({e.strerror or e})")
    except (SourcesError, ValueError) as e:
        print(f"error: {printable(e)}", file=sys.stderr)
        return EXIT_USAGE
    for msg in bad_paths:
        print(f"error: {msg}", file=sys.stderr)
    if not found:
        print("error: no video files found under " + ", ".join(printable(p) for p in paths), file=sys.stderr)
        return EXIT_USAGE
    store.save_identities(identities)
    by_key: dict[str, list] = {}
    rehinted, new = [], False
    for d in found:
        by_key.setdefault(d.partition_key, []).append(d)
        if store.register_video(d.partition_key, d.record()):
            new = True
        elif hints and len(by_key[d.partition_key]) == 1:
            # a rerun with camera hints: they replace the registered ones, and the calibration (whose
            # parameters include them) and everything downstream rerun
            if store.update_video(d.partition_key, hints=d.hints):
                rehinted.append(d.partition_key)
    keys = list(by_key)
    workers = default_workers(len(keys))
    if new and workers > 1 and warm.available():
        # a new video has work for the workers: the template they are forked from imports its modules
        # now, beside this process's own imports and the instance's set-up (defs/warm.py)
        warm.template(warm.PROJECT_MODULES, start=True)
    _quiet_dagster()
    from ego_assets.defs.execute import dataset_up_to_date, materialize_dataset, materialize_videos, use_local_instance
    from ego_assets.defs.partitions import videos
    from ego_assets.definitions import defs

    instance = use_local_instance(store)
    existing = set(instance.get_dynamic_partitions(videos.name))
    instance.add_dynamic_partitions(videos.name, [k for k in keys if k not in existing])
    print(f"{len(found)} file(s), {len(keys)} video(s) for source {source!r}; storage {store.home}",
          file=sys.stderr)
    if rehinted:
        print(f"camera hints changed for {len(rehinted)} registered video(s): calibrations and what "
              "depends on it rerun", file=sys.stderr)
    progress.set_hook(_Bar())
    t0 = time.perf_counter()
    try:
        # with the default configuration, a video already up to date gets no run (hinted ones rerun)
        status = materialize_videos(defs, instance, store, keys, run_config=run_config,
                                    workers=workers,
                                    skip_up_to_date=False if run_config else rehinted)
        ds = None
        if all(s.up_to_date for s in status.values()) and dataset_up_to_date(store):
            print("dataset: up to date", file=sys.stderr)
        elif any(s.status == "ok" for s in status.values()):
            ds = materialize_dataset(defs, instance)
    finally:
        progress.set_hook(None)
    n_bad = 0
    for k in keys:
        st = status[k]
        names = printable(", ".join(d.uri for d in by_key[k]))
        if st.status == "ok":
            print(f"ok      {k}  {names}")
        else:
            n_bad += 1
            print(f"FAILED  {k}  {names}: {st.asset}: {printable(st.error or st.status)}")
    print(f"{len(keys) - n_bad}/{len(keys)} video(s) ok in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    try:
        from ego_assets.defs.catalog_views import refreshed_by
        from ego_assets.lib import catalog

        if ds is None or not refreshed_by(ds):  # (the dataset's run refreshes it as its last step)
            catalog.refresh(store)  # every view, lineage and quality included, for the user's own client
    except Exception as e:  # noqa: BLE001 - the views are a convenience; the data is written
        print(f"note: the catalog file was not refreshed ({printable(str(e).splitlines()[0])})",
              file=sys.stderr)
    if ds is not None and not _dataset_line(store, ds):
        return EXIT_FAILED
    return EXIT_FAILED if n_bad else EXIT_OK


def _dataset_line(store, result) -> bool:
    """One line on the dataset (stderr: stdout carries one line per video). False if it failed."""
    from ego_assets.defs.dataset import dataset_outcome, dataset_roots

    ok, line = dataset_outcome(result)  # the actual reason when it failed, and a query that shows it
    where = ", ".join(dataset_roots(store).values())  # one dataset, or each shard's
    print(f"dataset: {line} in {where}" if ok else f"FAILED  lerobot_dataset: {line}", file=sys.stderr)
    return ok


def cmd_run(args) -> int:
    hints = {}
    if args.hfov_deg is not None:
        hints["hfov_deg"] = args.hfov_deg
    if args.intrinsics:
        try:
            vals = [float(x) for x in args.intrinsics.split(",")]
            assert len(vals) == 4
        except (ValueError, AssertionError):
            print("error: --intrinsics wants FX,FY,CX,CY", file=sys.stderr)
            return EXIT_USAGE
        hints["intrinsics"] = vals
    _store(args)
    from ego_assets.lib.keys import validate_source_name

    try:
        validate_source_name(args.source)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return run_videos(args.paths, args.source, hints, args.verbose)


def cmd_demo(args) -> int:
    store = _store(args)
    sample = SAMPLE_DIR / "egoloc_pour_water_rgb.mp4"
    if not sample.exists():
        print(f"error: the bundled sample {sample} is missing", file=sys.stderr)
        return EXIT_FAILED
    print(f"demo: running every asset on {sample.name} (storage: {store.home})", file=sys.stderr)
    rc = run_videos([str(sample)], "demo", {})
    _summary(store)
    return EXIT_OK if rc == EXIT_OK else EXIT_FAILED


def _summary(store) -> None:
    from ego_assets.lib import catalog

    con = catalog.connect(store, in_memory=True)
    try:
        rows = con.execute(
            "select v.partition_key, v.name, v.duration_s, v.n_frames, "
            "(select count(*) from frames f where f.partition_key = v.partition_key) as frames "
            "from videos v order by 1").fetchall()
        extra = {}
        for t in ("hand_tracks", "camera_poses", "segments", "captions", "episodes"):
            try:
                extra[t] = dict(con.execute(
                    f"select partition_key, count(*) from {t} group by 1").fetchall())
            except Exception:  # noqa: BLE001 - a stage not in this build
                pass
    finally:
        con.close()
    print("\nper-video summary:")
    for pk, name, dur, n, nf in rows:
        more = "  ".join(f"{t}={extra[t].get(pk, 0)}" for t in extra)
        print(f"  {pk}  {name}  {dur:.1f} s  {n} source frames  frames={nf}  {more}")
    from ego_assets.defs.dataset import DatasetConfig, dataset_roots

    for shard, root in (dataset_roots(store).items() if store.is_local else ()):
        ds, repo_id = Path(root), DatasetConfig().repo_id + (f"-{shard}" if shard else "")
        if (ds / "meta" / "info.json").exists():
            print(f"\nLeRobot dataset{f' (shard {shard})' if shard else ''}: {ds}")
            print(f"  load it: LeRobotDataset('{repo_id}', root='{ds}', video_backend='pyav')")
    print(f"catalog: {os.path.join(store.root, 'catalog.duckdb')}  "
          f"(try: ego-assets catalog \"select count(*) from frames\")")


def cmd_catalog(args) -> int:
    store = _store(args)
    from ego_assets.lib import catalog

    if args.refresh:  # rewrite <home>/catalog.duckdb (compacted, rooted at this home) for your own client
        has = catalog.refresh(store)
        print(f"catalog: {catalog.catalog_path(store)} ({sum(has.values())} tables with data)")
        if args.sql is None:
            return EXIT_OK
    if args.sql is None:  # an interactive prompt: one statement per line, until EOF
        rc, args.refresh = EXIT_OK, False
        for line in sys.stdin:
            if line.strip():
                args.sql = line
                rc = max(rc, cmd_catalog(args))
        return rc
    # read only: the catalog file is refreshed by runs, never by a query
    try:
        cols, rows = catalog.query(store, args.sql)
    except catalog.QueryRefused as e:
        print(f"error: refused: {e}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:  # noqa: BLE001
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "disabled by configuration" in msg:
            msg += " (the catalog command reads only the catalog's tables)"
        print(f"error: {printable(msg)}", file=sys.stderr)
        return EXIT_FAILED
    _print_rows(cols, rows, args.format)
    return EXIT_OK


def _print_rows(cols, rows, fmt):
    if fmt == "json":
        print(json.dumps([dict(zip(cols, r)) for r in rows], default=str, indent=1))
    elif fmt == "csv":
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(cols)
        w.writerows(rows)
    else:
        cells = [[printable(c) for c in cols]] + [["" if v is None else printable(v) for v in r] for r in rows]
        widths = [min(60, max(len(row[i]) for row in cells)) for i in range(len(cols))]
        for j, row in enumerate(cells):
            print("  ".join(v[:60].ljust(w) for v, w in zip(row, widths)))
            if j == 0:
                print("  ".join("-" * w for w in widths))
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def cmd_check(args) -> int:
    store = _store(args)
    from ego_assets.defs.checks import QualityWriter, evaluate_all

    quality = QualityWriter(store)
    report = evaluate_all(store, source=args.source, quality=quality)
    if quality.unwritable:
        print(f"note: check results not recorded in the quality table ({printable(quality.unwritable)})",
              file=sys.stderr)
    if not report:
        # an empty store passing a CI gate would hide a pipeline that produced nothing
        print("error: no registered videos to check" + (f" for source {args.source!r}" if args.source else ""),
              file=sys.stderr)
        return EXIT_FAILED
    n_err = n_warn = 0
    for pk, asset, o in report:
        if o.passed:
            continue
        if o.severity == "ERROR":
            n_err += 1
        else:
            n_warn += 1
        val = "" if o.value is None else f" (value {o.value:g})"
        print(f"{o.severity:<5}  {pk}  {asset}.{o.check_name}{val}: {printable(o.detail)}")
    n = len(report)
    n_videos = len({r[0] for r in report if r[1] != "lerobot_dataset"})
    ds = " and the dataset" if any(r[1] == "lerobot_dataset" for r in report) else ""
    print(f"{n} check result(s) on {n_videos} video(s){ds}: {n - n_err - n_warn} passed, "
          f"{n_err} ERROR, {n_warn} WARN")
    return EXIT_FAILED if n_err else EXIT_OK


def cmd_push(args) -> int:
    store = _store(args)
    from ego_assets.defs.dataset import dataset_roots
    from ego_assets.lib.lerobot.publish import PublishError, push

    # one dataset, or one Hub repo per shard: REPO_ID-<shard>
    for shard, root in dataset_roots(store).items():
        repo_id = f"{args.repo_id}-{shard}" if shard else args.repo_id
        try:
            with store.working_copy(root, readonly=True) as local:  # object stores: a download
                files = push(local, repo_id, dry_run=args.dry_run, private=args.private)
        except PublishError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
        total = sum(n for _, n in files)
        if args.dry_run:
            for name, n in files:
                print(f"{n:>12}  {name}")
            print(f"dry run: {len(files)} file(s), {total / 1e6:.1f} MB would be uploaded to "
                  f"{repo_id} (dataset repo)")
        else:
            print(f"uploaded {len(files)} file(s), {total / 1e6:.1f} MB to https://huggingface.co/datasets/"
                  f"{repo_id}")
    return EXIT_OK


def main(argv=None) -> int:
    try:
        rc = _main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        rc = 130
    except Exception as e:  # noqa: BLE001 - one line naming the file and the reason, not a traceback
        from ego_assets.lib import settings

        if settings.get("DEBUG"):
            raise
        print(f"error: {printable(one_line_error(e))} (EGO_ASSETS_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        rc = EXIT_FAILED
    if argv is None:
        # Called as the `ego-assets` command: leave without waiting on native threads (FFmpeg, DuckDB)
        # whose teardown at interpreter exit can abort the process after the work is done.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


def _main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="ego-assets", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run every asset on the bundled sample video")
    d.add_argument("--home")
    r = sub.add_parser("run", help="register and materialize the videos under PATHs")
    r.add_argument("paths", nargs="+", metavar="PATH")
    r.add_argument("--source", required=True)
    r.add_argument("--home")
    r.add_argument("--hfov-deg", type=float)
    r.add_argument("--intrinsics", help="FX,FY,CX,CY at the source resolution")
    r.add_argument("-v", "--verbose", action="store_true",
                   help="also print what the steps write to stdout and stderr (always in the runs' compute logs)")
    c = sub.add_parser("catalog", help="read-only SQL on the catalog")
    c.add_argument("sql", nargs="?", help="one SELECT; none: read statements from stdin, one a line")
    c.add_argument("--refresh", action="store_true",
                   help="(re)write the catalog file for this home (after a move, too) and print its path")
    c.add_argument("--home")
    c.add_argument("--format", choices=["table", "csv", "json"], default="table")
    k = sub.add_parser("check", help="evaluate the asset checks on what is materialized")
    k.add_argument("--home")
    k.add_argument("--source")
    u = sub.add_parser("push", help="upload the LeRobot dataset to the Hugging Face Hub (token: HF_TOKEN)")
    u.add_argument("repo_id", metavar="REPO_ID")
    u.add_argument("--home")
    u.add_argument("--dry-run", action="store_true", help="list what would be uploaded; no network")
    u.add_argument("--private", action="store_true")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_OK
    return {"demo": cmd_demo, "run": cmd_run, "catalog": cmd_catalog, "check": cmd_check,
            "push": cmd_push}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
