"""Real footage from many sources becomes one dataset (issue 12), through `ego-assets run` as a user runs it.

The bundled real clip plus clips made from its frames in the shapes real sources come in (a portrait phone
video with 90-degree rotation metadata, a 4K clip, a 320x240 clip, a variable-frame-rate clip, a square
fisheye clip run with its fisheye hint, a 0.5 s clip) and the bad inputs of the issue (all black, shorter
than one dataset step, a frame size changing mid-stream, 1x1): one dataset that loads with LeRobotDataset,
decodes every frame and trains two `lerobot-train` steps; every left-out video has its reason on its CLI
line and in `lineage`. With ../shared/data, its four real clips are then appended to the same dataset
(the episodes already there are not re-encoded).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ego_assets_tests.conftest import REPO, SAMPLE_CLIP, SHARED
from ego_assets_tests.helpers import synth

pytestmark = pytest.mark.slow
SHARED_DATA = SHARED / "data"
FISHEYE_HFOV = 110.0


def _shared_clips() -> list[Path]:
    return sorted(SHARED_DATA.glob("*.mp4")) if SHARED_DATA.is_dir() else []


def _cli_env(home: Path) -> dict:
    env = dict(os.environ, EGO_ASSETS_HOME=str(home), DAGSTER_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1")
    env.pop("DAGSTER_HOME", None)
    return env


def _run(home: Path, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / ".venv/bin/ego-assets"), "run", *args, "--home", str(home)],
                          env=_cli_env(home), cwd=REPO, capture_output=True, text=True, timeout=900)


def _make_clips(folder: Path) -> dict[str, Path]:
    """Clips made from the real clip's frames, in the shapes of real sources (hands in every one), and
    the bad inputs."""
    import cv2

    folder.mkdir(parents=True)
    real = synth.read_frames(SAMPLE_CLIP, 30, 120)  # 3 s of 640x480, both hands at work
    out = {}
    # a phone held upright: frames stored landscape with a 90-degree display rotation
    portrait = [np.ascontiguousarray(f[:, 140:500]) for f in real[:60]]  # 360x480 upright
    out["portrait"] = folder / "phone_portrait.mp4"
    synth.write_frames(out["portrait"], [np.rot90(f, k=1) for f in portrait], rotation=90)
    out["uhd"] = folder / "uhd_4k.mp4"
    synth.write_frames(out["uhd"], [cv2.resize(f[60:420], (3840, 2160), interpolation=cv2.INTER_LINEAR)
                                    for f in real[:36]])
    out["small"] = folder / "small_320x240.mp4"
    synth.write_frames(out["small"], [cv2.resize(f, (320, 240), interpolation=cv2.INTER_AREA) for f in real[:60]])
    out["vfr"] = folder / "variable_rate.mp4"
    times = np.cumsum([0.0] + [(2.0 if i % 2 else 1.0) / 30 for i in range(59)]).tolist()
    synth.write_frames(out["vfr"], real[:60], times=times)
    out["short"] = folder / "half_second.mp4"
    synth.write_frames(out["short"], real[:15])
    bad = folder / "bad"
    bad.mkdir()
    out["black"] = bad / "all_black.mp4"
    synth.write_frames(out["black"], [np.zeros((240, 320, 3), np.uint8)] * 45)
    out["one_step"] = bad / "one_step.mp4"
    synth.write_frames(out["one_step"], real[:2])  # 0.03 s: less than one 0.1 s dataset step
    out["one_pixel"] = bad / "one_pixel.mkv"
    synth.write_frames(out["one_pixel"], [np.full((1, 1, 3), 40 + i, np.uint8) for i in range(30)],
                       fmt="matroska", codec="ffv1", pix_fmt="bgr0")
    out["size_change"] = folder / "size_change.ts"  # passed by name: .ts is not in the default glob
    synth.write_size_change(out["size_change"], real[:30], [cv2.resize(f, (320, 240)) for f in real[30:60]])
    fish = folder.parent / "fisheye"  # its own source (another camera hint)
    fish.mkdir()
    out["fisheye"] = fish / "fisheye_square.mp4"
    synth.write_frames(out["fisheye"], [synth.fisheye_view(f, 480, FISHEYE_HFOV) for f in real[:60]])
    return out


def _lines(r: subprocess.CompletedProcess) -> dict[str, str]:
    """Per file name: its line of `ego-assets run` (`ok ...` or `FAILED ...: reason`)."""
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith(("ok ", "FAILED ")):
            status, _key, rest = line.split(None, 2)
            names = rest.split(": ", 1)[0] if status == "FAILED" else rest
            for n in names.split(", "):
                out[os.path.basename(n.strip())] = line
    return out


def _catalog(home: Path, sql: str) -> list[dict]:
    r = subprocess.run([str(REPO / ".venv/bin/ego-assets"), "catalog", sql, "--home", str(home), "--format", "json"],
                       env=_cli_env(home), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    if not SAMPLE_CLIP.exists():
        pytest.skip(f"the bundled real clip {SAMPLE_CLIP} is missing")
    base = tmp_path_factory.mktemp("mixed_sources")
    home = base / "home"
    clips = _make_clips(base / "clips")
    # the fisheye source, with its camera hint (as a sources.yaml entry would give it)
    code = ("import os, sys; from ego_assets.cli import run_videos; rc = run_videos([sys.argv[1]], 'fisheye', "
            f"{{'hfov_deg': {FISHEYE_HFOV}, 'distortion': {{'model': 'fisheye', 'coeffs': [0, 0, 0, 0]}}}}); "
            "sys.stdout.flush(); sys.stderr.flush(); os._exit(rc)")
    fish = subprocess.run([sys.executable, "-c", code, str(clips["fisheye"].parent)], env=_cli_env(home), cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert fish.returncode in (0, 1), fish.stderr[-3000:]
    # the real clip itself, unless the shared clips (which hold it) are appended by the next test
    real = [] if _shared_clips() else [str(SAMPLE_CLIP)]
    r = _run(home, [*real, str(clips["portrait"].parent), str(clips["size_change"]), "--source", "mixed"])
    return {"home": home, "clips": clips, "run": r, "fisheye_run": fish,
            "lines": {**_lines(fish), **_lines(r)}}


def test_mixed_sources_make_one_dataset_and_left_out_videos_say_why(mixed):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    r, lines, home = mixed["run"], mixed["lines"], mixed["home"]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 1  # the bad inputs failed; everything else is in the dataset
    real = set() if _shared_clips() else {SAMPLE_CLIP.name}
    names = {p.name for p in mixed["clips"].values()} | real
    assert set(lines) == names, (set(lines) ^ names, r.stdout)
    # every video with hand actions contributes: the real clip and every reshaped copy of it
    for n in (*real, "phone_portrait.mp4", "uhd_4k.mp4", "small_320x240.mp4", "variable_rate.mp4",
              "fisheye_square.mp4"):
        assert lines[n].startswith("ok "), lines[n]
    # the bad inputs fail with a reason on their own line (not an empty or generic one)
    for n in ("all_black.mp4", "one_step.mp4", "one_pixel.mkv", "size_change.ts", "half_second.mp4"):
        if lines[n].startswith("FAILED"):
            reason = lines[n].split(": ", 1)[1]
            assert len(reason) > 20 and "the step failed" not in reason, lines[n]
    for n in ("all_black.mp4", "one_step.mp4", "one_pixel.mkv"):
        assert lines[n].startswith("FAILED"), lines[n]
    assert "no hand-action segment" in lines["all_black.mp4"], lines["all_black.mp4"]
    assert "FAILED  lerobot_dataset" not in r.stderr, r.stderr[-2000:]
    ds_line = [ln for ln in r.stderr.splitlines() if ln.startswith("dataset: ")]
    assert ds_line and "episode(s)" in ds_line[0], r.stderr[-2000:]
    # the reasons are in lineage too, for every left-out video
    bad = _catalog(home, "select partition_key, asset, status, error from lineage where status in "
                         "('failed', 'blocked')")
    assert all(row["error"] for row in bad)
    n_failed = sum(1 for ln in lines.values() if ln.startswith("FAILED"))
    assert len({row["partition_key"] for row in bad}) >= n_failed

    root = home / "datasets" / "ego_assets"
    ds = LeRobotDataset("local/ego_assets", root=root, video_backend="pyav")
    eps = ds.meta.episodes
    keys = {eps[i]["source/partition_key"] for i in range(ds.num_episodes)}
    ok_keys = {ln.split()[1] for ln in lines.values() if ln.startswith("ok ")}
    assert keys == ok_keys  # every ok video contributes episodes; no left-out one does
    info = json.loads((root / "meta/info.json").read_text())
    assert info["features"]["observation.images.ego"]["shape"] == [480, 640, 3]
    # every frame decodes, at the one dataset size: each video file in full (episodes back to back), and
    # through LeRobotDataset the first and last frame of every episode
    import av

    n = 0
    for f in sorted((root / "videos").rglob("*.mp4")):
        with av.open(str(f)) as c:
            for fr in c.decode(video=0):
                assert (fr.width, fr.height) == (640, 480)
                n += 1
    assert n == len(ds) == info["total_frames"]
    for i in range(ds.num_episodes):
        for j in (eps[i]["dataset_from_index"], eps[i]["dataset_to_index"] - 1):
            assert ds[int(j)]["observation.images.ego"].shape == (3, 480, 640)
    # the per-episode camera: dataset-pixel intrinsics, FoV, distortion removed, source size
    cams = _catalog(home, "select distinct v.name, e.fx, e.cx, e.cy, e.hfov_deg, e.distortion_model, "
                          "e.source_width, e.source_height from episodes e join videos v using (partition_key)")
    by_name = {c["name"]: c for c in cams}
    assert (by_name["phone_portrait.mp4"]["source_width"], by_name["phone_portrait.mp4"]["source_height"]) \
        == (360, 480)
    assert (by_name["uhd_4k.mp4"]["source_width"], by_name["uhd_4k.mp4"]["source_height"]) == (3840, 2160)
    assert by_name["uhd_4k.mp4"]["cy"] == pytest.approx(239.5, abs=1.0)  # 16:9 letterboxed: centred
    assert by_name["fisheye_square.mp4"]["distortion_model"] == "fisheye"
    assert by_name["phone_portrait.mp4"]["cx"] == pytest.approx(319.5, abs=1.0)  # pillarboxed: centred
    for c in cams:
        assert 20 < c["hfov_deg"] < 170 and c["fx"] > 0
        assert eps.column_names and "camera/hfov_deg" in eps.column_names


def test_shared_real_clips_append_without_re_encoding(mixed):
    """The four real clips of ../shared/data join the same dataset: their episodes are appended, the
    episodes already there keep their video files (hard links of the same files: not re-encoded)."""
    if not _shared_clips():
        pytest.skip(f"../shared/data is absent ({SHARED_DATA}): the real clips of other sizes are not here")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    home = mixed["home"]
    root = home / "datasets" / "ego_assets"
    state = json.loads((root / "meta/ego_assets_state.json").read_text())["partitions"]
    inodes = {k: (root / v["video_file"]).stat().st_ino for k, v in state.items()}
    r = _run(home, [str(SHARED_DATA), "--source", "shared"])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = _lines(r)
    assert len(lines) == len(_shared_clips()), r.stdout
    assert all(ln.startswith("ok ") or len(ln.split(": ", 1)[1]) > 20 for ln in lines.values()), r.stdout
    assert "FAILED  lerobot_dataset" not in r.stderr, r.stderr[-2000:]
    new_state = json.loads((root / "meta/ego_assets_state.json").read_text())["partitions"]
    for k, ino in inodes.items():
        assert (root / new_state[k]["video_file"]).stat().st_ino == ino, k
    ok_shared = {ln.split()[1] for ln in lines.values() if ln.startswith("ok ")}
    assert ok_shared and ok_shared <= set(new_state)
    ds = LeRobotDataset("local/ego_assets", root=root, video_backend="pyav")
    sizes = {(ds.meta.episodes[i]["camera/source_width"], ds.meta.episodes[i]["camera/source_height"])
             for i in range(ds.num_episodes)}
    assert {(960, 540), (640, 480)} <= sizes
    assert ds[len(ds) - 1]["observation.images.ego"].shape == (3, 480, 640)
    # skills over every source: each episode carries the skill of its segment, every valid segment has
    # one, and the real and synthetic motions do not all fall into one group
    skill_ids = [ds.meta.episodes[i]["source/skill_id"] for i in range(ds.num_episodes)]
    labels = {ds.meta.episodes[i]["source/skill_label"] for i in range(ds.num_episodes)}
    assert all(s is not None and s >= 0 for s in skill_ids), skill_ids
    assert len(set(skill_ids)) >= 2 and all(lab for lab in labels), labels
    r = subprocess.run([str(REPO / ".venv/bin/ego-assets"), "check", "--home", str(home)], env=_cli_env(home),
                       cwd=REPO, capture_output=True, text=True, timeout=900)
    assert "every_segment_assigned" not in r.stdout, r.stdout


def test_lerobot_train_runs_two_steps_on_the_dataset(mixed, tmp_path):
    root = mixed["home"] / "datasets" / "ego_assets"
    out = tmp_path / "train"
    cmd = [str(REPO / ".venv/bin/lerobot-train"), "--dataset.repo_id=local/ego_assets", f"--dataset.root={root}",
           "--dataset.video_backend=pyav", "--policy.type=act", "--policy.dim_model=32",
           "--policy.dim_feedforward=64", "--policy.n_heads=2", "--policy.n_encoder_layers=1",
           "--policy.n_decoder_layers=1", "--policy.chunk_size=4", "--policy.n_action_steps=4",
           "--policy.pretrained_backbone_weights=null", "--policy.device=cpu", "--policy.push_to_hub=false",
           "--wandb.enable=false", "--steps=2", "--batch_size=2", "--num_workers=0", "--save_checkpoint=false",
           "--log_freq=1", f"--output_dir={out}"]
    r = subprocess.run(cmd, env=_cli_env(mixed["home"]), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert "step:2" in log and "End of training" in log, log[-3000:]


def test_a_dataset_step_failing_for_its_own_reason_says_it(mixed):
    """The dataset step itself fails (here: its versions folder cannot be created): the CLI prints the
    actual reason, and the query it suggests returns it; the published dataset stays as it was."""
    import shlex

    home = mixed["home"]
    root = home / "datasets" / "ego_assets"
    before = os.path.realpath(root)
    blocker = home / "datasets" / ".ego_assets.versions.blocker"
    versions = home / "datasets" / ".ego_assets.versions"
    versions.rename(blocker)
    versions.write_text("not a folder")
    try:
        r = _run(home, [str(mixed["clips"]["small"]), "--source", "mixed"])
    finally:
        versions.unlink()
        blocker.rename(versions)
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("FAILED  lerobot_dataset")]
    assert line and "ego_assets.versions" in line[0] and "the step failed" not in line[0], r.stderr[-2000:]
    assert r.returncode == 1
    hint = line[0].split("see `", 1)[1].rstrip("`")
    argv = shlex.split(hint)
    assert argv[:2] == ["ego-assets", "catalog"]
    rows = _catalog(home, argv[2])
    assert rows and "ego_assets.versions" in json.dumps(rows)
    assert os.path.realpath(root) == before
