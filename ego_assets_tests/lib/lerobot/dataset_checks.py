"""Checks of a LeRobot dataset changed in place (issue 19), shared by the local and the S3 tests: what
LeRobot's row-position lookup needs, equality with a full assembly of the same partitions (by partition
key: the order differs by design), and a LeRobot load with a query across episode boundaries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ego_assets.lib.lerobot.format import aggregate_stats
from ego_assets.lib.lerobot.stats import episode_stats

NUMBERING = ("episode_index", "index", "task_index")  # depend on the order, which differs by design


def meta_rows(root: Path) -> list[dict]:
    return [r for f in sorted(root.glob("meta/episodes/*/*.parquet")) for r in pq.read_table(f).to_pylist()]


def per_episode_stats(row: dict) -> dict:
    st: dict = {}
    for k, v in row.items():
        if k.startswith("stats/"):
            _, feat, s = k.split("/", 2)
            st.setdefault(feat, {})[s] = np.asarray(v, np.float64)
    return st


def check_consistent(root: Path) -> None:
    """What LeRobot's row-position lookup needs: meta/episodes row i is episode i, its frames are rows
    [from, to) of the data files in path order with that episode_index and index = position; each
    episode's stats of episode_index/index are those of its rows; info totals and stats.json match."""
    rows = meta_rows(root)
    data = pa.concat_tables([pq.read_table(f) for f in sorted(root.glob("data/*/*.parquet"))])
    assert [r["episode_index"] for r in rows] == list(range(len(rows)))
    assert rows[0]["dataset_from_index"] == 0 and rows[-1]["dataset_to_index"] == data.num_rows
    assert np.array_equal(data["index"].to_numpy(), np.arange(data.num_rows))
    ep = data["episode_index"].to_numpy()
    for r in rows:
        a, b = r["dataset_from_index"], r["dataset_to_index"]
        assert b - a == r["length"] and (ep[a:b] == r["episode_index"]).all(), r["episode_index"]
        got = per_episode_stats(r)
        want = episode_stats({"episode_index": ep[a:b], "index": np.arange(a, b)})
        for feat in ("episode_index", "index"):
            for s, v in want[feat].items():
                np.testing.assert_allclose(got[feat][s], v, rtol=1e-9, atol=1e-9, err_msg=f"{r['episode_index']} {feat}/{s}")
        dfile = root / f"data/chunk-{r['data/chunk_index']:03d}/file-{r['data/file_index']:03d}.parquet"
        assert dfile.exists(), dfile
        vfile = (root / "videos/observation.images.ego" /
                 f"chunk-{r['videos/observation.images.ego/chunk_index']:03d}/"
                 f"file-{r['videos/observation.images.ego/file_index']:03d}.mp4")
        assert vfile.exists(), vfile
    info = json.loads((root / "meta/info.json").read_text())
    assert info["total_episodes"] == len(rows) and info["total_frames"] == data.num_rows
    want = aggregate_stats([per_episode_stats(r) for r in rows])
    got = json.loads((root / "meta/stats.json").read_text())
    assert set(got) == set(want)
    for feat, st in want.items():
        for s, v in st.items():
            np.testing.assert_allclose(np.asarray(got[feat][s], np.float64), v, rtol=1e-9, atol=1e-9,
                                       err_msg=f"{feat}/{s}")


def by_key(root: Path) -> dict:
    """Per partition: its episodes (segment, hand, task, length, video span) in segment order."""
    out: dict = {}
    for r in meta_rows(root):
        out.setdefault(r["source/partition_key"], []).append(
            (r["source/segment_id"], r["source/hand"], r["tasks"][0], r["length"],
             round(r["videos/observation.images.ego/from_timestamp"], 6),
             round(r["videos/observation.images.ego/to_timestamp"], 6)))
    return {k: sorted(v) for k, v in out.items()}


def assert_same_dataset(root: Path, full: Path) -> None:
    """``root`` holds what the full assembly ``full`` holds, up to the order of the partitions."""
    assert by_key(root) == by_key(full)
    a, b = json.loads((root / "meta/info.json").read_text()), json.loads((full / "meta/info.json").read_text())
    for k in ("total_episodes", "total_frames", "fps", "features"):
        assert a[k] == b[k], k
    used = {t for eps in by_key(root).values() for _, _, t, *_ in eps}
    tasks = pq.read_table(root / "meta/tasks.parquet")
    name = next(c for c in tasks.column_names if c != "task_index")
    assert used <= set(tasks[name].to_pylist())  # a task no episode uses any more may stay
    assert tasks["task_index"].to_pylist() == list(range(tasks.num_rows))
    sa, sb = json.loads((root / "meta/stats.json").read_text()), json.loads((full / "meta/stats.json").read_text())
    assert set(sa) == set(sb)
    for feat in sb:
        if feat in NUMBERING:
            continue
        for s in sb[feat]:
            np.testing.assert_allclose(np.asarray(sa[feat][s], np.float64), np.asarray(sb[feat][s], np.float64),
                                       rtol=1e-6, atol=1e-7, err_msg=f"{feat}/{s}")


def load_check(root: Path, full: Path) -> None:
    """LeRobot loads it; a query across an episode boundary pads and returns the right rows; each
    episode's first frame decodes to the same image as in the full assembly (same video bytes and span)."""
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    fps = json.loads((root / "meta/info.json").read_text())["fps"]
    dt = {"action": [-1 / fps, 0.0, 1 / fps]}
    ds = LeRobotDataset("local/test", root=root, video_backend="pyav", delta_timestamps=dt)
    ref = LeRobotDataset("local/test", root=full, video_backend="pyav")
    rows = meta_rows(root)
    data = pa.concat_tables([pq.read_table(f) for f in sorted(root.glob("data/*/*.parquet"))])
    action = np.stack(data["action"].to_numpy(zero_copy_only=False))
    for r in rows[:-1]:
        last = r["dataset_to_index"] - 1
        it = ds[last]
        assert int(it["episode_index"]) == r["episode_index"]
        assert it["action_is_pad"].tolist() == [False, False, True]
        np.testing.assert_allclose(it["action"][0].numpy(), action[last - 1], rtol=1e-6)
        np.testing.assert_allclose(it["action"][2].numpy(), action[last], rtol=1e-6)  # clamped to the episode
        nxt = ds[last + 1]
        assert int(nxt["episode_index"]) == r["episode_index"] + 1
        assert nxt["action_is_pad"].tolist() == [True, False, False]
        np.testing.assert_allclose(nxt["action"][1].numpy(), action[last + 1], rtol=1e-6)
    ref_rows = {(r["source/partition_key"], r["source/segment_id"], r["source/hand"]): r for r in meta_rows(full)}
    for r in rows:
        q = ref_rows[(r["source/partition_key"], r["source/segment_id"], r["source/hand"])]
        a = ds[r["dataset_from_index"]]["observation.images.ego"]
        b = ref[q["dataset_from_index"]]["observation.images.ego"]
        assert a.shape == b.shape and torch.equal(a, b), r["episode_index"]


class Recording:
    """A filesystem wrapper that records the paths read, written and deleted."""

    def __init__(self, fs):
        self.fs, self.read, self.written, self.deleted = fs, [], [], []

    def __getattr__(self, name):
        return getattr(self.fs, name)

    def cat_file(self, path, *a, **kw):
        self.read.append(path)
        return self.fs.cat_file(path, *a, **kw)

    def open(self, path, *a, **kw):
        self.read.append(path)
        return self.fs.open(path, *a, **kw)

    def get_file(self, rpath, lpath, **kw):
        self.read.append(rpath)
        return self.fs.get_file(rpath, lpath, **kw)

    def pipe_file(self, path, data, **kw):
        self.written.append(path)
        return self.fs.pipe_file(path, data, **kw)

    def put_file(self, lpath, rpath, **kw):
        self.written.append(rpath)
        return self.fs.put_file(lpath, rpath, **kw)

    def rm_file(self, path):
        self.deleted.append(path)
        return self.fs.rm_file(path)

    def rm(self, paths, **kw):
        self.deleted.extend([paths] if isinstance(paths, str) else paths)
        return self.fs.rm(paths, **kw)
