"""The whole pipeline on the real egocentric clip: hands, poses, segments, captions, and a LeRobot
dataset that lerobot loads; then incremental growth and a re-materialized video (issues 3-6)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ego_assets.lib import catalog
from ego_assets.lib.storage import Store

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from ego_assets_tests.conftest import SAMPLE_CLIP, SHARED_CLIP

    clip = SHARED_CLIP if SHARED_CLIP.exists() else SAMPLE_CLIP
    if not clip.exists():
        pytest.skip(f"no real clip at {SHARED_CLIP} or {SAMPLE_CLIP}")
    root = tmp_path_factory.mktemp("real")
    home = root / "home"
    env = dict(os.environ, EGO_ASSETS_HOME=str(home))
    env.pop("DAGSTER_HOME", None)
    r = subprocess.run([str(BIN / "ego-assets"), "run", str(clip), "--source", "desk"], env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    return dict(home=home, clip=clip, env=env, root=root)


def _sql(home, q):
    con = catalog.connect(Store(str(home)), in_memory=True)
    try:
        return con.execute(q).fetchall()
    finally:
        con.close()


def test_hands_are_found_with_stable_handedness(demo):
    h = demo["home"]
    n_frames = _sql(h, "select count(*) from frames")[0][0]
    per_hand = dict(_sql(h, "select hand, count(distinct frame_index) from hand_tracks group by 1"))
    # both hands are visible in nearly every frame of this clip
    assert per_hand.get("left", 0) > 0.8 * n_frames and per_hand.get("right", 0) > 0.6 * n_frames
    # a track keeps one identity: each track_id is one hand, and the left hand is on the image's left
    assert _sql(h, "select count(*) from (select track_id from hand_tracks group by 1 "
                   "having count(distinct hand) > 1)")[0][0] == 0
    mean_x = dict(_sql(h, "select hand, avg(kp2d[1]) from hand_tracks group by 1"))
    assert mean_x["left"] < mean_x["right"]
    # metric 3D: wrists in front of the camera at arm's length
    z = np.array([r[0] for r in _sql(h, "select joints_cam[3] from hand_tracks")])
    assert 0.15 < np.median(z) < 1.2


def test_poses_segments_captions(demo):
    h = demo["home"]
    tracked = _sql(h, "select avg(tracked::int), count(*) from camera_poses")[0]
    assert tracked[0] > 0.8 and tracked[1] == _sql(h, "select count(*) from frames")[0][0]
    segs = _sql(h, "select hand, start_frame, end_frame from segments order by hand, start_frame")
    assert len(segs) >= 4 and {s[0] for s in segs} == {"left", "right"}
    for (h1, s1, e1), (h2, s2, e2) in zip(segs, segs[1:]):
        if h1 == h2:
            assert e1 < s2  # no overlap within a hand
    caps = _sql(h, "select hand, instruction, valid, captioner from captions")
    assert len(caps) == len(segs)
    for hand, text, valid, captioner in caps:
        assert captioner == "kinematic"
        if valid:
            assert f"{hand} hand" in text.lower()


def test_dataset_loads_with_lerobot(demo):
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = demo["home"] / "datasets" / "ego_assets"
    n_eps = _sql(demo["home"], "select count(*) from episodes")[0][0]
    assert n_eps >= 3
    ds = LeRobotDataset("local/ego_assets", root=root, video_backend="pyav")
    assert ds.num_episodes == n_eps
    lengths = dict(_sql(demo["home"], "select episode_index, length from episodes"))
    assert ds.num_frames == sum(lengths.values())
    item = ds[0]
    assert item["observation.images.ego"].shape[0] == 3
    assert item["observation.state"].shape == (102,) and item["action"].shape == (102,)
    assert isinstance(item["task"], str) and item["task"]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, num_workers=0)))
    assert batch["action"].shape == (4, 102) and torch.isfinite(batch["action"]).all()


def test_the_catalog_file_holds_the_whole_run(demo):
    """The user's own catalog file (the dataset's run refreshed it as its last step; the CLI does not
    again) shows every row the run wrote, the dataset's own lineage and quality included."""
    import duckdb
    import pyarrow.parquet as pq

    home = demo["home"]
    written = {(r["asset"], r["partition_key"], r["run_id"])
               for f in (home / "lineage").rglob("*.parquet") for r in pq.read_table(f).to_pylist()}
    con = duckdb.connect(str(home / "catalog.duckdb"), read_only=True)
    try:
        seen = set(con.execute("select asset, partition_key, run_id from lineage").fetchall())
        dataset = con.execute("select status from lineage where asset = 'lerobot_dataset'").fetchall()
        checks = con.execute("select count(*) from quality where asset = 'lerobot_dataset'").fetchone()[0]
    finally:
        con.close()
    assert seen == written and ("lerobot_dataset", "dataset") in {(a, p) for a, p, _ in seen}
    assert dataset == [("ok",)] and checks >= 2


def test_incremental_growth_and_rematerialization(demo):
    """A second source adds its episodes without touching the first's video files; changing a
    video's segmentation replaces its episodes (no duplicates)."""
    home, env = demo["home"], demo["env"]
    root = home / "datasets" / "ego_assets"
    videos_before = {p: p.stat().st_mtime_ns for p in (root / "videos").rglob("*.mp4")}
    n1 = _sql(home, "select count(*) from episodes")[0][0]
    other = demo["root"] / "other"
    other.mkdir()
    shutil.copy(demo["clip"], other / "copy.mp4")
    r = subprocess.run([str(BIN / "ego-assets"), "run", str(other), "--source", "lab"], env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    per_src = dict(_sql(home, "select split_part(partition_key, '-', 1), count(*) from episodes group by 1"))
    assert per_src == {"desk": n1, "lab": n1}
    for p, m in videos_before.items():
        assert p.exists() and p.stat().st_mtime_ns == m  # nothing re-encoded
    # re-materialize one video with another segmentation: its episodes are replaced
    os.environ["EGO_ASSETS_HOME"] = str(home)
    from ego_assets.defs.execute import materialize_dataset, materialize_videos, use_local_instance
    from ego_assets.definitions import defs

    store = Store(str(home))
    pk = next(k for k in store.registered() if k.startswith("lab-"))
    instance = use_local_instance(store)
    status = materialize_videos(defs, instance, store, [pk], run_config={
        "ops": {"segments": {"config": {"min_length": 20, "max_length": 60}}}})
    assert status[pk].status == "ok"
    assert materialize_dataset(defs, instance).success
    rows = _sql(home, "select partition_key, episode_index, length from episodes order by episode_index")
    idx = [r[1] for r in rows]
    assert idx == list(range(len(idx)))  # renumbered, unique
    lab = [r for r in rows if r[0] == pk]
    assert all(20 <= r[2] <= 61 for r in lab)
    assert len([r for r in rows if r[0].startswith("desk-")]) == n1
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/ego_assets", root=root, video_backend="pyav")
    assert ds.num_episodes == len(rows)


def test_push_dry_run_lists_the_dataset(demo, capsys):
    from ego_assets import cli

    assert cli.main(["push", "someone/ego-hands", "--dry-run", "--home", str(demo["home"])]) == 0
    out = capsys.readouterr().out
    assert "README.md" in out and "meta/info.json" in out and "would be uploaded to someone/ego-hands" in out
    assert cli.main(["push", "not-a-repo-id", "--dry-run", "--home", str(demo["home"])]) == 1
