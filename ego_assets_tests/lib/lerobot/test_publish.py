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


def test_incremental_push_plans_only_new_and_changed_files(tmp_path, monkeypatch):
    """The Hub's file list (real huggingface_hub RepoFile/RepoFolder items, hashed by huggingface_hub's own
    functions) against the dataset: new and changed files are uploaded, unchanged ones are neither read
    again nor sent, files the dataset dropped are deleted."""
    import io

    from huggingface_hub.hf_api import RepoFile, RepoFolder
    from huggingface_hub.utils.sha import git_hash, sha_fileobj

    from ego_assets.lib.lerobot.publish import HASH_CACHE, plan_push

    root = tmp_path / "ds"
    files = {"meta/info.json": b'{"codebase_version": "v3.0"}', "meta/stats.json": b"{}",
             "data/chunk-000/file-000.parquet": b"P" * 100, "videos/k/chunk-000/file-000.mp4": b"V" * 300,
             "videos/k/chunk-000/file-001.mp4": b"W" * 300}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)

    def lfs(path, data):
        return RepoFile(path=path, size=len(data), oid=git_hash(b"pointer " + data),
                        lfs={"size": len(data), "oid": sha_fileobj(io.BytesIO(data)).hex(), "pointerSize": 130})

    def regular(path, data):
        return RepoFile(path=path, size=len(data), oid=git_hash(data))

    remote = [RepoFolder(path="meta", oid="x"), regular(".gitattributes", b"*.mp4 filter=lfs"),
              regular("meta/info.json", files["meta/info.json"]),           # same
              regular("meta/stats.json", b"{ }"),                            # other size
              lfs("videos/k/chunk-000/file-000.mp4", files["videos/k/chunk-000/file-000.mp4"]),  # same
              lfs("videos/k/chunk-000/file-001.mp4", b"X" * 300),            # same size, other content
              lfs("videos/k/chunk-000/file-002.mp4", b"gone" * 10)]          # no longer in the dataset
    plan = plan_push(root, remote)
    assert sorted(plan.upload) == [("data/chunk-000/file-000.parquet", 100), ("meta/stats.json", 2),
                                   ("videos/k/chunk-000/file-001.mp4", 300)]
    assert sorted(plan.unchanged) == ["meta/info.json", "videos/k/chunk-000/file-000.mp4"]
    assert plan.delete == ["videos/k/chunk-000/file-002.mp4"]
    assert plan.bytes_to_upload == 402
    # the cache is not uploaded, and a file unchanged since it was hashed is not read again
    assert (root / HASH_CACHE).exists()
    from ego_assets.lib.lerobot import publish

    def no_read(path, *a, **k):
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(publish, "open", no_read, raising=False)
    again = plan_push(root, remote)
    assert sorted(again.unchanged) == sorted(plan.unchanged) and sorted(again.upload) == sorted(plan.upload)
    monkeypatch.undo()
    # a new repo: everything is uploaded, nothing deleted
    fresh = plan_push(root, [])
    assert len(fresh.upload) == len(files) and not fresh.unchanged and not fresh.delete
