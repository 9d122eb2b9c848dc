"""Geometry group: calibrations and camera_poses (docs/architecture.md §1; issue 4)."""

import dagster as dg
import numpy as np
import pyarrow.parquet as pq

from ego_assets.defs.k8s import op_tags, pool
from ego_assets.defs.partitions import backfill_policy, videos
from ego_assets.defs.runner import PartitionOutput, check_specs, progress_logger, run_partitions
from ego_assets.defs.settings import EgoStorage
from ego_assets.defs.stages import LazyBackend, backend_code_version, calib_row, proxy
from ego_assets.lib import schemas
from ego_assets.lib.quality import ERROR, WARN, CheckDef

GROUP = "geometry"
SCENE_DEPTH = "scene_depth.parquet"  # calibrations artifact: per-frame metric depth (depth backends)


def _intrinsics_ok(store, pk):
    from ego_assets.lib.geometry.checks import check_intrinsics

    return check_intrinsics(calib_row(store, pk))


def _poses(store, pk):
    return store.read_table("camera_poses", pk)


def _tracked(store, pk):
    from ego_assets.lib.geometry.checks import check_tracked_fraction

    return check_tracked_fraction(_poses(store, pk))


def _jumps(store, pk):
    from ego_assets.lib.geometry.checks import check_pose_jumps

    return check_pose_jumps(_poses(store, pk))


def _orthonormal(store, pk):
    from ego_assets.lib.geometry.checks import check_rotations

    return check_rotations(_poses(store, pk))


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


class GeometryConfig(dg.Config):
    force: bool = False


@dg.asset(
    partitions_def=videos, backfill_policy=backfill_policy, group_name=GROUP,
    code_version=backend_code_version("calibration"), deps=["source_videos", "frames"],
    op_tags=op_tags("calibration"), pool=pool("calibration"), kinds={"opencv", "parquet"},
    check_specs=check_specs("calibrations", CALIBRATION_CHECKS),
    description="Intrinsics of the proxy (from the source's camera hints, container metadata or an "
                "egocentric field-of-view prior), distortion model and undistortion (rectified "
                "intrinsics), static vs moving camera from background motion.",
)
def calibrations(context: dg.AssetExecutionContext, config: GeometryConfig, ego: EgoStorage):
    store = ego.store()
    backend = LazyBackend("calibration")

    def body(pk: str) -> PartitionOutput:
        rec = store.video_record(pk)
        video = store.read_table("videos", pk).to_pylist()[0]
        video["local_path"] = _source_path(store, rec)
        frames = store.read_table("frames", pk)
        p = proxy(store, pk)
        from ego_assets.lib.video import iter_frames

        h, w = next(iter_frames(p))[2].shape[:2]
        b = backend()
        table = b.calibrate(video, p, frames, (w, h), rec.get("hints") or {},
                            progress=progress_logger(context, "calibrations", pk))
        # a depth backend (depthpro, moge) also measures metric depth: the pose stage's scale cue
        depth = getattr(b, "last_scene_depth", None)
        if depth is not None and not depth.num_rows:
            depth = None
        with store.write_partition("calibrations", pk) as wr:
            wr.write_table("calibrations", schemas.conform("calibrations", table, pk))
            if depth is not None:
                pq.write_table(depth, wr.path(SCENE_DEPTH), compression="zstd")
        row = table.to_pylist()[0]
        extra = {}
        if depth is not None:
            dm = depth.column("depth_m").to_numpy(zero_copy_only=False)
            extra = dict(depth_frames=depth.num_rows, median_depth_m=round(float(np.median(dm)), 3))
        return PartitionOutput(tables=["calibrations"], metadata=dict(
            method=row["method"], fx=round(row["fx"], 1), fy=round(row["fy"], 1),
            cx=round(row["cx"], 1), cy=round(row["cy"], 1), size=f"{row['width']}x{row['height']}",
            hfov_deg=round(row["hfov_deg"], 1), distortion=row["distortion_model"],
            camera_motion=row["camera_motion"],
            camera_motion_value=round(float(row.get("camera_motion_value") or 0.0), 3), **extra))

    return run_partitions(context, store, body,
                          params=lambda pk: {"backend": backends_name("calibration"),  # hints: issue 16
                                             "hints": store.video_record(pk).get("hints") or {}},
                          checks=CALIBRATION_CHECKS, force=config.force)


@dg.asset(
    partitions_def=videos, backfill_policy=backfill_policy, group_name=GROUP,
    code_version=backend_code_version("poses"), deps=["calibrations", "hand_tracks", "clips", "frames"],
    op_tags=op_tags("poses"), pool=pool("poses"),
    kinds={"opencv", "parquet"}, check_specs=check_specs("camera_poses", POSE_CHECKS),
    description="Camera-to-world pose per frame (world = camera of the first frame), hands masked out, "
                "computed clip by clip and stitched with Sim(3) fits on the overlaps; metric scale "
                "from the calibration backend's depth (depthpro, moge), else from the hands; tracking "
                "losses marked tracked=false.",
)
def camera_poses(context: dg.AssetExecutionContext, config: GeometryConfig, ego: EgoStorage):
    store = ego.store()
    backend = LazyBackend("poses")

    def body(pk: str) -> PartitionOutput:
        from ego_assets.lib.plots import md_image

        p = proxy(store, pk)
        frames = store.read_table("frames", pk, ["frame_index", "t_s"])
        clips = store.read_table("clips", pk)
        hands = store.read_table("hand_tracks", pk)
        res = backend().estimate(p, frames, clips, calib_row(store, pk), hands,
                                 progress=progress_logger(context, "camera_poses", pk),
                                 scene_depth=scene_depth(store, pk))
        with store.write_partition("camera_poses", pk) as wr:
            wr.write_table("camera_poses", schemas.conform("camera_poses", res.poses, pk))
            plot = _plot(res.poses)
            if plot:
                with open(wr.path("trajectory.png"), "wb") as f:
                    f.write(plot)
        meta = {k: v for k, v in res.stats.items() if isinstance(v, (int, float, str, bool))}
        if plot:
            meta["trajectory"] = dg.MetadataValue.md(md_image(plot, "camera path, top-down"))
        return PartitionOutput(tables=["camera_poses"], metadata=meta)

    return run_partitions(context, store, body, params={"backend": backends_name("poses")},
                          checks=POSE_CHECKS, force=config.force)


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


def _source_path(store, rec) -> str:
    from ego_assets.defs.ingest import local_source

    return local_source(store, rec)


def backends_name(stage: str) -> str:
    from ego_assets.lib import backends

    return backends.backend_class(stage).name
