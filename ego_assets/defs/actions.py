"""Actions and language group: segments (hand_world + segments tables) and captions (issue 5)."""

import dagster as dg

from ego_assets.defs.per_video import Step, config_from, params_of, per_video_asset
from ego_assets.defs.runner import PartitionOutput
from ego_assets.defs.stages import LazyBackend, backend_code_version, backend_name, calib_row, proxy
from ego_assets.lib import schemas
from ego_assets.lib.motion.segment import SegmentParams
from ego_assets.lib.quality import ERROR, WARN, CheckDef, CheckInput

GROUP = "actions"

# the segmentation parameters a run may set (the others keep SegmentParams' defaults)
SEGMENT_FIELDS = ("min_length", "max_length", "min_distance", "speed_smooth_window", "min_path_length_m",
                  "min_visibility")
SegmentsConfig = config_from(SegmentParams, SEGMENT_FIELDS, name="SegmentsConfig")


def _min_length(inp: CheckInput):
    from ego_assets.lib.motion.checks import check_min_length

    min_length = inp.attempt_params().get("min_length", SegmentParams.min_length)
    return check_min_length(inp.table("segments"), min_length)


def _no_overlap(inp: CheckInput):
    from ego_assets.lib.motion.checks import check_no_overlap

    return check_no_overlap(inp.table("segments"))


def _captions_cover(inp: CheckInput):
    from ego_assets.lib.captions.checks import check_captions_cover_segments

    return check_captions_cover_segments(inp.table("segments"), inp.table("captions"))


def _na_share(inp: CheckInput):
    from ego_assets.lib.captions.checks import check_na_share

    return check_na_share(inp.table("captions"))


def _world_is_metric(inp: CheckInput):
    from ego_assets.lib.motion.checks import check_world_is_metric

    return check_world_is_metric(inp.table("hand_world"))


SEGMENT_CHECKS = [
    CheckDef("segment_min_length", "segments", ERROR,
             "No segment shorter than the configured minimum.", _min_length),
    CheckDef("segments_no_overlap", "segments", ERROR,
             "Segments of the same hand never overlap.", _no_overlap),
    CheckDef("hand_world_metric", "segments", WARN,
             "The world frame of hand_world is metric (camera poses with a metric scale).", _world_is_metric),
]
CAPTION_CHECKS = [
    CheckDef("captions_cover_segments", "captions", ERROR,
             "Every segment has exactly one caption row.", _captions_cover),
    CheckDef("caption_na_share", "captions", WARN,
             "The share of N/A captions stays below a threshold.", _na_share),
]
CHECKS = SEGMENT_CHECKS + CAPTION_CHECKS


@per_video_asset(
    group=GROUP, code_version="2", deps=["hand_tracks", "camera_poses", "frames"], kinds={"scipy", "parquet"},
    checks=SEGMENT_CHECKS, config=SegmentsConfig,
    params=lambda step: {f: getattr(step.config, f) for f in SEGMENT_FIELDS},
    description="World-frame hand motion (hand tracks x camera poses, outliers replaced, smoothed; "
                "table hand_world) and atomic actions cut at local minima of the world-frame wrist "
                "speed, per hand, with quality flags (table segments).",
)
def segments(step: Step) -> PartitionOutput:
    from ego_assets.lib.motion.segment import segment_by_wrist_speed
    from ego_assets.lib.motion.world import MotionParams, build_hand_world, pose_scale
    from ego_assets.lib.plots import md_image, speed_curve

    frames = step.table("frames")
    stats: dict = {}
    poses = step.table("camera_poses")
    hw = build_hand_world(step.table("hand_tracks"), poses, frames, MotionParams(), progress=step.progress(),
                          stats=stats)
    hw, segs = segment_by_wrist_speed(hw, frames, params_of(step.config, SegmentParams))
    plot = speed_curve(hw, segs)
    with step.write() as w:
        w.write_table("hand_world", schemas.conform("hand_world", hw, step.pk))
        w.write_table("segments", schemas.conform("segments", segs, step.pk))
        with open(w.path("wrist_speed.png"), "wb") as f:
            f.write(plot)
    valid = segs.column("valid").to_pylist() if segs.num_rows else []
    meta = dict(hand_world_rows=hw.num_rows, world_scale=str(pose_scale(poses)), segments=segs.num_rows,
                valid_segments=sum(bool(v) for v in valid),
                speed_curve=dg.MetadataValue.md(md_image(plot, "wrist speed and cut points")))
    meta.update({k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))})
    return PartitionOutput(metadata=meta)


@per_video_asset(
    group=GROUP, code_version=backend_code_version("captions"),
    deps=["segments", "frames", "calibrations", "camera_poses"], kinds={"parquet"},
    checks=CAPTION_CHECKS, stage="captions", params=lambda step: {"backend": backend_name("captions")},
    description="One imperative instruction (+ short reasoning) per segment, or N/A; frames overlaid "
                "with the projected future wrist trajectory are kept as artifacts.",
)
def captions(step: Step) -> PartitionOutput:
    import os

    from ego_assets.lib.plots import md_image

    store, pk = step.store, step.pk
    backend = LazyBackend("captions", cache_dir=store.join("cache", "captions") if store.is_local else None)
    calib = calib_row(store, pk)
    with step.write() as w:
        out_dir = os.path.dirname(w.path("overlays/.keep"))
        res = backend().caption(
            step.table("segments"), step.table("hand_world"), step.table("frames"), proxy(store, pk), calib,
            step.table("camera_poses"), out_dir, progress=step.progress("segments"))
        table = _rebase_overlays(res.captions, out_dir, store.artifact_dir("captions", pk))
        w.write_table("captions", schemas.conform("captions", table, pk))
        meta = {k: v for k, v in res.stats.items() if isinstance(v, (int, float, str, bool))}
        rows = [r for r in res.captions.to_pylist() if r.get("overlay_uri")]
        first = next((r for r in rows if r["valid"]), rows[0] if rows else None)
        if first:
            with open(first["overlay_uri"], "rb") as f:
                img = md_image(f.read(), "overlay", "image/jpeg")
            meta["overlay"] = dg.MetadataValue.md(f"{img}\n\n**{first['hand']} hand, segment "
                                                  f"{first['segment_id']}:** {first['instruction']}")
        meta["examples"] = dg.MetadataValue.md("\n".join(
            f"- {r['hand']} #{r['segment_id']}: {r['instruction'] if r['valid'] else 'N/A'}"
            for r in res.captions.to_pylist()[:10]) or "no segments")
    return PartitionOutput(metadata=meta)


def _rebase_overlays(table, staging_dir: str, final_dir: str):
    """Overlay paths point into the staging folder while writing; store their committed location."""
    import pyarrow as pa

    if "overlay_uri" not in table.column_names:
        return table
    uris = [None if u is None else u.replace(staging_dir, final_dir + "/overlays")
            for u in table.column("overlay_uri").to_pylist()]
    i = table.column_names.index("overlay_uri")
    return table.set_column(i, "overlay_uri", pa.array(uris, pa.string()))
