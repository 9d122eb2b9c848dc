"""lib/settings.py declares every EGO_ASSETS_* variable the package reads, once, with its type and default."""

import re
from pathlib import Path

import pytest

from ego_assets.lib import backends, settings

PKG = Path(settings.__file__).resolve().parents[1]


def test_every_variable_named_in_the_package_is_declared():
    named = set()
    for p in PKG.rglob("*.py"):
        named |= set(re.findall(r"EGO_ASSETS_[A-Z0-9_]*[A-Z0-9]", p.read_text()))
    named |= {backends.env_var(s) for s in backends.STAGES}  # built from the stage's name
    declared = {s.var for s in settings.SETTINGS.values()}
    assert named - declared == set()
    # and the backend defaults are the registry's
    for stage in backends.STAGES:
        assert settings.get(f"{stage.upper()}_BACKEND", {}) == backends.DEFAULTS[stage]


def test_values_are_typed_defaulted_and_named_in_errors():
    env = {"EGO_ASSETS_DATASET_FPS": "12", "EGO_ASSETS_K8S_CPU_NODE_SELECTOR": "",
           "EGO_ASSETS_K8S_GPU_NODE_SELECTOR": "", "EGO_ASSETS_HOME": "  "}
    assert settings.get("DATASET_FPS", env) == 12
    assert settings.get("EGO_ASSETS_DATASET_FPS", {}) == 10  # the full variable name works too
    assert settings.get("HOME", env) == "./.ego_assets"  # blank: the default
    assert settings.get("K8S_GPU_NODE_SELECTOR", env) == ""  # blank means none here
    assert settings.get("K8S_GPU_NODE_SELECTOR", {}) == "nvidia.com/gpu.present=true"
    with pytest.raises(ValueError, match="EGO_ASSETS_DATASET_FPS='ten'"):
        settings.get("DATASET_FPS", {"EGO_ASSETS_DATASET_FPS": "ten"})
    with pytest.raises(ValueError, match="EGO_ASSETS_RUNTIME='docker'.*local, k8s"):
        settings.get("RUNTIME", {"EGO_ASSETS_RUNTIME": "docker"})
    assert "| `EGO_ASSETS_DATASET_FPS` | positive_int | `10` |" in settings.table()
