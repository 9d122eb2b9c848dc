"""Dagster's `dg` CLI finds the project from pyproject's [tool.dg] and sees the same definitions as
`make ui` and the CLI: every asset with its group and declared upstream, the jobs and both sensors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ego_assets.definitions import defs

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dg_lists_the_projects_definitions():
    dg = Path(sys.executable).with_name("dg")
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}  # no instance is needed to list
    r = subprocess.run([str(dg), "list", "defs", "--json"], cwd=ROOT, capture_output=True, text=True,
                       timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    listed = json.loads(r.stdout)
    graph = defs.resolve_asset_graph()
    want = {k.to_user_string(): (graph.get(k).group_name, sorted(p.to_user_string() for p in graph.get(k).parent_keys))
            for k in graph.get_all_asset_keys()}
    got = {a["asset_key"]: (a["group_name"], sorted(a["dependency_keys"])) for a in listed["assets"]}
    assert got == want
    assert {s["name"] for s in listed["sensors"]} >= {"discover_videos", "dataset_automation"}
    assert {j["name"] for j in listed["jobs"]} >= {"per_video_job", "dataset_job"}


def test_lerobot_episodes_is_a_per_video_asset_with_its_declared_graph():
    """lerobot_episodes is declared with per_video_asset: its key, group, upstream, code version (with the
    dataset format), blocking checks and run configuration are what the UI and the runs have known."""
    import dagster as dg

    from ego_assets.defs.dataset import INPUTS, dataset_format

    a = defs.resolve_assets_def(dg.AssetKey("lerobot_episodes"))
    spec = next(s for s in a.specs if s.key == dg.AssetKey("lerobot_episodes"))
    assert spec.group_name == "episodes" and sorted(d.asset_key.path[0] for d in spec.deps) == sorted(INPUTS)
    assert spec.code_version == f"2+{dataset_format().label()}" == "2+640x480@10fps/hands_102"
    assert {(c.name, c.blocking) for c in a.check_specs} == {("fits_dataset", True), ("has_episodes", True)}
    fields = a.node_def.config_schema.as_field().config_type.fields
    assert {n: (f.default_value, f.is_required) for n, f in fields.items()} == {"force": (False, False)}
    assert a.partitions_def is not None and set(spec.kinds) == {"lerobot", "parquet"}
