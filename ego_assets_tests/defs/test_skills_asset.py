"""The `skills` asset over all videos: table, kept model, incremental assignment, refit, episodes' skills."""

import json
import os

import dagster as dg
import pytest

from ego_assets.defs import skills as skills_defs
from ego_assets.defs.settings import EgoStorage
from ego_assets.lib import catalog
from ego_assets.lib.storage import Store
from ego_assets_tests.lib.test_skills import synthetic_video

PLANS = {"vid-a": ["reach_close", "slide_left", "lift_open"] * 2,
         "vid-b": ["slide_left", "lift_open", "reach_close"] * 2,
         "vid-c": ["lift_open", "reach_close", "slide_left"] * 2}


def _add_video(store: Store, pk: str, plan: list[str], seed: int) -> None:
    seg, hw, cap = synthetic_video(pk, plan, seed=seed)
    store.register_video(pk, {"source": "synthetic", "uri": f"/nowhere/{pk}.mp4", "name": pk})
    for table, data in (("segments", seg), ("hand_world", hw), ("captions", cap)):
        store.write_parquet(store.table_path(table, pk), data)
    for asset in ("segments", "captions"):
        store.write_lineage(dict(partition_key=pk, asset=asset, run_id="test", code_version="t",
                                 data_version=f"{pk}-{asset}", status="ok"))


def _materialize(config: dict | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize([skills_defs.skills], resources={"ego": EgoStorage()},
                          run_config={"ops": {"skills": {"config": config}}} if config else None)


@pytest.mark.slow
def test_skills_asset_fits_assigns_new_videos_and_refits(home):
    store = Store()
    for i, pk in enumerate(("vid-a", "vid-b")):
        _add_video(store, pk, PLANS[pk], seed=i)
    r1 = _materialize()
    assert r1.success
    assert all(e.passed for e in r1.get_asset_check_evaluations())
    md = r1.asset_materializations_for_node("skills")[0].metadata
    assert md["segments"].value == 12 and md["skills"].value == 3
    assert md["refit"].value == "no skill model yet"
    assert "data:image/png;base64," in md["preview"].value
    con = catalog.connect(store, in_memory=True)
    got = con.execute("select skill_label, count(*) from skills group by 1 order by 1").fetchall()
    assert got == [("left hand: left", 4), ("right hand: forward, close grasp", 4),
                   ("right hand: up, open grasp", 4)]
    model_before = store.read_json(skills_defs.model_path(store))

    # a new video: assigned to the kept model, which does not change
    _add_video(store, "vid-c", PLANS["vid-c"], seed=7)
    r2 = _materialize()
    md2 = r2.asset_materializations_for_node("skills")[0].metadata
    assert md2["refit"].value.startswith("no (assigned")
    assert store.read_json(skills_defs.model_path(store)) == model_before
    m = skills_defs.skill_map(store)
    assert len(m) == 18
    label = {}
    for (pk, sid, _hand), (_sid, lab) in m.items():
        label[(pk, sid)] = lab
    assert [label[("vid-c", i)] for i in range(3)] == ["right hand: up, open grasp",
                                                       "right hand: forward, close grasp", "left hand: left"]
    dv2 = r2.asset_materializations_for_node("skills")[0].tags.get("dagster/data_version")

    # an explicit refit with another number of skills: a new model and another data version
    r3 = _materialize({"refit": True, "n_skills": 2})
    md3 = r3.asset_materializations_for_node("skills")[0].metadata
    assert md3["refit"].value == "refit asked for" and md3["skills"].value == 2
    assert store.read_json(skills_defs.model_path(store))["k_choice"] == {"set": 2}
    assert r3.asset_materializations_for_node("skills")[0].tags.get("dagster/data_version") != dv2
    assert len({v[0] for v in skills_defs.skill_map(store).values()}) == 2


def test_dataset_job_builds_skills_before_the_dataset():
    from ego_assets.definitions import defs

    job = defs.resolve_job_def("dataset_job")
    keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert {"skills", "lerobot_dataset"} <= keys
    graph = defs.resolve_asset_graph()
    assert dg.AssetKey("skills") in graph.get(dg.AssetKey("lerobot_dataset")).parent_keys


def test_no_segments_no_skills(home):
    r = _materialize()
    assert r.success
    md = r.asset_materializations_for_node("skills")[0].metadata
    assert md["segments"].value == 0 and md["skills"].value == 0
    assert skills_defs.skill_map(Store()) == {}


@pytest.mark.slow
@pytest.mark.parametrize("bad", [{"seed": 1}])
def test_changed_seed_refits(home, bad):
    store = Store()
    _add_video(store, "vid-a", PLANS["vid-a"], seed=0)
    _materialize()
    md = _materialize(bad).asset_materializations_for_node("skills")[0].metadata
    assert md["refit"].value == "seed 1 asked for, the model has 0"
    assert json.loads(json.dumps(store.read_json(skills_defs.model_path(store))))["seed"] == 1


@pytest.mark.slow
def test_check_every_segment_assigned(home):
    from ego_assets.defs.checks import evaluate_all

    store = Store()
    _add_video(store, "vid-a", PLANS["vid-a"], seed=0)
    _materialize()
    outs = [o for pk, asset, o in evaluate_all(store) if o.check_name == "every_segment_assigned"]
    assert [(o.passed, o.value) for o in outs] == [(True, 6.0)]
    store.fs.rm_file(store.table_path("skills", "vid-a"))
    outs = [o for pk, asset, o in evaluate_all(store) if o.check_name == "every_segment_assigned"]
    assert not outs[0].passed and "6 of 6 valid segment(s) have no skill" in outs[0].detail


@pytest.mark.slow
def test_cli_dataset_step_not_skipped_after_skills_changed(home, monkeypatch):
    from ego_assets.defs import dataset, execute

    store = Store()
    _add_video(store, "vid-a", PLANS["vid-a"], seed=0)
    _materialize()
    # a published dataset whose lineage says it holds vid-a with the current skills
    monkeypatch.setattr(dataset, "ready_partitions", lambda st: (["vid-a"], {"vid-a": "v1"}, {}))
    os.makedirs(dataset.dataset_dir(store), exist_ok=True)

    def record(skills_version):
        params = {**dataset.dataset_format().as_dict(), "val_fraction": 0.1, "skills": skills_version}
        store.write_lineage(dict(partition_key="dataset", asset="lerobot_dataset", run_id="t",
                                 code_version=dataset.DATASET_CODE_VERSION, data_version="d",
                                 upstream=json.dumps({"vid-a": "v1"}), params=json.dumps(params), status="ok"))

    record(skills_defs.skills_version(store))
    assert execute.dataset_up_to_date(store)
    _materialize({"refit": True, "n_skills": 2})  # the skills changed: the dataset step must run
    assert not execute.dataset_up_to_date(store)
    record(None)  # a dataset assembled before skills existed
    assert not execute.dataset_up_to_date(store)


def test_automation_requests_skills_with_the_dataset(home):
    from ego_assets.definitions import defs
    from ego_assets.defs.partitions import videos

    sk, ds = dg.AssetKey("skills"), dg.AssetKey("lerobot_dataset")
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(videos.name, ["cam-a"])
        cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
        for d in defs.resolve_asset_graph().get(ds).parent_keys | defs.resolve_asset_graph().get(sk).parent_keys:
            if d != sk:
                instance.report_runless_asset_event(dg.AssetMaterialization(d, partition="cam-a"))
        r = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        assert (r.get_num_requested(sk), r.get_num_requested(ds)) == (1, 1)  # one run: skills, then the dataset
