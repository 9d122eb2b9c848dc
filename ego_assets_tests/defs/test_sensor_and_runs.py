"""Discovery sensor (new sources, cursor, bounded ticks, no duplicates), one run per video, the dataset automation."""

import hashlib
import os

import dagster as dg
import pytest

from ego_assets.defs import sensors
from ego_assets.defs.execute import materialize_videos, per_video_assets
from ego_assets.defs.partitions import videos
from ego_assets.defs.settings import EgoStorage
from ego_assets.lib.sources import Source, save_sources
from ego_assets.lib.storage import Store
from ego_assets_tests.helpers import synth
from ego_assets_tests.helpers.homes import register_source


def _tick(instance, home, cursor=None):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor,
                                  resources={"ego": EgoStorage(home=str(home))})
    result = sensors.discover_videos(ctx)
    return result, ctx.cursor


def _apply(instance, result):
    for req in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))


def test_sensor_registers_new_sources_bounded_and_once(tmp_path, monkeypatch):
    home = tmp_path / "home"
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for i in range(3):
        synth.make_video(a / f"a{i}.mp4", n_frames=6, seed=10 + i)
    synth.make_video(b / "b0.mp4", n_frames=6, seed=20)
    synth.make_video(b / "b0 copy.mp4", n_frames=6, seed=20)  # same content twice
    monkeypatch.setattr(sensors, "MAX_NEW_PER_TICK", 2)
    monkeypatch.setenv("EGO_ASSETS_SOURCES", str(home / "sources.yaml"))
    instance = dg.DagsterInstance.ephemeral()
    with instance:
        r, cur = _tick(instance, home)
        assert isinstance(r, dg.SkipReason) and "no sources" in r.skip_message
        save_sources(str(home / "sources.yaml"), [Source(name="cam_a", uri=str(a), glob="*.mp4")])
        r, cur = _tick(instance, home)
        keys1 = list(r.dynamic_partitions_requests[0].partition_keys)
        assert len(keys1) == 2 and all(k.startswith("cam_a-") for k in keys1)  # bounded per tick
        # one run per video: a bad video fails alone
        assert sorted(q.partition_key for q in r.run_requests) == sorted(keys1)
        assert sorted(q.run_key for q in r.run_requests) == sorted(keys1)
        _apply(instance, r)
        r, cur = _tick(instance, home, cur)
        keys2 = list(r.dynamic_partitions_requests[0].partition_keys)
        assert len(keys2) == 1 and keys2[0] not in keys1
        _apply(instance, r)
        r, cur = _tick(instance, home, cur)
        assert isinstance(r, dg.SkipReason)
        # adding a source is all it takes
        save_sources(str(home / "sources.yaml"), [Source(name="cam_a", uri=str(a), glob="*.mp4"),
                                                  Source(name="cam_b", uri=str(b))])
        r, cur = _tick(instance, home, cur)
        keys3 = list(r.dynamic_partitions_requests[0].partition_keys)
        assert len(keys3) == 1 and keys3[0].startswith("cam_b-")  # the copy adds nothing
        assert len(r.run_requests) == 1
        _apply(instance, r)
        store = Store(str(home))
        rec = store.video_record(keys3[0])
        assert rec["source"] == "cam_b" and rec["name"] in ("b0.mp4", "b0 copy.mp4")
        assert len(store.registered()) == 4
        r, _ = _tick(instance, home, cur)
        assert isinstance(r, dg.SkipReason)


def test_bad_sources_file_is_reported(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "sources.yaml").write_text("sources:\n  - name: ../x\n    uri: /tmp\n")
    monkeypatch.setenv("EGO_ASSETS_SOURCES", str(home / "sources.yaml"))
    with dg.DagsterInstance.ephemeral() as instance:
        with pytest.raises(Exception, match="sources.yaml.*source name"):
            _tick(instance, home)


def _check_history(instance, asset: str, check: str, pk: str):
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    recs = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey(asset), check), limit=50)
    out = [r for r in recs if r.partition == pk]
    return [(r.status == AssetCheckExecutionRecordStatus.SUCCEEDED, r.event.dagster_event.event_specific_data)
            for r in out]


@pytest.mark.slow
def test_a_bad_video_fails_alone_and_dagster_holds_each_videos_truth(tmp_path, monkeypatch):
    """Three good videos and a truncated file: one run per video; the bad one's partition is failed in
    Dagster with its failed check (value and reason); the good ones go through every asset, each with
    its own data version; a no-op rerun keeps each partition's metadata on its latest event."""
    home = tmp_path / "home"
    monkeypatch.setenv("EGO_ASSETS_HOME", str(home))
    from ego_assets.definitions import defs

    folder = tmp_path / "v"
    folder.mkdir()
    for i in range(3):
        synth.make_video(folder / f"v{i}.mp4", n_frames=12, fps=20, seed=30 + i)
    bad_file = synth.make_bad_files(tmp_path / "bad")["truncated"]
    (folder / "v1b_truncated.mp4").write_bytes(bad_file.read_bytes())

    src = Source(name="batch", uri=str(folder))
    store, found = register_source(home, src)
    keys = [d.partition_key for d in found]
    bad = next(d.partition_key for d in found if d.record()["name"] == "v1b_truncated.mp4")
    good = [k for k in keys if k != bad]
    runs = []
    # synthetic videos show no hands: they have no dataset episodes, so the test stops before them
    graph = defs.resolve_asset_graph()
    assets = [a for a in per_video_assets(defs) if graph.get(dg.AssetKey(a)).group_name != "episodes"]
    assert assets[-1] == "captions"
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(videos.name, keys)
        status = materialize_videos(defs, instance, store, keys, on_run=lambda b, r: runs.append((b, r)),
                                    assets=assets)
        assert [b for b, _ in runs] == [[k] for k in keys]  # one run per video
        assert {k: r.success for (b, r) in runs for k in b} == {k: k != bad for k in keys}
        assert {k: s.status for k, s in status.items()} == {k: "ok" if k != bad else "failed" for k in keys}
        assert status[bad].asset == "source_videos" and "v1b_truncated.mp4" in status[bad].error
        # Dagster's partition status: the bad video failed, the good ones materialized in every asset
        for a in assets:
            st = instance.get_status_by_partition(dg.AssetKey(a), keys, videos)
            assert {k: st[k].value for k in keys} == {
                k: "FAILED" if k == bad else "MATERIALIZED" for k in keys}, a
        # the failed check of the bad video, with its reason, in Dagster
        hist = _check_history(instance, "source_videos", "video_decodable", bad)
        assert len(hist) == 1 and hist[0][0] is False
        assert "truncated" in hist[0][1].metadata["reason"].value or hist[0][1].description
        for k in good:  # each good video has its own passed check result
            assert [p for p, _ in _check_history(instance, "source_videos", "video_decodable", k)] == [True]
            hist = _check_history(instance, "frames", "frame_times_consistent", k)
            n = store.read_table("frames", k).num_rows
            assert hist[0][0] and hist[0][1].metadata["value"].value == n
        # each partition's data version in Dagster is its content's (lineage), not one per run
        dvs = {}
        for k in good:
            rec = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("frames"), asset_partitions=[k]), limit=1).records[0]
            mat = rec.event_log_entry.asset_materialization
            dvs[k] = mat.tags["dagster/data_version"]
            assert dvs[k] == store.lineage("frames", k)[-1]["data_version"]
            assert mat.metadata["n_frames"].value == store.read_table("frames", k).num_rows
            # upstream provenance per partition: the source_videos partition's own data version
            # (Dagster records a partitioned input as the SHA-256 of its partitions' data versions)
            up = store.lineage("source_videos", k)[-1]["data_version"]
            assert mat.tags["dagster/input_data_version/source_videos"] == hashlib.sha256(up.encode()).hexdigest()
        assert len(set(dvs.values())) == len(good)
        # a no-op rerun: nothing recomputed, same data versions, the previews stay on the latest event
        materialize_videos(defs, instance, store, good, assets=assets)
        for k in good:
            recs = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("hand_tracks"), asset_partitions=[k]), limit=2).records
            latest, before = (r.event_log_entry.asset_materialization for r in recs)
            assert "reused" in latest.metadata and "reused" not in before.metadata
            assert latest.tags["dagster/data_version"] == before.tags["dagster/data_version"]
            assert {m for m in before.metadata} <= set(latest.metadata)
            assert store.lineage("frames", k)[-1]["data_version"] == dvs[k]
        assert [a for a in per_video_assets(defs)][:3] == ["source_videos", "clips", "frames"]
        # the writers never opened the catalog file; its step defines the views of what they wrote
        from ego_assets.lib import catalog

        assert not os.path.exists(catalog.catalog_path(store))
        r = defs.resolve_job_def("dataset_job").execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("catalog_views")])
        assert r.success
        con = catalog.connect(store)
        try:
            n = con.execute("select count(distinct partition_key) from frames").fetchone()[0]
        finally:
            con.close()
        assert n == len(good)


def test_dataset_automation_waits_for_the_videos_then_rebuilds_once(tmp_path, monkeypatch):
    """The dataset sensor (running by default) requests one assembly after its inputs changed, none while
    an input is still in progress, and none again until something new lands."""
    monkeypatch.setenv("EGO_ASSETS_HOME", str(tmp_path / "home"))
    from ego_assets.definitions import defs
    from ego_assets.defs.dataset import DATASET_CONDITION

    sensor = defs.resolve_sensor_def("dataset_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    ds = dg.AssetKey("lerobot_dataset")
    deps = [k for k in defs.resolve_asset_graph().get(ds).parent_keys]
    assert {d.to_user_string() for d in deps} >= {"captions", "segments", "camera_poses", "frames"}
    # the condition the sensor evaluates, on the project's own asset graph
    assert defs.resolve_assets_def(ds).automation_conditions_by_key[ds] is DATASET_CONDITION

    def land(keys):
        for k in keys:
            for d in deps:
                instance.report_runless_asset_event(dg.AssetMaterialization(d, partition=k))

    def requested(cursor):
        r = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        return (r.get_num_requested(ds), r.get_num_requested(dg.AssetKey("catalog_views"))), r.cursor

    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(videos.name, ["cam-a", "cam-b"])
        n, cur = requested(None)
        assert n == (0, 0)  # nothing upstream yet
        land(["cam-a", "cam-b"])
        n, cur = requested(cur)
        assert n == (1, 0)  # the dataset, once
        n, cur = requested(cur)
        assert n == (0, 1)  # handled: not requested again; the catalog's views after it
        n, cur = requested(cur)
        assert n == (0, 0)
        land(["cam-b"])
        n, cur = requested(cur)
        assert n == (1, 0)  # a re-materialized video leads to one rebuild


@pytest.mark.slow
def test_videos_run_in_worker_processes_each_video_its_own_run(tmp_path, monkeypatch):
    """workers=2 (the CLI's default on two cores): each video's run in a worker process, not this one;
    a bad file fails its own run with its reason; the workers' progress reaches this process's hook."""
    from ego_assets.defs.monitoring import run_worker_pid
    from ego_assets.lib import progress

    home = tmp_path / "home"
    monkeypatch.setenv("EGO_ASSETS_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    from ego_assets.definitions import defs

    folder = tmp_path / "v"
    folder.mkdir()
    for i in range(2):
        synth.make_video(folder / f"v{i}.mp4", n_frames=12, fps=20, seed=40 + i)
    (folder / "v2_truncated.mp4").write_bytes(synth.make_bad_files(tmp_path / "bad")["truncated"].read_bytes())
    src = Source(name="w", uri=str(folder))
    store, found = register_source(home, src)
    keys = [d.partition_key for d in found]
    bad = next(d.partition_key for d in found if d.record()["name"] == "v2_truncated.mp4")
    assets = ["source_videos", "clips", "frames"]
    seen = []
    progress.set_hook(lambda stage, key, done, total: seen.append((stage, key)))
    try:
        instance = dg.DagsterInstance.get()
        instance.add_dynamic_partitions(videos.name, keys)
        status = materialize_videos(defs, instance, store, keys, assets=assets, workers=2)
    finally:
        progress.set_hook(None)
    assert {k: s.status for k, s in status.items()} == {k: "failed" if k == bad else "ok" for k in keys}
    assert status[bad].asset == "source_videos" and "v2_truncated.mp4" in status[bad].error
    pids = {run_worker_pid(instance, s.run_id) for s in status.values()}
    assert os.getpid() not in pids and None not in pids and len(pids) <= 2
    assert {("frames", k) for k in keys if k != bad} <= set(seen)
    st = instance.get_status_by_partition(dg.AssetKey("frames"), keys, videos)
    assert {k: st[k].value for k in keys} == {k: "FAILED" if k == bad else "MATERIALIZED" for k in keys}
