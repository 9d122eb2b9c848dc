"""One dataset from sources of any size (letterbox, per-episode camera in dataset pixels) and versioned
publishing: a kill at any moment of an assembly never leaves readers a torn dataset (issue 12, issue 16
item 6)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ego_assets.lib.lerobot.features import CAMERA_PREFIX, VIDEO_KEY, DatasetFormat, dataset_format
from ego_assets.lib.lerobot.assembly import assemble
from ego_assets.lib.lerobot.layout import LeRobotExportError
from ego_assets.lib.lerobot.staging import episode_camera, letterbox_geometry
from ego_assets.lib.lerobot.versions import assemble_versioned, published_version, versions_dir
from ego_assets_tests.lib.lerobot import synth
from ego_assets_tests.lib.lerobot.conftest import VAL_FRACTION, keys_by_split

REPO = Path(__file__).resolve().parents[3]


def project(K: np.ndarray, X: np.ndarray) -> np.ndarray:
    x = (K @ X.T).T
    return x[:, :2] / x[:, 2:3]


def K_of(c: dict, pre: str = "") -> np.ndarray:
    return np.array([[c[pre + "fx"], 0, c[pre + "cx"]], [0, c[pre + "fy"], c[pre + "cy"]], [0, 0, 1]], float)


@pytest.mark.parametrize("w,h,expect_content,expect_offset", [
    (640, 360, (640, 360), (0, 60)),    # 16:9 landscape: bars above and below
    (360, 640, (270, 480), (185, 0)),   # portrait phone (rotation applied): bars left and right
    (640, 480, (640, 480), (0, 0)),     # 4:3: as is
    (160, 120, (640, 480), (0, 0)),     # small: upscaled
    (480, 480, (480, 480), (80, 0)),    # square fisheye
])
def test_camera_in_dataset_pixels_projects_like_the_frames(w, h, expect_content, expect_offset):
    """A 3D point projected with the proxy's intrinsics and moved by the letterbox lands where the episode's
    dataset-pixel intrinsics project it; the FoV is that of the whole 640x480 frame."""
    g = letterbox_geometry(w, h, (640, 480))
    assert tuple(g["content"]) == expect_content and tuple(g["offset"]) == expect_offset
    f = 0.8 * w
    calib = dict(fx=f, fy=f * 1.01, cx=w / 2 - 3.5, cy=h / 2 + 2.25, width=w, height=h, distortion_model="none",
                 camera_motion="moving")
    cam = episode_camera(calib, (w, h), (640, 480), source_size=(w * 3, h * 3))
    rng = np.random.default_rng(0)
    X = np.c_[rng.uniform(-0.3, 0.3, (50, 2)), rng.uniform(0.5, 2.0, 50)]
    u = project(K_of(calib), X)
    (sx, sy), (ox, oy) = g["scale"], g["offset"]
    moved = np.c_[(u[:, 0] + 0.5) * sx - 0.5 + ox, (u[:, 1] + 0.5) * sy - 0.5 + oy]
    np.testing.assert_allclose(project(K_of(cam), X), moved, atol=1e-9)
    assert cam["hfov_deg"] == pytest.approx(math.degrees(2 * math.atan(640 / (2 * cam["fx"]))))
    assert (cam["source_width"], cam["source_height"]) == (w * 3, h * 3)
    assert cam["distortion_model"] == "none" and cam["camera_motion"] == "moving"


def test_camera_of_an_undistorted_source_is_the_rectified_pinhole():
    calib = dict(fx=200.0, fy=200.0, cx=239.5, cy=239.5, width=480, height=480, distortion_model="fisheye",
                 rect_fx=150.0, rect_fy=150.0, rect_cx=239.5, rect_cy=239.5, camera_motion="static")
    cam = episode_camera(calib, (480, 480), (640, 480))
    assert cam["fx"] == pytest.approx(150.0) and cam["cx"] == pytest.approx(239.5 + 80)
    assert cam["distortion_model"] == "fisheye" and cam["camera_motion"] == "static"
    assert cam["hfov_deg"] == pytest.approx(math.degrees(2 * math.atan(320 / 150)))
    with pytest.raises(LeRobotExportError, match="480x480 frames, the proxy's are 640x360"):
        episode_camera(calib, (640, 360), (640, 480))


def test_dataset_format_from_the_environment():
    assert dataset_format({}) == DatasetFormat((640, 480), 10, "hands_102")
    f = dataset_format({"EGO_ASSETS_DATASET_IMAGE_SIZE": "320x240", "EGO_ASSETS_DATASET_FPS": "5"})
    assert f.image_size == (320, 240) and f.fps == 5 and f.label() == "320x240@5fps/hands_102"
    for bad in ("320", "321x240", "0x0", "axb"):
        with pytest.raises(ValueError, match="WIDTHxHEIGHT|even"):
            dataset_format({"EGO_ASSETS_DATASET_IMAGE_SIZE": bad})


@pytest.fixture(scope="module")
def mixed(work):
    """Three videos of three frame sizes (landscape 16:9, portrait, tiny 4:3), staged at 64x48."""
    keys, _ = keys_by_split("mix", 3, 0)
    src = work / "mixed_src"
    sizes = {keys[0]: (80, 46), keys[1]: (36, 64), keys[2]: (16, 12)}
    out = {}
    for i, k in enumerate(keys):
        w, h = sizes[k]
        p = synth.make_partition(src, k, n_frames=40, w=w, h=h, seed=10 + i,
                                 segments=[(0, "left", 2, 30), (1, "right", 4, 36)])
        calib = dict(fx=0.7 * w, fy=0.7 * w, cx=(w - 1) / 2, cy=(h - 1) / 2, width=w, height=h,
                     distortion_model="none", camera_motion="moving")
        out[k] = (p, synth.stage(p, work / "mixed_staged" / k, image_size=(64, 48), calibration=calib,
                                 source_size=(w * 10, h * 10)))
    return out


def test_videos_of_different_sizes_make_one_dataset(mixed, tmp_path, datasets_cache):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    res, ver, published = assemble_versioned(tmp_path / "ds", [s for _, s in mixed.values()], val_fraction=0.0)
    assert published and published_version(tmp_path / "ds") == ver
    ds = LeRobotDataset("local/mixed", root=tmp_path / "ds", video_backend="pyav")
    assert ds.num_episodes == 6 and len(ds) == res.n_frames
    eps = ds.meta.episodes
    by_key = {}
    for i in range(ds.num_episodes):
        by_key.setdefault(eps[i]["source/partition_key"], []).append(i)
    portrait = list(mixed)[1]
    for k, (p, _) in mixed.items():
        for i in by_key[k]:
            e = eps[i]
            src_w, src_h = e[CAMERA_PREFIX + "source_width"], e[CAMERA_PREFIX + "source_height"]
            g = letterbox_geometry(src_w // 10, src_h // 10, (64, 48))
            assert e[CAMERA_PREFIX + "fx"] == pytest.approx(0.7 * (src_w // 10) * g["scale"][0])
            assert e[CAMERA_PREFIX + "hfov_deg"] == pytest.approx(
                math.degrees(2 * math.atan(64 / (2 * e[CAMERA_PREFIX + "fx"]))))
            item = ds[int(e["dataset_from_index"])]
            img = item[VIDEO_KEY].numpy()
            assert img.shape == (3, 48, 64)
            if k == portrait:  # 36x64 -> 27x48 in the middle: black bars left and right
                assert img[:, :, :15].max() < 0.1 and img[:, :, -15:].max() < 0.1
                assert img[:, :, 25:40].mean() > 0.1
    # the same camera is in the catalog's episodes rows
    assert {r["source_width"] for r in res.episodes.to_pylist()} == {800, 360, 160}
    assert all(r["fx"] is not None for r in res.episodes.to_pylist())


def test_a_partition_staged_at_another_size_is_refused_by_the_assembly(mixed, parts, tmp_path):
    """The lib-level assembly still refuses a misfit (the Dagster asset never passes one: it leaves the
    video out with that reason)."""
    from ego_assets.lib.lerobot.layout import IncompatiblePartitionError

    other = synth.stage(parts["A"], tmp_path / "a_small", image_size=(32, 24))
    with pytest.raises(IncompatiblePartitionError, match="does not fit the dataset"):
        assemble(tmp_path / "ds", [s for _, s in mixed.values()] + [other], val_fraction=0.0)


# -- kill -9 during an assembly ---------------------------------------------------------------------

CHILD = r"""
import os, signal, sys, time
from ego_assets.lib.lerobot import assembly
from ego_assets.lib.lerobot.versions import assemble_versioned
mode, root, staged, when = sys.argv[1:]
if when == "write_info":  # the moment the data files have moved and meta/ is half rewritten
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    assembly.write_info = die  # the assembly's own (lerobot.format's), not lerobot's
fn = assemble_versioned if mode == "versioned" else assembly.assemble
print("assembling", flush=True)
fn(root, [staged], val_fraction=%r)
print("done", flush=True)
""" % VAL_FRACTION


def _assemble_killed(mode: str, root: Path, staged_path: Path, when: str) -> str:
    """Assemble one more partition in a child process killed with SIGKILL at ``when`` ("write_info", or
    seconds after it started assembling). Returns what it printed."""
    p = subprocess.Popen([sys.executable, "-c", CHILD, mode, str(root), str(staged_path), when],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    line = p.stdout.readline()
    assert line.strip() == "assembling", line
    if when != "write_info":
        time.sleep(float(when))
        p.send_signal(signal.SIGKILL)
    out = line + p.stdout.read()
    p.wait(timeout=120)
    return out


def _consistent(root: Path) -> tuple[int, int]:
    """(episodes, frames) of the dataset readers see, after checking that its metadata and its files agree
    and that its last frame loads."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    info = json.loads((root / "meta/info.json").read_text())
    rows = sum(pq.read_metadata(f).num_rows for f in (root / "data").glob("*/*.parquet"))
    assert rows == info["total_frames"], f"torn: meta says {info['total_frames']} frames, data has {rows} rows"
    ds = LeRobotDataset("local/kill", root=root, video_backend="pyav")
    assert len(ds) == info["total_frames"] and ds.num_episodes == info["total_episodes"]
    assert int(ds[len(ds) - 1]["index"]) == len(ds) - 1
    return ds.num_episodes, len(ds)


@pytest.mark.slow
def test_kill_during_assembly_in_place_tears_the_dataset(dataset_copy, staged, datasets_cache):
    """The hazard, reproduced: assembling in place and killed once the data files moved, the dataset's
    metadata and its data disagree until a later assembly repairs it."""
    root, _ = dataset_copy
    out = _assemble_killed("in_place", root, staged["C"].path, "write_info")
    assert "done" not in out
    with pytest.raises(AssertionError, match="torn"):
        _consistent(root)


@pytest.mark.slow
def test_kill_during_a_versioned_assembly_leaves_the_published_dataset_whole(staged, tmp_path, datasets_cache):
    """Killed at the worst moment (metadata half rewritten) or 0.1 s in, readers see the last published version,
    complete; the next assembly publishes the new one and removes what the killed one left."""
    root = tmp_path / "ds"
    first, _, ok = assemble_versioned(root, [staged["A"], staged["B"]], val_fraction=VAL_FRACTION)
    assert ok
    before = _consistent(root)
    assert before == (first.n_episodes, first.n_frames)
    for when in ("write_info", "0.1"):
        out = _assemble_killed("versioned", root, staged["C"].path, when)
        if "done" in out:  # finished before the kill: it must then show all three videos
            assert _consistent(root)[0] == first.n_episodes + staged["C"].n_episodes
            break
        assert _consistent(root) == before
    old_video = {k: (root / v["video_file"]).stat().st_ino for k, v in
                 json.loads((root / "meta/ego_assets_state.json").read_text())["partitions"].items()}
    res, ver, ok = assemble_versioned(root, [staged["C"]], val_fraction=VAL_FRACTION)
    assert ok and _consistent(root) == (first.n_episodes + staged["C"].n_episodes,
                                        first.n_frames + staged["C"].n_frames)
    # appended without re-encoding: the other videos' files are the very same files (hard links)
    new_state = json.loads((root / "meta/ego_assets_state.json").read_text())["partitions"]
    for k, ino in old_video.items():
        assert (root / new_state[k]["video_file"]).stat().st_ino == ino
    # the killed versions are gone; the published one and the previous one remain
    left = sorted(d.name for d in versions_dir(root).iterdir() if d.is_dir())
    assert len(left) == 2 and ver.name in left
    assert os.path.islink(root) and published_version(root) == ver


def test_a_format_change_is_a_rebuild_and_a_restaged_video_is_a_misfit_until_then(mixed, tmp_path):
    """What lerobot_dataset decides from the published state and each staged manifest: the same format
    extends the dataset; another image size (or fps, action space) rebuilds it, saying why; a video staged
    under the old format is left out, with that reason, until its lerobot_episodes reruns."""
    from ego_assets.defs.dataset import _rebuild_reason, misfit
    from ego_assets.lib.lerobot.layout import STATE_PATH

    assemble_versioned(tmp_path / "ds", [s for _, s in mixed.values()], val_fraction=0.0)
    state = json.loads((tmp_path / "ds" / STATE_PATH).read_text())
    same, small = DatasetFormat((64, 48)), DatasetFormat((32, 24))
    assert _rebuild_reason(state, same) is None
    assert _rebuild_reason(state, small) == "format changed from 64x48@10fps/hands_102 to 32x24@10fps/hands_102"
    assert _rebuild_reason({**state, "format": 1}, same) == "its state format 1 is not this code's 2"
    manifest = next(iter(mixed.values()))[1].manifest
    assert misfit(manifest, same) is None
    assert misfit(manifest, small) == "staged as 64x48@10fps/hands_102, the dataset is 32x24@10fps/hands_102"
    assert misfit(manifest, DatasetFormat((64, 48), action_space="eef_7")).endswith("64x48@10fps/eef_7")
