"""The assembly of the native LeRobot v3.0 writer: staged partitions (``staging``) into one dataset, cheaply and
incrementally.

Why not ``LeRobotDataset.add_frame``: that path writes every frame as a PNG, encodes each episode from the
PNGs, re-muxes the whole growing video file for every episode and rebuilds Hugging Face datasets per
episode. Here the frames go straight from the proxy decoder into one encoder per source video, and the
assembly only moves files and rewrites the small tables.

Layout (what ``LeRobotDataset(repo_id, root=dataset_dir)`` reads; the path templates, constants and the
stats functions are LeRobot's own):

- one video file per partition (= source video) ``videos/observation.images.ego/chunk-CCC/file-FFF.mp4``
  holding that partition's episodes back to back: frame ``k`` of an episode is at
  ``videos/<key>/from_timestamp + k / fps`` in the file (pts are exact multiples of ``1 / fps``);
- one data file per partition ``data/chunk-CCC/file-FFF.parquet`` with the same (chunk, file) slot;
- slots follow the episode order: partitions sorted by (split, partition key), train first, so that each
  split is a contiguous episode range in info.json ``splits`` ("train": "0:N", "validation": "N:M");
- ``meta/episodes`` (LeRobot's columns + per-episode stats + ``source/*`` provenance columns),
  ``meta/tasks.parquet``, ``meta/stats.json`` (``aggregate_stats`` of the per-episode stats, with LeRobot's
  q01..q99), ``meta/info.json``; plus ``meta/ego_assets_provenance.parquet`` (the ``episodes`` table) and
  ``meta/ego_assets_state.json`` (what the next assembly needs to be incremental).

Incremental: an unchanged partition keeps its video bytes (a slot change is a rename, which keeps inode and
mtime); a new partition's staged video is hard-linked (or copied) in; a re-staged partition (new version)
replaces its old episodes. Episode, frame and task indices are renumbered consistently every time, which
rewrites only the data files whose numbering changed. Each video and data file carries its partition key
(MP4 ``comment`` tag / Parquet key-value metadata), so an assembly killed half-way is recovered by the next.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ego_assets.lib import schemas
from ego_assets.lib.lerobot.features import CAMERA_COLUMNS, CAMERA_PREFIX, VIDEO_KEY
from ego_assets.lib.lerobot.format import (
    DATA_DIR,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_DATA_PATH,
    DEFAULT_EPISODES_PATH,
    DEFAULT_FEATURES,
    DEFAULT_VIDEO_PATH,
    EPISODES_DIR,
    INFO_PATH,
    STATS_PATH,
    VIDEO_DIR,
    aggregate_stats,
    create_info,
    data_schema,
    flatten,
    video_info,
    write_info,
    write_stats,
    write_tasks,
)
from ego_assets.lib.lerobot.layout import (
    APPENDED_DIR,
    DEFAULT_REPO_ID,
    DEFAULT_VAL_FRACTION,
    DatasetStateError,
    EPISODES_PER_META_FILE,
    HEADER_PATH,
    IncompatiblePartitionError,
    KEY_TAG,
    LeRobotExportError,
    PARQUET_KEY,
    PROVENANCE_PATH,
    SPLITS,
    STAGED_DATA,
    STAGED_VIDEO,
    STATE_FORMAT,
    STATE_PATH,
    TMP_DIR,
)
from ego_assets.lib.lerobot.staging import (
    StagedPartition,
    load_staged,
    norm_features,
    stats_from_json,
    typed_camera,
)
from ego_assets.lib.lerobot.stats import episode_stats
from ego_assets.lib.video import open_av


@dataclass
class AssemblyResult:
    root: Path
    repo_id: str
    n_episodes: int
    n_frames: int
    n_tasks: int
    splits: dict[str, str]
    episodes: pa.Table  # schemas.EPISODES rows (with partition_key) for every episode of the dataset
    added: list[str]
    replaced: list[str]
    removed: list[str]
    kept: list[str]
    videos_linked: list[str]  # partitions whose video file was brought in from staging
    data_written: list[str]  # partitions whose data file was (re)written
    seconds: float
    version: str = ""  # data version of the dataset: hash of its partitions' staged versions and settings

    def episodes_of(self, partition_key: str) -> pa.Table:
        """The episodes rows of one partition without ``partition_key`` (for ``schemas.conform``)."""
        t = self.episodes.filter(pa.compute.equal(self.episodes["partition_key"], partition_key))
        return t.drop_columns(["partition_key"])


# ----------------------------------------------------------------------------------------------------------
# assembly

def split_of(partition_key: str, val_fraction: float) -> str:
    """Train/validation by source video: a hash of the partition key against ``val_fraction``, so a video's
    episodes never straddle splits and the answer does not depend on which other videos exist."""
    u = int.from_bytes(hashlib.sha256(f"ego_assets.split:{partition_key}".encode()).digest()[:8], "big") / 2**64
    return "validation" if u < val_fraction else "train"


@dataclass
class _Ep:
    segment_id: int
    hand: str
    task: str
    length: int
    start_s: float
    end_s: float
    video_from: float
    video_to: float
    stats: dict
    provenance: str
    camera: dict = field(default_factory=dict)


@dataclass
class _Part:
    key: str
    version: str
    fps: int
    action_space: str
    features: dict | None
    video: dict
    episodes: list[_Ep]
    video_src: Path | None
    data_src: Path
    staged: bool
    old: dict | None = None  # state entry when the partition is already in the dataset
    n_frames: int = 0


def part_from_staged(s: StagedPartition) -> _Part:
    m = s.manifest
    eps = [_Ep(int(r["segment_id"]), r["hand"], r["task"], int(r["length"]), float(r["start_s"]),
               float(r["end_s"]), float(r["video_from_s"]), float(r["video_to_s"]), stats_from_json(r["stats"]),
               r["provenance"], json.loads(r.get("camera") or "{}")) for r in s.episodes.to_pylist()]
    vid = s.path / STAGED_VIDEO if m["video"].get("file") else None
    return _Part(s.partition_key, s.version, m["fps"], m["action_space"], m["features"], m["video"], eps, vid,
                 s.path / STAGED_DATA, True, None, s.n_frames)


def _read_meta_episodes(root: Path) -> list[dict]:
    files = sorted((root / EPISODES_DIR).glob("*/*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def _ep_from_meta(row: dict) -> _Ep:
    stats: dict[str, dict] = {}
    for k, v in row.items():
        if k.startswith("stats/"):
            _, feat, st = k.split("/", 2)
            stats.setdefault(feat, {})[st] = np.asarray(v)
    for f in ("episode_index", "index", "task_index"):
        stats.pop(f, None)  # renumbered at every assembly
    return _Ep(int(row["source/segment_id"]), row["source/hand"], row["tasks"][0], int(row["length"]),
               float(row["source/start_s"]), float(row["source/end_s"]),
               float(row[f"videos/{VIDEO_KEY}/from_timestamp"]), float(row[f"videos/{VIDEO_KEY}/to_timestamp"]),
               stats, row["source/provenance"], {k: row.get(CAMERA_PREFIX + k) for k in CAMERA_COLUMNS})


def _file_key(path: Path) -> str | None:
    """The partition key embedded in a dataset file (MP4 comment / Parquet metadata)."""
    try:
        if path.suffix == ".parquet":
            md = pq.read_schema(path).metadata or {}
            v = md.get(PARQUET_KEY)
            return v.decode() if v else None
        with open_av(str(path)) as c:
            tag = c.metadata.get("comment", "")
        return tag[len(KEY_TAG):] if tag.startswith(KEY_TAG) else None
    except Exception:  # unreadable file: not ours
        return None


def _scan(root: Path) -> dict[tuple[str, str], list[Path]]:
    """(kind, partition_key) -> files, for every data/video file in the dataset and its temp folder."""
    found: dict[tuple[str, str], list[Path]] = {}
    for kind, pattern in (("data", f"{DATA_DIR}/*/*.parquet"), ("video", f"{VIDEO_DIR}/{VIDEO_KEY}/*/*.mp4"),
                          ("data", f"{TMP_DIR}/data/*.parquet"), ("video", f"{TMP_DIR}/videos/*.mp4")):
        for p in sorted(root.glob(pattern)):
            k = _file_key(p)
            if k is not None:
                found.setdefault((kind, k), []).append(p)
    return found


def _pick(cands: list[Path] | None, size: int | None) -> Path | None:
    """The candidate with the recorded size (a half-finished run may have left an old and a new copy)."""
    if not cands:
        return None
    return next((c for c in cands if c.stat().st_size == size), cands[0])


def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def data_table(part: _Part, ep_base: int, idx_base: int, task_idx: list[int], full_features: dict,
                hf_schema: pa.Schema) -> pa.Table:
    src = pq.read_table(part.data_src)
    if "episode" in src.column_names:  # staged
        local = np.asarray(src["episode"].to_numpy(), np.int64)
    else:  # already in a dataset: local ordinal from the (old) global numbering
        e = np.asarray(src["episode_index"].to_numpy(), np.int64)
        local = e - (e.min() if len(e) else 0)
    n = src.num_rows
    if n != sum(ep.length for ep in part.episodes):
        raise DatasetStateError(f"data of partition {part.key!r} ({part.data_src}) has {n} rows, its episodes "
                                f"say {sum(ep.length for ep in part.episodes)}")
    cols = {}
    for k, ft in full_features.items():
        if ft["dtype"] == "video":
            continue
        if k == "episode_index":
            cols[k] = pa.array(ep_base + local, pa.int64())
        elif k == "index":
            cols[k] = pa.array(idx_base + np.arange(n), pa.int64())
        elif k == "task_index":
            cols[k] = pa.array(np.asarray(task_idx, np.int64)[local] if n else np.zeros(0, np.int64), pa.int64())
        else:
            cols[k] = src[k]
    t = pa.table(cols).cast(hf_schema)
    md = dict(hf_schema.metadata or {})
    md[PARQUET_KEY] = part.key.encode()
    return t.replace_schema_metadata(md)


def episode_meta_row(p: _Part, ep: _Ep, q: dict, e: int, ti: int, frame_from: int,
                     repo_id: str) -> tuple[dict, dict, dict]:
    """One episode's metadata, in one place for every assembly (full or appended): its meta/episodes row,
    its provenance row (schemas.EPISODES) and its stats. ``q``: the partition's file placement (chunk,
    file, split); ``e``/``ti``/``frame_from``: its global episode index, task index and first frame."""
    k = ep.length
    extra = episode_stats({"episode_index": np.full(k, e, np.int64),
                           "index": np.arange(frame_from, frame_from + k, dtype=np.int64),
                           "task_index": np.full(k, ti, np.int64)})
    stats = {**ep.stats, **extra}
    row = {"episode_index": e, "tasks": [ep.task], "length": k, "data/chunk_index": q["chunk"],
           "data/file_index": q["file"], "dataset_from_index": frame_from,
           "dataset_to_index": frame_from + k}
    if p.video_src is not None:
        row.update({f"videos/{VIDEO_KEY}/chunk_index": q["chunk"],
                    f"videos/{VIDEO_KEY}/file_index": q["file"],
                    f"videos/{VIDEO_KEY}/from_timestamp": ep.video_from,
                    f"videos/{VIDEO_KEY}/to_timestamp": ep.video_to})
    row.update({kk: np.asarray(v).tolist() for kk, v in flatten({"stats": stats}).items()})
    row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                "source/partition_key": p.key, "source/segment_id": ep.segment_id,
                "source/hand": ep.hand, "source/start_s": ep.start_s, "source/end_s": ep.end_s,
                "source/split": q["split"], "source/provenance": ep.provenance,
                **{CAMERA_PREFIX + c: ep.camera.get(c) for c in CAMERA_COLUMNS}})
    prov = {"partition_key": p.key, "episode_index": e, "segment_id": ep.segment_id,
            "hand": ep.hand, "task": ep.task, "length": k, "split": q["split"],
            "start_s": ep.start_s, "end_s": ep.end_s, "dataset": repo_id,
            "provenance": ep.provenance, **{c: ep.camera.get(c) for c in CAMERA_COLUMNS}}
    return row, prov, stats


def assemble(dataset_dir: str | Path, staged: Sequence[StagedPartition | str | Path], *,
             remove: Iterable[str] = (), repo_id: str = DEFAULT_REPO_ID,
             val_fraction: float = DEFAULT_VAL_FRACTION, robot_type: str | None = "human_hands",
             chunks_size: int | None = None, rebuild: bool = False, card: bool = True,
             card_info: dict | None = None,
             progress: Callable[[int, int], None] | None = None,
             skills: dict | None = None) -> AssemblyResult:
    """Put staged partitions into the LeRobot v3.0 dataset at ``dataset_dir`` (created if needed).

    ``staged``: new or re-staged partitions; partitions already in the dataset and not listed stay (pass
    ``remove`` to drop some). A listed partition whose staged version equals the one in the dataset is a
    no-op; a different version replaces its episodes. ``rebuild`` starts from an empty dataset. The result
    is deterministic for a given set of partitions and ``val_fraction``: partitions ordered by (split, key).
    Returns the ``episodes`` rows of the whole dataset and what was added/replaced/removed."""

    t_start = time.perf_counter()
    if not 0.0 <= val_fraction < 1.0:
        raise LeRobotExportError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    root = Path(dataset_dir)
    root.mkdir(parents=True, exist_ok=True)
    chunks_size = chunks_size or DEFAULT_CHUNK_SIZE
    remove = set(remove)
    staged_parts = [s if isinstance(s, StagedPartition) else load_staged(s) for s in staged]
    keys = [s.partition_key for s in staged_parts]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise LeRobotExportError(f"partitions staged twice in one assembly: {dup}")

    state_file = root / STATE_PATH
    if rebuild:
        for d in (DATA_DIR, VIDEO_DIR, "meta", TMP_DIR):
            shutil.rmtree(root / d, ignore_errors=True)
    state = json.loads(state_file.read_text()) if state_file.exists() else None
    if state is None and (root / INFO_PATH).exists():
        raise DatasetStateError(f"{str(root)!r} holds a LeRobot dataset not written by ego_assets "
                                "(no meta/ego_assets_state.json); use another folder or rebuild=True")
    if state is not None and state.get("format") != STATE_FORMAT:
        raise DatasetStateError(f"dataset {str(root)!r} has state format {state.get('format')!r}; "
                                f"this code writes {STATE_FORMAT}: rebuild=True from the staged partitions")
    old_parts: dict[str, dict] = (state or {}).get("partitions", {})
    if state is not None:  # partitions appended since (incremental.update_dataset): one file each
        old_parts = {**old_parts, **{f.stem: json.loads(f.read_text())
                                     for f in sorted((root / APPENDED_DIR).glob("*.json"))}}

    # -- the partitions of the new dataset --------------------------------------------------------------
    parts: dict[str, _Part] = {}
    if old_parts:
        rows = _read_meta_episodes(root)
        by_key: dict[str, list[dict]] = {}
        for r in rows:
            by_key.setdefault(r["source/partition_key"], []).append(r)
        recovering = (root / TMP_DIR).exists()
        located = None
        for key, entry in sorted(old_parts.items()):
            if key in remove:
                continue
            vpath = root / entry["video_file"] if entry.get("video_file") else None
            dpath = root / entry["data_file"]
            ok = (not recovering and dpath.is_file() and dpath.stat().st_size == entry["data_size"]
                  and (vpath is None or (vpath.is_file() and vpath.stat().st_size == entry["video_size"])))
            if not ok:  # a previous assembly stopped half-way: find the files by their embedded key
                located = located if located is not None else _scan(root)
                dpath = _pick(located.get(("data", key)), entry["data_size"])
                vpath = _pick(located.get(("video", key)), entry["video_size"]) if entry.get("video_file") else None
                if dpath is None or (entry.get("video_file") and vpath is None):
                    raise DatasetStateError(
                        f"dataset {str(root)!r}: the files of partition {key!r} are missing; "
                        "assemble again with rebuild=True and all staged partitions")
            eps = [_ep_from_meta(r) for r in sorted(by_key.get(key, []), key=lambda r: r["episode_index"])]
            if len(eps) != entry["n_episodes"]:
                raise DatasetStateError(f"dataset {str(root)!r}: partition {key!r} has {len(eps)} episodes in "
                                        f"meta/episodes, its state says {entry['n_episodes']}")
            parts[key] = _Part(key, entry["version"], state["fps"], state["action_space"],
                               norm_features(state["features"]), state["video"], eps, vpath, dpath, False,
                               entry, entry["n_frames"])
    added, replaced, kept = [], [], []
    for s in staged_parts:
        if s.partition_key in remove:
            raise LeRobotExportError(f"partition {s.partition_key!r} is both staged and to be removed")
        cur = parts.get(s.partition_key)
        if cur is not None and cur.version == s.version:
            continue
        (replaced if cur is not None else added).append(s.partition_key)
        parts[s.partition_key] = part_from_staged(s)
    removed = sorted(k for k in old_parts if k in remove)
    kept = sorted(k for k in parts if k not in added and k not in replaced)

    # -- compatibility -----------------------------------------------------------------------------------
    ref = next((p for p in sorted(parts.values(), key=lambda p: p.key) if p.features is not None), None)
    for p in parts.values():
        if ref is None or p.features is None:
            continue
        for what, a, b in (("fps", p.fps, ref.fps), ("action_space", p.action_space, ref.action_space),
                           ("features", p.features, ref.features),
                           ("vcodec", p.video.get("vcodec"), ref.video.get("vcodec"))):
            if a != b:
                detail = (f"{a[VIDEO_KEY]['shape']} vs {b[VIDEO_KEY]['shape']}" if what == "features"
                          else f"{a!r} vs {b!r}")
                raise IncompatiblePartitionError(
                    f"partition {p.key!r} does not fit the dataset: {what} {detail} (partition {ref.key!r}); "
                    "stage every partition with the same fps, action_space, image_size and vcodec")

    order = sorted(parts.values(), key=lambda p: (SPLITS.index(split_of(p.key, val_fraction)), p.key))
    order = [p for p in order if p.episodes]  # a partition without episodes has no files
    features = ref.features if ref is not None else None
    full_features = {**features, **{k: {**v, "shape": tuple(v["shape"])} for k, v in DEFAULT_FEATURES.items()}} \
        if features is not None else None
    hf_schema = data_schema(full_features) if full_features else None

    # -- numbering -----------------------------------------------------------------------------------------
    tasks: dict[str, int] = {}
    plan = []
    ep_base = idx_base = 0
    for slot, p in enumerate(order):
        chunk, fidx = divmod(slot, chunks_size)
        t_idx = []
        for ep in p.episodes:
            t_idx.append(tasks.setdefault(ep.task, len(tasks)))
        fp = hashlib.sha256(json.dumps([p.version, ep_base, idx_base, t_idx]).encode()).hexdigest()[:32]
        plan.append(dict(part=p, slot=slot, chunk=chunk, file=fidx, ep_base=ep_base, idx_base=idx_base,
                         task_idx=t_idx, fingerprint=fp, split=split_of(p.key, val_fraction),
                         data_rel=DEFAULT_DATA_PATH.format(chunk_index=chunk, file_index=fidx),
                         video_rel=DEFAULT_VIDEO_PATH.format(video_key=VIDEO_KEY, chunk_index=chunk,
                                                             file_index=fidx)))
        ep_base += len(p.episodes)
        idx_base += sum(ep.length for ep in p.episodes)

    # -- files: stage into the temp folder, drop stale files, move into place ------------------------------
    tmp = root / TMP_DIR
    (tmp / "data").mkdir(parents=True, exist_ok=True)
    (tmp / "videos").mkdir(parents=True, exist_ok=True)
    stay: set[Path] = set()
    moves: list[tuple[Path, Path]] = []
    linked, written = [], []
    total = len(plan)
    for n, q in enumerate(plan):
        p: _Part = q["part"]
        d_target, v_target = root / q["data_rel"], root / q["video_rel"]
        if (not p.staged and p.old is not None and p.old.get("data_fingerprint") == q["fingerprint"]):
            if p.data_src.resolve() == d_target.resolve():
                stay.add(d_target.resolve())
            else:
                staged_to = tmp / "data" / f"{p.key}.parquet"
                if p.data_src.resolve() != staged_to.resolve():
                    os.replace(p.data_src, staged_to)
                moves.append((staged_to, d_target))
        else:
            staged_to = tmp / "data" / f"{p.key}.parquet"
            table = data_table(p, q["ep_base"], q["idx_base"], q["task_idx"], full_features, hf_schema)
            write_atomic(staged_to, lambda t, table=table: pq.write_table(table, t, compression="snappy"))
            moves.append((staged_to, d_target))
            written.append(p.key)
        if p.video_src is not None:
            if not p.staged and p.video_src.resolve() == v_target.resolve():
                stay.add(v_target.resolve())
            else:
                staged_to = tmp / "videos" / f"{p.key}.mp4"
                if p.staged:
                    link_or_copy(p.video_src, staged_to)
                    linked.append(p.key)
                elif p.video_src.resolve() != staged_to.resolve():
                    os.replace(p.video_src, staged_to)
                moves.append((staged_to, v_target))
        if progress is not None:
            progress(n + 1, total + 1)
    for f in list(root.glob(f"{DATA_DIR}/*/*.parquet")) + list(root.glob(f"{VIDEO_DIR}/{VIDEO_KEY}/*/*.mp4")):
        if f.resolve() not in stay:
            f.unlink()
    for src, dst in moves:
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    for d in sorted(list(root.glob(f"{DATA_DIR}/*")) + list(root.glob(f"{VIDEO_DIR}/{VIDEO_KEY}/*")), reverse=True):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()

    # -- metadata ------------------------------------------------------------------------------------------
    meta_rows, ep_stats_all, prov_rows, ep_global = [], [], [], 0
    frame_global = 0
    for q in plan:
        p: _Part = q["part"]
        local_off = 0
        for j, ep in enumerate(p.episodes):
            e = q["ep_base"] + j
            ti = q["task_idx"][j]
            k = ep.length
            row, prov, stats = episode_meta_row(p, ep, q, e, ti, frame_global, repo_id)
            # the episode's skill: skills = ego_assets.defs.skills.skill_map(), {(key, segment_id, hand): (id, label)}
            sk = (skills or {}).get((p.key, int(ep.segment_id), ep.hand), (None, None))
            row.update({"source/skill_id": sk[0], "source/skill_label": sk[1]})
            prov.update({"skill_id": sk[0], "skill_label": sk[1]})
            ep_stats_all.append(stats)
            meta_rows.append(row)
            prov_rows.append(prov)
            frame_global += k
            local_off += k
        ep_global += len(p.episodes)
    # meta/episodes in files of at most EPISODES_PER_META_FILE rows
    shutil.rmtree(root / EPISODES_DIR, ignore_errors=True)
    for start in range(0, len(meta_rows), EPISODES_PER_META_FILE):
        chunk, fidx = divmod(start // EPISODES_PER_META_FILE, chunks_size)
        part_rows = meta_rows[start:start + EPISODES_PER_META_FILE]
        for r in part_rows:
            r["meta/episodes/chunk_index"], r["meta/episodes/file_index"] = chunk, fidx
        table = typed_camera(pa.Table.from_pylist(part_rows), CAMERA_PREFIX)
        write_atomic(root / DEFAULT_EPISODES_PATH.format(chunk_index=chunk, file_index=fidx),
                      lambda t, table=table: pq.write_table(table, t, compression="snappy"))

    write_tasks(sorted(tasks, key=tasks.get), root)
    n_train = sum(len(q["part"].episodes) for q in plan if q["split"] == "train")
    n_eps = ep_global
    splits = {}
    if n_train:
        splits["train"] = f"0:{n_train}"
    if n_eps > n_train:
        splits["validation"] = f"{n_train}:{n_eps}"
    if full_features is not None:
        info = create_info(ref.fps, full_features, robot_type=robot_type, chunks_size=chunks_size)
        if plan:
            info["features"][VIDEO_KEY]["info"] = video_info(root / plan[0]["video_rel"], ref.video)
        info.update(total_episodes=n_eps, total_frames=frame_global, total_tasks=len(tasks), splits=splits)
        write_info(info, root)
        if ep_stats_all:
            write_stats(aggregate_stats(ep_stats_all), root)
    else:  # no episode left: no LeRobot metadata that would describe a dataset that is not there
        for rel in (INFO_PATH, STATS_PATH):
            (root / rel).unlink(missing_ok=True)
    prov = pa.Table.from_pylist(prov_rows, schema=schemas.EPISODES) if prov_rows else schemas.empty("episodes")
    write_atomic(root / PROVENANCE_PATH, lambda t: pq.write_table(prov, t))
    for f in (root / "meta").glob("ego_assets_provenance.append-*.parquet"):  # incremental.append_partition's
        f.unlink()
    new_state = {
        "format": STATE_FORMAT, "repo_id": repo_id, "fps": ref.fps if ref else None,
        "action_space": ref.action_space if ref else None,
        "features": {k: {**v, "shape": list(v["shape"])} for k, v in features.items()} if features else None,
        "video": ref.video if ref else None, "val_fraction": val_fraction, "chunks_size": chunks_size,
        "partitions": {
            q["part"].key: {
                "version": q["part"].version, "split": q["split"], "n_episodes": len(q["part"].episodes),
                "n_frames": sum(ep.length for ep in q["part"].episodes), "data_file": q["data_rel"],
                "data_size": (root / q["data_rel"]).stat().st_size, "data_fingerprint": q["fingerprint"],
                "video_file": q["video_rel"] if q["part"].video_src is not None else None,
                "video_size": (root / q["video_rel"]).stat().st_size if q["part"].video_src is not None else None,
            } for q in plan},
    }
    write_atomic(state_file, lambda t: t.write_text(json.dumps(new_state, indent=1)))
    # what an append reads instead of the whole state (which grows with the dataset); appends since are in it now
    write_atomic(root / HEADER_PATH, lambda t: t.write_text(json.dumps(
        {k: v for k, v in new_state.items() if k != "partitions"} | {"n_partitions": len(plan)}, indent=1)))
    shutil.rmtree(root / APPENDED_DIR, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    if card and full_features is not None:
        from ego_assets.lib.lerobot.publish import write_card

        write_card(root, repo_id=repo_id, **(card_info or {}))
    if progress is not None:
        progress(total + 1, total + 1)
    version = hashlib.sha256(json.dumps(
        [val_fraction, chunks_size, [(q["part"].key, q["part"].version) for q in plan]]).encode()).hexdigest()[:32]
    return AssemblyResult(root, repo_id, n_eps, frame_global, len(tasks), splits, prov, sorted(added),
                          sorted(replaced), removed, kept, sorted(linked), sorted(written),
                          time.perf_counter() - t_start, version)
