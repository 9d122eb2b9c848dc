"""Removing and replacing a partition of a published dataset through a filesystem (issue 19): the removed
partition's files go, later data files are renumbered (no video file is read or written), and the result
is what a full assembly of the same partitions gives (compared by partition key: the order differs), and
it loads with LeRobot."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ego_assets.lib.lerobot import incremental
from ego_assets.lib.lerobot.assembly import assemble
from ego_assets_tests.lib.lerobot.conftest import VAL_FRACTION
from ego_assets_tests.lib.lerobot.dataset_checks import (Recording, assert_same_dataset, by_key, check_consistent,
                                                         load_check, meta_rows)
from ego_assets_tests.lib.lerobot.synth import make_partition, stage

@pytest.fixture()
def abc(dataset_copy, staged, tmp_path):
    """A and B assembled, C appended (slots 0, 1, 2; A and C in train, B in validation)."""
    root, _ = dataset_copy
    incremental.append_partition(fsspec.filesystem("file"), str(root), str(staged["C"].path), tmp_path / "s")
    return root


def full_assembly(tmp_path: Path, name: str, staged_parts) -> Path:
    out = tmp_path / name
    assemble(out, staged_parts, val_fraction=VAL_FRACTION)
    return out


def test_remove_a_partition_renumbers_later_data_and_touches_no_video(abc, staged, parts, tmp_path):
    root = abc
    videos = {p: p.read_bytes() for p in root.glob("videos/*/*/*.mp4")}
    data_before = {p: p.read_bytes() for p in root.glob("data/*/*.parquet")}
    fs = Recording(fsspec.filesystem("file"))
    res = incremental.remove_partition(fs, str(root), parts["A"].key)
    assert res.removed == [parts["A"].key] and res.added == [] and res.replaced == []
    assert sorted(res.data_written) == sorted([parts["B"].key, parts["C"].key])  # the later ones
    assert res.n_episodes == staged["B"].n_episodes + staged["C"].n_episodes
    rel = lambda ps: sorted(p[len(str(root)) + 1:] for p in ps)  # noqa: E731
    # no video read or written; A's video deleted; B's and C's bytes unchanged
    assert not [p for p in fs.read + fs.written if p.endswith(".mp4")]
    assert rel(p for p in fs.deleted if p.endswith(".mp4")) == ["videos/observation.images.ego/chunk-000/file-000.mp4"]
    for p, b in videos.items():
        if p.name != "file-000.mp4":
            assert p.read_bytes() == b, p
    # data: B and C rewritten after the last slot (3, 4); A's and the old copies deleted
    assert rel(p for p in fs.written if "/data/" in p) == [
        "data/chunk-000/file-003.parquet", "data/chunk-000/file-004.parquet"]
    assert sorted(p.name for p in root.glob("data/*/*.parquet")) == ["file-003.parquet", "file-004.parquet"]
    # the renumbered files differ only in episode_index and index (pyarrow column replacement)
    new_b = pq.read_table(root / "data/chunk-000/file-003.parquet")
    old_b = pq.read_table(pa.BufferReader(data_before[root / "data/chunk-000/file-001.parquet"]))
    assert new_b.schema.metadata == old_b.schema.metadata
    for c in old_b.column_names:
        if c not in ("episode_index", "index"):
            assert new_b[c].equals(old_b[c]), c
    # metadata last: every data write before the first metadata write; deletes after all writes
    first_meta = min(i for i, p in enumerate(fs.written) if "/meta/" in p)
    assert all("/meta/" not in p for p in fs.written[:first_meta]) and fs.written[first_meta - 1].endswith(".parquet")
    assert fs.written[-1].endswith("ego_assets_header.json")
    check_consistent(root)
    full = full_assembly(tmp_path, "full_bc", [staged["B"], staged["C"]])
    assert_same_dataset(root, full)
    load_check(root, full)
    # the provenance, the state and the next full assembly agree
    prov = pa.concat_tables([pq.read_table(f) for f in sorted(root.glob("meta/ego_assets_provenance*.parquet"))])
    want = {(r["source/partition_key"], r["episode_index"]) for r in meta_rows(root)}
    assert {(r["partition_key"], r["episode_index"]) for r in prov.to_pylist()} == want
    state = json.loads((root / "meta/ego_assets_state.json").read_text())
    assert parts["A"].key not in state["partitions"]
    assert state["partitions"][parts["B"].key]["data_file"] == "data/chunk-000/file-003.parquet"
    again = assemble(root, [], val_fraction=VAL_FRACTION)
    assert again.removed == [] and sorted(again.kept) == sorted([parts["B"].key, parts["C"].key])
    assert by_key(root) == by_key(full)
    assert json.loads((root / "meta/info.json").read_text()) == json.loads((full / "meta/info.json").read_text())


def test_replace_moves_the_partition_to_the_end_in_one_publication(abc, staged, parts, tmp_path):
    root = abc
    b2 = stage(make_partition(tmp_path / "src", parts["B"].key, seed=5, task_prefix="again "),
               tmp_path / "staged_b2" / parts["B"].key)
    assert b2.version != staged["B"].version
    with pytest.raises(incremental.NeedsFullAssembly, match="replace"):
        incremental.append_partition(fsspec.filesystem("file"), str(root), str(b2.path), tmp_path / "s0",
                                     in_dataset=staged["B"].version)
    videos = {p: p.read_bytes() for p in root.glob("videos/*/*/*.mp4") if p.name != "file-001.mp4"}
    fs = Recording(fsspec.filesystem("file"))
    res = incremental.replace_partition(fs, str(root), str(b2.path), tmp_path / "s1")
    assert res.replaced == [parts["B"].key] and res.removed == [] and res.added == []
    # written videos: only B's new one; the others' bytes unchanged
    assert [p for p in fs.written if p.endswith(".mp4")] == [
        str(root / "videos/observation.images.ego/chunk-000/file-004.mp4")]
    assert not [p for p in fs.read if p.endswith(".mp4") and p.startswith(str(root))]  # only its staged one
    for p, b in videos.items():
        assert p.read_bytes() == b, p
    # one publication: info.json and the header written once, last
    assert [p.rsplit("/", 1)[-1] for p in fs.written].count("info.json") == 1
    assert fs.written[-1].endswith("ego_assets_header.json")
    rows = meta_rows(root)
    assert {r["source/partition_key"] for r in rows[-b2.n_episodes:]} == {parts["B"].key}
    check_consistent(root)
    full = full_assembly(tmp_path, "full_ab2c", [staged["A"], b2, staged["C"]])
    assert_same_dataset(root, full)
    load_check(root, full)
    # the next append and the next full assembly still work
    d = make_partition(tmp_path / "src", "vid-d", seed=9)
    sd = stage(d, tmp_path / "staged_d" / d.key)
    incremental.append_partition(fsspec.filesystem("file"), str(root), str(sd.path), tmp_path / "s2")
    check_consistent(root)
    assemble(root, [], val_fraction=VAL_FRACTION)
    assert by_key(root) == by_key(full_assembly(tmp_path, "full_ab2cd", [staged["A"], b2, staged["C"], sd]))


def test_removing_the_last_partition_needs_the_full_assembly(dataset_copy, parts):
    root, _ = dataset_copy
    fs = fsspec.filesystem("file")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(incremental.NeedsFullAssembly, match="no episode"):
        incremental.update_dataset(fs, str(root), remove=[parts["A"].key, parts["B"].key])
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before  # nothing changed


def test_a_data_file_that_disagrees_with_meta_is_named_and_nothing_is_published(abc, parts):
    from ego_assets.lib.lerobot.layout import DatasetStateError

    root = abc
    bad = root / "data/chunk-000/file-002.parquet"  # C's
    t = pq.read_table(bad)
    pq.write_table(t.slice(0, t.num_rows - 1), bad)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(DatasetStateError, match="file-002.parquet"):
        incremental.remove_partition(fsspec.filesystem("file"), str(root), parts["A"].key)
    # B's renumbered copy (written before C's failed) is gone again; no metadata changed
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
