"""Discovery sensor (new sources, cursor, bounded ticks, no duplicates) and batched range runs."""

import json

import dagster as dg
import pytest

from ego_assets.defs import sensors
from ego_assets.defs.execute import materialize_videos, per_video_assets
from ego_assets.defs.partitions import videos
from ego_assets.defs.settings import EgoStorage
from ego_assets.lib.sources import Source, save_sources
from ego_assets.lib.storage import Store
from ego_assets_tests.helpers import synth


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
        req = r.run_requests[0]
        assert req.tags["dagster/asset_partition_range_start"] == keys1[0]
        assert req.tags["dagster/asset_partition_range_end"] == keys1[-1]  # several videos per run
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


def test_one_run_carries_many_partitions(tmp_path, monkeypatch):
    """A range run: each asset step sees every key (context.partition_keys) and writes each."""
    home = tmp_path / "home"
    monkeypatch.setenv("EGO_ASSETS_HOME", str(home))
    from ego_assets.definitions import defs

    folder = tmp_path / "v"
    folder.mkdir()
    for i in range(3):
        synth.make_video(folder / f"v{i}.mp4", n_frames=12, fps=20, seed=30 + i)
    from ego_assets.lib.sources import discover_file, list_files

    src = Source(name="batch", uri=str(folder))
    found = [discover_file(src, u) for u in list_files(src)]
    store = Store(str(home))
    for d in found:
        store.register_video(d.partition_key, d.record())
    keys = [d.partition_key for d in found]
    runs = []
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(videos.name, keys)
        status = materialize_videos(defs, instance, store, keys, on_run=lambda b, r: runs.append((b, r)))
        assert len(runs) == 1 and runs[0][0] == keys and runs[0][1].success
        assert all(s.status == "ok" for s in status.values())
        run_ids = {store.lineage("frames", k)[-1]["run_id"] for k in keys}
        assert run_ids == {runs[0][1].run_id}
        # every partition is recorded as materialized in Dagster
        for a in ("source_videos", "clips", "frames"):
            mat = instance.get_materialized_partitions(dg.AssetKey(a))
            assert set(keys) <= set(mat)
        # each partition's event carries its own metadata, not the run's summary
        for k in keys:
            recs = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("frames"), asset_partitions=[k]), limit=1)
            md = recs.records[0].event_log_entry.asset_materialization.metadata
            n = store.read_table("frames", k).num_rows
            assert md["n_frames"].value == n
            assert md["data_version"].value == store.lineage("frames", k)[-1]["data_version"]
            assert md["run_partitions"].value == 3
        # a rerun is resumable: nothing is recomputed, data versions are unchanged
        dv = {k: store.lineage("frames", k)[-1]["data_version"] for k in keys}
        materialize_videos(defs, instance, store, keys)
        assert {k: store.lineage("frames", k)[-1]["data_version"] for k in keys} == dv
        assert [a for a in per_video_assets(defs)][:3] == ["source_videos", "clips", "frames"]


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
        return r.total_requested, r.cursor

    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(videos.name, ["cam-a", "cam-b"])
        n, cur = requested(None)
        assert n == 0  # nothing upstream yet
        land(["cam-a", "cam-b"])
        n, cur = requested(cur)
        assert n == 1  # the dataset, once
        n, cur = requested(cur)
        assert n == 0  # handled: not requested again
        land(["cam-b"])
        n, cur = requested(cur)
        assert n == 1  # a re-materialized video leads to one rebuild
