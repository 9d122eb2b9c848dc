"""Change a published LeRobot v3.0 dataset on any fsspec filesystem without its working copy (issue 19):
append a staged partition, remove partitions, replace one (remove + append, one publication).

The full assembly (``assembly.assemble``) renumbers the whole dataset in (split, key) order and so needs a
local copy of it, every video included. These changes do not:

*Append.* The new partition's episodes take the next episode and frame indices, its data and video become
new files of the v3.0 layout (one file index per partition, as the full assembly lays them out), its
episodes a new ``meta/episodes`` file, and the small metadata LeRobot reads (``info.json``, ``stats.json``,
``tasks.parquet``) is updated from what is there: the dataset stats are merged with the new episodes'
stats by ``format.aggregate_stats`` (count-weighted, the same method as over all episodes, so the result
equals a full aggregation up to float rounding). Read and written: the new partition's files plus that
metadata; no other data or video file.

*Remove.* LeRobot 0.6.1 finds a frame by its row position: without an ``episodes=`` filter the ``index``
column of the data rows must equal the row's position in the concatenation of ``data/*/*.parquet`` in
path order (``dataset_reader._query_hf_dataset`` takes ``hf_dataset[index]``), and row ``i`` of
``meta/episodes`` must be episode ``i`` (``meta.episodes[ep_idx]``). Removing a partition's episodes
therefore shifts ``index`` and ``episode_index`` of every later data row: the data files after the first
removed slot are rewritten (two columns replaced with pyarrow, nothing else of them changes) as new files
after the last slot, in the same order, and the old ones deleted once the metadata points at the new
ones. **Video bytes are never read, written or re-encoded**: ``meta/episodes`` keeps pointing every
remaining episode at its video (chunk, file) and from/to timestamps; only the removed partitions' videos
are deleted. ``meta/episodes`` rows are renumbered (``episode_index``, ``dataset_from_index`` /
``dataset_to_index``, the data file pointer, and the per-episode stats of ``episode_index`` and
``index``, which move with the numbering: min, max, mean and quantiles of an arithmetic sequence shift
with it, std and count do not) and ``meta/stats.json`` is aggregated again from every remaining episode's
stats with ``format.aggregate_stats`` (what the full assembly does: quantiles cannot be subtracted).
Tasks keep their indices (a task no episode uses any more stays in ``tasks.parquet``: dropping it would
renumber ``task_index`` in data files anywhere in the dataset); ``info.json``'s totals and ``splits``
(exact ranges while each split is contiguous, else none) are updated. Cost: the metadata (all of
``meta/episodes``) plus O(data files after the removed slot); nothing of the videos.

*Publication order* (readers never see metadata pointing at missing files): data and video files first
(no metadata points at them yet); then the metadata: tasks, stats, provenance, ``meta/episodes``, the
state, ``info.json``, the partition state entries and the small state header last; then the files no
metadata points at any more (the removed partitions' data and video, the shifted data files' old copies)
are deleted. A ``meta/episodes`` rewrite is not atomic across its files: a reader that opens the dataset
while they are being written may see a mix (as it may see an append's new file before ``info.json``).

*State.* ``meta/ego_assets_state.json`` (every partition: it grows with the dataset) is neither read nor
written by an append or by the removal of an appended partition; removing (or shifting) a partition the
full assembly placed rewrites it (O(partitions) of JSON). Partitions appended since the full assembly
have one entry file each (``meta/ego_assets_appended/<key>.json``); the header
(``meta/ego_assets_header.json``) holds the next free slot and ``meta/episodes`` file. The next full
assembly reads the state with those entries (the data files by their recorded path and size) and lays
the dataset out afresh; provenance files (``meta/ego_assets_provenance*.parquet``) are renumbered with
the episodes.

What still needs the full assembly (the caller falls back to it): a format change, a dataset not yet
assembled, a change that would leave it without episodes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ego_assets.lib import schemas
from ego_assets.lib.lerobot.assembly import AssemblyResult, data_table, episode_meta_row, part_from_staged, split_of
from ego_assets.lib.lerobot.features import CAMERA_PREFIX, VIDEO_KEY
from ego_assets.lib.lerobot.format import (DEFAULT_DATA_PATH, DEFAULT_EPISODES_PATH, DEFAULT_FEATURES,
                                           DEFAULT_TASKS_PATH, DEFAULT_VIDEO_PATH, INFO_PATH, STATS_PATH,
                                           aggregate_stats, data_schema)
from ego_assets.lib.lerobot.layout import (APPENDED_DIR, DEFAULT_REPO_ID, EPISODES_PER_META_FILE, HEADER_PATH,
                                           PROVENANCE_PATH, STAGED_DATA, STAGED_EPISODES, STAGED_MANIFEST,
                                           STAGED_VIDEO, STATE_FORMAT, STATE_PATH, DatasetStateError,
                                           IncompatiblePartitionError, LeRobotExportError)
from ego_assets.lib.lerobot.staging import load_staged, norm_features, typed_camera

PROVENANCE_APPEND = "meta/ego_assets_provenance.append-{slot:06d}.parquet"
DATA_REWRITE_THREADS = 8  # data files renumbered at once by a removal (requests in flight, not CPU)


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


class _Pending:
    """The metadata of one change, held until the end and published in the order it was put (reads go
    through it, so a removal and the append after it see one dataset); the data/video files written on the
    way (removed again if the change fails) and those to delete once the metadata is published."""

    def __init__(self, fs):
        self.fs = fs
        self.meta: dict[str, bytes | None] = {}  # path -> bytes to write, or None: delete
        self.written: list[str] = []
        self.drop: list[str] = []
        self.read: dict[str, bytes] = {}  # metadata read once per change

    def cat(self, path: str) -> bytes:
        if path in self.meta:
            if self.meta[path] is None:
                raise FileNotFoundError(path)
            return self.meta[path]
        if path not in self.read:
            self.read[path] = self.fs.cat_file(path)
        return self.read[path]

    def exists(self, path: str) -> bool:
        return self.meta[path] is not None if path in self.meta else self.fs.exists(path)

    def put(self, path: str, data: bytes) -> None:
        self.meta.pop(path, None)  # the last put decides where it goes in the publication order
        self.meta[path] = data

    def rm(self, path: str) -> None:
        self.meta.pop(path, None)
        self.meta[path] = None

    def listing(self, folder: str, root: str) -> list[str]:
        """Paths (``root``-based) of the files under ``folder`` (relative to ``root``), pending ones included."""
        d = f"{root}/{folder}"
        found = {f"{root}/{p[p.rindex(folder + '/'):]}" for p in (self.fs.find(d) if self.fs.exists(d) else [])}
        found |= {p for p, v in self.meta.items() if v is not None and p.startswith(d + "/")}
        return sorted(p for p in found if self.meta.get(p, b"") is not None)

    def write_file(self, lpath: str | None, path: str, data: bytes | None = None) -> None:
        """A data or video file, written now (nothing points at it until the metadata is published)."""
        self.written.append(path)
        if data is None:
            _put_file(self.fs, lpath, path)
        else:
            _put_bytes(self.fs, path, data)

    def publish(self) -> None:
        for path, data in self.meta.items():
            if data is not None:
                _put_bytes(self.fs, path, data)
            elif self.fs.exists(path):
                self.fs.rm_file(path)
        if self.drop:  # files this change read or wrote: they exist (one bulk delete on an object store)
            self.fs.rm(self.drop)

    def abandon(self) -> None:
        for path in self.written:  # not referenced by any metadata: they would only block the next slots
            if self.fs.exists(path):
                self.fs.rm_file(path)


def _read_header(view: _Pending, root: str) -> tuple[dict, dict]:
    head_path = f"{root}/{HEADER_PATH}"
    if not view.exists(head_path) or not view.exists(f"{root}/{INFO_PATH}"):
        raise NeedsFullAssembly(f"{root}: no assembled dataset to change")
    state = json.loads(view.cat(head_path))  # small: the state without its partitions
    if state.get("format") != STATE_FORMAT or not state.get("features"):
        raise NeedsFullAssembly(f"{root}: state format {state.get('format')!r}")
    return state, json.loads(view.cat(f"{root}/{INFO_PATH}"))


def _new_version(state: dict, change: list) -> str:
    import hashlib

    return hashlib.sha256(json.dumps([state.get("version", ""), *change]).encode()).hexdigest()[:32]


def append_partition(fs, root: str, staged_dir: str, scratch: str | Path, *,
                     repo_id: str = DEFAULT_REPO_ID, skills: dict | None = None,
                     in_dataset: str | None = None) -> AssemblyResult:
    """Append the staged partition at ``staged_dir`` (a folder on ``fs`` written by
    ``staging.stage_partition``) to the dataset at ``root`` on ``fs``. ``scratch``: a local folder for the
    partition's files. Raises :class:`NeedsFullAssembly` when only the full assembly can make the
    change (a partition already in the dataset at another version: :func:`replace_partition`); a
    partition already in the dataset at the same staged version is a no-op. ``in_dataset``: the staged
    version the caller knows the dataset holds of this partition (from the full state); else only
    partitions appended since the last full assembly are recognised (their entry files): the whole state
    is not read, it grows with the dataset."""
    known = None
    if in_dataset is not None:
        key = json.loads(fs.cat_file(f"{staged_dir.rstrip('/')}/{STAGED_MANIFEST}"))["partition_key"]
        known = {key: in_dataset}
    return update_dataset(fs, root, append=[staged_dir], scratch=scratch, repo_id=repo_id, skills=skills,
                          in_dataset=known)


def remove_partition(fs, root: str, key: str, *, repo_id: str = DEFAULT_REPO_ID) -> AssemblyResult:
    """Remove partition ``key`` from the dataset at ``root`` on ``fs`` (see the module: its files are
    deleted, later data files renumbered, no video touched)."""
    return update_dataset(fs, root, remove=[key], repo_id=repo_id)


def replace_partition(fs, root: str, staged_dir: str, scratch: str | Path, *, repo_id: str = DEFAULT_REPO_ID,
                      skills: dict | None = None) -> AssemblyResult:
    """Replace the partition staged at ``staged_dir`` (another version of it is in the dataset): its old
    episodes are removed and the new ones appended at the end, published once."""
    key = json.loads(fs.cat_file(f"{staged_dir.rstrip('/')}/{STAGED_MANIFEST}"))["partition_key"]
    return update_dataset(fs, root, remove=[key], append=[staged_dir], scratch=scratch, repo_id=repo_id,
                          skills=skills)


def update_dataset(fs, root: str, *, remove=(), append=(), scratch: str | Path | None = None,
                   repo_id: str = DEFAULT_REPO_ID, skills: dict | None = None,
                   in_dataset: dict[str, str] | None = None) -> AssemblyResult:
    """Remove the partitions ``remove`` and append the staged partitions ``append`` (folders on ``fs``)
    to the dataset at ``root`` on ``fs``, published once, metadata last. A partition both removed and
    appended is replaced (its episodes move to the end). ``in_dataset``: {partition key: the staged version
    the caller knows the dataset holds} for partitions appended here that the entry files may not know of
    (see :func:`append_partition`). ``AssemblyResult.episodes``: the ``episodes``
    rows of every partition whose rows changed (appended, or renumbered by a removal). Raises
    :class:`NeedsFullAssembly` (nothing changed) when only the full assembly can do it."""
    import time

    t0 = time.perf_counter()
    if append and scratch is None:
        raise LeRobotExportError("update_dataset: appending needs a local scratch folder (scratch=)")
    root = root.rstrip("/")
    view = _Pending(fs)
    _read_header(view, root)  # raises NeedsFullAssembly when there is no dataset of this format
    changed: dict[str, pa.Table] = {}
    removed: list[str] = []
    added, replaced, kept = [], [], []
    try:
        if remove:
            removed, renumbered = _remove(view, root, sorted(set(remove)), *_read_header(view, root))
            changed.update(renumbered)
        for sdir in append:
            key, prov, outcome = _append(view, root, sdir.rstrip("/"), Path(scratch), repo_id=repo_id,
                                         skills=skills, in_dataset=in_dataset or {})
            if outcome == "kept":
                kept.append(key)
                continue
            (replaced if key in removed else added).append(key)
            changed[key] = prov
    except BaseException:
        view.abandon()
        raise
    view.publish()
    state, info = _read_header(_Pending(fs), root) if not (added or replaced or removed) else (
        json.loads(view.meta[f"{root}/{HEADER_PATH}"]), json.loads(view.meta[f"{root}/{INFO_PATH}"]))
    prov = (pa.concat_tables([changed[k] for k in sorted(changed)], promote_options="permissive") if changed
            else _empty_prov())
    return AssemblyResult(Path(root), repo_id, int(info["total_episodes"]), int(info["total_frames"]),
                          int(info["total_tasks"]), info.get("splits", {}), prov, sorted(added), sorted(replaced),
                          sorted(k for k in removed if k not in replaced), sorted(kept),
                          sorted(added + replaced), sorted(changed), time.perf_counter() - t0,
                          state.get("version", ""))


def _append(view: _Pending, root: str, staged_dir: str, scratch: Path, *, repo_id: str, skills: dict | None,
            in_dataset: dict[str, str]) -> tuple[str, pa.Table | None, str]:
    """One staged partition appended into ``view``: (key, its provenance rows, "added" or "kept")."""
    fs = view.fs
    head_path = f"{root}/{HEADER_PATH}"
    state, info = _read_header(view, root)
    manifest = json.loads(fs.cat_file(f"{staged_dir}/{STAGED_MANIFEST}"))
    key, version = manifest["partition_key"], manifest["version"]
    if key in in_dataset:
        old = {"version": in_dataset[key]}
    else:
        entry_path = f"{root}/{APPENDED_DIR}/{key}.json"
        old = json.loads(view.cat(entry_path)) if view.exists(entry_path) else None
    if old is not None:
        if old["version"] == version:
            return key, None, "kept"
        raise NeedsFullAssembly(f"partition {key!r} is replaced (staged {version}, in the dataset "
                                f"{old['version']}): replace_partition")

    local = scratch / key
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
    tasks_t = pq.read_table(io.BytesIO(view.cat(f"{root}/{DEFAULT_TASKS_PATH}")))
    name_col = next(c for c in tasks_t.column_names if c != "task_index")
    tasks = dict(zip(tasks_t[name_col].to_pylist(), tasks_t["task_index"].to_pylist()))
    n_tasks_before = len(tasks)
    task_idx = [tasks.setdefault(ep.task, len(tasks)) for ep in part.episodes]

    full_features = {**features, **{k: {**v, "shape": tuple(v["shape"])} for k, v in DEFAULT_FEATURES.items()}}
    hf_schema = data_schema(full_features)
    data_rel = DEFAULT_DATA_PATH.format(chunk_index=chunk, file_index=fidx)
    video_rel = DEFAULT_VIDEO_PATH.format(video_key=VIDEO_KEY, chunk_index=chunk, file_index=fidx)
    if view.exists(f"{root}/{data_rel}"):
        raise DatasetStateError(f"{root}/{data_rel} exists but the state's next slot is {slot}")
    table = data_table(part, ep_base, idx_base, task_idx, full_features, hf_schema)
    data_bytes = _parquet_bytes(table)
    view.write_file(None, f"{root}/{data_rel}", data_bytes)
    if part.video_src is not None:
        view.write_file(str(part.video_src), f"{root}/{video_rel}")

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
    ref_schema = _meta_schema(view, root)
    for f in ref_schema:  # columns the full assembly adds that this one does not know of: null
        if f.name not in meta_table.column_names:
            meta_table = meta_table.append_column(f, pa.nulls(meta_table.num_rows, f.type))
    meta_table = meta_table.select(ref_schema.names).cast(ref_schema)
    prov_table = pa.Table.from_pylist(prov_rows, schema=schemas.EPISODES)

    if len(tasks) > n_tasks_before:
        names = sorted(tasks, key=tasks.get)
        tt = pa.table({name_col: names, "task_index": [tasks[n] for n in names]})
        tt = tt.select(tasks_t.column_names).cast(tasks_t.schema)
        view.put(f"{root}/{DEFAULT_TASKS_PATH}", _parquet_bytes(tt))
    old_stats = _stats_from_json(json.loads(view.cat(f"{root}/{STATS_PATH}")))
    merged = aggregate_stats([old_stats, *new_stats])
    view.put(f"{root}/{STATS_PATH}", json.dumps(_stats_to_json(merged), indent=4).encode())
    view.put(f"{root}/{PROVENANCE_APPEND.format(slot=slot)}", _parquet_bytes(prov_table, "zstd"))
    view.put(f"{root}/{DEFAULT_EPISODES_PATH.format(chunk_index=m_chunk, file_index=m_file)}",
             _parquet_bytes(meta_table))
    n_new, frames_new = len(part.episodes), frame - idx_base
    info.update(total_episodes=ep_base + n_new, total_frames=frame, total_tasks=len(tasks),
                splits=_splits(info.get("splits", {}), ep_base, n_new, split))
    view.put(f"{root}/{INFO_PATH}", json.dumps(info, indent=4).encode())
    entry = {
        "version": version, "split": split, "n_episodes": n_new, "n_frames": frames_new, "data_file": data_rel,
        "data_size": len(data_bytes), "data_fingerprint": None,
        "video_file": video_rel if part.video_src is not None else None,
        "video_size": part.video_src.stat().st_size if part.video_src is not None else None}
    view.put(f"{root}/{APPENDED_DIR}/{key}.json", json.dumps(entry).encode())
    state.update(next_slot=slot + 1, meta_files=meta_file + 1, appended=int(state.get("appended", 0)) + 1)
    state["version"] = _new_version(state, [key, version])
    view.put(head_path, json.dumps(state, indent=1).encode())
    return key, prov_table, "added"


def _meta_schema(view: _Pending, root: str) -> pa.Schema:
    """The schema of ``meta/episodes`` (its first file; another one when a removal emptied that)."""
    first = f"{root}/{DEFAULT_EPISODES_PATH.format(chunk_index=0, file_index=0)}"
    if first in view.meta or not view.fs.exists(first):
        files = view.listing("meta/episodes", root)
        if not files:
            raise NeedsFullAssembly(f"{root}: no meta/episodes file")
        return pq.read_schema(io.BytesIO(view.cat(files[0])))
    with view.fs.open(first, "rb", block_size=1 << 16, cache_type="bytes") as f:
        return pq.ParquetFile(f).schema_arrow


# -- removal ----------------------------------------------------------------------------------------------

_MOVES_WITH_INDEX = ("min", "max", "mean", "q01", "q10", "q50", "q90", "q99")  # not std, count


def _list_values(col: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """(offsets, flat numpy values) of a list<number> column."""
    arr = col.combine_chunks()
    return arr.offsets, arr.flatten().to_numpy(zero_copy_only=False)


def _set(t: pa.Table, name: str, values) -> pa.Table:
    i = t.schema.get_field_index(name)
    f = t.schema.field(i)
    return t.set_column(i, f, pa.array(values).cast(f.type) if not isinstance(values, (pa.Array, pa.ChunkedArray))
                        else values.cast(f.type))


def _renumber_meta(t: pa.Table, new_ep: np.ndarray, new_from: np.ndarray, data_file: np.ndarray,
                   chunks_size: int) -> pa.Table:
    """``meta/episodes`` rows with their new episode index, first frame and data file slot; the
    per-episode stats of ``episode_index`` and ``index`` move with them (the table's other columns stay)."""
    old_ep = np.asarray(t["episode_index"].to_numpy(), np.int64)
    old_from = np.asarray(t["dataset_from_index"].to_numpy(), np.int64)
    length = np.asarray(t["length"].to_numpy(), np.int64)
    t = _set(t, "episode_index", new_ep)
    t = _set(t, "dataset_from_index", new_from)
    t = _set(t, "dataset_to_index", new_from + length)
    ch, fi = np.divmod(data_file, chunks_size)
    t = _set(t, "data/chunk_index", ch)
    t = _set(t, "data/file_index", fi)
    for feat, shift in (("episode_index", new_ep - old_ep), ("index", new_from - old_from)):
        for s in _MOVES_WITH_INDEX:
            name = f"stats/{feat}/{s}"
            if name not in t.column_names:
                continue
            offsets, vals = _list_values(t[name])
            per_value = np.repeat(shift, np.diff(offsets.to_numpy()))
            typ = t.schema.field(name).type.value_type
            moved = pa.array(vals + per_value.astype(vals.dtype, copy=False)).cast(typ)
            t = _set(t, name, pa.ListArray.from_arrays(offsets, moved))
    return t


def _episode_stats(t: pa.Table) -> list[dict]:
    """Per-episode stats ({feature: {stat: array}}) of ``meta/episodes`` rows, as the full assembly has them."""
    n = t.num_rows
    cols: dict[str, dict[str, np.ndarray]] = {}
    for name in t.column_names:
        if not name.startswith("stats/"):
            continue
        _, feat, st = name.split("/", 2)
        col = t[name].combine_chunks()
        depth, flat = 0, col
        while pa.types.is_list(flat.type) or pa.types.is_large_list(flat.type) or \
                pa.types.is_fixed_size_list(flat.type):
            flat, depth = flat.flatten(), depth + 1
        shape = np.asarray(col[0].as_py()).shape if n else ()
        cols.setdefault(feat, {})[st] = np.asarray(flat.to_numpy(zero_copy_only=False)).reshape((n, *shape))
    return [{feat: {st: a[i] for st, a in sts.items()} for feat, sts in cols.items()} for i in range(n)]


def _split_ranges(splits: list[str]) -> dict:
    """``info.json`` splits of episodes in this order: a range per split while each is contiguous, else {}."""
    out: dict[str, list[int]] = {}
    for i, s in enumerate(splits):
        if s in out and out[s][1] != i:
            return {}
        out.setdefault(s, [i, i])[1] = i + 1
    return {k: f"{a}:{b}" for k, (a, b) in out.items()}


def _remove(view: _Pending, root: str, keys: list[str], state: dict, info: dict) -> tuple[list[str], dict]:
    """Remove partitions ``keys`` into ``view`` (see the module). Returns (the keys removed, {key: its
    renumbered provenance rows} of every later partition)."""
    fs = view.fs
    chunks_size = int(state.get("chunks_size") or info.get("chunks_size"))
    meta_files = view.listing("meta/episodes", root)
    tables = [pq.read_table(io.BytesIO(view.cat(p))) for p in meta_files]
    if not tables:
        raise NeedsFullAssembly(f"{root}: no meta/episodes file")
    counts = [t.num_rows for t in tables]
    rows = pa.concat_tables(tables, promote_options="permissive")
    ep = np.asarray(rows["episode_index"].to_numpy(), np.int64)
    if not np.array_equal(ep, np.arange(len(ep))):
        raise DatasetStateError(f"{root}/meta/episodes: episode_index is not 0..{len(ep) - 1} in file order")
    pkeys = np.asarray(rows["source/partition_key"].to_pylist(), dtype=object)
    gone = np.isin(pkeys, keys)
    removed = sorted(set(pkeys[gone]))
    if not removed:
        return [], {}
    if gone.all():
        raise NeedsFullAssembly(f"{root}: removing {removed} leaves no episode")
    length = np.asarray(rows["length"].to_numpy(), np.int64)
    keep = ~gone
    new_ep = np.cumsum(keep) - 1
    new_from = np.cumsum(np.where(keep, length, 0)) - np.where(keep, length, 0)
    old_from = np.asarray(rows["dataset_from_index"].to_numpy(), np.int64)
    slot_of = (np.asarray(rows["data/chunk_index"].to_numpy(), np.int64) * chunks_size
               + np.asarray(rows["data/file_index"].to_numpy(), np.int64))
    first_gone = int(np.argmax(gone))
    # the partitions after the first removed episode, in episode (= data file) order, move to new slots
    later = list(dict.fromkeys(pkeys[first_gone:][keep[first_gone:]].tolist()))
    next_slot = int(state.get("next_slot", state["n_partitions"]))
    new_slot = {k: next_slot + j for j, k in enumerate(later)}
    data_slot = np.array([new_slot.get(k, s) for k, s in zip(pkeys, slot_of)], np.int64)

    # data: later files rewritten at their new slots with index/episode_index shifted (a few at a time:
    # each is a GET and a PUT, latency-bound on an object store)
    from concurrent.futures import ThreadPoolExecutor

    first_row: dict[str, int] = {}
    frames_of: dict[str, int] = {}
    for i, (k, n) in enumerate(zip(pkeys.tolist(), length.tolist())):
        first_row.setdefault(k, i)
        frames_of[k] = frames_of.get(k, 0) + n
    appended = {p.rsplit("/", 1)[-1][:-5] for p in view.listing(APPENDED_DIR, root)}

    def renumber_data(k: str) -> tuple[str, str, dict]:
        i = first_row[k]
        d_ep, d_idx = int(new_ep[i] - ep[i]), int(new_from[i] - old_from[i])
        old_rel = DEFAULT_DATA_PATH.format(chunk_index=int(slot_of[i]) // chunks_size,
                                           file_index=int(slot_of[i]) % chunks_size)
        rel = DEFAULT_DATA_PATH.format(chunk_index=new_slot[k] // chunks_size, file_index=new_slot[k] % chunks_size)
        t = pq.read_table(io.BytesIO(fs.cat_file(f"{root}/{old_rel}")))
        e_col, x_col = t["episode_index"], t["index"]
        if t.num_rows != frames_of[k] or (t.num_rows and int(x_col[0].as_py()) != int(old_from[i])):
            raise DatasetStateError(f"{root}/{old_rel}: {t.num_rows} rows from index "
                                    f"{x_col[0].as_py() if t.num_rows else None}, meta/episodes says "
                                    f"{frames_of[k]} from {int(old_from[i])} for partition {k!r}")
        t = _set(t, "episode_index", pc.add(e_col, pa.scalar(d_ep, e_col.type)))
        t = _set(t, "index", pc.add(x_col, pa.scalar(d_idx, x_col.type)))
        data = _parquet_bytes(t)
        view.write_file(None, f"{root}/{rel}", data)
        return k, old_rel, {"data_file": rel, "data_size": len(data), "data_fingerprint": None}

    entries: dict[str, dict] = {}
    with ThreadPoolExecutor(max_workers=DATA_REWRITE_THREADS) as pool:
        for k, old_rel, entry in pool.map(renumber_data, later):
            view.drop.append(f"{root}/{old_rel}")
            entries[k] = entry
    for k in removed:  # its data and video files: deleted once nothing points at them
        i = first_row[k]
        c, f = divmod(int(slot_of[i]), chunks_size)
        view.drop.append(f"{root}/{DEFAULT_DATA_PATH.format(chunk_index=c, file_index=f)}")
        vc, vf = f"videos/{VIDEO_KEY}/chunk_index", f"videos/{VIDEO_KEY}/file_index"
        if vc in rows.column_names and rows[vc][i].is_valid:
            view.drop.append(f"{root}/" + DEFAULT_VIDEO_PATH.format(
                video_key=VIDEO_KEY, chunk_index=int(rows[vc][i].as_py()), file_index=int(rows[vf][i].as_py())))

    # meta/episodes: each file that holds removed or renumbered rows written again (emptied: deleted)
    at = 0
    kept_tables = []
    for path, t, n in zip(meta_files, tables, counts):
        sl = slice(at, at + n)
        at += n
        if at <= first_gone:
            kept_tables.append(t)
            continue
        t = _renumber_meta(t, new_ep[sl], new_from[sl], data_slot[sl], chunks_size)
        t = t.filter(pa.array(keep[sl]))
        if t.num_rows:
            view.put(path, _parquet_bytes(t))
            kept_tables.append(t)
        else:
            view.rm(path)
    remaining = pa.concat_tables(kept_tables, promote_options="permissive")

    # stats: aggregated again from every remaining episode's stats (as the full assembly does)
    stats = aggregate_stats(_episode_stats(remaining))
    view.put(f"{root}/{STATS_PATH}", json.dumps(_stats_to_json(stats), indent=4).encode())

    # provenance: the full assembly's file (when it holds changed rows) and the appended ones
    renumber = dict(zip(ep[keep].tolist(), new_ep[keep].tolist()))
    changed_keys = set(later) | set(removed)
    prov_out: dict[str, pa.Table] = {}

    def renumbered(p: pa.Table) -> pa.Table:
        p = p.filter(pa.array(~np.isin(np.asarray(p["partition_key"].to_pylist(), object), removed)))
        e = [renumber[int(x)] for x in p["episode_index"].to_pylist()]
        return _set(p, "episode_index", e)

    main = f"{root}/{PROVENANCE_PATH}"
    if view.exists(main) and any(k not in appended for k in changed_keys):
        p = renumbered(pq.read_table(io.BytesIO(view.cat(main))))
        view.put(main, _parquet_bytes(p, "zstd"))
        for k in later:
            if k not in appended:
                prov_out[k] = p.filter(pc.equal(p["partition_key"], k))
    for k in sorted(changed_keys & appended, key=lambda k: int(slot_of[first_row[k]])):
        old_slot = int(slot_of[first_row[k]])
        old_path = f"{root}/{PROVENANCE_APPEND.format(slot=old_slot)}"
        if k in later and view.exists(old_path):
            p = renumbered(pq.read_table(io.BytesIO(view.cat(old_path))))
            view.put(f"{root}/{PROVENANCE_APPEND.format(slot=new_slot[k])}", _parquet_bytes(p, "zstd"))
            prov_out[k] = p
        view.rm(old_path)

    # state: entries of appended partitions one file each; those of the full assembly's in the state file
    for k in removed:
        if k in appended:
            view.rm(f"{root}/{APPENDED_DIR}/{k}.json")
    for k in later:
        if k in appended:
            p = f"{root}/{APPENDED_DIR}/{k}.json"
            view.put(p, json.dumps({**json.loads(view.cat(p)), **entries[k]}).encode())
    full = [k for k in set(removed) | set(later) if k not in appended]
    if full:
        sp = f"{root}/{STATE_PATH}"
        whole = json.loads(view.cat(sp))
        for k in removed:
            whole["partitions"].pop(k, None)
        for k in later:
            if k in whole["partitions"]:
                whole["partitions"][k].update(entries[k])
        view.put(sp, json.dumps(whole, indent=1).encode())

    n_eps, n_frames = int(keep.sum()), int(length[keep].sum())
    info.update(total_episodes=n_eps, total_frames=n_frames,
                splits=_split_ranges(remaining["source/split"].to_pylist()))
    view.put(f"{root}/{INFO_PATH}", json.dumps(info, indent=4).encode())
    last_meta = max((int(p.rsplit("chunk-", 1)[1][:3]) * chunks_size + int(p.rsplit("file-", 1)[1][:3])
                     for p in meta_files), default=-1)
    state.update(next_slot=next_slot + len(later),
                 meta_files=max(int(state.get("meta_files", 0)), last_meta + 1),
                 removed=int(state.get("removed", 0)) + len(removed))
    state["version"] = _new_version(state, ["-", *removed])
    view.put(f"{root}/{HEADER_PATH}", json.dumps(state, indent=1).encode())
    return removed, prov_out


def _empty_prov() -> pa.Table:
    return schemas.empty("episodes")
