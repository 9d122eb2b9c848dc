"""Actions and language group: segments (hand_world + segments tables) and captions (issue 5)."""

import dagster as dg

from ego_assets.defs.k8s import op_tags, pool
from ego_assets.defs.partitions import backfill_policy, videos
from ego_assets.defs.runner import PartitionOutput, check_specs, progress_logger, run_partitions
from ego_assets.defs.settings import EgoStorage
from ego_assets.defs.stages import LazyBackend, backend_code_version, calib_row, proxy
from ego_assets.lib import schemas
from ego_assets.lib.quality import ERROR, WARN, CheckDef

GROUP = "actions"


def _segments(store, pk):
    return store.read_table("segments", pk)


def _min_length(store, pk):
    from ego_assets.lib.motion.checks import check_min_length

    return check_min_length(_segments(store, pk), _params(store, pk)["min_length"])


def _no_overlap(store, pk):
    from ego_assets.lib.motion.checks import check_no_overlap

    return check_no_overlap(_segments(store, pk))


def _captions_cover(store, pk):
    from ego_assets.lib.captions.checks import check_captions_cover_segments

    return check_captions_cover_segments(_segments(store, pk), store.read_table("captions", pk))


def _na_share(store, pk):
    from ego_assets.lib.captions.checks import check_na_share

    return check_na_share(store.read_table("captions", pk))


def _world_is_metric(store, pk):
    from ego_assets.lib.motion.checks import check_world_is_metric

    return check_world_is_metric(store.read_table("hand_world", pk))


def _params(store, pk) -> dict:
    from ego_assets.lib.quality import _params as lineage_params
    from ego_assets.lib.motion.segment import SegmentParams

    return {**SegmentParams().__dict__, **lineage_params(store, "segments", pk)}


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


class SegmentsConfig(dg.Config):
    force: bool = False
    min_length: int = 8
    max_length: int = 300
    min_distance: int = 6
    speed_smooth_window: int = 15
    min_path_length_m: float = 0.04
    min_visibility: float = 0.7


class CaptionsConfig(dg.Config):
    force: bool = False


@dg.asset(
    partitions_def=videos, backfill_policy=backfill_policy, group_name=GROUP, code_version="2",
    deps=["hand_tracks", "camera_poses", "frames"], kinds={"scipy", "parquet"},
    op_tags=op_tags(None), pool=pool(None),
    check_specs=check_specs("segments", SEGMENT_CHECKS),
    description="World-frame hand motion (hand tracks x camera poses, outliers replaced, smoothed; "
                "table hand_world) and atomic actions cut at local minima of the world-frame wrist "
                "speed, per hand, with quality flags (table segments).",
)
def segments(context: dg.AssetExecutionContext, config: SegmentsConfig, ego: EgoStorage):
    from ego_assets.lib.motion.segment import SegmentParams, segment_by_wrist_speed
    from ego_assets.lib.motion.world import MotionParams, build_hand_world, pose_scale

    store = ego.store()
    params = SegmentParams(min_length=config.min_length, max_length=config.max_length,
                           min_distance=config.min_distance, speed_smooth_window=config.speed_smooth_window,
                           min_path_length_m=config.min_path_length_m, min_visibility=config.min_visibility)

    def body(pk: str) -> PartitionOutput:
        from ego_assets.lib.plots import md_image, speed_curve

        frames = store.read_table("frames", pk)
        stats: dict = {}
        poses = store.read_table("camera_poses", pk)
        hw = build_hand_world(store.read_table("hand_tracks", pk), poses, frames, MotionParams(),
                              progress=progress_logger(context, "segments", pk), stats=stats)
        hw, segs = segment_by_wrist_speed(hw, frames, params)
        plot = speed_curve(hw, segs)
        with store.write_partition("segments", pk) as w:
            w.write_table("hand_world", schemas.conform("hand_world", hw, pk))
            w.write_table("segments", schemas.conform("segments", segs, pk))
            with open(w.path("wrist_speed.png"), "wb") as f:
                f.write(plot)
        valid = segs.column("valid").to_pylist() if segs.num_rows else []
        meta = dict(hand_world_rows=hw.num_rows, world_scale=str(pose_scale(poses)), segments=segs.num_rows,
                    valid_segments=sum(bool(v) for v in valid),
                    speed_curve=dg.MetadataValue.md(md_image(plot, "wrist speed and cut points")))
        meta.update({k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))})
        return PartitionOutput(tables=["hand_world", "segments"], metadata=meta)

    return run_partitions(context, store, body,
                          params=dict(min_length=params.min_length, max_length=params.max_length,
                                      min_distance=params.min_distance,
                                      speed_smooth_window=params.speed_smooth_window,
                                      min_path_length_m=params.min_path_length_m,
                                      min_visibility=params.min_visibility),
                          checks=SEGMENT_CHECKS,
                          force=config.force)


@dg.asset(
    partitions_def=videos, backfill_policy=backfill_policy, group_name=GROUP,
    code_version=backend_code_version("captions"), deps=["segments", "frames", "calibrations", "camera_poses"],
    kinds={"parquet"},
    op_tags=op_tags("captions"), pool=pool("captions"),
    check_specs=check_specs("captions", CAPTION_CHECKS),
    description="One imperative instruction (+ short reasoning) per segment, or N/A; frames overlaid "
                "with the projected future wrist trajectory are kept as artifacts.",
)
def captions(context: dg.AssetExecutionContext, config: CaptionsConfig, ego: EgoStorage):
    from ego_assets.lib import backends

    store = ego.store()
    backend = LazyBackend("captions", cache_dir=store.join("cache", "captions") if store.is_local else None)

    def body(pk: str) -> PartitionOutput:
        import os

        from ego_assets.lib.plots import md_image

        calib = calib_row(store, pk)
        with store.write_partition("captions", pk) as w:
            out_dir = os.path.dirname(w.path("overlays/.keep"))
            res = backend().caption(
                store.read_table("segments", pk), store.read_table("hand_world", pk),
                store.read_table("frames", pk), proxy(store, pk), calib,
                store.read_table("camera_poses", pk), out_dir,
                progress=progress_logger(context, "captions", pk, "segments"))
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
        return PartitionOutput(tables=["captions"], metadata=meta)

    return run_partitions(context, store, body, params={"backend": backends.backend_class("captions").name},
                          checks=CAPTION_CHECKS, force=config.force)


def _rebase_overlays(table, staging_dir: str, final_dir: str):
    """Overlay paths point into the staging folder while writing; store their committed location."""
    import pyarrow as pa

    if "overlay_uri" not in table.column_names:
        return table
    uris = [None if u is None else u.replace(staging_dir, final_dir + "/overlays")
            for u in table.column("overlay_uri").to_pylist()]
    i = table.column_names.index("overlay_uri")
    return table.set_column(i, "overlay_uri", pa.array(uris, pa.string()))
