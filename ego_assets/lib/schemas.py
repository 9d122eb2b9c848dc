"""The table contracts of docs/architecture.md §3, defined once.

Every table has a ``partition_key`` column. ``TABLES`` maps a table name to the asset that writes it and
its Arrow schema; the storage layer, the catalog, the checks and the tests import these, never copy them.
Columns beyond the contract are allowed (they are listed after the contract ones).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

f32 = pa.float32()
f64 = pa.float64()
i32 = pa.int32()
i64 = pa.int64()
s = pa.string()
b = pa.bool_()
ts = pa.timestamp("us", tz="UTC")


def vec(n: int, t: pa.DataType = f32) -> pa.DataType:
    """Fixed-size float vector column (DuckDB reads it as an ARRAY)."""
    return pa.list_(t, n)


PK = pa.field("partition_key", s, nullable=False)

VIDEOS = pa.schema([
    PK, ("source", s), ("uri", s), ("sha256", s), ("size_bytes", i64), ("duration_s", f64),
    ("fps", f64), ("n_frames", i64), ("width", i32), ("height", i32), ("codec", s),
    ("rotation_deg", i32),
    # extras: display size after rotation, variable frame rate flag, original file name, stream start
    ("display_width", i32), ("display_height", i32), ("is_vfr", b), ("name", s), ("start_s", f64),
])

CLIPS = pa.schema([
    PK, ("clip_index", i32), ("start_s", f64), ("end_s", f64), ("uri", s),
    # the remuxed file starts at the keyframe at or before start_s
    ("file_start_s", f64), ("n_frames", i32),
])

FRAMES = pa.schema([
    PK, ("frame_index", i32), ("t_s", f64), ("is_keyframe", b), ("blur", f32), ("brightness", f32),
    ("motion", f32),
])

CALIBRATIONS = pa.schema([
    PK, ("fx", f64), ("fy", f64), ("cx", f64), ("cy", f64), ("width", i32), ("height", i32),
    ("distortion_model", s), ("dist_coeffs", pa.list_(f64)), ("hfov_deg", f64), ("camera_motion", s),
    ("method", s),
    # extras: intrinsics of the rectified (undistorted) proxy that downstream stages see, and the
    # measured background motion behind camera_motion
    ("rect_fx", f64), ("rect_fy", f64), ("rect_cx", f64), ("rect_cy", f64),
    ("camera_motion_value", f64),
])

CAMERA_POSES = pa.schema([
    PK, ("frame_index", i32), ("t_s", f64), ("tx", f64), ("ty", f64), ("tz", f64), ("qx", f64),
    ("qy", f64), ("qz", f64), ("qw", f64), ("tracked", b), ("scale", s),
    ("is_keyframe", b), ("n_inliers", i32),
])

from ego_assets.lib.hands.skeleton import FINGER_POSE_CONVENTION  # noqa: E402

HAND_TRACKS = pa.schema([
    PK, ("frame_index", i32), ("t_s", f64), ("hand", s), ("score", f32), ("kp2d", vec(42)),
    ("joints_cam", vec(63)), ("wrist_rotvec_cam", vec(3)),
    # the rotation convention of finger_pose is named on the field (Parquet keeps field metadata);
    # a backend with its own MANO pose says so in its stats (finger_pose_convention)
    pa.field("finger_pose", vec(45), metadata={"convention": FINGER_POSE_CONVENTION}),
    # extras: identity of the track, confidence of the left/right decision, filled-in gap flag
    ("track_id", i32), ("handedness_conf", f32), ("interpolated", b),
])

# Raw per-frame detections before identity assignment and temporal clean-up (kept for audits).
HAND_DETECTIONS = pa.schema([
    PK, ("frame_index", i32), ("t_s", f64), ("detection", i32), ("mp_label", s), ("mp_score", f32),
    ("score", f32), ("kp2d", vec(42)), ("joints_cam", vec(63)), ("fit", s),
    # the track the detection joined (-1: dropped as a duplicate) and its left/right cues (> 0 right):
    # the network's belief and the image cues, which the handedness_cues_agree check compares
    ("track_id", i32), ("cue_network", f32), ("cue_image", f32),
])

HAND_WORLD = pa.schema([
    PK, ("frame_index", i32), ("t_s", f64), ("hand", s), ("joints_world", vec(63)),
    ("wrist_pos_world", vec(3, f64)), ("wrist_rotvec_world", vec(3, f64)), ("finger_pose", vec(45)),
    ("speed_mps", f64), ("segment_id", i32),
    ("observed", b),
    # the camera_poses scale the world frame was built with: 'metric', or 'relative' (camera path of
    # unknown scale: world positions and speeds then mix metric hands with it)
    ("world_scale", s),
])

SEGMENTS = pa.schema([
    PK, ("segment_id", i32), ("hand", s), ("start_frame", i32), ("end_frame", i32), ("start_s", f64),
    ("end_s", f64), ("path_length_m", f64), ("mean_speed_mps", f64),
    # quality filtering (Ego2Robot-style): valid=false carries the reason
    ("visibility", f64), ("motion_energy", f64), ("blur", f64), ("valid", b), ("invalid_reason", s),
])

CAPTIONS = pa.schema([
    PK, ("segment_id", i32), ("hand", s), ("instruction", s), ("reasoning", s), ("valid", b),
    ("captioner", s), ("model", s), ("prompt_version", s),
    ("overlay_uri", s),
    ("details", s),  # JSON: what the captioner measured or named (numbers stay out of the instruction)
])

EPISODES = pa.schema([
    PK, ("episode_index", i64), ("segment_id", i32), ("hand", s), ("task", s), ("length", i32),
    ("split", s),
    # the episode's camera in dataset pixels (after undistortion and letterbox; hfov_deg of the whole
    # dataset frame), the distortion model removed, static/moving, the source's displayed frame size
    ("fx", f64), ("fy", f64), ("cx", f64), ("cy", f64), ("hfov_deg", f64), ("distortion_model", s),
    ("camera_motion", s), ("source_width", i32), ("source_height", i32),
    ("start_s", f64), ("end_s", f64), ("dataset", s), ("provenance", s),
    # the episode's skill (the `skills` table), once skills exist
    ("skill_id", i32), ("skill_label", s),
])

# One row per valid (segment, hand) that has a skill (asset `skills`, over all videos; one file per video).
SKILLS = pa.schema([
    PK, ("segment_id", i32), ("hand", s), ("skill_id", i32), ("skill_label", s), ("distance", f64),
    # extras: the 2-D projection of the preview, the embedder, the segment's instruction, the model
    ("proj_x", f64), ("proj_y", f64), ("embedder", s), ("instruction", s), ("model_version", s),
])

LINEAGE = pa.schema([
    PK, ("asset", s), ("run_id", s), ("code_version", s), ("data_version", s), ("upstream", s),
    ("params", s), ("status", s), ("error", s), ("started_at", ts), ("finished_at", ts),
])

QUALITY = pa.schema([
    PK, ("asset", s), ("check_name", s), ("passed", b), ("severity", s), ("value", f64),
    ("detail", s),
    ("evaluated_at", ts),
])


@dataclass(frozen=True)
class TableSpec:
    name: str
    asset: str  # the asset that writes it; lineage/quality are written by every asset
    schema: pa.Schema


TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in [
        TableSpec("videos", "source_videos", VIDEOS),
        TableSpec("clips", "clips", CLIPS),
        TableSpec("frames", "frames", FRAMES),
        TableSpec("calibrations", "calibrations", CALIBRATIONS),
        TableSpec("hand_tracks", "hand_tracks", HAND_TRACKS),
        TableSpec("hand_detections", "hand_tracks", HAND_DETECTIONS),
        TableSpec("camera_poses", "camera_poses", CAMERA_POSES),
        TableSpec("hand_world", "segments", HAND_WORLD),
        TableSpec("segments", "segments", SEGMENTS),
        TableSpec("captions", "captions", CAPTIONS),
        TableSpec("episodes", "lerobot_dataset", EPISODES),
        TableSpec("skills", "skills", SKILLS),
        TableSpec("lineage", "*", LINEAGE),
        TableSpec("quality", "*", QUALITY),
    ]
}


def empty(table: str) -> pa.Table:
    return TABLES[table].schema.empty_table()


def conform(table: str, data: pa.Table | dict, partition_key: str) -> pa.Table:
    """Cast ``data`` to the table's schema, filling ``partition_key``; unknown columns are an error,
    missing nullable ones become nulls. Keeps writers honest about the contract."""
    schema = TABLES[table].schema
    if isinstance(data, dict):
        n = len(next(iter(data.values()))) if data else 0
        cols = dict(data)
    else:
        n = data.num_rows
        cols = {name: data.column(name) for name in data.column_names}
    extra = set(cols) - set(schema.names)
    if extra:
        raise ValueError(f"table {table!r}: columns not in its schema: {sorted(extra)}")
    cols["partition_key"] = pa.array([partition_key] * n, s)
    arrays = []
    for field in schema:
        if field.name in cols:
            col = cols[field.name]
            if isinstance(col, pa.ChunkedArray):
                col = col.combine_chunks()
            if not isinstance(col, pa.Array):
                col = _to_arrow(col, field.type)
            arrays.append(col.cast(field.type) if col.type != field.type else col)
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _to_arrow(values, type_: pa.DataType) -> pa.Array:
    import numpy as np

    if isinstance(values, np.ndarray) and values.ndim == 2 and pa.types.is_fixed_size_list(type_):
        flat = pa.array(values.reshape(-1).astype(type_.value_type.to_pandas_dtype()), type_.value_type)
        return pa.FixedSizeListArray.from_arrays(flat, type_.list_size)
    if isinstance(values, np.ndarray):
        return pa.array(values, type_) if values.ndim == 1 else pa.array(list(values), type_)
    return pa.array(values, type_)
