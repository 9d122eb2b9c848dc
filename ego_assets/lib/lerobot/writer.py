"""A native LeRobot v3.0 writer: per-partition staging, then a cheap, incremental assembly.

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

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ego_assets.lib import schemas
from ego_assets.lib.lerobot.actions import HandTrack, compute_state_action
from ego_assets.lib.lerobot.stats import episode_stats, image_stats
from ego_assets.lib.storage import pid_alive
from ego_assets.lib.video import open_av
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
from ego_assets.lib.lerobot.features import (
    ACTION_KEY,
    ACTION_MASK_KEY,
    ACTION_PAD_KEY,
    CAMERA_COLUMNS,
    CAMERA_PREFIX,
    DEFAULT_ACTION_SPACE,
    DEFAULT_FPS,
    HAND_MASK_KEY,
    HANDS,
    SOURCE_T_KEY,
    STATE_KEY,
    VIDEO_KEY,
    check_action_space,
    dataset_features,
)

STAGING_FORMAT = 2  # 2: per-episode camera
STATE_FORMAT = 2
STAGED_VIDEO = "video.mp4"
STAGED_DATA = "data.parquet"
STAGED_EPISODES = "episodes.parquet"
STAGED_MANIFEST = "manifest.json"
STATE_PATH = "meta/ego_assets_state.json"
PROVENANCE_PATH = "meta/ego_assets_provenance.parquet"
HEADER_PATH = "meta/ego_assets_header.json"  # the state without its partitions (small; read by an append)
APPENDED_DIR = "meta/ego_assets_appended"  # <key>.json: the state entry of each partition appended since
TMP_DIR = ".ego_assets_tmp"
SPLITS = ("train", "validation")
DEFAULT_REPO_ID = "ego_assets/egocentric_hands"
DEFAULT_VAL_FRACTION = 0.1
EPISODES_PER_META_FILE = 10_000
KEY_TAG = "ego_assets:"  # MP4 comment / Parquet metadata value prefix naming the partition
PARQUET_KEY = b"ego_assets.partition_key"
# frames of an episode stay in memory until it is encoded; cap the wait for an overlapping long segment
MAX_BUFFERED_FRAMES = 6000


class LeRobotExportError(ValueError):
    """Bad input for the LeRobot export (names the input and the reason)."""


class IncompatiblePartitionError(LeRobotExportError):
    """A staged partition does not fit the dataset (fps, action space, image size, codec)."""


class DatasetStateError(LeRobotExportError):
    """The dataset folder does not match its recorded state (files missing or foreign)."""


@dataclass(frozen=True)
class VideoSettings:
    """Encoding of the episode videos. ``vcodec`` uses LeRobot's names. The default is LeRobot's own encoder
    configuration (libsvtav1, g 2, crf 30, preset 12, yuv420p): ``lerobot-edit-dataset`` writes AV1 with those
    settings when it re-encodes, and its merge accepts only datasets of one codec, then joins their video
    files as they are, so only a dataset encoded like LeRobot's merges with LeRobot-edited copies (h264 is
    refused by lerobot 0.6's merge next to an AV1 copy). Both decode with every LeRobot video backend
    (torchcodec, pyav); ``gop=2`` (a keyframe every 2 frames) is LeRobot's choice for cheap random access."""

    vcodec: str = "libsvtav1"  # or "h264" (libx264: faster to encode, merges only with h264 datasets)
    gop: int = 2
    crf: int = 30  # LeRobot's default for both codecs
    # None: "superfast" for h264 (faster and smaller than veryfast at gop 2), "12" for libsvtav1
    preset: str | None = None
    pix_fmt: str = "yuv420p"

    def encoder(self) -> tuple[str, dict[str, str]]:
        if self.vcodec == "h264":
            return "libx264", {"g": str(self.gop), "crf": str(self.crf),
                               "preset": self.preset or "superfast", "bf": "0"}
        if self.vcodec == "libsvtav1":
            return "libsvtav1", {"g": str(self.gop), "crf": str(self.crf),
                                 "preset": self.preset or "12"}
        raise LeRobotExportError(f"vcodec {self.vcodec!r} is not supported; use 'h264' or 'libsvtav1'")

    def as_dict(self) -> dict:
        name, opts = self.encoder()
        return {"vcodec": self.vcodec, "encoder": name, "options": opts, "pix_fmt": self.pix_fmt}


@dataclass
class StagedPartition:
    """A staged partition on disk (see ``stage_partition``)."""

    path: Path
    partition_key: str
    version: str  # content hash of the staged files
    n_episodes: int
    n_frames: int
    manifest: dict
    episodes: pa.Table  # one row per episode (local order), without dataset indices
    skipped: list[dict] = field(default_factory=list)  # segments that made no episode, with the reason


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
# input tables

def _as_table(x, name: str) -> pa.Table:
    if x is None:
        raise LeRobotExportError(f"input table {name!r} is missing")
    if isinstance(x, pa.Table):
        return x
    if hasattr(x, "to_arrow"):  # polars
        return x.to_arrow()
    if isinstance(x, dict):
        cols = {}
        for k, v in x.items():
            v = np.asarray(v) if not isinstance(v, (pa.Array, pa.ChunkedArray)) else v
            if isinstance(v, np.ndarray) and v.ndim == 2:
                v = pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1])
            cols[k] = v
        return pa.table(cols)
    raise LeRobotExportError(f"input table {name!r}: expected a pyarrow Table, got {type(x).__name__}")


def _need(t: pa.Table, cols: Iterable[str], name: str) -> None:
    missing = [c for c in cols if c not in t.column_names]
    if missing:
        raise LeRobotExportError(f"input table {name!r} lacks column(s) {missing}; has {t.column_names}")


def _np(t: pa.Table, col: str, dtype=None) -> np.ndarray:
    a = t.column(col).combine_chunks() if isinstance(t.column(col), pa.ChunkedArray) else t.column(col)
    return np.asarray(a.to_numpy(zero_copy_only=False), dtype=dtype)


def _vec(t: pa.Table, col: str, n: int, name: str) -> np.ndarray:
    """(rows, n) float64 from a (fixed-size) list column; null rows become NaN."""
    a = t.column(col).combine_chunks()
    out = np.full((len(a), n), np.nan)
    ok = ~np.asarray(a.is_null().to_numpy(zero_copy_only=False), bool)
    if ok.any():
        flat = np.asarray(a.filter(pa.array(ok)).flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
        if flat.size != ok.sum() * n:
            raise LeRobotExportError(f"input table {name!r}: column {col!r} must hold {n} values per row")
        out[ok] = flat.reshape(-1, n)
    return out


def _valid_col(t: pa.Table, col: str) -> np.ndarray:
    if col not in t.column_names:
        return np.ones(t.num_rows, bool)
    v = t.column(col).combine_chunks()
    return np.asarray(v.fill_null(True).to_numpy(zero_copy_only=False), bool)


# ----------------------------------------------------------------------------------------------------------
# staging

@dataclass
class _Plan:
    ordinal: int
    segment_id: int
    hand: str
    task: str
    start_frame: int
    end_frame: int
    chosen: np.ndarray  # (K,) source frame_index per dataset step
    t_src: np.ndarray  # (K,) source t_s per dataset step
    seg_start_s: float | None
    seg_end_s: float | None
    caption_details: str | None = None  # JSON: the captioner's numbers / verb+object (not in the task)


def grid_frames(frame_index: np.ndarray, t_s: np.ndarray, start_frame: int, end_frame: int,
                fps: int) -> tuple[np.ndarray, np.ndarray]:
    """Source frames for the dataset grid ``t0 + k / fps`` of one segment (``end_frame`` inclusive).

    The proxy is sampled near the dataset rate from real presentation times, so its frames are not exactly
    on a ``1 / fps`` grid; LeRobot requires episode timestamps ``k / fps``. Each grid tick takes the nearest
    source frame in time (no extrapolation past the segment's last frame); image and state of a step come
    from that same frame, and its real time is kept as ``source.t_s``."""
    sel = (frame_index >= start_frame) & (frame_index <= end_frame)
    fi, ts = frame_index[sel], t_s[sel]
    if len(fi) == 0:
        return fi.astype(np.int64), ts
    t0, te = ts[0], ts[-1]
    k = int(np.floor((te - t0) * fps + 1e-6)) + 1
    g = t0 + np.arange(k) / fps
    pos = np.clip(np.searchsorted(ts, g), 1, max(1, len(ts) - 1))
    left = np.clip(pos - 1, 0, len(ts) - 1)
    right = np.clip(pos, 0, len(ts) - 1)
    pick = np.where(np.abs(ts[left] - g) <= np.abs(ts[right] - g), left, right)
    return fi[pick].astype(np.int64), ts[pick]


def _plans(frames: pa.Table, segments: pa.Table, captions: pa.Table, fps: int) -> tuple[list[_Plan], list[dict]]:
    fi_all = _np(frames, "frame_index", np.int64)
    t_all = _np(frames, "t_s", np.float64)
    order = np.argsort(fi_all, kind="stable")
    fi_all, t_all = fi_all[order], t_all[order]
    caps: dict[tuple[int, str], str] = {}
    details = dict(zip(zip(_np(captions, "segment_id").tolist(), _np(captions, "hand").tolist()),
                       _np(captions, "details").tolist())) if "details" in captions.column_names else {}
    c_ok = _valid_col(captions, "valid")
    for sid, hand, text, ok in zip(_np(captions, "segment_id"), _np(captions, "hand"),
                                   _np(captions, "instruction"), c_ok):
        if ok and isinstance(text, str) and text.strip():
            caps[(int(sid), str(hand))] = text.strip()
    s_ok = _valid_col(segments, "valid")
    s_why = (_np(segments, "invalid_reason") if "invalid_reason" in segments.column_names
             else [None] * segments.num_rows)
    has_s = {c: c in segments.column_names for c in ("start_s", "end_s")}
    plans, skipped = [], []
    rows = zip(_np(segments, "segment_id"), _np(segments, "hand"), _np(segments, "start_frame"),
               _np(segments, "end_frame"),
               _np(segments, "start_s") if has_s["start_s"] else [None] * segments.num_rows,
               _np(segments, "end_s") if has_s["end_s"] else [None] * segments.num_rows, s_ok, s_why)
    for sid, hand, sf, ef, ss, es, ok, bad_why in rows:
        sid, hand = int(sid), str(hand)
        why = None
        if hand not in HANDS:
            why = f"hand {hand!r} is not one of {HANDS}"
        elif not ok:
            why = f"segment not valid ({bad_why})" if isinstance(bad_why, str) and bad_why else "segment not valid"
        elif (sid, hand) not in caps:
            why = "no valid caption"
        if why is None:
            chosen, t_src = grid_frames(fi_all, t_all, int(sf), int(ef), fps)
            if len(chosen) < 2:
                why = f"fewer than 2 steps at {fps} fps"
        if why is not None:
            skipped.append({"segment_id": sid, "hand": hand, "reason": why})
            continue
        plans.append(_Plan(0, sid, hand, caps[(sid, hand)], int(sf), int(ef), chosen, t_src,
                           None if ss is None or ss != ss else float(ss),
                           None if es is None or es != es else float(es), details.get((sid, hand))))
    plans.sort(key=lambda p: (int(p.chosen[0]), int(p.chosen[-1]), HANDS.index(p.hand), p.segment_id))
    for i, p in enumerate(plans):
        p.ordinal = i
    return plans, skipped


def _hand_arrays(hand_world: pa.Table, n: int) -> dict[str, dict[str, np.ndarray]]:
    """Per hand, arrays indexed by frame_index (size n); rows absent -> valid false."""
    _need(hand_world, ["frame_index", "hand", "wrist_pos_world", "wrist_rotvec_world", "finger_pose",
                       "joints_world"], "hand_world")
    fi = _np(hand_world, "frame_index", np.int64)
    hand = _np(hand_world, "hand")
    pos = _vec(hand_world, "wrist_pos_world", 3, "hand_world")
    rv = _vec(hand_world, "wrist_rotvec_world", 3, "hand_world")
    fp = _vec(hand_world, "finger_pose", 45, "hand_world")
    jw = _vec(hand_world, "joints_world", 63, "hand_world").reshape(-1, 21, 3)
    out = {}
    for h in HANDS:
        m = (hand == h) & (fi >= 0) & (fi < n)
        a = {"valid": np.zeros(n, bool), "pos": np.zeros((n, 3)), "rv": np.zeros((n, 3)),
             "finger": np.zeros((n, 45)), "joints": np.zeros((n, 21, 3))}
        idx = fi[m]
        a["valid"][idx] = (np.isfinite(pos[m]).all(1) & np.isfinite(rv[m]).all(1))
        a["pos"][idx], a["rv"][idx] = pos[m], rv[m]
        a["finger"][idx] = np.nan_to_num(fp[m])
        a["joints"][idx] = np.nan_to_num(jw[m])
        a["pos"] = np.nan_to_num(a["pos"])
        a["rv"] = np.nan_to_num(a["rv"])
        out[h] = a
    return out


def _camera_arrays(camera_poses: pa.Table | None, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(n,3,3) R_wc and (n,3) t_wc by frame_index. Frames without a pose take the nearest posed frame; no
    poses at all means a static camera (world = camera frame)."""
    from scipy.spatial.transform import Rotation

    if camera_poses is None or camera_poses.num_rows == 0:
        return np.repeat(np.eye(3)[None], n, 0), np.zeros((n, 3)), "none (static camera assumed)"
    _need(camera_poses, ["frame_index", "tx", "ty", "tz", "qx", "qy", "qz", "qw"], "camera_poses")
    fi = _np(camera_poses, "frame_index", np.int64)
    t = np.stack([_np(camera_poses, c, np.float64) for c in ("tx", "ty", "tz")], 1)
    q = np.stack([_np(camera_poses, c, np.float64) for c in ("qx", "qy", "qz", "qw")], 1)
    ok = np.isfinite(t).all(1) & np.isfinite(q).all(1) & (np.linalg.norm(q, axis=1) > 1e-9)
    if not ok.any():
        raise LeRobotExportError("input table 'camera_poses' has no finite pose")
    fi, t, q = fi[ok], t[ok], q[ok]
    o = np.argsort(fi, kind="stable")
    fi, t, q = fi[o], t[o], q[o]
    want = np.arange(n)
    pos = np.clip(np.searchsorted(fi, want), 0, len(fi) - 1)
    prev = np.clip(pos - 1, 0, len(fi) - 1)
    near = np.where(np.abs(fi[prev] - want) < np.abs(fi[pos] - want), prev, pos)
    R = Rotation.from_quat(q[near]).as_matrix()
    exact = int((fi[near] == want).sum())
    return R, t[near], f"{exact}/{n} frames posed, others nearest"


def letterbox_geometry(w: int, h: int, size: tuple[int, int] | None) -> dict:
    """Where a ``w`` x ``h`` frame lands in a ``size`` = (width, height) dataset frame: scaled to fit with
    its aspect kept, centred, black bars around (letterbox / pillarbox). ``scale`` per axis, ``offset``
    of its top-left corner, ``content`` its size there."""
    if size is None or (w, h) == tuple(size):
        return {"scale": [1.0, 1.0], "offset": [0, 0], "content": [w, h], "size": [w, h]}
    W, H = size
    s = min(W / w, H / h)
    nw, nh = min(W, max(1, int(round(w * s)))), min(H, max(1, int(round(h * s))))
    return {"scale": [nw / w, nh / h], "offset": [(W - nw) // 2, (H - nh) // 2], "content": [nw, nh],
            "size": [W, H]}


def _letterbox(img: np.ndarray, size: tuple[int, int] | None) -> tuple[np.ndarray, dict]:
    """Fit ``img`` into ``size`` (see ``letterbox_geometry``), so every partition has the same video shape
    (LeRobot has one shape per feature)."""
    h, w = img.shape[:2]
    g = letterbox_geometry(w, h, size)
    if g["size"] == [w, h]:
        return img, g
    import cv2

    (W, H), (nw, nh), (ox, oy) = g["size"], g["content"], g["offset"]
    r = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if nw < w else cv2.INTER_LINEAR)
    out = np.zeros((H, W, 3), np.uint8)
    out[oy:oy + nh, ox:ox + nw] = r.reshape(nh, nw, -1)[..., :3]
    return out, g


def episode_camera(calibration: dict | None, frame_size: tuple[int, int], image_size: tuple[int, int] | None,
                   source_size: tuple[int, int] | None = None) -> dict:
    """The camera of a video's episodes in dataset pixels.

    ``calibration``: the video's ``calibrations`` row (intrinsics of the upright proxy of ``frame_size`` =
    (width, height); ``rect_*`` when a distortion model was removed). The frames are undistorted to the
    ``rect_*`` pinhole, then letterboxed into ``image_size``: the intrinsics follow (pixel-centre
    convention: ``u' = (u + 0.5) * s - 0.5 + offset``). ``hfov_deg`` is the horizontal field of view of the
    whole dataset frame, bars included (``2 atan(W / 2 fx)``), which is what a model given the frame and
    its FoV (VITRA) assumes. ``source_size``: the source's displayed (rotation applied) frame size."""
    import math

    w, h = frame_size
    g = letterbox_geometry(w, h, image_size)
    (sx, sy), (ox, oy), (W, H) = g["scale"], g["offset"], g["size"]
    out = {k: None for k in CAMERA_COLUMNS}
    out["distortion_model"] = "none"
    if calibration is not None:
        dm = str(calibration.get("distortion_model") or "none")
        rect = dm != "none" and calibration.get("rect_fx") is not None
        pre = "rect_" if rect else ""
        cw, ch = calibration.get("width"), calibration.get("height")
        if cw and ch and (int(cw), int(ch)) != (int(w), int(h)):
            raise LeRobotExportError(f"calibration is for {cw}x{ch} frames, the proxy's are {w}x{h}")
        fx, fy = float(calibration[pre + "fx"]) * sx, float(calibration[pre + "fy"]) * sy
        cx = (float(calibration[pre + "cx"]) + 0.5) * sx - 0.5 + ox
        cy = (float(calibration[pre + "cy"]) + 0.5) * sy - 0.5 + oy
        out.update(fx=fx, fy=fy, cx=cx, cy=cy, hfov_deg=math.degrees(2 * math.atan(W / (2 * fx))),
                   distortion_model=dm, camera_motion=calibration.get("camera_motion"))
    if source_size is not None:
        out["source_width"], out["source_height"] = int(source_size[0]), int(source_size[1])
    out["image_transform"] = g
    return out


class _VideoWriter:
    """One MP4 per partition; frame ``n`` has pts ``n`` in time base ``1/fps`` (exact episode offsets)."""

    def __init__(self, path: Path, fps: int, width: int, height: int, settings: VideoSettings, tag: str):
        name, opts = settings.encoder()
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its configuration to stderr: errors only
        self.fps = fps
        self.container = open_av(str(path), "w", format="mp4", options={"movflags": "faststart"})
        self.container.metadata["comment"] = tag
        st = self.container.add_stream(name, rate=fps)
        st.width, st.height, st.pix_fmt = width, height, settings.pix_fmt
        st.time_base = Fraction(1, fps)
        st.options = opts
        self.stream = st
        self.n = 0

    def write(self, img: np.ndarray) -> None:
        import av

        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts = self.n
        f.time_base = Fraction(1, self.fps)
        for p in self.stream.encode(f):
            self.container.mux(p)
        self.n += 1

    def close(self) -> None:
        for p in self.stream.encode(None):
            self.container.mux(p)
        self.container.close()


@contextlib.contextmanager
def _ffmpeg_logs_off():
    """Silence FFmpeg logging while we decode and encode.

    torchvision (imported by LeRobot) calls ``av.logging.set_level(ERROR)``, which makes every FFmpeg log
    line, even a filtered one, take the GIL from FFmpeg's own threads; a threaded decoder being closed
    while the main thread holds the GIL then deadlocks (seen here in a process that had imported
    LeRobot). PyAV's default (no callback) avoids that; the previous level is restored afterwards."""
    import av.logging

    old = av.logging.get_level()
    av.logging.set_level(None)
    try:
        yield
    finally:
        av.logging.set_level(old)


def _sha256(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _stats_to_json(stats: dict) -> str:
    return json.dumps({f: {k: np.asarray(v).tolist() for k, v in s.items()} for f, s in stats.items()})


def _stats_from_json(text: str) -> dict:
    return {f: {k: np.asarray(v) for k, v in s.items()} for f, s in json.loads(text).items()}


def stage_partition(partition_key: str, proxy_path: str | Path, frames, segments, captions, hand_world,
                    camera_poses, provenance: dict, out_dir: str | Path, *, fps: int = DEFAULT_FPS,
                    action_space: str = DEFAULT_ACTION_SPACE,
                    undistort: Callable[[np.ndarray], np.ndarray] | None = None,
                    image_size: tuple[int, int] | None = None, video: VideoSettings = VideoSettings(),
                    calibration: dict | None = None, source_size: tuple[int, int] | None = None,
                    progress: Callable[[int, int], None] | None = None) -> StagedPartition:
    """Stage one source video: every valid, captioned segment becomes one episode.

    Writes into ``out_dir`` (replaced atomically): ``video.mp4`` (the episodes' frames back to back, decoded
    from the proxy, passed through ``undistort`` (fisheye sources) and letterboxed to ``image_size`` =
    (width, height) when given), ``data.parquet`` (per-frame state/action/masks/source time),
    ``episodes.parquet`` (per-episode task, source range, per-episode stats, provenance) and
    ``manifest.json``. Episodes are ordered by their first source frame. Nothing here depends on other
    partitions, so partitions stage in parallel; ``assemble`` numbers them. ``calibration`` (the video's
    calibrations row) and ``source_size`` give each episode its camera in dataset pixels
    (``episode_camera``)."""
    from ego_assets.lib.keys import check_key
    from ego_assets.lib.video import iter_frames

    check_key(partition_key)
    check_action_space(action_space)
    if not isinstance(fps, (int, np.integer)) or fps <= 0:
        raise LeRobotExportError(f"fps must be a positive integer (LeRobot stores an int), got {fps!r}")
    fps = int(fps)
    if image_size is not None and (image_size[0] % 2 or image_size[1] % 2 or min(image_size) < 2):
        raise LeRobotExportError(f"image_size {image_size!r} must be (width, height), even, >= 2 (yuv420p)")
    video.encoder()
    proxy_path = Path(proxy_path)
    if not proxy_path.is_file():
        raise LeRobotExportError(f"proxy video {str(proxy_path)!r} does not exist")
    frames, segments, captions = (_as_table(frames, "frames"), _as_table(segments, "segments"),
                                  _as_table(captions, "captions"))
    hand_world = _as_table(hand_world, "hand_world")
    camera_poses = None if camera_poses is None else _as_table(camera_poses, "camera_poses")
    _need(frames, ["frame_index", "t_s"], "frames")
    _need(segments, ["segment_id", "hand", "start_frame", "end_frame"], "segments")
    _need(captions, ["segment_id", "hand", "instruction"], "captions")
    provenance = dict(provenance or {})

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    writer = None
    try:
        with _ffmpeg_logs_off():  # see its docstring: avoids a decoder deadlock
            plans, skipped = _plans(frames, segments, captions, fps)
            n_src = int(_np(frames, "frame_index", np.int64).max()) + 1 if frames.num_rows else 0
            t_by_fi = np.full(n_src, np.nan)
            t_by_fi[_np(frames, "frame_index", np.int64)] = _np(frames, "t_s", np.float64)
            hands = _hand_arrays(hand_world, n_src)
            # no episode: no reason to need the poses (a video without hands may have none that is finite)
            R_all, t_all, pose_note = (_camera_arrays(camera_poses, n_src) if plans
                                       else (None, None, "not read: no episode"))
            sa = []
            for p in plans:
                c = p.chosen
                tracks = {h: HandTrack(hands[h]["valid"][c], hands[h]["pos"][c], hands[h]["rv"][c],
                                       hands[h]["finger"][c], hands[h]["joints"][c]) for h in HANDS}
                sa.append(compute_state_action(action_space, tracks, R_all[c], t_all[c], p.hand))

            data_cols: dict[str, list] = {k: [] for k in ("episode", "frame_index", "timestamp", STATE_KEY,
                                                           HAND_MASK_KEY, ACTION_KEY, ACTION_MASK_KEY,
                                                           ACTION_PAD_KEY, SOURCE_T_KEY)}
            ep_rows: list[dict] = []
            image_hw = None
            transform = None
            camera: dict | None = None
            tag = KEY_TAG + partition_key
            offset = 0
            features = None

            def flush(p: _Plan, buf: dict[int, np.ndarray]) -> None:
                nonlocal writer, image_hw, offset, features
                imgs = [buf[int(i)] for i in p.chosen]
                if writer is None:
                    image_hw = imgs[0].shape[:2]
                    writer = _VideoWriter(tmp / STAGED_VIDEO, fps, image_hw[1], image_hw[0], video, tag)
                    features = dataset_features(action_space, image_hw)
                for im in imgs:
                    writer.write(im)
                s = sa[p.ordinal]
                k = len(p.chosen)
                ts = (np.arange(k) / fps).astype(np.float32)
                num = {STATE_KEY: s.state, HAND_MASK_KEY: s.hand_mask, ACTION_KEY: s.action,
                       ACTION_MASK_KEY: s.action_mask, ACTION_PAD_KEY: s.action_pad.astype(np.float32),
                       SOURCE_T_KEY: p.t_src.astype(np.float64), "timestamp": ts,
                       "frame_index": np.arange(k, dtype=np.int64)}
                stats = episode_stats(num)
                stats[VIDEO_KEY] = image_stats(imgs)
                data_cols["episode"].append(np.full(k, p.ordinal, np.int32))
                data_cols["frame_index"].append(np.arange(k, dtype=np.int64))
                data_cols["timestamp"].append(ts)
                data_cols[STATE_KEY].append(s.state)
                data_cols[HAND_MASK_KEY].append(s.hand_mask)
                data_cols[ACTION_KEY].append(s.action)
                data_cols[ACTION_MASK_KEY].append(s.action_mask)
                data_cols[ACTION_PAD_KEY].append(s.action_pad)
                data_cols[SOURCE_T_KEY].append(p.t_src.astype(np.float64))
                ep_prov = {"partition_key": partition_key, "segment_id": p.segment_id, "hand": p.hand,
                           "segment_frames": [p.start_frame, p.end_frame],
                           "segment_s": [p.seg_start_s, p.seg_end_s],
                           "source_frame_indices": [int(p.chosen[0]), int(p.chosen[-1])],
                           "max_time_offset_s": float(np.max(np.abs(p.t_src - p.t_src[0] - np.arange(k) / fps))),
                           **({"caption_details": json.loads(p.caption_details)} if p.caption_details else {}),
                           **provenance}
                ep_rows.append({"ordinal": p.ordinal, "segment_id": p.segment_id, "hand": p.hand, "task": p.task,
                                "length": k, "start_s": float(p.t_src[0]), "end_s": float(p.t_src[-1]),
                                "video_from_s": offset / fps, "video_to_s": (offset + k) / fps,
                                "stats": _stats_to_json(stats), "provenance": json.dumps(ep_prov, default=str),
                                "camera": json.dumps(_camera_cols(camera))})
                offset += k

            needed = np.unique(np.concatenate([p.chosen for p in plans])) if plans else np.zeros(0, np.int64)
            if len(needed):
                needed_set = set(int(i) for i in needed)
                pending = deque(plans)
                buf: dict[int, np.ndarray] = {}
                last = int(needed[-1])
                tol = 0.5 / fps
                first_hw = None
                for i, t, img in iter_frames(str(proxy_path), 0, last + 1):
                    if i in needed_set:
                        if camera is None:
                            camera = episode_camera(calibration, (img.shape[1], img.shape[0]), image_size,
                                                    source_size)
                        if np.isfinite(t) and i < n_src and np.isfinite(t_by_fi[i]) and abs(t - t_by_fi[i]) > tol:
                            raise LeRobotExportError(
                                f"proxy video {str(proxy_path)!r}: frame {i} is at {t:.3f} s but the frames table "
                                f"says {t_by_fi[i]:.3f} s (wrong proxy for partition {partition_key!r}?)")
                        if undistort is not None:
                            img = undistort(img)
                        img, transform = _letterbox(np.ascontiguousarray(img, dtype=np.uint8), image_size)
                        first_hw = first_hw or img.shape[:2]
                        if img.shape[:2] != first_hw:
                            raise LeRobotExportError(
                                f"proxy video {str(proxy_path)!r}: frame {i} is {img.shape[1]}x{img.shape[0]}, "
                                f"earlier frames {first_hw[1]}x{first_hw[0]}; pass image_size")
                        buf[i] = img
                        if len(buf) > MAX_BUFFERED_FRAMES:
                            raise LeRobotExportError(
                                f"partition {partition_key!r}: more than {MAX_BUFFERED_FRAMES} frames wait for an "
                                "overlapping segment; segments this long are not supported")
                    while pending and i >= int(pending[0].chosen.max()):
                        flush(pending.popleft(), buf)
                        low = int(pending[0].chosen.min()) if pending else last + 1
                        for j in [j for j in buf if j < low]:
                            del buf[j]
                    if progress is not None and i % 50 == 0:
                        progress(i + 1, last + 1)
                if pending:
                    raise LeRobotExportError(
                        f"proxy video {str(proxy_path)!r} has fewer frames than the frames table of partition "
                        f"{partition_key!r} needs (frame {last} wanted)")
            if writer is not None:
                w, writer = writer, None
                w.close()
            if progress is not None:
                progress(1, 1)

            def cat(k, dtype=None):
                v = data_cols[k]
                return np.concatenate(v).astype(dtype) if v else np.zeros((0,), dtype or np.float32)

            def fixed(k, n):
                v = np.concatenate(data_cols[k]) if data_cols[k] else np.zeros((0, n), np.float32)
                return pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1).astype(np.float32)), n)

            s_dim = len(dataset_features(action_space, (2, 2))[STATE_KEY]["names"])
            a_dim = len(dataset_features(action_space, (2, 2))[ACTION_KEY]["names"])
            data = pa.table({
                "episode": pa.array(cat("episode", np.int32)),
                "frame_index": pa.array(cat("frame_index", np.int64)),
                "timestamp": pa.array(cat("timestamp", np.float32)),
                STATE_KEY: fixed(STATE_KEY, s_dim), HAND_MASK_KEY: fixed(HAND_MASK_KEY, 2),
                ACTION_KEY: fixed(ACTION_KEY, a_dim), ACTION_MASK_KEY: fixed(ACTION_MASK_KEY, 2),
                ACTION_PAD_KEY: pa.array(cat(ACTION_PAD_KEY, bool)),
                SOURCE_T_KEY: pa.array(cat(SOURCE_T_KEY, np.float64)),
            }).replace_schema_metadata({PARQUET_KEY: partition_key.encode()})
            pq.write_table(data, tmp / STAGED_DATA)
            ep_schema = pa.schema([("ordinal", pa.int32()), ("segment_id", pa.int32()), ("hand", pa.string()),
                                   ("task", pa.string()), ("length", pa.int32()), ("start_s", pa.float64()),
                                   ("end_s", pa.float64()), ("video_from_s", pa.float64()),
                                   ("video_to_s", pa.float64()), ("stats", pa.string()),
                                   ("provenance", pa.string()), ("camera", pa.string())])
            episodes = pa.Table.from_pylist(ep_rows, schema=ep_schema)
            pq.write_table(episodes, tmp / STAGED_EPISODES)
            digest = hashlib.sha256()
            for name in (STAGED_DATA, STAGED_EPISODES, STAGED_VIDEO):
                if (tmp / name).exists():
                    digest.update(name.encode() + _sha256(tmp / name).encode())
            manifest = {
                "format": STAGING_FORMAT, "partition_key": partition_key, "fps": fps, "action_space": action_space,
                "features": features, "video": {**video.as_dict(),
                                                "file": STAGED_VIDEO if (tmp / STAGED_VIDEO).exists() else None,
                                                "frames": offset},
                "image_transform": transform, "camera": _camera_cols(camera), "camera_poses": pose_note,
                "n_episodes": len(ep_rows),
                "n_frames": offset, "skipped": skipped, "provenance": provenance,
            }
            digest.update(json.dumps(manifest, sort_keys=True, default=str).encode())
            manifest["version"] = digest.hexdigest()[:32]
            (tmp / STAGED_MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
            if out_dir.exists():
                old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
                os.replace(out_dir, old)
                os.replace(tmp, out_dir)
                shutil.rmtree(old, ignore_errors=True)
            else:
                out_dir.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, out_dir)
    except BaseException:
        if writer is not None:
            try:
                writer.container.close()
            except Exception:  # the error being raised matters, not this one
                pass
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_staged(out_dir)


def _typed_camera(t: pa.Table, prefix: str) -> pa.Table:
    """Camera columns with their types even when every value is null (no calibration given)."""
    for c in CAMERA_COLUMNS:
        name = prefix + c
        if name in t.column_names:
            typ = pa.string() if c in ("distortion_model", "camera_motion") else \
                pa.int32() if c.startswith("source_") else pa.float64()
            t = t.set_column(t.column_names.index(name), name, t[name].cast(typ))
    return t


def _camera_cols(camera: dict | None) -> dict:
    return {k: (camera or {}).get(k) for k in CAMERA_COLUMNS}


def load_staged(path: str | Path) -> StagedPartition:
    path = Path(path)
    mf = path / STAGED_MANIFEST
    if not mf.is_file():
        raise LeRobotExportError(f"{str(path)!r} is not a staged partition (no {STAGED_MANIFEST})")
    m = json.loads(mf.read_text())
    if m.get("format") != STAGING_FORMAT:
        raise LeRobotExportError(f"staged partition {str(path)!r} has format {m.get('format')!r}; "
                                 f"this code reads {STAGING_FORMAT}: stage it again")
    if m["features"] is not None:
        m["features"] = _norm_features(m["features"])
    return StagedPartition(path, m["partition_key"], m["version"], m["n_episodes"], m["n_frames"], m,
                           pq.read_table(path / STAGED_EPISODES), m.get("skipped", []))


def _norm_features(f: dict) -> dict:
    return {k: {**v, "shape": tuple(v["shape"])} for k, v in f.items()}


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


def _part_from_staged(s: StagedPartition) -> _Part:
    m = s.manifest
    eps = [_Ep(int(r["segment_id"]), r["hand"], r["task"], int(r["length"]), float(r["start_s"]),
               float(r["end_s"]), float(r["video_from_s"]), float(r["video_to_s"]), _stats_from_json(r["stats"]),
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


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _data_table(part: _Part, ep_base: int, idx_base: int, task_idx: list[int], full_features: dict,
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
    if state is not None:  # partitions appended since (incremental.append_partition): one file each
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
                               _norm_features(state["features"]), state["video"], eps, vpath, dpath, False,
                               entry, entry["n_frames"])
    added, replaced, kept = [], [], []
    for s in staged_parts:
        if s.partition_key in remove:
            raise LeRobotExportError(f"partition {s.partition_key!r} is both staged and to be removed")
        cur = parts.get(s.partition_key)
        if cur is not None and cur.version == s.version:
            continue
        (replaced if cur is not None else added).append(s.partition_key)
        parts[s.partition_key] = _part_from_staged(s)
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
            table = _data_table(p, q["ep_base"], q["idx_base"], q["task_idx"], full_features, hf_schema)
            _write_atomic(staged_to, lambda t, table=table: pq.write_table(table, t, compression="snappy"))
            moves.append((staged_to, d_target))
            written.append(p.key)
        if p.video_src is not None:
            if not p.staged and p.video_src.resolve() == v_target.resolve():
                stay.add(v_target.resolve())
            else:
                staged_to = tmp / "videos" / f"{p.key}.mp4"
                if p.staged:
                    _link_or_copy(p.video_src, staged_to)
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
        table = _typed_camera(pa.Table.from_pylist(part_rows), CAMERA_PREFIX)
        _write_atomic(root / DEFAULT_EPISODES_PATH.format(chunk_index=chunk, file_index=fidx),
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
    _write_atomic(root / PROVENANCE_PATH, lambda t: pq.write_table(prov, t))
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
    _write_atomic(state_file, lambda t: t.write_text(json.dumps(new_state, indent=1)))
    # what an append reads instead of the whole state (which grows with the dataset); appends since are in it now
    _write_atomic(root / HEADER_PATH, lambda t: t.write_text(json.dumps(
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


# ----------------------------------------------------------------------------------------------------------
# versions: readers never see a dataset half-assembled
#
# ``<datasets>/<name>`` is a symbolic link to a complete version folder ``<datasets>/.<name>.versions/v…``.
# An assembly works on a new version folder (a clone of the published one whose video and data files are
# hard links: nothing is re-encoded or copied; every file the assembly changes is written anew, never in
# place) and publishes it by replacing the link in one rename. Killed at any moment, it leaves the published
# version as it was and a folder the next assembly removes. The previous version stays until the next
# publish, so a reader that resolved the link just before a publish (``os.path.realpath``) keeps its files.

VERSIONS_SUFFIX = ".versions"
_PREVIOUS = "previous"


def versions_dir(dataset_dir: str | Path) -> Path:
    p = Path(dataset_dir)
    return p.parent / f".{p.name}{VERSIONS_SUFFIX}"


def published_version(dataset_dir: str | Path) -> Path | None:
    """The folder readers of ``dataset_dir`` see now (None when there is no dataset yet)."""
    p = Path(dataset_dir)
    if p.is_symlink():
        r = p.resolve()
        return r if r.is_dir() else None
    return p if p.is_dir() else None  # a dataset assembled in place (before versions)


def _prune_versions(dataset_dir: str | Path) -> list[str]:
    """Remove version folders that are neither published, nor the previous one, nor being written by a
    live process (leftovers of killed assemblies, superseded versions). Returns their names."""
    vd = versions_dir(dataset_dir)
    if not vd.is_dir():
        return []
    cur = published_version(dataset_dir)
    prev = (vd / _PREVIOUS).read_text().strip() if (vd / _PREVIOUS).is_file() else None
    gone = []
    for d in vd.iterdir():
        if not d.is_dir() or (cur is not None and d.resolve() == cur) or d.name == prev:
            continue
        pid = d.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            continue  # another assembly is writing it
        shutil.rmtree(d, ignore_errors=True)
        gone.append(d.name)
    return gone


def new_version(dataset_dir: str | Path) -> Path:
    """A new, unpublished version folder holding the published version: its video and data files hard-linked
    (copied where links are not possible), its metadata copied (LeRobot rewrites those in place)."""
    vd = versions_dir(dataset_dir)
    vd.mkdir(parents=True, exist_ok=True)
    _prune_versions(dataset_dir)
    dst = vd / f"v{time.time_ns()}-{os.getpid()}"
    dst.mkdir()
    cur = published_version(dataset_dir)
    if cur is not None:
        for f in sorted(cur.rglob("*")):
            rel = f.relative_to(cur)
            if rel.parts[0] == TMP_DIR or f.is_dir():
                continue
            t = dst / rel
            t.parent.mkdir(parents=True, exist_ok=True)
            if rel.parts[0] in ("data", "videos"):
                _link_or_copy(f, t)
            else:
                shutil.copy2(f, t)
    return dst


def publish_version(dataset_dir: str | Path, version: str | Path) -> None:
    """Make ``version`` what ``dataset_dir`` shows, in one rename of the link."""
    p, version = Path(dataset_dir), Path(version)
    vd = versions_dir(p)
    old = published_version(p)
    if p.exists() and not p.is_symlink():  # a dataset assembled in place: kept as the previous version
        old = vd / f"v0-{os.getpid()}"
        os.replace(p, old)
    link = p.with_name(f".{p.name}.link-{os.getpid()}")
    link.unlink(missing_ok=True)
    os.symlink(os.path.relpath(version, p.parent), link)
    os.replace(link, p)
    if old is not None:
        _write_atomic(vd / _PREVIOUS, lambda t: t.write_text(old.name))
    _prune_versions(p)


def assemble_versioned(dataset_dir: str | Path, staged: Sequence[StagedPartition | str | Path], *,
                       accept: Callable[[Path, AssemblyResult], bool] | None = None,
                       **kwargs) -> tuple[AssemblyResult, Path, bool]:
    """``assemble`` into a new version of ``dataset_dir`` and publish it when ``accept(version_dir, result)``
    (e.g. the validation) says so; otherwise the published version stays and the new one is removed.
    Returns (result, version folder, published)."""
    ver = new_version(dataset_dir)
    try:
        res = assemble(ver, staged, **kwargs)
        ok = accept(ver, res) if accept is not None else True
    except BaseException:
        shutil.rmtree(ver, ignore_errors=True)
        raise
    if not ok:
        shutil.rmtree(ver, ignore_errors=True)
        return res, ver, False
    publish_version(dataset_dir, ver)
    return res, ver, True
