"""Dataset card and Hub upload (dry run only: no network in tests)."""

from __future__ import annotations

import json

import pytest

from ego_assets.lib.lerobot.publish import PublishError, push, write_card


def test_card_names_sources_counts_action_space_and_licences(dataset_ab, parts):
    root, result = dataset_ab
    text = (root / "README.md").read_text()
    assert text.startswith("---") and "license: other" in text  # two sources, licences as given
    assert "LeRobot" in text and "robotics" in text
    assert f"**Episodes:** {result.n_episodes}" in text
    assert "| lab | 1 |" in text and "| web | 1 |" in text
    assert "| CC-BY-4.0 |" in text and "CC-BY-NC-4.0 (non-commercial)" in text
    assert "`hands_102`" in text and "log(R_t^T R_{t+1})" in text
    assert "mediapipe@1" in text and "source.t_s" in text
    # rewriting with a description keeps everything and adds it
    write_card(root, repo_id="me/hands", description="Kitchen tasks recorded in 2025.")
    text = (root / "README.md").read_text()
    assert "Kitchen tasks recorded in 2025." in text and "me/hands" in text


def test_push_dry_run_lists_files_with_sizes(dataset_ab, monkeypatch):
    root, _ = dataset_ab
    monkeypatch.delenv("HF_TOKEN", raising=False)
    files = push(root, "me/hands", dry_run=True)
    paths = {p for p, _ in files}
    assert {"README.md", "meta/info.json", "meta/stats.json", "meta/tasks.parquet",
            "meta/episodes/chunk-000/file-000.parquet"} <= paths
    assert any(p.startswith("videos/observation.images.ego/") for p in paths)
    assert all(size == (root / p).stat().st_size and size > 0 for p, size in files)
    assert not any(p.startswith(".") or "/." in p for p in paths)
    # without dry_run and without a token: a clear error before any network call
    with pytest.raises(PublishError, match="HF_TOKEN"):
        push(root, "me/hands")
    with pytest.raises(PublishError, match="owner/name"):
        push(root, "hands", dry_run=True)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["total_episodes"] > 0
