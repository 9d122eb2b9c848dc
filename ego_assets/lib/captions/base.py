"""What every captioner shares: the result type, the per-segment view of the motion, the output table,
and small I/O helpers that work on local paths and fsspec URLs alike (the storage root may be s3://).

A captioner backend (see :mod:`ego_assets.lib.captions.backends`) implements::

    caption(segments, hand_world, frames, proxy_path, calib, camera_poses, out_dir, progress=None)
        -> CaptionResult

and returns exactly one row per segment: an imperative instruction for that hand, or ``N/A`` with
``valid=False`` when no meaningful action happened (or the segment failed its quality filter).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from scipy.spatial.transform import Rotation

from ego_assets.lib.motion.arrow import MotionInputError, require, scalar, schema_without_key, vectors
from ego_assets.lib.motion.world import tracked_poses

NA = "N/A"


class CaptionError(RuntimeError):
    """A captioner could not produce captions (endpoint down after retries, bad configuration)."""


class CaptionConfigError(ValueError):
    """A captioner is misconfigured (a missing setting); the message names the setting."""


class CaptionResultError(ValueError):
    """A captioner returned a result that breaks the contract of :class:`CaptionResult`."""


@dataclass(frozen=True)
class CaptionResult:
    """What ``caption`` returns (the contract of the ``captions`` stage; the conformance test checks
    every backend): ``captions``, one row per segment, with every column of ``schemas.CAPTIONS`` but
    ``partition_key`` (``segment_id`` and ``hand`` unique together, ``instruction`` a non-empty string,
    ``N/A`` with ``valid=False`` when nothing meaningful happened); ``stats``, a JSON-safe dict of counts
    and timings for the asset's metadata. Checked on construction: :class:`CaptionResultError` names the
    backend and the field."""

    backend: str
    captions: pa.Table
    stats: dict = field(default_factory=dict)

    def _fail(self, field_: str, why: str):
        raise CaptionResultError(f"captions backend {self.backend!r}: caption() returned a bad {field_!r}: {why}")

    def __post_init__(self):
        t = self.captions
        if not isinstance(t, pa.Table):
            self._fail("captions", f"expected a pyarrow Table, got {type(t).__name__}")
        missing = [n for n in schema_without_key("captions").names if n not in t.column_names]
        if missing:
            self._fail("captions", f"missing columns {missing}")
        keys = list(zip(t.column("segment_id").to_pylist(), t.column("hand").to_pylist()))
        if len(set(keys)) != len(keys):
            self._fail("captions", "more than one row for a (segment_id, hand)")
        if any(not isinstance(x, str) or not x.strip() for x in t.column("instruction").to_pylist()):
            self._fail("captions", f"every instruction must be a non-empty string ({NA!r} for none)")
        if any(v is None for v in t.column("valid").to_pylist()):
            self._fail("captions", "valid must be true or false on every row")
        if not isinstance(self.stats, dict):
            self._fail("stats", f"expected a dict, got {type(self.stats).__name__}")


@dataclass
class SegmentView:
    """One segment with the motion of its hand, in the form the captioners need."""

    segment_id: int
    hand: str
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    path_length_m: float
    mean_speed_mps: float
    valid: bool
    invalid_reason: str | None
    frame_index: np.ndarray  # (N,) frames of this hand inside the segment
    t_s: np.ndarray
    wrist: np.ndarray  # (N, 3) world
    joints: np.ndarray  # (N, 21, 3) world
    finger_pose: np.ndarray  # (N, 45)
    poses: dict[int, tuple[np.ndarray, np.ndarray]]  # frame -> (R_wc 3x3, t_wc) for its frames

    @property
    def duration_s(self) -> float:
        return float(self.end_s - self.start_s)

    def to_camera(self, frame: int, pts_world: np.ndarray) -> np.ndarray:
        """World points -> the camera frame of ``frame`` (T_wc inverted)."""
        r, t = self.poses[frame]
        return (np.asarray(pts_world) - t) @ r


def segment_views(segments: pa.Table, hand_world: pa.Table, camera_poses: pa.Table) -> list[SegmentView]:
    """Gather each segment's rows of ``hand_world`` (by hand and frame range) and its camera poses."""
    require(segments, "segments", ["segment_id", "hand", "start_frame", "end_frame", "start_s", "end_s",
                                   "path_length_m"])
    require(hand_world, "hand_world", ["frame_index", "t_s", "hand", "joints_world", "wrist_pos_world",
                                       "finger_pose"])
    poses = tracked_poses(camera_poses)
    hw_fi = scalar(hand_world, "frame_index", np.int64)
    hw_t = scalar(hand_world, "t_s")
    hw_hand = np.asarray(hand_world.column("hand").to_pylist(), dtype=object)
    wrist = vectors(hand_world, "wrist_pos_world", 3, "hand_world")
    joints = vectors(hand_world, "joints_world", 63, "hand_world").reshape(-1, 21, 3)
    fingers = vectors(hand_world, "finger_pose", 45, "hand_world")
    has_valid = "valid" in segments.column_names
    valid = scalar(segments, "valid", bool, fill=True) if has_valid else np.ones(segments.num_rows, bool)
    reasons = (segments.column("invalid_reason").to_pylist() if "invalid_reason" in segments.column_names
               else [None] * segments.num_rows)
    mean_speed = (scalar(segments, "mean_speed_mps", np.float64, fill=np.nan)
                  if "mean_speed_mps" in segments.column_names else np.full(segments.num_rows, np.nan))
    views = []
    for i, row in enumerate(segments.select(["segment_id", "hand", "start_frame", "end_frame", "start_s",
                                             "end_s", "path_length_m"]).to_pylist()):
        r = np.flatnonzero((hw_hand == row["hand"]) & (hw_fi >= row["start_frame"]) &
                           (hw_fi <= row["end_frame"]))
        if len(r) == 0:
            raise MotionInputError(f"segments: segment {row['segment_id']} ({row['hand']} hand, frames "
                                   f"{row['start_frame']}-{row['end_frame']}) has no rows in hand_world")
        r = r[np.argsort(hw_fi[r], kind="stable")]
        fi = hw_fi[r]
        seg_poses = {}
        for f in fi.tolist():
            if f in poses:
                q, t = poses[f]
                seg_poses[f] = (Rotation.from_quat(q).as_matrix(), np.asarray(t, float))
        views.append(SegmentView(
            segment_id=int(row["segment_id"]), hand=row["hand"], start_frame=int(row["start_frame"]),
            end_frame=int(row["end_frame"]), start_s=float(row["start_s"]), end_s=float(row["end_s"]),
            path_length_m=float(row["path_length_m"]), mean_speed_mps=float(mean_speed[i]),
            valid=bool(valid[i]), invalid_reason=reasons[i], frame_index=fi, t_s=hw_t[r], wrist=wrist[r],
            joints=joints[r], finger_pose=fingers[r], poses=seg_poses))
    return views


def captions_table(rows: list[dict]) -> pa.Table:
    """Rows (dicts with the caption columns) -> Arrow table, sorted by segment_id."""
    schema = schema_without_key("captions")
    rows = sorted(rows, key=lambda r: r["segment_id"])
    return pa.table({name: pa.array([r.get(name) for r in rows], schema.field(name).type)
                     for name in schema.names}, schema=schema)


# -- I/O on local paths and fsspec URLs -------------------------------------------------------------

def _is_url(path: str) -> bool:
    return "://" in path


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if _is_url(base) else os.path.join(base, *parts)


def write_bytes(path: str, data: bytes) -> None:
    """Atomic write (temp file + rename locally; one PUT on object stores)."""
    if _is_url(path):
        import fsspec

        with fsspec.open(path, "wb") as f:
            f.write(data)
        return
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: str) -> dict | None:
    """The JSON object at ``path``, or None when it does not exist or is unreadable (a torn cache entry
    is a miss, not an error)."""
    try:
        if _is_url(path):
            import fsspec

            with fsspec.open(path, "rb") as f:
                data = f.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
        obj = json.loads(data)
        return obj if isinstance(obj, dict) else None
    except (FileNotFoundError, ValueError, OSError):
        return None


def write_json(path: str, obj: dict) -> None:
    write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())
