"""LeRobot's own tools on a fresh demo dataset: stock `lerobot-train` (a tiny ACT, two steps, CPU),
`lerobot-edit-dataset` (re-encode, merge with the re-encoded copy, split, delete), `lerobot-dataset-viz`;
and the tasks of the demo come from the captioner's small vocabulary.

Needs the ``lerobot`` extra (``make test`` installs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lerobot", reason="the lerobot extra is not installed (make setup EXTRAS=lerobot)")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
BIN = Path(sys.executable).parent
REPO_ID = "local/ego_assets"


def _env(tmp: Path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp / "hf"), HF_LEROBOT_HOME=str(tmp / "lerobot"),
               WANDB_MODE="disabled")
    env.pop("DAGSTER_HOME", None)
    return env


def _run(args: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(args[:3])} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from ego_assets_tests.conftest import SAMPLE_CLIP

    tmp = tmp_path_factory.mktemp("lerobot_tools")
    env = dict(_env(tmp), EGO_ASSETS_HOME=str(tmp / "home"))
    _run([str(BIN / "ego-assets"), "demo"], env, timeout=900)
    assert SAMPLE_CLIP.exists()
    return dict(tmp=tmp, env=_env(tmp), root=tmp / "home" / "datasets" / "ego_assets")


def _load(root: Path, repo_id: str = REPO_ID):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(repo_id, root=root, video_backend="pyav")


def _episode_frames(ds, e: int) -> np.ndarray:
    """First, middle and last frame of episode e, (3, C, H, W) floats."""
    a, b = int(ds.meta.episodes[e]["dataset_from_index"]), int(ds.meta.episodes[e]["dataset_to_index"])
    return np.stack([ds[i]["observation.images.ego"].numpy() for i in (a, (a + b) // 2, b - 1)])


def test_lerobot_train_act_two_steps_on_cpu(demo):
    out = demo["tmp"] / "train"
    _run([str(BIN / "lerobot-train"), f"--dataset.repo_id={REPO_ID}", f"--dataset.root={demo['root']}",
          "--dataset.video_backend=pyav", "--policy.type=act", "--policy.pretrained_backbone_weights=null",
          "--policy.device=cpu", "--policy.push_to_hub=false", "--policy.dim_model=64",
          "--policy.dim_feedforward=128", "--policy.n_encoder_layers=1", "--policy.n_decoder_layers=1",
          "--policy.chunk_size=5", "--policy.n_action_steps=5", "--policy.use_vae=false",
          "--wandb.enable=false", "--steps=2", "--batch_size=2", "--num_workers=0", "--save_freq=2",
          "--log_freq=1", f"--output_dir={out}"], demo["env"])
    ckpt = out / "checkpoints" / "000002"
    assert (out / "checkpoints" / "last").resolve() == ckpt.resolve()
    model = ckpt / "pretrained_model"
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["type"] == "act" and cfg["device"] == "cpu" and cfg["dim_model"] == 64
    assert cfg["output_features"] == {"action": {"type": "ACTION", "shape": [102]}}
    assert cfg["input_features"]["observation.state"]["shape"] == [102]
    assert cfg["input_features"]["observation.images.ego"]["shape"] == [3, 480, 640]
    assert json.loads((ckpt / "training_state" / "training_step.json").read_text())["step"] == 2
    from safetensors.numpy import load_file

    weights = load_file(str(model / "model.safetensors"))
    assert len(weights) > 10 and all(np.isfinite(w).all() for w in weights.values())
    # the normaliser carries our dataset's stats
    norm = load_file(str(model / "policy_preprocessor_step_3_normalizer_processor.safetensors"))
    assert norm["action.mean"].shape == (102,)


def test_merge_with_a_lerobot_reencoded_copy_decodes(demo):
    """Our dataset + a copy `lerobot-edit-dataset reencode_videos` made with LeRobot's default encoder:
    the merge succeeds and every merged episode decodes to the pictures of its source."""
    tmp, env, root = demo["tmp"], demo["env"], demo["root"]
    ours_info = json.loads((root / "meta" / "info.json").read_text())["features"]["observation.images.ego"]["info"]
    assert ours_info["video.codec"] == "av1"
    copy, merged = tmp / "reencoded", tmp / "merged"
    _run([str(BIN / "lerobot-edit-dataset"), f"--repo_id={REPO_ID}", f"--root={root}",
          "--new_repo_id=local/reencoded", f"--new_root={copy}", "--operation.type=reencode_videos"], env)
    copy_info = json.loads((copy / "meta" / "info.json").read_text())["features"]["observation.images.ego"]["info"]
    assert copy_info["video.codec"] == "av1"
    _run([str(BIN / "lerobot-edit-dataset"), "--new_repo_id=local/merged", f"--new_root={merged}",
          "--operation.type=merge", f"--operation.repo_ids=['{REPO_ID}', 'local/reencoded']",
          f"--operation.roots=['{root}', '{copy}']"], env)
    ours, theirs, both = _load(root), _load(copy, "local/reencoded"), _load(merged, "local/merged")
    n = ours.num_episodes
    assert both.num_episodes == 2 * n and both.num_frames == 2 * ours.num_frames
    for e in range(n):
        a = _episode_frames(ours, e)
        np.testing.assert_allclose(_episode_frames(both, e), a, atol=1e-6)  # our files, copied as they are
        np.testing.assert_allclose(_episode_frames(both, n + e), _episode_frames(theirs, e), atol=1e-6)
        # the re-encoded copy shows the same pictures (lossy: a small mean difference)
        assert float(np.abs(_episode_frames(both, n + e) - a).mean()) < 0.03


def _same_pictures(got: np.ndarray, want: np.ndarray, other: np.ndarray) -> None:
    """got shows want's pictures after a lossy re-encode: close to them, farther from another episode's."""
    d = float(np.abs(got - want).mean())
    assert d < 0.03 and d < 0.5 * float(np.abs(got - other).mean()), d


def test_split_and_delete_episodes_give_datasets_that_decode(demo):
    tmp, env, root = demo["tmp"], demo["env"], demo["root"]
    ours = _load(root)
    n = ours.num_episodes
    _run([str(BIN / "lerobot-edit-dataset"), f"--repo_id={REPO_ID}", f"--root={root}",
          "--new_repo_id=local/fewer", f"--new_root={tmp / 'fewer'}", "--operation.type=delete_episodes",
          "--operation.episode_indices=[0, 2]"], env)
    fewer = _load(tmp / "fewer", "local/fewer")
    assert fewer.num_episodes == n - 2
    # LeRobot re-encodes the videos it cuts (with its own encoder settings, which ours are)
    _same_pictures(_episode_frames(fewer, 0), _episode_frames(ours, 1), _episode_frames(ours, n - 1))
    _same_pictures(_episode_frames(fewer, n - 3), _episode_frames(ours, n - 1), _episode_frames(ours, 1))
    first = list(range(n // 2))
    _run([str(BIN / "lerobot-edit-dataset"), f"--repo_id={REPO_ID}", f"--root={root}",
          f"--new_root={tmp / 'splits'}", "--operation.type=split",
          f"--operation.splits={json.dumps({'a': first, 'b': list(range(n // 2, n))})}"], env)
    a, b = _load(tmp / "splits" / "a", "local/a"), _load(tmp / "splits" / "b", "local/b")
    assert (a.num_episodes, b.num_episodes) == (n // 2, n - n // 2)
    _same_pictures(_episode_frames(b, 0), _episode_frames(ours, n // 2), _episode_frames(ours, 0))
    _same_pictures(_episode_frames(a, n // 2 - 1), _episode_frames(ours, n // 2 - 1), _episode_frames(ours, n - 1))


def test_dataset_viz_saves_a_recording(demo):
    out = demo["tmp"] / "viz"
    _run([str(BIN / "lerobot-dataset-viz"), f"--repo-id={REPO_ID}", f"--root={demo['root']}",
          "--episode-index=0", "--save=1", f"--output-dir={out}", "--num-workers=0"], demo["env"])
    rrd = list(out.glob("*.rrd"))
    assert len(rrd) == 1 and rrd[0].stat().st_size > 10_000


def test_demo_tasks_are_shared_and_from_the_vocabulary(demo):
    from ego_assets.lib.captions.kinematic import vocabulary

    ds = _load(demo["root"])
    tasks = list(ds.meta.tasks.index)
    assert set(tasks) <= set(vocabulary())
    assert len(tasks) < ds.num_episodes  # episodes share tasks
    prov = [json.loads(ds.meta.episodes[e]["source/provenance"]) for e in range(ds.num_episodes)]
    assert all(p["caption_details"]["net_displacement_m"] > 0 for p in prov)
