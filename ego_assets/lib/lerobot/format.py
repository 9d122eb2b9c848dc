"""The LeRobot v3.0 dataset format, written without LeRobot.

The CPU pipeline writes datasets without torch (LeRobot's dataset modules import torch and ``datasets``),
so the names, path templates and metadata writers of the format live here, once. Each is what LeRobot 0.6
reads and writes; ``ego_assets_tests/lib/lerobot/test_format.py`` compares every one of them with LeRobot's
own (constants, info.json, stats.json, tasks.parquet, the Arrow schema of the data files, aggregated stats,
video info) where the ``[lerobot]`` extra is installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CODEBASE_VERSION = "v3.0"

# feature keys LeRobot's policies read (lerobot.utils.constants)
OBS_STATE = "observation.state"
OBS_IMAGES = "observation.images"
ACTION = "action"

# layout (lerobot.datasets.utils)
DEFAULT_CHUNK_SIZE = 1000
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 200
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
DEFAULT_TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
DATA_DIR = "data"
VIDEO_DIR = "videos"
_CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DEFAULT_EPISODES_PATH = f"{EPISODES_DIR}/{_CHUNK_FILE}.parquet"
DEFAULT_DATA_PATH = f"{DATA_DIR}/{_CHUNK_FILE}.parquet"
DEFAULT_VIDEO_PATH = VIDEO_DIR + "/{video_key}/" + _CHUNK_FILE + ".mp4"

# the per-frame index features every dataset has (lerobot.utils.constants.DEFAULT_FEATURES)
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": (1,), "names": None},
    "frame_index": {"dtype": "int64", "shape": (1,), "names": None},
    "episode_index": {"dtype": "int64", "shape": (1,), "names": None},
    "index": {"dtype": "int64", "shape": (1,), "names": None},
    "task_index": {"dtype": "int64", "shape": (1,), "names": None},
}

_ARROW_TYPES = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "int32": pa.int32(),
                "bool": pa.bool_(), "string": pa.string()}


def create_info(fps: int, features: dict, *, robot_type: str | None, chunks_size: int | None = None) -> dict:
    """``meta/info.json`` of an empty dataset with videos, in LeRobot's key order."""
    return {
        "codebase_version": CODEBASE_VERSION, "fps": int(fps),
        "features": {k: {**v, "shape": list(v["shape"])} for k, v in features.items()},
        "total_episodes": 0, "total_frames": 0, "total_tasks": 0,
        "chunks_size": chunks_size or DEFAULT_CHUNK_SIZE,
        "data_files_size_in_mb": DEFAULT_DATA_FILE_SIZE_IN_MB,
        "video_files_size_in_mb": DEFAULT_VIDEO_FILE_SIZE_IN_MB,
        "data_path": DEFAULT_DATA_PATH, "video_path": DEFAULT_VIDEO_PATH,
        "robot_type": robot_type, "splits": {},
    }


def data_schema(features: dict) -> pa.Schema:
    """The Arrow schema of the data files, with the Hugging Face ``datasets`` feature description in the
    schema metadata (what ``datasets.Features(...).arrow_schema`` gives for LeRobot's features): shape (1,)
    is a scalar column, (n,) a fixed-size list; videos are not columns."""
    fields, hf = [], {}
    for key, ft in features.items():
        if ft["dtype"] == "video":
            continue
        if ft["dtype"] not in _ARROW_TYPES or len(ft["shape"]) != 1:
            raise ValueError(f"feature {key!r}: dtype {ft['dtype']!r} shape {ft['shape']} is not supported here")
        value = {"dtype": ft["dtype"], "_type": "Value"}
        if tuple(ft["shape"]) == (1,):
            fields.append(pa.field(key, _ARROW_TYPES[ft["dtype"]]))
            hf[key] = value
        else:
            n = int(ft["shape"][0])
            fields.append(pa.field(key, pa.list_(pa.field("item", _ARROW_TYPES[ft["dtype"]]), n)))
            hf[key] = {"feature": value, "length": n, "_type": "List"}
    meta = {"huggingface": json.dumps({"info": {"features": hf}})}
    return pa.schema(fields, metadata=meta)


def flatten(d: dict, prefix: str = "", sep: str = "/") -> dict:
    """``{"stats": {"action": {"mean": x}}}`` -> ``{"stats/action/mean": x}`` (LeRobot's column names)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else k
        if isinstance(v, dict):
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out


def _json_ready(x):
    if isinstance(x, dict):
        return {k: _json_ready(v) for k, v in x.items()}
    if isinstance(x, (np.ndarray, np.generic)):
        return x.tolist()
    return x


def _write_json(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_json_ready(obj), indent=4, ensure_ascii=False))
    tmp.replace(path)


def write_info(info: dict, root: Path) -> None:
    _write_json(info, Path(root) / INFO_PATH)


def write_stats(stats: dict, root: Path) -> None:
    _write_json(stats, Path(root) / STATS_PATH)


def write_tasks(tasks: list[str], root: Path) -> None:
    """``meta/tasks.parquet``: the task strings as the (pandas) index ``task`` (what
    ``DataFrame({"task_index": ...}, index=tasks).to_parquet`` writes), task_index = position."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                      "__index_level_0__": pa.array(tasks, pa.string())})
    pandas_meta = {"index_columns": ["__index_level_0__"], "column_indexes": [], "columns": [
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
         "metadata": None},
        {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object",
         "metadata": None}], "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.0.0"}
    table = table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})
    path = Path(root) / DEFAULT_TASKS_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def read_tasks(root: Path) -> list[str]:
    """The task strings of ``meta/tasks.parquet`` in task_index order (written by us or by LeRobot)."""
    t = pq.read_table(Path(root) / DEFAULT_TASKS_PATH)
    idx = next((c for c in t.column_names if c != "task_index"), None)
    if idx is None:
        raise ValueError(f"{Path(root) / DEFAULT_TASKS_PATH} has no task column")
    order = np.argsort(t["task_index"].to_numpy())
    names = t[idx].to_pylist()
    return [names[i] for i in order]


def aggregate_stats(stats_list: list[dict[str, dict]]) -> dict[str, dict[str, np.ndarray]]:
    """Dataset stats from per-episode stats: min/max over episodes, count-weighted mean, the pooled
    standard deviation (within-episode variance + spread of the means), and count-weighted quantiles
    (q01..q99, as LeRobot aggregates them: an approximation, the exact dataset quantiles would need the
    data)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in {k for s in stats_list for k in s}:
        items = [s[key] for s in stats_list if key in s]
        counts = np.stack([np.asarray(s["count"]) for s in items]).astype(np.float64)
        means = np.stack([np.asarray(s["mean"], np.float64) for s in items])
        w = counts.reshape(counts.shape + (1,) * (means.ndim - counts.ndim))
        total = counts.sum(0)
        mean = (means * w).sum(0) / total
        var = ((np.stack([np.asarray(s["std"], np.float64) for s in items]) ** 2 + (means - mean) ** 2) * w).sum(0)
        agg = {"min": np.min(np.stack([s["min"] for s in items]), 0),
               "max": np.max(np.stack([s["max"] for s in items]), 0),
               "mean": mean, "std": np.sqrt(var / total), "count": total.astype(np.int64)}
        for q in [k for k in items[0] if k[:1] == "q" and k[1:].isdigit()]:
            if all(q in s for s in items):
                agg[q] = (np.stack([np.asarray(s[q], np.float64) for s in items]) * w).sum(0) / total
        out[key] = agg
    return out


def _option(v):
    return int(v) if isinstance(v, str) and v.isdigit() else v


def video_info(path: Path, encoding: dict | None = None) -> dict:
    """The ``info`` block of a video feature in info.json: ``video.*`` of the first video stream, and with
    ``encoding`` (``VideoSettings.as_dict()``) the encoder settings LeRobot records next to them (``video.g``,
    ``video.crf``, ``video.preset``, ...: what its re-encoding and merge read)."""
    import av

    with av.open(str(path)) as c:
        if not c.streams.video:
            return {}
        s = c.streams.video[0]
        channels = len(av.VideoFormat(s.pix_fmt).components) if s.pix_fmt else 3
        info = {"video.height": s.height, "video.width": s.width, "video.codec": s.codec.canonical_name,
                "video.pix_fmt": s.pix_fmt, "video.fps": int(s.base_rate), "video.channels": channels}
        has_audio = bool(c.streams.audio)
    info["has_audio"] = has_audio
    if encoding is not None:
        opts = encoding.get("options", {})
        info.update({"video.g": _option(opts.get("g")), "video.crf": _option(opts.get("crf")),
                     "video.preset": _option(opts.get("preset")), "video.fast_decode": 0,
                     "video.video_backend": "pyav", "video.extra_options": {}})
    info["is_depth_map"] = False
    return info
