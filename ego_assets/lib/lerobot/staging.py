"""Per-partition staging (``stage_partition``): one source video's episodes, encoded once into a staged
folder (video, data, episodes, manifest) that the assembly links in without re-encoding; ``load_staged``
reads one back."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ego_assets.lib.lerobot.actions import HandTrack, compute_state_action
from ego_assets.lib.lerobot.features import (
    ACTION_KEY,
    ACTION_MASK_KEY,
    ACTION_PAD_KEY,
    CAMERA_COLUMNS,
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
from ego_assets.lib.lerobot.layout import (
    KEY_TAG,
    LeRobotExportError,
    PARQUET_KEY,
    STAGED_DATA,
    STAGED_EPISODES,
    STAGED_MANIFEST,
    STAGED_VIDEO,
    STAGING_FORMAT,
)
from ego_assets.lib.lerobot.stats import episode_stats, image_stats
from ego_assets.lib.video import open_av


# frames of an episode stay in memory until it is encoded; cap the wait for an overlapping long segment
MAX_BUFFERED_FRAMES = 6000


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


def episode_plans(frames: pa.Table, segments: pa.Table, captions: pa.Table, fps: int) -> tuple[list[_Plan], list[dict]]:
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


def hand_arrays(hand_world: pa.Table, n: int) -> dict[str, dict[str, np.ndarray]]:
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


def camera_arrays(camera_poses: pa.Table | None, n: int) -> tuple[np.ndarray, np.ndarray, str]:
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
    # same size (a 16:9 640 px proxy in 640x480): only bars to add (cv2.resize would return a copy)
    r = img if (nw, nh) == (w, h) else cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if nw < w
                                                  else cv2.INTER_LINEAR)
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
    (sx, sy), (ox, oy), (W, _) = g["scale"], g["offset"], g["size"]
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
def ffmpeg_logs_off():
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


def stats_from_json(text: str) -> dict:
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
    from ego_assets.lib.opencv_threads import opencv_threads
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
        # ffmpeg_logs_off: see its docstring (avoids a decoder deadlock); OpenCV (undistortion, resize) on
        # the step's cores (one in a backfill), as in the other per-video stages (lib/opencv_threads)
        with ffmpeg_logs_off(), opencv_threads():
            plans, skipped = episode_plans(frames, segments, captions, fps)
            n_src = int(_np(frames, "frame_index", np.int64).max()) + 1 if frames.num_rows else 0
            t_by_fi = np.full(n_src, np.nan)
            t_by_fi[_np(frames, "frame_index", np.int64)] = _np(frames, "t_s", np.float64)
            hands = hand_arrays(hand_world, n_src)
            # no episode: no reason to need the poses (a video without hands may have none that is finite)
            R_all, t_all, pose_note = (camera_arrays(camera_poses, n_src) if plans
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


def typed_camera(t: pa.Table, prefix: str) -> pa.Table:
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
        m["features"] = norm_features(m["features"])
    return StagedPartition(path, m["partition_key"], m["version"], m["n_episodes"], m["n_frames"], m,
                           pq.read_table(path / STAGED_EPISODES), m.get("skipped", []))


def norm_features(f: dict) -> dict:
    return {k: {**v, "shape": tuple(v["shape"])} for k, v in f.items()}
