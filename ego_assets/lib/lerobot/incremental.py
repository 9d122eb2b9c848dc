"""Append staged partitions to a published LeRobot v3.0 dataset on any fsspec filesystem (issue 19).

The full assembly (``assembly.assemble``) renumbers the whole dataset in (split, key) order and so needs a
local copy of it. Adding a video does not need that: its episodes take the next episode and frame indices,
its data and video become new files of the v3.0 layout (one file index per partition, as the full assembly
already lays them out), its episodes a new ``meta/episodes`` file, and the small metadata LeRobot reads
(``info.json``, ``stats.json``, ``tasks.parquet``) is updated from what is there: the dataset stats are
merged with the new episodes' stats by ``format.aggregate_stats`` (count-weighted, the same method as over
all episodes, so the result equals a full aggregation up to float rounding). What is read and written is the
new partition's files plus that metadata; no other data or video file is touched.

Publication order: data and video files first (no metadata points at them yet), then tasks (only new
rows are appended: old indices keep their meaning), stats, provenance, the new ``meta/episodes`` file,
``info.json``, the partition's state entry (``meta/ego_assets_appended/<key>.json``) and the small state
header last. ``meta/ego_assets_state.json`` (every partition: it grows with the dataset) is neither read nor
written; the full assembly reads it with the appended entries and writes it whole again.

What still needs the full assembly (the caller falls back to it): replacing or removing a partition (the
indices after it would shift), a format change, a dataset not yet assembled. The appended episodes keep
their split in ``source/split``; ``info.json``'s ``splits`` ranges stay exact while they remain
contiguous and are dropped otherwise (the split is then only in ``source/split``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ego_assets.lib import schemas
from ego_assets.lib.lerobot.assembly import AssemblyResult, data_table, episode_meta_row, part_from_staged, split_of
from ego_assets.lib.lerobot.features import CAMERA_PREFIX, VIDEO_KEY
from ego_assets.lib.lerobot.format import (DEFAULT_DATA_PATH, DEFAULT_EPISODES_PATH, DEFAULT_FEATURES,
                                           DEFAULT_TASKS_PATH, DEFAULT_VIDEO_PATH, INFO_PATH, STATS_PATH,
                                           aggregate_stats, data_schema)
from ego_assets.lib.lerobot.layout import (APPENDED_DIR, DEFAULT_REPO_ID, EPISODES_PER_META_FILE, HEADER_PATH,
                                           STAGED_DATA, STAGED_EPISODES, STAGED_MANIFEST, STAGED_VIDEO,
                                           STATE_FORMAT, DatasetStateError, IncompatiblePartitionError,
                                           LeRobotExportError)
from ego_assets.lib.lerobot.staging import load_staged, norm_features, typed_camera

PROVENANCE_APPEND = "meta/ego_assets_provenance.append-{slot:06d}.parquet"


class NeedsFullAssembly(LeRobotExportError):
    """The change cannot be appended (replacement, removal, format change, no dataset yet)."""


def _stats_from_json(d: dict) -> dict:
    return {k: {s: np.asarray(v) for s, v in st.items()} for k, st in d.items()}


def _stats_to_json(d: dict) -> dict:
    return {k: {s: np.asarray(v).tolist() for s, v in st.items()} for k, st in d.items()}


def _local(fs) -> bool:
    proto = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "file" in proto or "local" in proto


def _put_bytes(fs, path: str, data: bytes) -> None:
    if _local(fs):  # object stores have no folders to make
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def _put_file(fs, lpath: str, path: str) -> None:
    if _local(fs):
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.put_file(lpath, path)


def _parquet_bytes(table: pa.Table, compression: str = "snappy") -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=compression)
    return buf.getvalue()


def _splits(info_splits: dict, n_before: int, n_new: int, split: str) -> dict:
    """``info.json`` splits after appending ``n_new`` episodes of ``split``: ranges while contiguous."""
    ranges = {k: tuple(int(x) for x in v.split(":")) for k, v in (info_splits or {}).items()}
    if ranges and max(b for _, b in ranges.values()) != n_before:
        return {}
    last = max(ranges, key=lambda k: ranges[k][1]) if ranges else None
    if last == split:
        ranges[split] = (ranges[split][0], n_before + n_new)
    elif split not in ranges:
        ranges[split] = (n_before, n_before + n_new)
    else:
        return {}  # the split already has a range before another one: not contiguous any more
    return {k: f"{a}:{b}" for k, (a, b) in ranges.items()}


def append_partition(fs, root: str, staged_dir: str, scratch: str | Path, *,
                     repo_id: str = DEFAULT_REPO_ID, skills: dict | None = None,
                     in_dataset: str | None = None) -> AssemblyResult:
    """Append the staged partition at ``staged_dir`` (a folder on ``fs`` written by
    ``staging.stage_partition``) to the dataset at ``root`` on ``fs``. ``scratch``: a local folder for the
    partition's files. Raises :class:`NeedsFullAssembly` when only the full assembly can make the
    change; a partition already in the dataset at the same staged version is a no-op. ``in_dataset``: the
    staged version the caller knows the dataset holds of this partition (from the full state); else only
    partitions appended since the last full assembly are recognised (their entry files): the whole state is
    not read, it grows with the dataset."""
    import time

    t0 = time.perf_counter()
    root, staged_dir = root.rstrip("/"), staged_dir.rstrip("/")
    head_path = f"{root}/{HEADER_PATH}"
    if not fs.exists(head_path) or not fs.exists(f"{root}/{INFO_PATH}"):
        raise NeedsFullAssembly(f"{root}: no assembled dataset to append to")
    state = json.loads(fs.cat_file(head_path))  # small: the state without its partitions
    if state.get("format") != STATE_FORMAT or not state.get("features"):
        raise NeedsFullAssembly(f"{root}: state format {state.get('format')!r}")
    manifest = json.loads(fs.cat_file(f"{staged_dir}/{STAGED_MANIFEST}"))
    key, version = manifest["partition_key"], manifest["version"]
    if in_dataset is None:
        entry_path = f"{root}/{APPENDED_DIR}/{key}.json"
        old = json.loads(fs.cat_file(entry_path)) if fs.exists(entry_path) else None
    else:
        old = {"version": in_dataset}
    info = json.loads(fs.cat_file(f"{root}/{INFO_PATH}"))
    if old is not None:
        if old["version"] == version:
            return AssemblyResult(Path(root), repo_id, info["total_episodes"], info["total_frames"],
                                    info["total_tasks"], info.get("splits", {}), _empty_prov(), [], [], [],
                                    [key], [], [], time.perf_counter() - t0, state.get("version", ""))
        raise NeedsFullAssembly(f"partition {key!r} is replaced (staged {version}, in the dataset "
                                f"{old['version']})")

    local = Path(scratch) / key
    local.mkdir(parents=True, exist_ok=True)
    (local / STAGED_MANIFEST).write_bytes(json.dumps(manifest).encode())
    for name in (STAGED_EPISODES, STAGED_DATA, STAGED_VIDEO):
        if fs.exists(f"{staged_dir}/{name}"):
            fs.get_file(f"{staged_dir}/{name}", str(local / name))
    sp = load_staged(local)
    part = part_from_staged(sp)
    if not part.episodes:
        raise NeedsFullAssembly(f"partition {key!r} has no episode")  # nothing to append; full path records it
    features = norm_features(state["features"])
    for what, a, b in (("fps", part.fps, state["fps"]), ("action_space", part.action_space, state["action_space"]),
                       ("features", part.features, features),
                       ("vcodec", part.video.get("vcodec"), (state.get("video") or {}).get("vcodec"))):
        if a != b:
            raise IncompatiblePartitionError(f"partition {key!r} does not fit the dataset: {what} {a!r} vs {b!r}")

    chunks_size = state.get("chunks_size") or info.get("chunks_size")
    slot = int(state.get("next_slot", state["n_partitions"]))
    chunk, fidx = divmod(slot, chunks_size)
    ep_base, idx_base = int(info["total_episodes"]), int(info["total_frames"])
    split = split_of(key, float(state["val_fraction"]))

    # tasks: existing indices keep their meaning, new task strings get the next ones
    tasks_t = pq.read_table(io.BytesIO(fs.cat_file(f"{root}/{DEFAULT_TASKS_PATH}")))
    name_col = next(c for c in tasks_t.column_names if c != "task_index")
    tasks = dict(zip(tasks_t[name_col].to_pylist(), tasks_t["task_index"].to_pylist()))
    n_tasks_before = len(tasks)
    task_idx = [tasks.setdefault(ep.task, len(tasks)) for ep in part.episodes]

    full_features = {**features, **{k: {**v, "shape": tuple(v["shape"])} for k, v in DEFAULT_FEATURES.items()}}
    hf_schema = data_schema(full_features)
    data_rel = DEFAULT_DATA_PATH.format(chunk_index=chunk, file_index=fidx)
    video_rel = DEFAULT_VIDEO_PATH.format(video_key=VIDEO_KEY, chunk_index=chunk, file_index=fidx)
    if fs.exists(f"{root}/{data_rel}"):
        raise DatasetStateError(f"{root}/{data_rel} exists but the state's next slot is {slot}")
    table = data_table(part, ep_base, idx_base, task_idx, full_features, hf_schema)
    data_bytes = _parquet_bytes(table)
    _put_bytes(fs, f"{root}/{data_rel}", data_bytes)
    if part.video_src is not None:
        _put_file(fs, str(part.video_src), f"{root}/{video_rel}")

    # metadata rows, stats, provenance
    meta_file = int(state.get("meta_files", -(-ep_base // EPISODES_PER_META_FILE)))
    m_chunk, m_file = divmod(meta_file, chunks_size)
    q = dict(chunk=chunk, file=fidx, split=split)
    rows, prov_rows, new_stats = [], [], []
    frame = idx_base
    for j, ep in enumerate(part.episodes):
        row, prov, st = episode_meta_row(part, ep, q, ep_base + j, task_idx[j], frame, repo_id)
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = m_chunk, m_file
        if skills is not None:  # as assembly.assemble puts them: {(key, segment_id, hand): (id, label)}
            sk = skills.get((key, int(ep.segment_id), ep.hand), (None, None))
            row.update({"source/skill_id": sk[0], "source/skill_label": sk[1]})
            prov.update({"skill_id": sk[0], "skill_label": sk[1]})
        rows.append(row)
        prov_rows.append(prov)
        new_stats.append(st)
        frame += ep.length
    meta_table = typed_camera(pa.Table.from_pylist(rows), CAMERA_PREFIX)
    first_meta = f"{root}/{DEFAULT_EPISODES_PATH.format(chunk_index=0, file_index=0)}"
    with fs.open(first_meta, "rb", block_size=1 << 16, cache_type="bytes") as f:
        ref_schema = pq.ParquetFile(f).schema_arrow
    for f in ref_schema:  # columns the full assembly adds that this one does not know of: null
        if f.name not in meta_table.column_names:
            meta_table = meta_table.append_column(f, pa.nulls(meta_table.num_rows, f.type))
    meta_table = meta_table.select(ref_schema.names).cast(ref_schema)
    prov_table = pa.Table.from_pylist(prov_rows, schema=schemas.EPISODES)

    if len(tasks) > n_tasks_before:
        names = sorted(tasks, key=tasks.get)
        tt = pa.table({name_col: names, "task_index": [tasks[n] for n in names]})
        tt = tt.select(tasks_t.column_names).cast(tasks_t.schema)
        _put_bytes(fs, f"{root}/{DEFAULT_TASKS_PATH}", _parquet_bytes(tt))
    old_stats = _stats_from_json(json.loads(fs.cat_file(f"{root}/{STATS_PATH}")))
    merged = aggregate_stats([old_stats, *new_stats])
    _put_bytes(fs, f"{root}/{STATS_PATH}", json.dumps(_stats_to_json(merged), indent=4).encode())
    _put_bytes(fs, f"{root}/{PROVENANCE_APPEND.format(slot=slot)}", _parquet_bytes(prov_table, "zstd"))
    _put_bytes(fs, f"{root}/{DEFAULT_EPISODES_PATH.format(chunk_index=m_chunk, file_index=m_file)}",
               _parquet_bytes(meta_table))
    n_new, frames_new = len(part.episodes), frame - idx_base
    info.update(total_episodes=ep_base + n_new, total_frames=frame, total_tasks=len(tasks),
                splits=_splits(info.get("splits", {}), ep_base, n_new, split))
    _put_bytes(fs, f"{root}/{INFO_PATH}", json.dumps(info, indent=4).encode())
    entry = {
        "version": version, "split": split, "n_episodes": n_new, "n_frames": frames_new, "data_file": data_rel,
        "data_size": len(data_bytes), "data_fingerprint": None,
        "video_file": video_rel if part.video_src is not None else None,
        "video_size": part.video_src.stat().st_size if part.video_src is not None else None}
    _put_bytes(fs, f"{root}/{APPENDED_DIR}/{key}.json", json.dumps(entry).encode())
    state.update(next_slot=slot + 1, meta_files=meta_file + 1, appended=int(state.get("appended", 0)) + 1)
    import hashlib

    state["version"] = hashlib.sha256(json.dumps([state.get("version", ""), key, version]).encode()).hexdigest()[:32]
    _put_bytes(fs, head_path, json.dumps(state, indent=1).encode())
    return AssemblyResult(Path(root), repo_id, ep_base + n_new, frame, len(tasks), info["splits"], prov_table,
                            [key], [], [], [], [key], [key], time.perf_counter() - t0, state["version"])


def _empty_prov() -> pa.Table:
    return schemas.empty("episodes")
