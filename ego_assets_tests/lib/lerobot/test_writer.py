"""Staging + assembly on synthetic partitions, checked through LeRobot's own loader."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ego_assets.lib import schemas
from ego_assets.lib.lerobot.features import ACTION_PAD_KEY, SOURCE_T_KEY, STATE_KEY, VIDEO_KEY
from ego_assets.lib.lerobot.assembly import assemble, split_of
from ego_assets.lib.lerobot.layout import (
    DatasetStateError,
    IncompatiblePartitionError,
    LeRobotExportError,
    TMP_DIR,
)
from ego_assets.lib.lerobot.staging import grid_frames
from ego_assets_tests.lib.lerobot import synth
from ego_assets_tests.lib.lerobot.conftest import VAL_FRACTION


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def decode_staged(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def video_by_partition(root: Path) -> dict[str, Path]:
    state = json.loads((root / "meta/ego_assets_state.json").read_text())
    return {k: root / v["video_file"] for k, v in state["partitions"].items()}


def file_id(p: Path) -> tuple:
    st = p.stat()
    return st.st_ino, st.st_mtime_ns, sha(p)


def meta_table(root: Path) -> pa.Table:
    files = sorted((root / "meta/episodes").glob("*/*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).sort_by("episode_index")


@pytest.mark.slow
def test_import_is_light():
    """The Dagster definitions import this package: no torch / lerobot.datasets at import time."""
    code = ("import sys; import ego_assets.lib.lerobot.staging, ego_assets.lib.lerobot.assembly, "
            "ego_assets.lib.lerobot.versions, ego_assets.lib.lerobot.incremental, "
            "ego_assets.lib.lerobot.validate, ego_assets.lib.lerobot.publish; "
            "bad = [m for m in ('torch', 'datasets', 'lerobot.datasets') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[3])


def test_grid_frames_nearest_source_frame_on_the_fps_grid():
    t = np.array([0.0, 0.1001, 0.2003, 0.2995, 0.41, 0.5004, 0.61])
    fi = np.arange(len(t))
    chosen, ts = grid_frames(fi, t, 1, 5, 10)
    # grid 0.1001 + k/10 for k = 0..4 (last tick <= t[5]); nearest frames
    assert chosen.tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(ts, t[1:6])
    # a dropped proxy frame repeats its neighbour; a denser proxy skips frames
    t2 = np.array([0.0, 0.1, 0.32, 0.4])
    assert grid_frames(np.arange(4), t2, 0, 3, 10)[0].tolist() == [0, 1, 1, 2, 3]
    t3 = np.arange(10) * 0.05
    assert grid_frames(np.arange(10), t3, 0, 9, 10)[0].tolist() == [0, 2, 4, 6, 8]


def test_staged_partition_content(staged, parts):
    s, p = staged["A"], parts["A"]
    assert s.n_episodes == 3
    assert {(d["segment_id"], d["reason"]) for d in s.skipped} == {(90, "segment not valid"),
                                                                     (91, "no valid caption")}
    eps = s.episodes.to_pylist()
    assert [(e["segment_id"], e["hand"]) for e in eps] == [(0, "right"), (1, "left"), (2, "right")]
    data = pq.read_table(s.path / "data.parquet")
    frames = decode_staged(s.path / "video.mp4")
    assert len(frames) == data.num_rows == s.n_frames == sum(e["length"] for e in eps)
    # each step shows the source frame nearest to its grid time, and source.t_s is that frame's time
    src_t = np.asarray(data[SOURCE_T_KEY].to_numpy())
    src_idx = np.array([int(np.argmin(np.abs(p.t_s - t))) for t in src_t])
    np.testing.assert_allclose(src_t, p.t_s[src_idx])
    grays = np.array([f[-8:, -8:].mean() for f in frames])
    want = np.array([synth.gray_of(i) for i in src_idx])
    assert np.abs(grays - want).max() < 4
    # per episode: k / fps timestamps, source times within half a step of the grid
    for e in eps:
        rows = data.filter(pa.compute.equal(data["episode"], e["ordinal"]))
        ts = rows["timestamp"].to_numpy()
        np.testing.assert_allclose(ts, np.arange(e["length"]) / 10, atol=1e-6)
        st = rows[SOURCE_T_KEY].to_numpy()
        assert np.abs(st - st[0] - np.arange(len(st)) / 10).max() <= 0.05 + 1e-9
        assert rows[ACTION_PAD_KEY].to_pylist() == [False] * (e["length"] - 1) + [True]


def test_assembled_dataset_loads_with_lerobot(dataset_ab, parts):
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root, result = dataset_ab
    ds = LeRobotDataset("ego_assets/test", root=root, video_backend="pyav")
    assert ds.num_episodes == result.n_episodes == 6
    assert ds.num_frames == result.n_frames == len(ds)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    assert set(info["features"]) >= {VIDEO_KEY, STATE_KEY, "action", ACTION_PAD_KEY, SOURCE_T_KEY, "index"}
    assert len(info["features"]["action"]["names"]) == 102
    stats = json.loads((root / "meta/stats.json").read_text())
    assert {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"} <= set(stats["action"])
    assert np.asarray(stats[VIDEO_KEY]["mean"]).shape == (3, 1, 1)
    assert stats["index"]["max"] == [result.n_frames - 1] and stats["index"]["count"] == [result.n_frames]

    # a frame read through a torch DataLoader
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False, num_workers=0)
    batch = next(iter(loader))
    assert batch[VIDEO_KEY].shape == (4, 3, 48, 64)
    assert batch[STATE_KEY].shape == (4, 102) and batch["action"].shape == (4, 102)
    assert batch[ACTION_PAD_KEY].dtype == torch.bool and isinstance(batch["task"][0], str)

    # every episode's first and last frame decodes to the source frame its source.t_s names
    eps = meta_table(root)
    key_of = {p.key: p for p in parts.values()}
    for row in eps.to_pylist():
        p = key_of[row["source/partition_key"]]
        for idx in (row["dataset_from_index"], row["dataset_to_index"] - 1):
            item = ds[idx]
            src = int(np.argmin(np.abs(p.t_s - float(item[SOURCE_T_KEY]))))
            gray = float(item[VIDEO_KEY][:, -8:, -8:].mean()) * 255
            assert abs(gray - synth.gray_of(src)) < 4, (row["episode_index"], idx)
            assert item["task"] == row["tasks"][0]

    # action = next_state - state on the known trajectory (camera frame of step t, see test_actions)
    item0, item1 = ds[0], ds[1]
    p = key_of[eps["source/partition_key"][0].as_py()]
    t0, t1 = float(item0[SOURCE_T_KEY]), float(item1[SOURCE_T_KEY])
    hand = eps["source/hand"][0].as_py()
    o = 0 if hand == "left" else 51
    R_wc, _ = synth.camera(np.array([t0]))
    dp_world = synth.wrist_pos(hand, np.array([t1])) - synth.wrist_pos(hand, np.array([t0]))
    np.testing.assert_allclose(item0["action"][o:o + 3].numpy(), R_wc.inv().apply(dp_world)[0], atol=1e-5)


def test_validation_passes(dataset_ab):
    from ego_assets.lib.lerobot.validate import validate_dataset

    root, result = dataset_ab
    checks = validate_dataset(root, result.episodes)
    failed = [c for c in checks if not c[1]]
    assert not failed, failed
    names = {c[0] for c in checks}
    assert {"lerobot_loads", "frames_decode", "episode_lengths_match", "timestamps_on_grid", "stats_finite",
            "stats_nondegenerate", "tasks_nonempty", "splits_contiguous"} <= names


def test_validation_reports_what_is_wrong(dataset_copy):
    from ego_assets.lib.lerobot.validate import validate_dataset

    root, result = dataset_copy
    # lengths disagree with the episodes rows, a dimension without variance, a video file gone
    bad = result.episodes.set_column(result.episodes.schema.get_field_index("length"), "length",
                                     pa.array([1] * result.episodes.num_rows, pa.int32()))
    stats = json.loads((root / "meta/stats.json").read_text())
    stats[STATE_KEY]["std"][3] = 0.0
    (root / "meta/stats.json").write_text(json.dumps(stats))
    checks = {c[0]: c for c in validate_dataset(root, bad, max_episodes=2)}
    assert not checks["episode_lengths_match"][1]
    assert not checks["stats_nondegenerate"][1] and "left.wrist.rx" in checks["stats_nondegenerate"][3]
    next(iter(video_by_partition(root).values())).unlink()
    checks = {c[0]: c for c in validate_dataset(root)}
    assert not checks["dataset_files_present"][1] and "lerobot_loads" not in checks


def test_split_by_source_video(dataset_ab, parts):
    root, result = dataset_ab
    info = json.loads((root / "meta/info.json").read_text())
    ep = result.episodes.to_pylist()
    for e in ep:
        assert e["split"] == split_of(e["partition_key"], VAL_FRACTION)
    n_a = sum(e["partition_key"] == parts["A"].key for e in ep)
    assert info["splits"] == {"train": f"0:{n_a}", "validation": f"{n_a}:{len(ep)}"}
    # a source video's episodes never straddle splits; train is the first contiguous range
    assert [e["split"] for e in ep] == ["train"] * n_a + ["validation"] * (len(ep) - n_a)
    # the episodes rows conform to the contract
    t = result.episodes_of(parts["B"].key)
    c = schemas.conform("episodes", t, parts["B"].key)
    assert c.num_rows == len(ep) - n_a and set(c["hand"].to_pylist()) <= {"left", "right"}
    prov = json.loads(c["provenance"][0].as_py())
    assert prov["source"] == "web" and prov["licence"].startswith("CC-BY-NC-4.0") and "backends" in prov
    assert c["start_s"][0].as_py() < c["end_s"][0].as_py()


def test_incremental_add_keeps_existing_videos(dataset_copy, staged, parts):
    root, before = dataset_copy
    vids = video_by_partition(root)
    ids = {k: file_id(p) for k, p in vids.items()}
    res = assemble(root, [staged["C"]], val_fraction=VAL_FRACTION)
    assert res.added == [parts["C"].key] and res.videos_linked == [parts["C"].key]
    assert res.n_episodes == before.n_episodes + staged["C"].n_episodes
    after = video_by_partition(root)
    for k, ident in ids.items():
        # same bytes, same inode and mtime: renamed at most (B moves to the slot after C), never rewritten
        assert file_id(after[k]) == ident, k
    assert after[parts["B"].key] != vids[parts["B"].key]
    assert parts["A"].key not in res.data_written  # A's numbering did not change
    # indices consistent: contiguous episode and frame indices, the new partition in train
    meta = meta_table(root)
    assert meta["episode_index"].to_pylist() == list(range(res.n_episodes))
    assert meta["dataset_from_index"].to_pylist()[1:] == meta["dataset_to_index"].to_pylist()[:-1]
    keys = meta["source/partition_key"].to_pylist()
    assert keys == sorted(keys, key=lambda k: (k == parts["B"].key, k))
    # assembling the same partitions again changes nothing
    ids2 = {k: file_id(p) for k, p in video_by_partition(root).items()}
    res2 = assemble(root, [staged["A"], staged["C"]], val_fraction=VAL_FRACTION)
    assert res2.added == [] and res2.replaced == [] and res2.data_written == []
    assert {k: file_id(p) for k, p in video_by_partition(root).items()} == ids2


def test_incremental_equals_from_scratch(dataset_copy, staged, tmp_path):
    root, _ = dataset_copy
    assemble(root, [staged["C"]], val_fraction=VAL_FRACTION)
    scratch = tmp_path / "scratch"
    assemble(scratch, [staged["C"], staged["B"], staged["A"]], val_fraction=VAL_FRACTION)
    for rel in ("meta/info.json", "meta/stats.json"):
        assert json.loads((root / rel).read_text()) == json.loads((scratch / rel).read_text()), rel
    assert meta_table(root).equals(meta_table(scratch))
    assert pq.read_table(root / "meta/tasks.parquet").equals(pq.read_table(scratch / "meta/tasks.parquet"))
    for rel in sorted(p.relative_to(scratch) for p in scratch.glob("data/*/*.parquet")):
        assert pq.read_table(root / rel).equals(pq.read_table(scratch / rel)), rel
    for rel in sorted(p.relative_to(scratch) for p in scratch.glob("videos/*/*/*.mp4")):
        assert sha(root / rel) == sha(scratch / rel), rel


def test_restaged_partition_replaces_its_episodes(dataset_copy, parts, work):
    root, before = dataset_copy
    a = parts["A"]
    ids = {k: file_id(p) for k, p in video_by_partition(root).items()}
    # new data version of A: one segment less, one longer
    seg = a.segments.filter(pa.compute.not_equal(a.segments["segment_id"], 2))
    seg = seg.set_column(seg.schema.get_field_index("end_frame"), "end_frame",
                         pa.array([25 if s == 0 else e for s, e in zip(seg["segment_id"].to_pylist(),
                                                                     seg["end_frame"].to_pylist())], pa.int32()))
    from ego_assets.lib.lerobot.staging import stage_partition

    s2 = stage_partition(a.key, a.proxy, a.frames, seg, a.captions, a.hand_world, a.camera_poses, a.provenance,
                         work / "restaged" / a.key)
    assert s2.n_episodes == 2
    res = assemble(root, [s2], val_fraction=VAL_FRACTION)
    assert res.replaced == [a.key] and res.added == []
    eps = res.episodes.to_pylist()
    mine = [(e["segment_id"], e["hand"]) for e in eps if e["partition_key"] == a.key]
    assert sorted(mine) == [(0, "right"), (1, "left")]  # replaced, not duplicated
    assert len(eps) == before.n_episodes - 1 and len(set((e["partition_key"], e["segment_id"], e["hand"])
                                                         for e in eps)) == len(eps)
    assert [e["length"] for e in eps if e["partition_key"] == a.key][0] == 24  # frames 2..25 at ~10 fps
    meta = meta_table(root)
    assert meta["episode_index"].to_pylist() == list(range(len(eps)))
    assert sum(meta["length"].to_pylist()) == res.n_frames == len(pq.read_table(root / "data").to_pylist())
    b = parts["B"].key
    assert file_id(video_by_partition(root)[b]) == ids[b]  # the other partition untouched
    assert file_id(video_by_partition(root)[a.key])[2] != ids[a.key][2]
    # remove a partition
    res = assemble(root, [], remove=[a.key], val_fraction=VAL_FRACTION)
    assert res.removed == [a.key] and {e["partition_key"] for e in res.episodes.to_pylist()} == {b}
    assert len(list(root.glob("videos/*/*/*.mp4"))) == 1 and len(list(root.glob("data/*/*.parquet"))) == 1
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("ego_assets/test", root=root, video_backend="pyav")
    assert ds.num_episodes == res.n_episodes and ds[len(ds) - 1][VIDEO_KEY].shape == (3, 48, 64)


def test_assembly_recovers_from_an_interrupted_run(dataset_copy, staged):
    root, before = dataset_copy
    vids = video_by_partition(root)
    # simulate a run killed after moving files to the temp folder / into each other's slots
    (root / TMP_DIR / "videos").mkdir(parents=True)
    a, b = sorted(vids)
    os.replace(vids[a], root / TMP_DIR / "videos" / f"{a}.mp4")
    os.replace(vids[b], vids[a])
    res = assemble(root, [], val_fraction=VAL_FRACTION)
    assert res.n_episodes == before.n_episodes
    assert not (root / TMP_DIR).exists()
    from ego_assets.lib.lerobot.validate import validate_dataset

    checks = validate_dataset(root, res.episodes)
    assert all(c[1] for c in checks), [c for c in checks if not c[1]]


def test_bad_inputs_name_the_problem(parts, work, staged, tmp_path):
    from ego_assets.lib.lerobot.staging import stage_partition

    a = parts["A"]
    args = (a.key, a.proxy, a.frames, a.segments, a.captions, a.hand_world, a.camera_poses, a.provenance)
    with pytest.raises(LeRobotExportError, match="hand_world.*wrist_pos_world"):
        stage_partition(*args[:5], a.hand_world.drop_columns(["wrist_pos_world"]), *args[6:], tmp_path / "x")
    with pytest.raises(LeRobotExportError, match="proxy video"):
        stage_partition(a.key, tmp_path / "nope.mp4", *args[2:], tmp_path / "x")
    with pytest.raises(LeRobotExportError, match="proxy video .*fewer frames"):  # another partition's
        stage_partition(a.key, parts["C"].proxy, *args[2:], tmp_path / "x")
    shifted = a.frames.set_column(1, "t_s", pa.compute.add(a.frames["t_s"], 0.5))
    with pytest.raises(LeRobotExportError, match="frame 2 is at .* the frames table says"):
        stage_partition(a.key, a.proxy, shifted, *args[3:], tmp_path / "x")
    with pytest.raises(ValueError, match="action_space"):
        stage_partition(*args, tmp_path / "x", action_space="hands_21")
    with pytest.raises(ValueError, match="partition key"):
        stage_partition("Bad Key!", *args[1:], tmp_path / "x")
    assert not (tmp_path / "x").exists()
    # a partition staged at another image size does not fit
    c = parts["C"]
    s = stage_partition(c.key, c.proxy, c.frames, c.segments, c.captions, c.hand_world, c.camera_poses,
                        c.provenance, tmp_path / "c32", image_size=(32, 24))
    with pytest.raises(IncompatiblePartitionError, match="image_size|24, 32"):
        assemble(tmp_path / "ds", [staged["A"], s])
    # a folder holding someone else's LeRobot dataset is not touched
    (tmp_path / "foreign" / "meta").mkdir(parents=True)
    (tmp_path / "foreign" / "meta" / "info.json").write_text("{}")
    with pytest.raises(DatasetStateError, match="not written by ego_assets"):
        assemble(tmp_path / "foreign", [staged["A"]])


def test_eef_7_dataset_with_undistort_and_letterbox(parts, tmp_path, datasets_cache):
    """The other action space end to end; the undistort callable is applied to every frame; a fixed
    image_size letterboxes (aspect kept, black bars)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from ego_assets.lib.lerobot.validate import validate_dataset
    from ego_assets.lib.lerobot.staging import stage_partition

    c = parts["C"]
    calls = []

    def undistort(img):  # stands in for a fisheye rectification: inverts the image
        calls.append(img.shape)
        return 255 - img

    s = stage_partition(c.key, c.proxy, c.frames, c.segments, c.captions, c.hand_world, c.camera_poses,
                        c.provenance, tmp_path / "c", action_space="eef_7", undistort=undistort,
                        image_size=(64, 32))
    assert calls and all(sh == (48, 64, 3) for sh in calls)
    assert s.manifest["image_transform"] == {"scale": [43 / 64, 32 / 48], "offset": [10, 0], "content": [43, 32],
                                             "size": [64, 32]}
    res = assemble(tmp_path / "ds", [s], val_fraction=0.0)
    ds = LeRobotDataset("ego_assets/eef", root=tmp_path / "ds", video_backend="pyav")
    item = ds[0]
    assert item[STATE_KEY].shape == (8,) and item["action"].shape == (7,)
    img = item[VIDEO_KEY].numpy() * 255
    assert img.shape == (3, 32, 64)
    assert img[:, :, :8].max() < 20  # left bar
    src = int(np.argmin(np.abs(c.t_s - float(item[SOURCE_T_KEY]))))
    assert abs(img[:, -6:-2, 46:50].mean() - (255 - synth.gray_of(src))) < 6  # inverted frame
    info = json.loads((tmp_path / "ds/meta/info.json").read_text())
    assert info["features"]["action"]["names"] == ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
    assert info["splits"] == {"train": f"0:{res.n_episodes}"}
    failed = [c for c in validate_dataset(tmp_path / "ds", res.episodes) if not c[1]]
    assert not failed, failed  # the constant "pad" dimension is by design
