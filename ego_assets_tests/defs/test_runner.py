"""The per-video step (defs/runner.py) on small assets: a blocking check stops its own video only and is
recorded by Dagster per partition; a stale failure of another configuration never speaks for a video."""

import json
import os
import subprocess
import sys
import time

import dagster as dg
import pytest

from ego_assets.defs.execute import materialize_videos
from ego_assets.defs.partitions import videos
from ego_assets.defs.per_video import PerVideoConfig, Step, per_video_asset
from ego_assets.defs.runner import PartitionOutput, declared
from ego_assets.defs.settings import EgoStorage
from ego_assets.lib.quality import ERROR, WARN, CheckDef
from ego_assets.lib.storage import Store


def _value(store, pk):  # what toy_a "measures": 7 for the video named bad, 1 otherwise
    return 7.0 if pk.endswith("bad") else 1.0


CHECKS = [
    CheckDef("small_enough", "toy_a", ERROR, "value below 5", lambda inp: (
        _value(inp.store, inp.pk) < 5, _value(inp.store, inp.pk), f"value {_value(inp.store, inp.pk):g} (limit 5)")),
    CheckDef("tiny", "toy_a", WARN, "value below 0.5", lambda inp: (
        _value(inp.store, inp.pk) < 0.5, _value(inp.store, inp.pk), f"value {_value(inp.store, inp.pk):g}")),
]


class ToyConfig(PerVideoConfig):
    mode: str = "default"
    sleep_s: float = 0.0


def _defs(home):
    @per_video_asset(group="toy", code_version="3", kinds={"python"}, checks=CHECKS, config=ToyConfig,
                     params=lambda step: {"mode": step.config.mode}, description="toy a")
    def toy_a(step: Step) -> PartitionOutput:
        if step.config.mode == "unreachable":
            raise ConnectionError("http://vlm:8000 unreachable")
        with open(os.path.join(step.store.root, "toy_a_calls.txt"), "a") as f:
            f.write(f"{os.getpid()} {step.pk}\n")
        time.sleep(step.config.sleep_s)
        with step.write() as w:
            open(w.path("value.txt"), "w").write(str(_value(step.store, step.pk)))
        return PartitionOutput(metadata={"value": _value(step.store, step.pk)})

    @per_video_asset(group="toy", code_version="1", deps=[toy_a], kinds={"python"}, description="toy b")
    def toy_b(step: Step) -> PartitionOutput:
        assert declared(step.context) == ("toy_b", "1", ["toy_a"])
        with step.write():
            pass
        return PartitionOutput()

    job = dg.define_asset_job("per_video_job", selection=[toy_a, toy_b])
    return dg.Definitions(assets=[toy_a, toy_b], jobs=[job], resources={"ego": EgoStorage(home=str(home))},
                          executor=dg.in_process_executor)


def _check_records(instance, check: str, pk: str):
    recs = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("toy_a"), check), limit=20)
    return [r.event.dagster_event.event_specific_data for r in recs if r.partition == pk]


def test_a_blocking_check_stops_its_own_video_and_dagster_records_it_per_video(tmp_path):
    store = Store(str(tmp_path / "home"))
    defs = _defs(tmp_path / "home")
    keys = ["cam-one", "cam-bad", "cam-two"]
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(videos.name, keys)
        status = materialize_videos(defs, instance, store, keys)
        assert {k: s.status for k, s in status.items()} == {"cam-one": "ok", "cam-bad": "failed",
                                                            "cam-two": "ok"}
        assert status["cam-bad"].asset == "toy_a"
        assert status["cam-bad"].error == "check small_enough failed: value 7 (limit 5)"
        # Dagster's view: the blocked video's downstream did not run; the others went through
        a = instance.get_status_by_partition(dg.AssetKey("toy_a"), keys, videos)
        b = instance.get_status_by_partition(dg.AssetKey("toy_b"), keys, videos)
        assert {k: v.value for k, v in b.items()} == {"cam-one": "MATERIALIZED", "cam-bad": "FAILED",
                                                      "cam-two": "MATERIALIZED"}
        assert a["cam-bad"].value == "MATERIALIZED"  # written, then blocked by its check
        # one result per video and check, with the value and the reason
        (bad,) = _check_records(instance, "small_enough", "cam-bad")
        assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR and bad.blocking
        assert bad.metadata["value"].value == 7.0
        assert bad.metadata["reason"].value == "value 7 (limit 5)"
        (ok,) = _check_records(instance, "small_enough", "cam-one")
        assert ok.passed and ok.metadata["value"].value == 1.0
        (warn,) = _check_records(instance, "tiny", "cam-two")
        assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
        assert store.lineage("toy_a", "cam-bad")[-1]["status"] == "blocked"


def test_a_stale_failure_of_another_configuration_does_not_drop_a_good_video(tmp_path):
    """Issue 16.3: ok with the default, failed against an unreachable endpoint, back to the default:
    the video is ok again (the attempt with the current configuration is its latest) and keeps its
    data version; before the fix the failed row stayed last and the video was FAILED forever."""
    store = Store(str(tmp_path / "home"))
    defs = _defs(tmp_path / "home")
    pk = "cam-one"

    def run(mode):
        cfg = {"ops": {"toy_a": {"config": {"mode": mode}}}}
        return materialize_videos(defs, instance, store, [pk], run_config=cfg)[pk]

    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(videos.name, [pk])
        assert run("default").status == "ok"
        dv = store.lineage("toy_a", pk)[-1]["data_version"]
        st = run("unreachable")
        assert (st.status, st.asset) == ("failed", "toy_a") and "unreachable" in st.error
        assert store.lineage("toy_a", pk)[-1]["status"] == "failed"
        # the failed attempt's checks say why, per video, in Dagster
        assert "unreachable" in _check_records(instance, "small_enough", pk)[0].metadata["reason"].value
        st = run("default")
        assert st.status == "ok", st
        last = store.lineage("toy_a", pk)[-1]
        assert (last["status"], last["data_version"]) == ("ok", dv)  # reused, not recomputed
        mat = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("toy_a"), asset_partitions=[pk]), limit=1
        ).records[0].asset_materialization
        assert mat.metadata["value"].value == 1.0 and "reused" in mat.metadata  # previews kept
        assert mat.tags["dagster/data_version"] == dv


def run_toy(home: str, pk: str, sleep_s: float) -> None:
    """One `ego-assets run`-like process: its own Dagster instance, the shared storage home."""
    store = Store(home)
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(videos.name, [pk])
        st = materialize_videos(_defs(home), instance, store, [pk],
                                run_config={"ops": {"toy_a": {"config": {"sleep_s": sleep_s}}}})
    print(json.dumps({k: v.status for k, v in st.items()}))


@pytest.mark.slow
def test_two_concurrent_runs_of_a_video_compute_it_once(tmp_path):
    """Issue 16.7: two runs of the same video at once (two CLIs, or the CLI and the UI): the second
    waits for the first's write of each asset, then finds it up to date; both end ok, nothing is
    computed twice and nothing trips over the other's staging files."""
    home = str(tmp_path / "home")
    code = f"from ego_assets_tests.defs.test_runner import run_toy; run_toy({home!r}, 'cam-one', 3.0)"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert json.loads(out.strip().splitlines()[-1]) == {"cam-one": "ok"}
    calls = open(os.path.join(home, "toy_a_calls.txt")).read().splitlines()
    assert len(calls) == 1, calls  # computed once; the other run reused it
    rows = Store(home).lineage("toy_a", "cam-one")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[0]["data_version"] == rows[1]["data_version"]


@pytest.mark.slow
def test_a_run_launched_over_a_range_still_reports_each_video(tmp_path):
    """A run over several videos (launched by hand with range tags): each partition gets its own check
    results and, when one video fails, each good one its own materialization and data version; the
    step fails naming the bad video and its reason."""
    store = Store(str(tmp_path / "home"))
    defs = _defs(tmp_path / "home")
    keys = ["cam-one", "cam-bad", "cam-two"]
    job = defs.resolve_job_def("per_video_job")
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(videos.name, keys)
        r = job.execute_in_process(instance=instance, raise_on_error=False, asset_selection=[dg.AssetKey("toy_a")],
                                   tags={"dagster/asset_partition_range_start": keys[0],
                                         "dagster/asset_partition_range_end": keys[-1]})
        assert not r.success
        (failure,) = [e for e in r.all_events if e.event_type_value == "STEP_FAILURE"]
        assert failure.step_failure_data.user_failure_data.metadata["failed"].value == {
            "cam-bad": "check small_enough failed: value 7 (limit 5)"}
        for k in keys:
            (res,) = _check_records(instance, "small_enough", k)
            assert res.passed == (k != "cam-bad") and res.metadata["value"].value == _value(store, k)
        for k in ("cam-one", "cam-two"):
            mat = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("toy_a"), asset_partitions=[k]), limit=1
            ).records[0].asset_materialization
            assert mat.tags["dagster/data_version"] == store.lineage("toy_a", k)[-1]["data_version"]
        st = instance.get_status_by_partition(dg.AssetKey("toy_a"), keys, videos)
        assert {k: v.value for k, v in st.items()} == {"cam-one": "MATERIALIZED", "cam-bad": "FAILED",
                                                       "cam-two": "MATERIALIZED"}


@pytest.mark.slow
def test_videos_up_to_date_get_no_run_and_anything_else_does(tmp_path):
    """The CLI's pre-check (skip_up_to_date): a video whose every asset a run would skip gets no run;
    a missing partition, a run with op configuration, or a video named to rerun (changed hints) do."""
    home = tmp_path / "home"
    store = Store(str(home))
    defs = _defs(home)
    keys = ["cam-one", "cam-two"]
    calls = lambda: open(os.path.join(home, "toy_a_calls.txt")).read().splitlines()  # noqa: E731
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(videos.name, keys)
        first = materialize_videos(defs, instance, store, keys, skip_up_to_date=True)
        assert [s.up_to_date for s in first.values()] == [False, False] and len(calls()) == 2
        n_runs = len(instance.get_runs())
        again = materialize_videos(defs, instance, store, keys, skip_up_to_date=True)
        assert {k: (s.status, s.up_to_date) for k, s in again.items()} == {k: ("ok", True) for k in keys}
        assert again["cam-one"].run_id == first["cam-one"].run_id  # the run that made it
        assert len(instance.get_runs()) == n_runs and len(calls()) == 2  # no run, nothing computed
        # a video named to rerun gets its run (its steps skip: nothing computed again)
        named = materialize_videos(defs, instance, store, keys, skip_up_to_date=["cam-two"])
        assert (named["cam-one"].up_to_date, named["cam-two"].up_to_date) == (True, False)
        assert len(instance.get_runs()) == n_runs + 1 and len(calls()) == 2
        # a partition removed from storage: its video runs and toy_b is written again
        store.delete_partition("toy_b", "cam-one")
        st = materialize_videos(defs, instance, store, ["cam-one"], skip_up_to_date=True)["cam-one"]
        assert (st.status, st.up_to_date) == ("ok", False) and store.committed("toy_b", "cam-one")
        # last made with op configuration (another mode): the default must run to be sure
        cfg = {"ops": {"toy_a": {"config": {"mode": "other"}}}}
        materialize_videos(defs, instance, store, ["cam-two"], run_config=cfg)
        assert len(calls()) == 3
        st = materialize_videos(defs, instance, store, ["cam-two"], skip_up_to_date=True)["cam-two"]
        assert not st.up_to_date and len(calls()) == 4  # params differ: recomputed with the default
        st = materialize_videos(defs, instance, store, ["cam-two"], skip_up_to_date=True)["cam-two"]
        assert st.up_to_date and len(calls()) == 4
        # a video its blocking check stopped, on unchanged inputs: failed there again, with its reason, no run
        instance.add_dynamic_partitions(videos.name, ["cam-bad"])
        first = materialize_videos(defs, instance, store, ["cam-bad"], skip_up_to_date=True)["cam-bad"]
        n_runs = len(instance.get_runs())
        st = materialize_videos(defs, instance, store, ["cam-bad"], skip_up_to_date=True)["cam-bad"]
        assert (st.status, st.asset, st.error, st.up_to_date) == (
            "failed", "toy_a", "check small_enough failed: value 7 (limit 5)", True)
        assert (first.status, first.asset, first.error) == (st.status, st.asset, st.error)
        assert len(instance.get_runs()) == n_runs


def test_default_workers_one_per_core_within_memory(monkeypatch):
    from ego_assets.lib import parallel

    monkeypatch.delenv("EGO_ASSETS_WORKERS", raising=False)
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(parallel, "_available_memory_gib", lambda: 64.0)
    assert parallel.default_workers(16) == 4 and parallel.default_workers(3) == 3
    monkeypatch.setattr(parallel, "_available_memory_gib", lambda: 3.2)  # room for two workers
    assert parallel.default_workers(16) == 2
    monkeypatch.setattr(parallel, "_available_memory_gib", lambda: 0.5)
    assert parallel.default_workers(16) == 1
    monkeypatch.setenv("EGO_ASSETS_WORKERS", "3")  # the user's choice stands
    assert parallel.default_workers(16) == 3 and parallel.default_workers(2) == 2


def test_the_ui_instance_runs_as_many_videos_at_once_as_the_cli(tmp_path, monkeypatch):
    """The instance's run queue (what a UI backfill or a sensor launches at once) takes the CLI's worker
    count for this machine, from the total memory (the file must not change from one call to the next)."""
    import dagster as dg

    from ego_assets.defs import execute
    from ego_assets.lib import parallel

    monkeypatch.delenv("EGO_ASSETS_WORKERS", raising=False)
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(parallel, "_available_memory_gib", lambda: 2.0)  # what is free now does not count
    monkeypatch.setattr(parallel, "total_memory_gib", lambda: 7.6)  # room for five workers
    dh = tmp_path / "dagster"
    execute.install_instance_yaml(dh)
    with dg.DagsterInstance.from_config(str(dh)) as instance:
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 5
    mtime = (dh / "dagster.yaml").stat().st_mtime_ns
    execute.install_instance_yaml(dh)
    assert (dh / "dagster.yaml").stat().st_mtime_ns == mtime  # unchanged: not written again
    monkeypatch.setenv("EGO_ASSETS_WORKERS", "3")
    execute.install_instance_yaml(dh)
    with dg.DagsterInstance.from_config(str(dh)) as instance:
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 3
        # the rest is the project's file: the run launcher, the event log, the per-video limit
        assert type(instance.event_log_storage).__name__ == "EventLogStorage"
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert any(lim["key"] == "dagster/partition" and lim["limit"] == 1 for lim in limits)


def test_a_declared_asset_is_checked_on_what_it_just_wrote_and_hashed_as_written(tmp_path, monkeypatch):
    """per_video_asset (the one way to declare a per-video asset): the body writes through
    ``step.write()``; its checks get the very tables it wrote (nothing is read back from the store),
    and the data version is built from the SHA-256 of the files as committed; an upstream table is
    read once for all the checks of a video."""
    import hashlib

    from ego_assets.defs.per_video import PerVideoConfig, Step, config_from, per_video_asset
    from ego_assets.defs.runner import data_version
    from ego_assets.lib import schemas
    from ego_assets.lib.clips import ClipParams
    from ego_assets.lib.quality import CheckInput

    seen: dict = {}

    def _n_clips(inp: CheckInput):
        seen.setdefault("tables", []).append(inp.table("clips"))
        n = inp.table("clips").num_rows
        return n == 3, float(n), f"{n} clips"

    def _window(inp: CheckInput):
        n = inp.table("clips").num_rows
        return inp.attempt_params()["window_s"] == 5.0, float(n), "window from the attempt's params"

    checks = [CheckDef("three_clips", "clips", ERROR, "three rows", _n_clips),
              CheckDef("window_param", "clips", WARN, "params reach the checks", _window)]
    cfg_cls = config_from(ClipParams, name="ToyClipsConfig")
    assert issubclass(cfg_cls, PerVideoConfig) and cfg_cls().window_s == ClipParams.window_s  # lib default

    @per_video_asset(group="toy", code_version="7", kinds={"parquet"}, checks=checks, config=cfg_cls,
                     params=lambda step: {"window_s": step.config.window_s}, description="toy clips")
    def clips(step: Step) -> PartitionOutput:
        rows = {"clip_index": [0, 1, 2], "start_s": [0.0, 1.0, 2.0], "end_s": [1.0, 2.0, 3.0],
                "uri": ["a", "b", "c"], "file_start_s": [0.0, 1.0, 2.0], "n_frames": [10, 10, 10]}
        with step.write() as w:
            seen["written"] = schemas.conform("clips", rows, step.pk)
            w.write_table("clips", seen["written"])
        return PartitionOutput(metadata={"n": 3})

    reads: list = []
    orig = Store.read_table

    def counting(self, table, pk, columns=None):
        reads.append(table)
        return orig(self, table, pk, columns)

    monkeypatch.setattr(Store, "read_table", counting)
    home = tmp_path / "home"
    store = Store(str(home))
    defs = dg.Definitions(assets=[clips], jobs=[dg.define_asset_job("per_video_job", selection=[clips])],
                          resources={"ego": EgoStorage(home=str(home))}, executor=dg.in_process_executor)
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(videos.name, ["cam-one"])
        cfg = {"ops": {"clips": {"config": {"window_s": 5.0}}}}
        st = materialize_videos(defs, instance, store, ["cam-one"], run_config=cfg)["cam-one"]
        assert st.status == "ok", st
        assert reads == []  # neither the data version nor the checks read the table back
        assert all(t is seen["written"] for t in seen["tables"])
        for name in ("three_clips", "window_param"):  # Dagster's check results of this video
            (rec,) = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey("clips"), name), limit=5)
            assert rec.event.dagster_event.event_specific_data.passed, name
        lin = store.lineage("clips", "cam-one")[-1]
        digest = hashlib.sha256(store.read_bytes(store.table_path("clips", "cam-one"))).hexdigest()
        assert lin["data_version"] == data_version("7", {"window_s": 5.0}, {}, {"clips": digest})
        # the checks as `ego-assets check` runs them (from the store): each table read once per video
        reads.clear()
        inp = CheckInput(store, "cam-one", "clips")
        outcomes = [c.evaluate(inp) for c in checks]
        assert [o.passed for o in outcomes] == [True, True] and reads == ["clips"]


def test_worker_progress_forwarded_at_most_every_interval_and_always_the_last():
    """A worker's per-frame reports reach the CLI's process at most every 0.5 s per step, and a step's
    last report always (the bar closes on it)."""
    from ego_assets.defs import execute

    class Q(list):
        put = list.append

    q, t = Q(), [100.0]
    fwd = execute._Forward(q, every_s=0.5)
    fwd.clock = lambda: t[0]
    for i in range(1, 301):  # 300 frames at 100 frames/s: 3 s
        fwd("hand_tracks", "v1", i, 300)
        t[0] += 0.01
    assert q[0] == ("hand_tracks", "v1", 1, 300) and q[-1] == ("hand_tracks", "v1", 300, 300)
    assert [d for _, _, d, _ in q] == [1, 51, 101, 151, 201, 251, 300]
    fwd("hand_tracks", "v2", 1, 2)  # another video's step is reported at once
    assert q[-1] == ("hand_tracks", "v2", 1, 2)


def test_progress_lines_in_the_run_log_at_most_every_30_s_and_the_bar_fed_on_every_report(monkeypatch):
    """Each progress line is an event stored in the instance: a step's progress becomes a line every
    PROGRESS_LOG_EVERY_S (none at the end: the step's own events follow), while the CLI's hook gets
    every report."""
    import types

    from ego_assets.defs import runner
    from ego_assets.lib import progress

    lines, reports, t = [], [], [1000.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: t[0])
    ctx = types.SimpleNamespace(log=types.SimpleNamespace(info=lines.append))
    progress.set_hook(lambda *item: reports.append(item))
    try:
        cb = runner.progress_logger(ctx, "frames", "v1", "source frames")
        for i in range(1, 601):  # 600 frames at 10 frames/s: 60 s
            t[0] = 1000.0 + i / 10
            cb(i, 600)
    finally:
        progress.set_hook(None)
    assert len(reports) == 600 and reports[-1] == ("frames", "v1", 600, 600)
    assert lines == ["v1: frames 300/600 source frames (50%, 10.0 source frames/s)"]


def test_several_videos_at_once_start_largest_first(tmp_path):
    """Runs side by side start with the largest files (the last to finish is then a short one: no
    worker alone for long at the end of a backfill); equal sizes keep their order; a video without a
    readable record goes last."""
    from ego_assets.defs.execute import longest_first

    store = Store(str(tmp_path / "home"))
    for pk, size in [("a", 10), ("b", 300), ("c", 10), ("d", 2000)]:
        store.register_video(pk, {"partition_key": pk, "uri": f"/x/{pk}.mp4", "name": f"{pk}.mp4",
                                  "size_bytes": size})
    assert longest_first(store, ["a", "b", "zz", "c", "d"]) == ["d", "b", "a", "c", "zz"]
