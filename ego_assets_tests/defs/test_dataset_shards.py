"""Sharding the dataset (issue 19 item 4): EGO_ASSETS_DATASET_SHARD=source gives one LeRobot dataset per
source, =N at most N videos per shard (a video keeps its shard); each shard loads with LeRobotDataset and
holds exactly its videos' episodes; unset, the one dataset is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from ego_assets.defs import dataset
from ego_assets.defs.runner import now
from ego_assets.defs.settings import EgoStorage
from ego_assets.lib import settings
from ego_assets.lib.lerobot.shards import assign, parse_shard
from ego_assets.lib.storage import Store
from ego_assets_tests.lib.lerobot.synth import make_partition, stage

SIZE = (64, 48)


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    monkeypatch.setenv("EGO_ASSETS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EGO_ASSETS_DATASET_IMAGE_SIZE", "x".join(map(str, SIZE)))
    monkeypatch.delenv("EGO_ASSETS_DATASET_SHARD", raising=False)


def _add(store: Store, tmp: Path, key: str, source: str, seed: int) -> int:
    """A video of ``source`` whose lerobot_episodes passed (staged from synthetic tables); its episodes."""
    sp = make_partition(tmp / "src", key, seed=seed, source=source)
    store.register_video(key, dict(partition_key=key, source=source, uri=f"/videos/{key}.mp4",
                                   name=f"{key}.mp4", size_bytes=1, hints={}, license=None, sha256=None))
    with store.write_partition(dataset.EPISODES_ASSET, key) as w:
        staged = stage(sp, w.path(dataset.STAGED), image_size=SIZE)
    store.write_lineage(dict(partition_key=key, asset=dataset.EPISODES_ASSET, run_id="t", code_version="2",
                             data_version=f"v-{key}", upstream=None, params=None, status="ok", error=None,
                             started_at=now(), finished_at=now()))
    return staged.n_episodes


def _materialize() -> dg.ExecuteInProcessResult:
    r = dg.materialize([dataset.lerobot_dataset], resources={"ego": EgoStorage()})
    assert r.success
    return r


def _load(root: str, repo_id: str):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset(repo_id, root=root, video_backend="pyav")
    return ds, set(ds.meta.episodes["source/partition_key"])  # the videos of its episodes (meta/episodes)


def test_parse_and_assign():
    assert [parse_shard(v) for v in ("", "source", " 3 ")] == ["", "source", "3"]
    for bad in ("0", "-2", "by-size"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    with pytest.raises(ValueError, match="EGO_ASSETS_DATASET_SHARD"):
        settings.get("DATASET_SHARD", {"EGO_ASSETS_DATASET_SHARD": "many"})
    assert assign("source", ["b", "a"], {"a": "lab", "b": "web"}.get) == {"a": "lab", "b": "web"}
    first = assign("2", ["c", "a", "b"], str)
    assert first == {"a": "0000", "b": "0000", "c": "0001"}
    # a video keeps its shard; new ones fill the last shard, then open the next; a removed one is not refilled
    assert assign("2", ["b", "c", "d", "e"], str, first) == {"b": "0000", "c": "0001", "d": "0001", "e": "0002"}


def test_two_sources_two_shards_each_a_loadable_dataset(tmp_path, monkeypatch):
    store = Store()
    n = {"lab-000": _add(store, tmp_path, "lab-000", "lab", 1), "lab-001": _add(store, tmp_path, "lab-001", "lab", 2),
         "web-000": _add(store, tmp_path, "web-000", "web", 3)}
    assert all(n.values())

    # default: the one dataset, as before (no shard folder)
    md = _materialize().asset_materializations_for_node("lerobot_dataset")[0].metadata
    assert md["episodes"].value == sum(n.values()) and "shards" not in md
    ds, keys = _load(dataset.dataset_dir(store), "local/ego_assets")
    assert ds.meta.total_episodes == sum(n.values()) and keys == set(n)
    assert not store.exists(dataset.shards_dir(store)) and list(dataset.dataset_roots(store)) == [""]

    monkeypatch.setenv("EGO_ASSETS_DATASET_SHARD", "source")
    r = _materialize()
    md = r.asset_materializations_for_node("lerobot_dataset")[0].metadata
    assert md["shards"].value == 2 and md["episodes"].value == sum(n.values())
    assert all(e.passed for e in r.get_asset_check_evaluations() if e.check_name == "lerobot_dataset_valid")
    roots = dataset.dataset_roots(store)
    assert sorted(roots) == ["lab", "web"]
    for shard, members in {"lab": ["lab-000", "lab-001"], "web": ["web-000"]}.items():
        ds, keys = _load(roots[shard], f"local/ego_assets-{shard}")
        assert keys == set(members)
        assert ds.meta.total_episodes == sum(n[k] for k in members)
        assert len(ds) == ds.meta.total_frames and ds[len(ds) - 1]["observation.images.ego"].shape[1:] == (48, 64)
        eps = store.read_table("episodes", members[0]).to_pylist()
        assert {e["dataset"] for e in eps} == {f"local/ego_assets-{shard}"}
    [row] = store.lineage("lerobot_dataset", "dataset")[-1:]
    assert row["status"] == "ok" and set(json.loads(row["upstream"])) == set(n)
    assert row["finished_at"] > row["started_at"]  # the row times the whole step (assembly, validation)

    # a new video of one source: its shard grows; the other's data and video files are kept as they are (on
    # a local home every assembly is a new version, its files hard-linked: the same inodes, nothing re-encoded)
    lab_files = {p.relative_to(Path(roots["lab"]).resolve()): p.stat().st_ino
                 for p in Path(roots["lab"]).resolve().rglob("*") if p.is_file() and p.parent.name != "meta" and "meta" not in p.parts and p.suffix != ".md"}
    assert any(p.suffix == ".mp4" for p in lab_files)
    n["web-001"] = _add(store, tmp_path, "web-001", "web", 4)
    _materialize()
    ds, keys = _load(roots["web"], "local/ego_assets-web")
    assert keys == {"web-000", "web-001"} and ds.meta.total_episodes == n["web-000"] + n["web-001"]
    assert {p.relative_to(Path(roots["lab"]).resolve()): p.stat().st_ino
            for p in Path(roots["lab"]).resolve().rglob("*") if p.is_file() and p.parent.name != "meta" and "meta" not in p.parts and p.suffix != ".md"} == lab_files
    assert _load(roots["lab"], "local/ego_assets-lab")[1] == {"lab-000", "lab-001"}

    # `ego-assets check` validates every shard against its own videos' episodes (a shard compared with
    # every episode of the catalog would fail its episode count)
    from ego_assets.defs.checks import dataset_outcomes

    outs = dataset_outcomes(store)
    assert outs and all(o.passed for o in outs if o.severity == "ERROR"), [o for o in outs if not o.passed]
    assert all("shard lab: " in o.detail and "shard web: " in o.detail for o in outs)

    # N videos per shard: 4 videos at 3 per shard -> 0000 (3 videos) and 0001 (1 video)
    monkeypatch.setenv("EGO_ASSETS_DATASET_SHARD", "3")
    _materialize()
    roots = dataset.dataset_roots(store)
    assert sorted(roots) == ["0000", "0001"]
    got = {s: _load(roots[s], f"local/ego_assets-{s}")[1] for s in roots}
    assert got == {"0000": {"lab-000", "lab-001", "web-000"}, "0001": {"web-001"}} == dataset.shard_videos(store)


def test_sharded_without_a_ready_video_publishes_nothing(monkeypatch):
    monkeypatch.setenv("EGO_ASSETS_DATASET_SHARD", "2")
    r = _materialize()
    md = r.asset_materializations_for_node("lerobot_dataset")[0].metadata
    assert md["shards"].value == 0 and md["episodes"].value == 0 and "no video ready" in md["note"].value
    assert dataset.dataset_roots(Store()) == {}
