from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ego_assets.lib.lerobot.assembly import split_of
from ego_assets_tests.lib.lerobot.synth import make_partition, stage

VAL_FRACTION = 0.5


def keys_by_split(prefix: str, n_train: int, n_val: int) -> tuple[list[str], list[str]]:
    """Deterministic keys that land in each split at VAL_FRACTION (the split is a hash of the key)."""
    train, val = [], []
    i = 0
    while len(train) < n_train or len(val) < n_val:
        k = f"{prefix}-{i:03d}"
        (val if split_of(k, VAL_FRACTION) == "validation" else train).append(k)
        i += 1
    return train[:n_train], val[:n_val]


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lerobot_export")


@pytest.fixture(scope="session")
def datasets_cache(tmp_path_factory):
    """Keep Hugging Face `datasets` cache files (written when LeRobot loads parquet) out of ~/.cache."""
    import datasets.config

    old = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = Path(tmp_path_factory.mktemp("hf_datasets_cache"))
    yield
    datasets.config.HF_DATASETS_CACHE = old


@pytest.fixture(scope="session")
def parts(work):
    """Three source videos: A and C in train, B in validation; each misses a hand for a while."""
    (a, c), (b,) = keys_by_split("vid", 2, 1)
    src = work / "src"
    return {
        "A": make_partition(src, a, seed=1, source="lab", drop={"left": (0, 5)}),
        "B": make_partition(src, b, seed=2, task_prefix="please ", drop={"right": (25, 40)}, source="web",
                            licence="CC-BY-NC-4.0 (non-commercial)"),
        "C": make_partition(src, c, n_frames=40, seed=3, segments=[(0, "left", 3, 30), (1, "right", 5, 25)],
                            source="lab", drop={"right": (0, 8), "left": (27, 31)}),
    }


@pytest.fixture(scope="session")
def staged(parts, work):
    return {name: stage(p, work / "staged" / p.key) for name, p in parts.items()}


@pytest.fixture(scope="session")
def dataset_ab(staged, work, datasets_cache):
    """A and B assembled (the base every test copies before changing it)."""
    from ego_assets.lib.lerobot.assembly import assemble

    root = work / "ds_ab"
    result = assemble(root, [staged["A"], staged["B"]], val_fraction=VAL_FRACTION)
    return root, result


@pytest.fixture()
def dataset_copy(dataset_ab, tmp_path):
    root, result = dataset_ab
    dst = tmp_path / "ds"
    shutil.copytree(root, dst)
    return dst, result
