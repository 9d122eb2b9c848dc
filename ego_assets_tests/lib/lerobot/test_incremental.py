"""Appending a staged partition to a published dataset through a filesystem (issue 19): only the new
partition's files and the small metadata are written; the result validates and its stats equal a full
aggregation over every episode."""

from __future__ import annotations

import json

import fsspec
import numpy as np
import pytest

from ego_assets.lib.lerobot import incremental
from ego_assets.lib.lerobot.format import aggregate_stats
from ego_assets.lib.lerobot.validate import validate_dataset
from ego_assets.lib.lerobot.assembly import assemble
from ego_assets_tests.lib.lerobot.conftest import VAL_FRACTION
from ego_assets_tests.lib.lerobot.dataset_checks import Recording, meta_rows


def test_append_touches_only_the_new_partition_and_metadata(dataset_copy, staged, parts, tmp_path):
    root, before = dataset_copy
    old_files = {p: p.read_bytes() for p in root.glob("data/*/*.parquet")} | {
        p: p.read_bytes() for p in root.glob("videos/*/*/*.mp4")}
    fs = Recording(fsspec.filesystem("file"))
    res = incremental.append_partition(fs, str(root), str(staged["C"].path), tmp_path / "scratch")
    n_c = staged["C"].n_episodes
    assert res.added == [parts["C"].key] and res.n_episodes == before.n_episodes + n_c
    # written: one data file, one video file, the metadata; nothing of A or B
    rel = sorted(p[len(str(root)) + 1:] for p in fs.written)
    assert [r for r in rel if r.startswith(("data/", "videos/"))] == [
        "data/chunk-000/file-002.parquet", "videos/observation.images.ego/chunk-000/file-002.mp4"]
    assert {r for r in rel if r.startswith("meta/")} == {
        "meta/info.json", "meta/stats.json", "meta/ego_assets_header.json", "meta/episodes/chunk-000/file-001.parquet",
        f"meta/ego_assets_appended/{parts['C'].key}.json",
        "meta/ego_assets_provenance.append-000002.parquet"} | ({"meta/tasks.parquet"} & set(rel))
    assert fs.written[-1].endswith("ego_assets_header.json") and fs.written[-3].endswith("info.json")
    assert not [p for p in fs.written if p.endswith("ego_assets_state.json")]  # the whole state: not rewritten
    for p, b in old_files.items():
        assert p.read_bytes() == b, p
    # indices contiguous; C's episodes at the end
    rows = meta_rows(root)
    assert [r["episode_index"] for r in rows] == list(range(res.n_episodes))
    assert [r["dataset_from_index"] for r in rows][1:] == [r["dataset_to_index"] for r in rows][:-1]
    assert {r["source/partition_key"] for r in rows[-n_c:]} == {parts["C"].key}
    info = json.loads((root / "meta/info.json").read_text())
    assert info["total_episodes"] == res.n_episodes and info["total_frames"] == rows[-1]["dataset_to_index"]
    # stats: the merge equals one aggregation over every episode's stats (as LeRobot aggregates them)
    per_ep = []
    for r in rows:
        st: dict = {}
        for k, v in r.items():
            if k.startswith("stats/"):
                _, feat, s = k.split("/", 2)
                st.setdefault(feat, {})[s] = np.asarray(v)
        per_ep.append(st)
    want = aggregate_stats(per_ep)
    got = json.loads((root / "meta/stats.json").read_text())
    for feat, st in want.items():
        for s, v in st.items():
            np.testing.assert_allclose(np.asarray(got[feat][s], np.float64), v, rtol=1e-6, atol=1e-6,
                                       err_msg=f"{feat}/{s}")
    # it validates (LeRobot loads it when installed; else the same checks on the files)
    checks = validate_dataset(root, repo_id="local/test")
    bad = [c for c in checks if not c[1] and c[0] not in ("stats_nondegenerate", "lerobot_load_check")]
    assert not bad, bad
    # appending it again is a no-op; a re-staged (different version) partition needs the full assembly
    again = incremental.append_partition(fs, str(root), str(staged["C"].path), tmp_path / "scratch2")
    assert again.added == [] and again.n_episodes == res.n_episodes
    entry = root / "meta/ego_assets_appended" / f"{parts['C'].key}.json"
    entry.write_text(json.dumps({**json.loads(entry.read_text()), "version": "other"}))
    with pytest.raises(incremental.NeedsFullAssembly, match="replaced"):
        incremental.append_partition(fs, str(root), str(staged["C"].path), tmp_path / "scratch3")


def test_full_assembly_after_appends_is_the_deterministic_dataset(dataset_copy, staged, tmp_path):
    root, _ = dataset_copy
    incremental.append_partition(fsspec.filesystem("file"), str(root), str(staged["C"].path), tmp_path / "s")
    assemble(root, [staged["C"]], val_fraction=VAL_FRACTION, rebuild=False)
    scratch = tmp_path / "scratch"
    assemble(scratch, [staged["C"], staged["B"], staged["A"]], val_fraction=VAL_FRACTION)
    assert json.loads((root / "meta/info.json").read_text()) == json.loads((scratch / "meta/info.json").read_text())
    assert not list(root.glob("meta/ego_assets_provenance.append-*.parquet"))
    assert not (root / "meta/ego_assets_appended").exists()
    state = json.loads((root / "meta/ego_assets_state.json").read_text())
    assert sorted(state["partitions"]) == sorted(p.partition_key for p in staged.values())
