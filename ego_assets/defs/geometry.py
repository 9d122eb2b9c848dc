"""Geometry group: calibrations and camera_poses (docs/architecture.md §1; issue 4)."""

import dagster as dg
import numpy as np
import pyarrow.parquet as pq

from ego_assets.defs.ingest import local_source
from ego_assets.defs.per_video import Step, per_video_asset
from ego_assets.defs.runner import PartitionOutput
from ego_assets.defs.stages import LazyBackend, backend_code_version, backend_name, calib_row, proxy
from ego_assets.lib import schemas
from ego_assets.lib.quality import ERROR, WARN, CheckDef, CheckInput

GROUP = "geometry"
SCENE_DEPTH = "scene_depth.parquet"  # calibrations artifact: per-frame metric depth (depth backends)


def _intrinsics_ok(inp: CheckInput):
    from ego_assets.lib.geometry.checks import check_intrinsics

    return check_intrinsics(inp.table("calibrations").to_pylist()[0])


def _tracked(inp: CheckInput):
    from ego_assets.lib.geometry.checks import check_tracked_fraction

    return check_tracked_fraction(inp.table("camera_poses"))


def _jumps(inp: CheckInput):
    from ego_assets.lib.geometry.checks import check_pose_jumps

    return check_pose_jumps(inp.table("camera_poses"))


def _orthonormal(inp: CheckInput):
    from ego_assets.lib.geometry.checks import check_rotations

    return check_rotations(inp.table("camera_poses"))


CALIBRATION_CHECKS = [
    CheckDef("intrinsics_plausible", "calibrations", ERROR,
             "Positive focal length, principal point inside the image, field of view in a sane range.",
             _intrinsics_ok),
]
POSE_CHECKS = [
    CheckDef("tracked_fraction", "camera_poses", WARN,
             "Most frames have a tracked camera pose.", _tracked),
    CheckDef("no_pose_jumps", "camera_poses", ERROR,
             "No jump between consecutive poses beyond a physical bound for a head.", _jumps),
    CheckDef("rotations_orthonormal", "camera_poses", ERROR,
             "Unit quaternions / orthonormal rotation matrices.", _orthonormal),
]
CHECKS = CALIBRATION_CHECKS + POSE_CHECKS

_CALIBRATION = LazyBackend("calibration")
_POSES = LazyBackend("poses")


@per_video_asset(
    group=GROUP, code_version=backend_code_version("calibration"), deps=["source_videos", "frames"],
    kinds={"opencv", "parquet"}, checks=CALIBRATION_CHECKS, stage="calibration",
    # the camera hints are parameters: a changed hint recomputes the video and what depends on it (issue 16)
    params=lambda step: {"backend": backend_name("calibration"), "hints": step.record().get("hints") or {}},
    description="Intrinsics of the proxy (from the source's camera hints, container metadata or an "
                "egocentric field-of-view prior), distortion model and undistortion (rectified "
                "intrinsics), static vs moving camera from background motion.",
)
def calibrations(step: Step) -> PartitionOutput:
    from ego_assets.lib.video import iter_frames

    rec = step.record()
    video = step.video()
    video["local_path"] = local_source(step.store, rec)
    frames = step.table("frames")
    p = proxy(step.store, step.pk)
    h, w = next(iter_frames(p))[2].shape[:2]
    b = _CALIBRATION()
    result = b.calibrate(video, p, frames, (w, h), rec.get("hints") or {}, progress=step.progress())
    from ego_assets.lib.geometry.calibration_backends import CalibrationResult

    if not isinstance(result, CalibrationResult):
        raise TypeError(f"calibration backend {b.name!r}: calibrate() must return a CalibrationResult, "
                        f"got {type(result).__name__}")
    # a depth backend (depthpro, moge) also measures metric depth: the pose stage's scale cue
    table, depth = result.calibration, result.scene_depth
    with step.write() as wr:
        wr.write_table("calibrations", schemas.conform("calibrations", table, step.pk))
        if depth is not None:
            pq.write_table(depth, wr.path(SCENE_DEPTH), compression="zstd")
    row = table.to_pylist()[0]
    extra = {}
    if depth is not None:
        dm = depth.column("depth_m").to_numpy(zero_copy_only=False)
        extra = dict(depth_frames=depth.num_rows, median_depth_m=round(float(np.median(dm)), 3))
    return PartitionOutput(metadata=dict(
        method=row["method"], fx=round(row["fx"], 1), fy=round(row["fy"], 1),
        cx=round(row["cx"], 1), cy=round(row["cy"], 1), size=f"{row['width']}x{row['height']}",
        hfov_deg=round(row["hfov_deg"], 1), distortion=row["distortion_model"],
        camera_motion=row["camera_motion"],
        camera_motion_value=round(float(row.get("camera_motion_value") or 0.0), 3), **extra))


@per_video_asset(
    group=GROUP, code_version=backend_code_version("poses"), deps=["calibrations", "hand_tracks", "clips", "frames"],
    kinds={"opencv", "parquet"}, checks=POSE_CHECKS, stage="poses",
    params=lambda step: {"backend": backend_name("poses")},
    description="Camera-to-world pose per frame (world = camera of the first frame), hands masked out, "
                "computed clip by clip and stitched with Sim(3) fits on the overlaps; metric scale "
                "from the calibration backend's depth (depthpro, moge), else from the hands; tracking "
                "losses marked tracked=false.",
)
def camera_poses(step: Step) -> PartitionOutput:
    from ego_assets.lib.plots import md_image

    store, pk = step.store, step.pk
    res = _POSES().estimate(proxy(store, pk), step.table("frames", ["frame_index", "t_s"]), step.table("clips"),
                            calib_row(store, pk), step.table("hand_tracks"), progress=step.progress(),
                            scene_depth=scene_depth(store, pk))
    plot = _plot(res.poses)
    with step.write() as wr:
        wr.write_table("camera_poses", schemas.conform("camera_poses", res.poses, pk))
        if plot:
            with open(wr.path("trajectory.png"), "wb") as f:
                f.write(plot)
    meta = {k: v for k, v in res.stats.items() if isinstance(v, (int, float, str, bool))}
    if plot:
        meta["trajectory"] = dg.MetadataValue.md(md_image(plot, "camera path, top-down"))
    return PartitionOutput(metadata=meta)


def scene_depth(store, pk: str):
    """The metric depth that the calibration backend measured for this video (depthpro, moge), or
    None: the pose stage then takes its scale from the hands."""
    path = store.artifact("calibrations", pk, SCENE_DEPTH)
    return store.read_parquet(path) if store.exists(path) else None


def _plot(poses) -> bytes | None:
    from ego_assets.lib.geometry.odometry import plot_trajectory_topdown

    try:
        return plot_trajectory_topdown(poses)
    except Exception:  # noqa: BLE001 - a preview never fails the asset
        return None
