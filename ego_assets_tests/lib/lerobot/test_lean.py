"""The lean install: the pipeline writes and checks a dataset without lerobot/torch; the format module
says what LeRobot 0.6 says; a missing extra is named."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ego_assets.lib.extras import MissingExtraError, require
from ego_assets.lib.lerobot import format as F

REPO = Path(__file__).parents[3]
HEAVY = ("torch", "lerobot", "transformers", "datasets", "torchvision")

# An import hook that makes the heavy packages uninstalled for the child process.
BLOCK = textwrap.dedent(f"""
    import sys, importlib.abc
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {HEAVY!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
            return None
    sys.meta_path.insert(0, _Block())
""")


@pytest.mark.slow
def test_pipeline_writes_and_checks_a_dataset_without_lerobot_or_torch(tmp_path):
    code = BLOCK + textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        import ego_assets.lib.lerobot.validate as V
        from ego_assets_tests.lib.lerobot.synth import make_partition, stage
        from ego_assets.lib.lerobot.assembly import assemble
        tmp = Path({str(tmp_path)!r})
        sps = [stage(make_partition(tmp / "src", k, seed=i, source="lab"), tmp / "staged" / k)
               for i, k in enumerate(["vid-a", "vid-b"])]
        res = assemble(tmp / "ds", sps, val_fraction=0.0)
        checks = V.validate_dataset(tmp / "ds", res.episodes)
        heavy = [m for m in sys.modules if m.split(".")[0] in {HEAVY!r}]
        print(json.dumps({{"checks": checks, "heavy": heavy, "episodes": res.n_episodes}}))
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [] and out["episodes"] == 6
    checks = {c[0]: c for c in out["checks"]}
    # stats_nondegenerate (WARN) flags dimensions the synthetic hands never move; every ERROR check passes
    failed = sorted(n for n, c in checks.items() if not c[1] and n != "stats_nondegenerate")
    assert failed == ["lerobot_load_check"], failed
    assert "ego-assets[lerobot]" in checks["lerobot_load_check"][3]
    # two video files of 3 episodes each: the first and last episode of each file (validate.decode_sample)
    assert "first+last frames of 4 episodes decoded" in checks["frames_decode"][3]
    for name in ("episode_lengths_match", "timestamps_on_grid", "stats_finite", "tasks_nonempty",
                 "splits_contiguous", "action_pad_on_last_frames", "codebase_version"):
        assert checks[name][1], checks[name]


def test_file_checks_agree_with_lerobots(dataset_ab, monkeypatch):
    """The same dataset checked through LeRobotDataset and from its files: the same verdicts."""
    import ego_assets.lib.lerobot.validate as V

    root, result = dataset_ab
    with_lerobot = {c[0]: c for c in V.validate_dataset(root, result.episodes)}
    monkeypatch.setattr(V, "has_module", lambda m: m != "lerobot")
    files = {c[0]: c for c in V.validate_dataset(root, result.episodes)}
    assert set(with_lerobot) - {"lerobot_loads"} == set(files) - {"lerobot_load_check"}
    for name in set(files) - {"lerobot_load_check"}:
        assert files[name][1] == with_lerobot[name][1] and files[name][2] == pytest.approx(with_lerobot[name][2]), name


def test_file_decoder_gives_lerobots_pixels(dataset_ab):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    import ego_assets.lib.lerobot.validate as V

    root, _ = dataset_ab
    info = json.loads((root / F.INFO_PATH).read_text())
    meta = V.pq.read_table(sorted((root / F.EPISODES_DIR).glob("*/*.parquet"))[0]).sort_by("episode_index")
    files = V._FilesDataset(root, info, meta, 1e-4)
    ds = LeRobotDataset("local/x", root=root, video_backend="pyav")
    for idx in (0, 7, len(ds) - 1):
        a, b = files.item(idx), ds[idx]
        key = files.video_keys[0]
        assert a["episode_index"] == int(b["episode_index"])
        np.testing.assert_allclose(a[key], np.asarray(b[key]), atol=1.5 / 255)


def test_format_is_lerobots(dataset_ab, tmp_path):
    """Constants, info.json, the data files' schema, tasks.parquet, aggregated stats, video info: ours
    against LeRobot 0.6's functions on the same input."""
    import pandas as pd
    from lerobot.datasets import utils as U
    from lerobot.datasets.compute_stats import aggregate_stats
    from lerobot.datasets.dataset_metadata import CODEBASE_VERSION
    from lerobot.datasets.feature_utils import create_empty_dataset_info, get_hf_features_from_features
    from lerobot.datasets.io_utils import load_tasks, write_tasks
    from lerobot.datasets.video_utils import get_video_info
    from lerobot.utils import constants as C

    assert F.CODEBASE_VERSION == CODEBASE_VERSION
    assert (F.OBS_STATE, F.OBS_IMAGES, F.ACTION) == (C.OBS_STATE, C.OBS_IMAGES, C.ACTION)
    assert F.DEFAULT_FEATURES == C.DEFAULT_FEATURES
    for name in ("INFO_PATH", "STATS_PATH", "DEFAULT_TASKS_PATH", "EPISODES_DIR", "DATA_DIR", "VIDEO_DIR",
                 "DEFAULT_EPISODES_PATH", "DEFAULT_DATA_PATH", "DEFAULT_VIDEO_PATH", "DEFAULT_CHUNK_SIZE",
                 "DEFAULT_DATA_FILE_SIZE_IN_MB", "DEFAULT_VIDEO_FILE_SIZE_IN_MB"):
        assert getattr(F, name) == getattr(U, name), name

    root, _ = dataset_ab
    info = json.loads((root / F.INFO_PATH).read_text())
    feats = {k: {kk: vv for kk, vv in v.items() if kk != "info"} for k, v in info["features"].items()}
    ref = create_empty_dataset_info(CODEBASE_VERSION, info["fps"], json.loads(json.dumps(feats)), use_videos=True,
                                    robot_type="human_hands").to_dict()
    assert F.create_info(info["fps"], feats, robot_type="human_hands") == ref

    feats_t = {k: {**v, "shape": tuple(v["shape"])} for k, v in feats.items()}
    assert F.data_schema(feats_t) == get_hf_features_from_features(feats_t).arrow_schema
    assert F.data_schema(feats_t).metadata == get_hf_features_from_features(feats_t).arrow_schema.metadata
    data_file = sorted((root / F.DATA_DIR).glob("*/*.parquet"))[0]
    assert pq.read_schema(data_file).remove_metadata() == F.data_schema(feats_t).remove_metadata()

    tasks = ["pick up the cup", "place the cup"]
    F.write_tasks(tasks, tmp_path / "ours")
    write_tasks(pd.DataFrame({"task_index": [0, 1]}, index=pd.Index(tasks)), tmp_path / "theirs")
    pd.testing.assert_frame_equal(load_tasks(tmp_path / "ours"), load_tasks(tmp_path / "theirs"))
    assert F.read_tasks(tmp_path / "theirs") == tasks

    rng = np.random.default_rng(0)
    eps = [{"a": {"min": rng.normal(size=3), "max": rng.normal(size=3), "mean": rng.normal(size=3),
                  "std": rng.uniform(0.1, 1, 3), "count": np.array([n]), "q01": rng.normal(size=3),
                  "q99": rng.normal(size=3)}} for n in (5, 17, 40)]
    ours, theirs = F.aggregate_stats(eps), aggregate_stats(eps)
    for s in theirs["a"]:
        np.testing.assert_allclose(ours["a"][s], theirs["a"][s], rtol=1e-12, err_msg=s)

    from lerobot.configs.video import RGBEncoderConfig

    from ego_assets.lib.lerobot.staging import VideoSettings

    video = sorted((root / F.VIDEO_DIR).rglob("*.mp4"))[0]
    assert F.video_info(video) == {k: v for k, v in get_video_info(video).items()}
    # the default encoding is LeRobot's default encoder configuration, recorded as LeRobot records it
    assert info["features"]["observation.images.ego"]["info"] == get_video_info(video, RGBEncoderConfig())
    assert F.video_info(video, VideoSettings().as_dict()) == get_video_info(video, RGBEncoderConfig())


def test_missing_extra_is_named():
    with pytest.raises(MissingExtraError, match=r"'lerobot' extra .*ego-assets\[lerobot\].*EXTRAS=lerobot"):
        require("no_such_module_xyz", "lerobot", "training")
    require("numpy", "lerobot", "nothing")  # installed: no error


def test_bimanual_24_dataset_has_named_dims_and_quantile_stats(tmp_path, datasets_cache):
    """A bimanual_24 dataset: 24 named dims, stats with the q01/q99 pi05 normalises with, loads in LeRobot."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from ego_assets.lib.lerobot.features import action_names, state_names
    from ego_assets.lib.lerobot.assembly import assemble
    from ego_assets_tests.lib.lerobot.synth import make_partition, stage

    sp = stage(make_partition(tmp_path / "src", "vid-bi", seed=5, source="lab"), tmp_path / "staged",
               action_space="bimanual_24")
    assemble(tmp_path / "ds", [sp], val_fraction=0.0)
    info = json.loads((tmp_path / "ds" / F.INFO_PATH).read_text())
    assert info["features"]["action"]["names"] == action_names("bimanual_24")
    assert info["features"]["observation.state"]["names"] == state_names("bimanual_24")
    stats = json.loads((tmp_path / "ds" / F.STATS_PATH).read_text())
    for key in ("action", "observation.state"):
        lo, hi = np.asarray(stats[key]["q01"]), np.asarray(stats[key]["q99"])
        assert lo.shape == hi.shape == (24,) and np.all(lo <= hi)
        # (LeRobot's histogram runs from min - 1e-10 to max + 1e-10)
        assert np.all(np.asarray(stats[key]["min"]) - 1e-9 <= lo) and np.all(hi <= np.asarray(stats[key]["max"]) + 1e-9)
    ds = LeRobotDataset("local/bi", root=tmp_path / "ds", video_backend="pyav")
    item = ds[3]
    assert tuple(item["action"].shape) == (24,) and tuple(item["observation.state"].shape) == (24,)
    assert ds.meta.stats["action"]["q99"].shape == (24,)
