"""Checks of an assembled dataset through LeRobot's own loader (what a user's training run would do).

Without the ``lerobot`` extra (the lean CPU install) the same checks read the files directly (Parquet with
pyarrow, frames decoded with PyAV at the timestamps LeRobot would seek), and one WARN check,
``lerobot_load_check``, says that LeRobotDataset itself was not run and how to get it."""

from __future__ import annotations

import contextlib
import json
import time
from typing import NamedTuple
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ego_assets.lib.extras import has_module, install_hint
from ego_assets.lib.lerobot.features import ACTION_PAD_KEY, CONSTANT_BY_DESIGN, VIDEO_KEY
from ego_assets.lib.lerobot.format import (
    CODEBASE_VERSION,
    DEFAULT_TASKS_PATH,
    EPISODES_DIR,
    INFO_PATH,
    STATS_PATH,
    read_tasks,
)

class Check(NamedTuple):
    """One validation result of a dataset."""

    name: str
    passed: bool
    value: float | None
    detail: str


@contextlib.contextmanager
def _offline():
    """No Hub access while loading: a local dataset must load from its folder alone."""
    import huggingface_hub.constants as hc

    old = hc.HF_HUB_OFFLINE
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = old


def _missing_files(root: Path, info: dict, meta: pa.Table) -> list[str]:
    missing = [p for p in (INFO_PATH, DEFAULT_TASKS_PATH, STATS_PATH) if not (root / p).is_file()]
    pairs = set(zip(meta["data/chunk_index"].to_pylist(), meta["data/file_index"].to_pylist()))
    missing += [info["data_path"].format(chunk_index=c, file_index=f) for c, f in sorted(pairs)
                if not (root / info["data_path"].format(chunk_index=c, file_index=f)).is_file()]
    for key, ft in info["features"].items():
        if ft["dtype"] != "video":
            continue
        vp = set(zip(meta[f"videos/{key}/chunk_index"].to_pylist(), meta[f"videos/{key}/file_index"].to_pylist()))
        missing += [info["video_path"].format(video_key=key, chunk_index=c, file_index=f) for c, f in sorted(vp)
                    if not (root / info["video_path"].format(video_key=key, chunk_index=c, file_index=f)).is_file()]
    return missing


def _sample(n: int, max_n: int | None) -> list[int]:
    if max_n is None or n <= max_n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, max_n).round().astype(int).tolist()))


def decode_sample(meta: pa.Table, video_keys: list[str], max_n: int | None) -> list[int]:
    """The episodes whose first and last frames the validation decodes: the first and the last episode of
    every video file (each file is opened, at both ends of what it holds: a wrong offset or a truncated
    file shows there), or, when that is more than ``max_n`` episodes, those of ``max_n // 2`` files spread
    evenly over the dataset. Decoding a frame through LeRobot costs ~0.1 s of CPU (it opens the file and
    seeks), so decoding every episode made the validation the dataset step's largest part and grew with
    the dataset; this grows with the number of files, up to ``max_n``. Without video: evenly spread."""
    n = len(meta)
    if not video_keys or n == 0:
        return _sample(n, max_n)
    key = video_keys[0]
    eps = np.asarray(meta["episode_index"].to_pylist(), np.int64)
    files: dict[tuple, list[int]] = {}
    for e, c, f in zip(eps.tolist(), meta[f"videos/{key}/chunk_index"].to_pylist(),
                       meta[f"videos/{key}/file_index"].to_pylist()):
        files.setdefault((c, f), []).append(e)
    ends = [sorted({min(v), max(v)}) for _, v in sorted(files.items())]
    if max_n is not None and sum(len(x) for x in ends) > max_n:
        ends = [ends[i] for i in _sample(len(ends), max(1, max_n // 2))]
    return sorted({e for x in ends for e in x})


def layout_problems(meta: pa.Table, n_episodes: int, n_frames: int) -> list[str]:
    """What is wrong with ``meta/episodes``' layout (its rows sorted by episode): LeRobot finds episode e
    at row e and frame i at data row i, so the rows must be episodes 0..E-1 (E = ``n_episodes``), each
    one's ``[dataset_from_index, dataset_to_index)`` of its length and following the previous one, the
    lengths summing to ``n_frames``. At most 5 episodes are named."""
    e = np.asarray(meta["episode_index"].to_pylist(), np.int64)
    lengths = np.asarray(meta["length"].to_pylist(), np.int64)
    fr = np.asarray(meta["dataset_from_index"].to_pylist(), np.int64)
    to = np.asarray(meta["dataset_to_index"].to_pylist(), np.int64)
    problems = []
    if not np.array_equal(e, np.arange(len(e))) or len(e) != n_episodes:
        problems.append(f"episode_index is not 0..{n_episodes - 1} ({len(e)} rows in meta/episodes)")
    if int(lengths.sum()) != n_frames:
        problems.append(f"lengths sum to {int(lengths.sum())}, info.json says {n_frames} frames")
    bad = np.flatnonzero((to - fr != lengths) | (fr != np.concatenate([[0], to[:-1]])))
    problems += [f"episode {int(e[i])}: rows [{fr[i]}, {to[i]}) for length {lengths[i]}" for i in bad[:5]]
    return problems


def validate_dataset(dataset_dir: str | Path, episodes: pa.Table | None = None, repo_id: str | None = None,
                     video_backend: str = "pyav", max_episodes: int | None = None,
                     tolerance_s: float = 1e-4) -> list[Check]:
    """Load the dataset with ``LeRobotDataset(repo_id, root=dataset_dir)`` (offline) and check it.

    ``episodes``: the ``episodes`` table rows the writer returned (lengths are compared with them).
    ``video_backend``: "pyav" by default because torchcodec needs a system FFmpeg that is not always there;
    pass "torchcodec" to check that path too. ``max_episodes`` bounds the episodes whose first and last
    frames are decoded (:func:`decode_sample`: both ends of every video file, up to that many). Returns (check_name, passed, value, detail).
    Without lerobot installed: the same checks from the files (see the module docstring)."""
    root = Path(dataset_dir)
    out: list[tuple] = []
    if not (root / INFO_PATH).is_file():
        return [Check("dataset_files_present", False, 1.0, f"{root / INFO_PATH} is missing")]
    info = json.loads((root / INFO_PATH).read_text())
    meta_files = sorted((root / EPISODES_DIR).glob("*/*.parquet"))
    if not meta_files:
        return [Check("dataset_files_present", False, 1.0, "meta/episodes has no parquet file")]
    meta = pa.concat_tables([pq.read_table(f) for f in meta_files]).sort_by("episode_index")
    missing = _missing_files(root, info, meta)
    out.append(("dataset_files_present", not missing, float(len(missing)),
                "all files present" if not missing else f"missing: {missing[:5]}"))
    if missing:
        return [Check(*c) for c in out]
    out.append(("codebase_version", info.get("codebase_version") == CODEBASE_VERSION, 0.0,
                f"{info.get('codebase_version')} (lerobot writes {CODEBASE_VERSION})"))

    t0 = time.perf_counter()
    if has_module("lerobot"):
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        try:
            with _offline():
                ds = LeRobotDataset(repo_id or "ego_assets/local", root=root, video_backend=video_backend,
                                    tolerance_s=tolerance_s)
        except Exception as e:  # report, do not raise: this is a check
            out.append(("lerobot_loads", False, time.perf_counter() - t0, f"{type(e).__name__}: {e}"))
            return [Check(*c) for c in out]
        out.append(("lerobot_loads", True, time.perf_counter() - t0,
                    f"{ds.num_episodes} episodes, {ds.num_frames} frames, backend {video_backend}"))
        n_eps, fps, vkeys = ds.meta.total_episodes, ds.fps, ds.meta.video_keys
        data = ds.hf_dataset.with_format("arrow")[:]
        stats, tasks, get_item = ds.meta.stats or {}, list(ds.meta.tasks.index), ds.__getitem__
    else:
        files = _FilesDataset(root, info, meta, tolerance_s)
        out.append(("lerobot_load_check", False, time.perf_counter() - t0,
                    "not run: lerobot is not installed; checked from the files with pyarrow and PyAV instead "
                    f"(for LeRobotDataset itself: {install_hint('lerobot')})"))
        n_eps, fps, vkeys = int(info["total_episodes"]), int(info["fps"]), files.video_keys
        data, stats, tasks, get_item = files.data, files.stats, files.tasks, files.item

    lengths = np.asarray(meta["length"].to_pylist(), np.int64)
    from_i = np.asarray(meta["dataset_from_index"].to_pylist(), np.int64)
    to_i = np.asarray(meta["dataset_to_index"].to_pylist(), np.int64)
    ep_col = np.asarray(data["episode_index"].to_numpy(), np.int64)
    counts = np.bincount(ep_col, minlength=n_eps) if len(ep_col) else np.zeros(n_eps, np.int64)
    problems = layout_problems(meta, n_eps, int(info["total_frames"]))
    bad = np.flatnonzero(counts[:len(lengths)] != lengths)
    problems += [f"episode {e}: length {lengths[e]}, data rows {counts[e]}" for e in bad[:5]]
    if episodes is not None:
        rows = {int(e): int(n) for e, n in zip(episodes["episode_index"].to_pylist(), episodes["length"].to_pylist())}
        if len(rows) != n_eps:
            problems.append(f"episodes table has {len(rows)} rows, dataset {n_eps} episodes")
        diff = [e for e in range(min(n_eps, len(lengths))) if rows.get(e) != int(lengths[e])]
        problems += [f"episode {e}: episodes table length {rows.get(e)}, dataset {lengths[e]}" for e in diff[:5]]
    out.append(("episode_lengths_match", not problems, float(len(problems)),
                "; ".join(problems) if problems else f"{n_eps} episodes, {int(lengths.sum())} frames"))

    # timestamps on the k / fps grid (what LeRobot's delta_timestamps and video decoding assume)
    ts = np.asarray(data["timestamp"].to_numpy(), np.float64)
    fi = np.asarray(data["frame_index"].to_numpy(), np.int64)
    dev = float(np.max(np.abs(ts - fi / fps))) if len(ts) else 0.0
    for key in vkeys:
        dur = np.asarray(meta[f"videos/{key}/to_timestamp"].to_pylist()) - np.asarray(
            meta[f"videos/{key}/from_timestamp"].to_pylist())
        dev = max(dev, float(np.max(np.abs(dur - lengths / fps))) if len(dur) else 0.0)
    out.append(("timestamps_on_grid", dev <= tolerance_s, dev,
                f"max |timestamp - frame_index/fps| and |video span - length/fps| = {dev:.2e} s"))

    # the action of the last frame of each episode is padding, and only there
    if ACTION_PAD_KEY in data.column_names:
        pad = np.asarray(data[ACTION_PAD_KEY].to_numpy(zero_copy_only=False), bool)
        last = np.zeros(len(pad), bool)
        last[to_i[to_i > 0] - 1] = True
        wrong = int((pad != last).sum())
        out.append(("action_pad_on_last_frames", wrong == 0, float(wrong),
                    f"{wrong} frames where {ACTION_PAD_KEY} differs from 'last frame of its episode'"))

    # first and last frame of every (sampled) episode, decoded through LeRobot
    failures = []
    shape = tuple(info["features"][VIDEO_KEY]["shape"]) if VIDEO_KEY in info["features"] else None
    checked = decode_sample(meta, list(vkeys), max_episodes)
    t1 = time.perf_counter()
    for e in checked:
        for idx in (int(from_i[e]), int(to_i[e]) - 1):
            try:
                item = get_item(idx)
                for key in vkeys:
                    img = item[key]
                    if shape is not None and tuple(img.shape) != (shape[2], shape[0], shape[1]):
                        raise ValueError(f"{key} shape {tuple(img.shape)}, feature says {shape}")
                    if not bool(np.isfinite(np.asarray(img)).all()):
                        raise ValueError(f"{key} has non-finite pixels")
                if int(item["episode_index"]) != e:
                    raise ValueError(f"item {idx} is in episode {int(item['episode_index'])}")
            except Exception as ex:  # report every failing frame
                failures.append(f"episode {e} frame {idx}: {type(ex).__name__}: {str(ex)[:200]}")
    out.append(("frames_decode", not failures, float(len(failures)),
                "; ".join(failures[:3]) if failures else
                f"first+last frames of {len(checked)} episodes decoded in {time.perf_counter() - t1:.1f} s"))

    # stats
    nonfinite = [f"{k}/{s}" for k, d in stats.items() for s, v in d.items() if not np.isfinite(v).all()]
    out.append(("stats_finite", bool(stats) and not nonfinite, float(len(nonfinite)),
                f"non-finite: {nonfinite[:10]}" if nonfinite else ("no stats" if not stats else "all finite")))
    flat = []
    for key, ft in info["features"].items():
        if ft["dtype"] in ("video", "image", "string") or key in stats and key in (
                "timestamp", "frame_index", "episode_index", "index", "task_index"):
            continue
        if key not in stats:
            continue
        std = np.asarray(stats[key]["std"]).reshape(-1)
        names = ft.get("names") if isinstance(ft.get("names"), list) else [f"{key}[{i}]" for i in range(len(std))]
        for i in np.flatnonzero(~(std > 0)):
            n = names[i] if i < len(names) else f"{key}[{i}]"
            if not any(n == c or n.endswith("." + c) for c in CONSTANT_BY_DESIGN):
                flat.append(f"{key}:{n}")
    out.append(("stats_nondegenerate", not flat, float(len(flat)),
                ("zero variance: " + ", ".join(flat[:20]) + (" ..." if len(flat) > 20 else "")) if flat
                else "every dimension varies"))

    # tasks
    ep_tasks = meta["tasks"].to_pylist()
    empty = [t for t in tasks if not isinstance(t, str) or not t.strip()]
    no_task = [e for e, t in enumerate(ep_tasks) if not t or not all(isinstance(x, str) and x.strip() for x in t)]
    out.append(("tasks_nonempty", bool(tasks) and not empty and not no_task, float(len(empty) + len(no_task)),
                f"{len(tasks)} tasks; {len(empty)} empty; {len(no_task)} episodes without a task"))

    # splits: contiguous ranges covering every episode once
    spans = []
    for name, r in info.get("splits", {}).items():
        a, b = (int(x) for x in r.split(":"))
        spans.append((a, b, name))
    spans.sort()
    cover = 0
    ok = True
    for a, b, _ in spans:
        ok &= a == cover and b >= a
        cover = b
    ok &= cover == n_eps
    detail = ", ".join(f"{n} {a}:{b}" for a, b, n in spans) or "no splits"
    if not spans and "source/split" in meta.column_names:
        # episodes appended after the ranges stopped being contiguous (incremental.append_partition): each
        # episode names its split; every episode must have one
        named = [x for x in meta["source/split"].to_pylist() if x]
        ok = len(named) == n_eps
        detail = (f"split per episode in source/split ({named.count('train')} train, "
                  f"{len(named) - named.count('train')} other, {n_eps - len(named)} without)")
    out.append(("splits_contiguous", ok, float(len(spans)), detail))
    return [Check(*c) for c in out]


class _FilesDataset:
    """What the checks read of a ``LeRobotDataset``, read from the dataset's files (no lerobot/torch):
    the data rows, the stats, the tasks, and an item's frames decoded with PyAV at the timestamp LeRobot
    seeks (``from_timestamp + frame_index / fps`` in the episode's video file)."""

    def __init__(self, root: Path, info: dict, meta: pa.Table, tolerance_s: float):
        self.root, self.info, self.meta, self.tolerance_s = root, info, meta, tolerance_s
        self.video_keys = [k for k, ft in info["features"].items() if ft["dtype"] == "video"]
        pairs = list(dict.fromkeys(zip(meta["data/chunk_index"].to_pylist(), meta["data/file_index"].to_pylist())))
        self.data = pa.concat_tables([pq.read_table(root / info["data_path"].format(chunk_index=c, file_index=f))
                                      for c, f in pairs]).sort_by("index")
        raw = json.loads((root / STATS_PATH).read_text()) if (root / STATS_PATH).is_file() else {}
        self.stats = {k: {s: np.asarray(v) for s, v in d.items()} for k, d in raw.items()}
        self.tasks = read_tasks(root)
        self._rows = {c: self.data[c].to_numpy() for c in ("index", "episode_index", "frame_index")}

    def item(self, idx: int) -> dict:
        from ego_assets.lib.video import open_av

        pos = int(np.searchsorted(self._rows["index"], idx))
        if pos >= len(self._rows["index"]) or self._rows["index"][pos] != idx:
            raise IndexError(f"no row with index {idx}")
        e, k = int(self._rows["episode_index"][pos]), int(self._rows["frame_index"][pos])
        m = self.meta.slice(e, 1).to_pylist()[0]
        out = {"episode_index": e}
        for key in self.video_keys:
            rel = self.info["video_path"].format(video_key=key, chunk_index=m[f"videos/{key}/chunk_index"],
                                                 file_index=m[f"videos/{key}/file_index"])
            t = m[f"videos/{key}/from_timestamp"] + k / self.info["fps"]
            with open_av(str(self.root / rel)) as c:
                st = c.streams.video[0]
                c.seek(max(0, int((t - 1.0) / st.time_base)), stream=st, backward=True)
                best = None
                for fr in c.decode(st):
                    ft = float(fr.pts * st.time_base)
                    if best is None or abs(ft - t) < abs(best[0] - t):
                        best = (ft, fr)
                    if ft >= t:
                        break
            if best is None or abs(best[0] - t) > self.tolerance_s:
                raise ValueError(f"{rel}: no frame within {self.tolerance_s} s of {t:.4f} s "
                                 f"(nearest {None if best is None else round(best[0], 4)})")
            out[key] = best[1].to_ndarray(format="rgb24").transpose(2, 0, 1).astype(np.float32) / 255.0
        return out


# what check_published reads of meta/episodes (the layout; not the per-episode stats, most of its bytes)
_LAYOUT = ["episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
           "dataset_to_index", "source/partition_key"]
_VIDEO_LAYOUT = ["chunk_index", "file_index", "from_timestamp", "to_timestamp"]


def check_published(fs, root: str, changed: list[str], tolerance_s: float = 1e-4) -> list[Check]:
    """The checks of a dataset changed in place on any fsspec filesystem (``incremental.update_dataset``:
    no local copy for ``validate_dataset``'s LeRobot load), reading what LeRobot's lookup depends on:

    - ``episode_layout``: ``meta/episodes`` (its layout columns only) holds episodes 0..E-1 with E and the
      frame total of ``info.json``, each episode's ``[dataset_from_index, dataset_to_index)`` following the
      previous one, of its length: LeRobot finds episode e at row e and frame i at row i;
    - ``changed_data_rows``: in the data files of the ``changed`` partitions (appended, replaced, or
      renumbered by a removal), each of their episodes' rows: ``index`` = its range, ``episode_index`` = e,
      ``frame_index`` 0..length-1, ``timestamp`` = frame_index / fps;
    - ``changed_videos``: the video files of those episodes decode at the last frame of their last
      episode (a seek: the file's header and last group of pictures are read, not the whole file).

    What is read grows with the dataset only by the layout columns (~50 B per episode)."""
    import av

    from ego_assets.lib.video import open_av

    out: list[Check] = []
    info = json.loads(fs.cat_file(f"{root}/{INFO_PATH}"))
    fps = float(info["fps"])
    vkeys = [k for k, f in info["features"].items() if f.get("dtype") == "video"]
    cols = _LAYOUT + [f"videos/{k}/{c}" for k in vkeys for c in _VIDEO_LAYOUT]
    files = sorted(fs.glob(f"{root}/{EPISODES_DIR}/*/*.parquet"))
    tables = []
    for f in files:
        with fs.open(f, "rb") as fh:
            tables.append(pq.read_table(fh, columns=cols))
    meta = pa.concat_tables(tables).sort_by("episode_index") if tables else None
    problems = ([f"{root}/{EPISODES_DIR}: no parquet file"] if meta is None else
                layout_problems(meta, int(info["total_episodes"]), int(info["total_frames"])))
    out.append(Check("episode_layout", not problems, float(len(problems)),
                     "; ".join(problems) if problems else
                     f"{int(info['total_episodes'])} episodes, {int(info['total_frames'])} frames, "
                     f"contiguous (meta/episodes: {len(files)} files)"))
    if meta is None:
        return out
    mine = meta.filter(pa.compute.is_in(meta["source/partition_key"], pa.array(list(changed), pa.string())))
    rows = mine.to_pylist()
    problems, n_rows = [], 0
    by_file: dict[tuple, list[dict]] = {}
    for r in rows:
        by_file.setdefault((r["data/chunk_index"], r["data/file_index"]), []).append(r)
    for (c, fi), eps in sorted(by_file.items()):
        path = f"{root}/{info['data_path'].format(chunk_index=c, file_index=fi)}"
        try:
            with fs.open(path, "rb") as fh:
                d = pq.read_table(fh, columns=["index", "episode_index", "frame_index", "timestamp"])
        except (OSError, pa.ArrowException) as ex:
            problems.append(f"{path}: cannot read ({ex})")
            continue
        idx, ep = d["index"].to_numpy(), d["episode_index"].to_numpy()
        fidx, ts = d["frame_index"].to_numpy(), d["timestamp"].to_numpy()
        for r in eps:
            sel = ep == r["episode_index"]
            want = np.arange(r["dataset_from_index"], r["dataset_to_index"])
            n_rows += int(sel.sum())
            if not np.array_equal(idx[sel], want) or not np.array_equal(fidx[sel], np.arange(r["length"])):
                problems.append(f"{path}: episode {r['episode_index']} has rows index {idx[sel][:1].tolist()}.."
                                f" ({int(sel.sum())} rows), meta/episodes says [{want[0] if len(want) else '-'}, "
                                f"{r['dataset_to_index']})")
            elif len(ts[sel]) and float(np.max(np.abs(ts[sel] - fidx[sel] / fps))) > tolerance_s:
                problems.append(f"{path}: episode {r['episode_index']} timestamps off the 1/{fps:g} s grid")
    out.append(Check("changed_data_rows", not problems, float(len(problems)),
                     "; ".join(problems[:3]) if problems else
                     f"{len(rows)} episodes of {len(changed)} changed video(s): {n_rows} rows in "
                     f"{len(by_file)} data file(s) as meta/episodes says"))
    problems, n_files = [], 0
    for k in vkeys:
        spans: dict[tuple, float] = {}
        for r in rows:
            key = (r[f"videos/{k}/chunk_index"], r[f"videos/{k}/file_index"])
            spans[key] = max(spans.get(key, 0.0), float(r[f"videos/{k}/to_timestamp"]))
        for (c, fi), end in sorted(spans.items()):
            path = f"{root}/{info['video_path'].format(video_key=k, chunk_index=c, file_index=fi)}"
            n_files += 1
            last = end - 1.0 / fps  # the last frame of its last changed episode
            try:
                with fs.open(path, "rb") as fh, open_av(fh) as cont:
                    s = cont.streams.video[0]
                    cont.seek(max(0, int((last - 0.5) / s.time_base)), stream=s, backward=True)
                    got = None
                    for frame in cont.decode(s):  # reads the header and the last GOP, not the file
                        if frame.pts is not None and float(frame.pts * s.time_base) >= last - tolerance_s:
                            got = float(frame.pts * s.time_base)
                            break
            except (OSError, av.error.FFmpegError) as ex:
                problems.append(f"{path}: cannot decode ({ex})")
                continue
            if got is None or abs(got - last) > 0.5 / fps:
                problems.append(f"{path}: no frame at {last:.3f} s, where its episodes end")
    out.append(Check("changed_videos", not problems, float(len(problems)),
                     "; ".join(problems[:3]) if problems else f"{n_files} video file(s) decode at their episodes' last frame"))
    return out
