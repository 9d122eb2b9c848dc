"""Dataset card and Hugging Face Hub upload of an assembled dataset."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from ego_assets.lib.lerobot.features import ACTION_SPACE_DOC, CAMERA_COLUMNS, CAMERA_PREFIX, VIDEO_KEY
from ego_assets.lib.lerobot.format import CODEBASE_VERSION, INFO_PATH

# licence identifiers the Hub accepts in card metadata (a subset; anything else becomes "other")
HUB_LICENSES = {"apache-2.0", "mit", "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0",
                "cc-by-nc-nd-4.0", "cc-by-nd-4.0", "odc-by", "odbl", "pddl", "cdla-permissive-2.0", "openrail",
                "bsd-3-clause", "gpl-3.0", "lgpl-3.0", "unknown", "other"}
EXCLUDE_DIRS = (".ego_assets_tmp", "images")


class PublishError(ValueError):
    """Bad input for publishing (names the input and the reason)."""


def _sources(root: Path) -> dict[str, dict]:
    """Per source name: uri(s), licence(s), number of videos and episodes, backends seen."""
    from ego_assets.lib.lerobot.layout import PROVENANCE_PATH

    path = root / PROVENANCE_PATH
    out: dict[str, dict] = defaultdict(lambda: {"uris": set(), "licences": set(), "videos": set(), "episodes": 0,
                                                "frames": 0, "backends": set()})
    if not path.exists():
        return {}
    # the full assembly's file, then those of episodes appended since (incremental.update_dataset)
    rows = [r for f in [path, *sorted(path.parent.glob("ego_assets_provenance.append-*.parquet"))]
            for r in pq.read_table(f).to_pylist()]
    for r in rows:
        p = json.loads(r["provenance"] or "{}")
        s = out[str(p.get("source") or p.get("source_name") or "unknown")]
        if p.get("uri") or p.get("source_uri"):
            s["uris"].add(str(p.get("uri") or p.get("source_uri")))
        s["licences"].add(str(p.get("licence") or p.get("license") or "not given"))
        s["videos"].add(r["partition_key"])
        s["episodes"] += 1
        s["frames"] += int(r["length"])
        b = p.get("backends") or {}
        if isinstance(b, dict):
            s["backends"].update(f"{k}: {v}" for k, v in sorted(b.items()))
        elif b:
            s["backends"].add(str(b))
    return dict(out)


def card_text(root: str | Path, repo_id: str, description: str | None = None) -> tuple[str, str]:
    """(markdown description, hub licence id) for the dataset card."""
    from ego_assets.lib.lerobot.layout import STATE_PATH

    root = Path(root)
    info = json.loads((root / INFO_PATH).read_text())
    state = json.loads((root / STATE_PATH).read_text()) if (root / STATE_PATH).exists() else {}
    srcs = _sources(root)
    fps = info["fps"]
    hours = info["total_frames"] / fps / 3600
    space = state.get("action_space", "?")
    lines = [description.strip() + "\n" if description else "",
             "Egocentric videos of human hands at work, turned into Vision-Language-Action episodes by "
             "ego_assets: every atomic hand action (a segment of world-frame wrist "
             "motion) is one episode with the egocentric image, the 3D hand state, the hand action and a "
             "language instruction.", "",
             f"- **Episodes:** {info['total_episodes']} ({hours:.2f} h, {info['total_frames']} frames at {fps} fps)",
             f"- **Tasks (distinct instructions):** {info['total_tasks']}",
             f"- **Source videos:** {len(state.get('partitions', {}))}",
             "- **Splits (by source video):** " + ", ".join(f"{k} = episodes {v}" for k, v in info["splits"].items()),
             f"- **Action space:** `{space}`", ""]
    lines += ["### Sources", "", "| source | videos | episodes | frames | licence (as given) | uri |",
              "|---|---|---|---|---|---|"]
    for name, s in sorted(srcs.items()):
        lines.append(f"| {name} | {len(s['videos'])} | {s['episodes']} | {s['frames']} | "
                     f"{'; '.join(sorted(s['licences']))} | {'; '.join(sorted(s['uris'])) or '-'} |")
    lines += ["", "The licence of each source applies to the episodes made from it; check them before use.", ""]
    lines += _skills_section(root)
    lines += ["### Action space", "", ACTION_SPACE_DOC.get(space, ""), ""]
    lines += ["### Features", ""]
    for k, ft in info["features"].items():
        names = ft.get("names")
        n = f" — names: `{names[0]}` … `{names[-1]}`" if isinstance(names, list) and len(names) > 3 else (
            f" — names: {names}" if names else "")
        lines.append(f"- `{k}`: {ft['dtype']} {list(ft['shape'])}{n}")
    lines += ["", "`pad.action`/`mask.action` are named outside the `action` prefix on purpose: LeRobot's policy "
              "factory treats every `action*` key as a policy output and writes its own `action_is_pad`.", ""]
    img = info["features"].get(VIDEO_KEY, {}).get("shape")
    if img:
        lines += ["### Images and camera per episode", "",
                  f"Every episode's frames are {img[1]}x{img[0]}, whatever the source: made upright (rotation "
                  "metadata), undistorted (fisheye/radtan sources) and letterboxed (scaled to fit, centred, black "
                  "bars). Each row of `meta/episodes` carries its camera: "
                  + ", ".join(f"`{CAMERA_PREFIX}{c}`" for c in CAMERA_COLUMNS)
                  + ": intrinsics in dataset pixels, the horizontal field of view of the whole frame "
                  "(`2 atan(W / 2 fx)`), the distortion model removed (`none` for a pinhole source), whether the "
                  "camera moved, and the source's displayed frame size.", ""]
    backends = sorted({b for s in srcs.values() for b in s["backends"]})
    lines += ["### How it was made", "",
              "Frames sampled at the dataset rate into a proxy video; camera intrinsics (undistortion for "
              "fisheye sources), per-frame 3D hand tracks, camera poses with the hands masked out, "
              "world-frame hand motion cut into atomic actions at minima of wrist speed, one instruction per "
              "segment. Each dataset step takes the source frame nearest to the `k / fps` grid; its real "
              "time is kept in `source.t_s`. Provenance per episode (source video, segment, hand, time "
              "range, backends) is in the `source/*` columns of `meta/episodes` and in "
              "`meta/ego_assets_provenance.parquet`.", ""]
    if backends:
        lines += ["Backends: " + ", ".join(f"`{b}`" for b in backends), ""]
    lines += ["### Loading", "", "```python", "from lerobot.datasets.lerobot_dataset import LeRobotDataset",
              f"ds = LeRobotDataset({repo_id!r})  # or root=<local folder>",
              "# where torchcodec cannot load (no system FFmpeg), pass video_backend='pyav'", "```", ""]
    lic = {s for src in srcs.values() for s in src["licences"]}
    hub_lic = next(iter(lic)).lower() if len(lic) == 1 and next(iter(lic)).lower() in HUB_LICENSES else "other"
    return "\n".join(lines), hub_lic


def _skills_section(root: Path) -> list[str]:
    """The card's skills (issue 15): episodes per skill, from the provenance table's skill columns."""
    import pyarrow.parquet as pq

    from ego_assets.lib.lerobot.layout import PROVENANCE_PATH

    path = root / PROVENANCE_PATH
    if not path.exists() or "skill_id" not in pq.read_schema(path).names:
        return []
    counts: dict = {}
    for r in pq.read_table(path, columns=["skill_id", "skill_label"]).to_pylist():
        if r["skill_id"] is not None:
            counts[(r["skill_id"], r["skill_label"])] = counts.get((r["skill_id"], r["skill_label"]), 0) + 1
    if not counts:
        return []
    return (["### Skills", "", "Segments grouped into skills without supervision (k-means over an embedding of the "
             "measured hand motion); each row of `meta/episodes` carries `source/skill_id` and "
             "`source/skill_label`.", "", "| skill_id | skill | episodes |", "|---|---|---|"]
            + [f"| {i} | {lab} | {n} |" for (i, lab), n in sorted(counts.items())] + [""])


def write_card(root: str | Path, repo_id: str, description: str | None = None,
               tags: list[str] | None = None) -> Path:
    """Write README.md: the Hub's card metadata as LeRobot's cards carry it (licence, tags, the robotics
    task category, the ``data/*/*.parquet`` config) + our description (sources, counts, action space, how it
    was made, the sources' licences as given) + info.json. Plain text: no LeRobot needed."""
    import yaml

    root = Path(root)
    text, lic = card_text(root, repo_id, description)
    info = json.loads((root / INFO_PATH).read_text())
    meta = {"license": lic, "tags": ["LeRobot", "ego_assets", "egocentric", "human-hands", *(tags or [])],
            "task_categories": ["robotics"],
            "configs": [{"config_name": "default", "data_files": "data/*/*.parquet"}]}
    card = "\n".join([
        "---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "",
        "This dataset was created with ego_assets in the [LeRobot](https://github.com/huggingface/lerobot) "
        f"{CODEBASE_VERSION} format (`{repo_id}`).", "",
        "## Dataset Description", "", text, "",
        "## Dataset Structure", "", "[meta/info.json](meta/info.json):", "```json",
        json.dumps(info, indent=4), "```", ""])
    path = root / "README.md"
    tmp = path.with_name(".README.md.tmp")
    tmp.write_text(card)
    os.replace(tmp, path)
    return path


def upload_files(root: str | Path) -> list[tuple[str, int]]:
    """(relative path, size in bytes) of what ``push`` uploads: everything but temp/hidden files."""
    root = Path(root)
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts) or rel.parts[0] in EXCLUDE_DIRS:
            continue
        out.append((rel.as_posix(), p.stat().st_size))
    return out


HASH_CACHE = ".ego_assets_tmp/hub_hashes.json"  # (path, size, mtime) -> sha256 / git sha1 of files pushed


@dataclass
class PushPlan:
    """What an incremental push does: ``upload`` (new or changed: (path, size)), ``unchanged`` (same
    content on the Hub: not read, not sent), ``delete`` (on the Hub, no longer in the dataset)."""

    upload: list[tuple[str, int]]
    unchanged: list[str]
    delete: list[str]

    @property
    def bytes_to_upload(self) -> int:
        return sum(n for _, n in self.upload)


def _hashes(root: Path, rel: str, cache: dict) -> dict:
    """sha256 and git sha1 of a local file, cached by (size, mtime): an unchanged file is not read again.
    (The Hub identifies an LFS file by the sha256 of its content, a regular file by its git blob sha1;
    huggingface_hub hashes every file it is given, so the files are compared here, before the call.)"""
    import hashlib

    st = (root / rel).stat()
    stamp = f"{st.st_size}:{st.st_mtime_ns}"
    hit = cache.get(rel)
    if hit and hit["stamp"] == stamp:
        return hit
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1()
    sha1.update(f"blob {st.st_size}\0".encode())  # git's blob header (huggingface_hub.utils.sha.git_hash)
    with open(root / rel, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha256.update(block)
            sha1.update(block)
    cache[rel] = {"stamp": stamp, "sha256": sha256.hexdigest(), "git_sha1": sha1.hexdigest()}
    return cache[rel]


def plan_push(dataset_dir: str | Path, remote) -> PushPlan:
    """Compare the dataset with the Hub repo's files (``remote``: ``HfApi.list_repo_tree(...,
    recursive=True)``'s ``RepoFile``/``RepoFolder`` items; empty for a new repo). A file is uploaded when
    the Hub has no file at its path or one of another size or content; only files whose size matches are
    hashed (through a cache, so a file pushed before and not changed since is not read). Hub files that
    the dataset no longer has are deleted, except the repo's own ``.gitattributes``."""
    root = Path(dataset_dir)
    cache_path = root / HASH_CACHE
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    by_path = {f.path: f for f in remote if getattr(f, "blob_id", None) is not None}  # files, not folders
    upload, unchanged = [], []
    for rel, size in upload_files(root):
        r = by_path.get(rel)
        if r is None or r.size != size:
            upload.append((rel, size))
            continue
        h = _hashes(root, rel, cache)
        same = h["sha256"] == r.lfs.sha256 if r.lfs is not None else h["git_sha1"] == r.blob_id
        (unchanged.append(rel) if same else upload.append((rel, size)))
    local = {rel for rel, _ in upload_files(root)}
    delete = sorted(p for p in by_path if p not in local and p != ".gitattributes")
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_text(json.dumps(cache))
    return PushPlan(upload, unchanged, delete)


def push(dataset_dir: str | Path, repo_id: str, token: str | None = None, dry_run: bool = False,
         private: bool = False, tag_version: bool = True) -> list[tuple[str, int]]:
    """Upload the dataset to the Hub as a dataset repo and tag it with the LeRobot codebase version
    (``LeRobotDataset(repo_id)`` looks for that tag). Incremental: only the files :func:`plan_push`
    finds new or changed are sent, in one commit that also deletes the files the dataset no longer has.
    The token comes from ``token`` or ``HF_TOKEN`` and is never printed. ``dry_run`` touches no network
    and returns every file that a first push uploads, with sizes. Returns what was uploaded."""
    root = Path(dataset_dir)
    if not (root / INFO_PATH).is_file():
        raise PublishError(f"{str(root)!r} is not a LeRobot dataset (no meta/info.json)")
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PublishError(f"repo_id {repo_id!r} must look like 'owner/name'")
    if dry_run:
        return upload_files(root)
    token = token or os.environ.get("HF_TOKEN")
    if not token:
        raise PublishError("no Hugging Face token: pass token= or set HF_TOKEN")
    try:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    except ImportError:
        raise PublishError("uploading needs huggingface_hub: install the lerobot extra "
                           "(pip install 'ego-assets[lerobot]')") from None

    api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="dataset", private=private, exist_ok=True)
    plan = plan_push(root, api.list_repo_tree(repo_id, repo_type="dataset", recursive=True, expand=True))
    if plan.upload or plan.delete:
        ops = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(root / rel)) for rel, _ in plan.upload]
        ops += [CommitOperationDelete(path_in_repo=rel) for rel in plan.delete]
        api.create_commit(repo_id=repo_id, repo_type="dataset", operations=ops,
                          commit_message=f"ego_assets: {len(plan.upload)} files added or changed, "
                                         f"{len(plan.delete)} deleted")
    if tag_version:
        try:
            api.delete_tag(repo_id, tag=CODEBASE_VERSION, repo_type="dataset")
        except Exception:  # no such tag yet
            pass
        api.create_tag(repo_id, tag=CODEBASE_VERSION, repo_type="dataset")
    return plan.upload


__all__ = ["write_card", "card_text", "push", "plan_push", "PushPlan", "upload_files", "PublishError"]
