"""The checks of a dataset changed in place (validate.check_published): they pass on what update_dataset
publishes and fail, naming the file, on a data file or a video that disagrees with meta/episodes."""

from __future__ import annotations

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from ego_assets.lib.lerobot import incremental
from ego_assets.lib.lerobot.validate import check_published


def _checks(root, changed):
    return {c.name: c for c in check_published(fsspec.filesystem("file"), str(root), changed)}


def test_in_place_changes_pass_and_broken_files_fail(dataset_copy, staged, parts, tmp_path):
    root, _ = dataset_copy
    fs = fsspec.filesystem("file")
    res = incremental.update_dataset(fs, str(root), remove=[parts["A"].key], append=[str(staged["C"].path)],
                                     scratch=tmp_path / "s")
    changed = sorted(set(res.episodes["partition_key"].to_pylist()))
    assert parts["C"].key in changed
    ok = _checks(root, changed)
    assert all(c.passed for c in ok.values()), ok
    assert "as meta/episodes says" in ok["changed_data_rows"].detail

    # a data file whose rows are off by one: LeRobot would return the wrong frames
    meta = pa.concat_tables([pq.read_table(f) for f in sorted(root.glob("meta/episodes/*/*.parquet"))])
    row = meta.filter(pa.compute.equal(meta["source/partition_key"], parts["C"].key)).to_pylist()[0]
    path = root / "data" / f"chunk-{row['data/chunk_index']:03d}" / f"file-{row['data/file_index']:03d}.parquet"
    t = pq.read_table(path)
    t = t.set_column(t.column_names.index("index"), "index", pa.compute.add(t["index"], 1))
    pq.write_table(t, path)
    bad = _checks(root, changed)
    assert not bad["changed_data_rows"].passed and str(path) in bad["changed_data_rows"].detail
    assert bad["episode_layout"].passed  # meta/episodes itself is still consistent

    # a truncated video file
    vk = "observation.images.ego"
    vpath = root / "videos" / vk / f"chunk-{row[f'videos/{vk}/chunk_index']:03d}" / \
        f"file-{row[f'videos/{vk}/file_index']:03d}.mp4"
    vpath.write_bytes(vpath.read_bytes()[:2000])
    assert not _checks(root, changed)["changed_videos"].passed


def test_a_gap_in_the_episodes_fails_the_layout(dataset_copy):
    root, _ = dataset_copy
    f = sorted(root.glob("meta/episodes/*/*.parquet"))[0]
    t = pq.read_table(f)
    pq.write_table(t.slice(1), f)  # episode 0 gone
    c = _checks(root, [])
    assert not c["episode_layout"].passed and "episode_index is not 0.." in c["episode_layout"].detail
