"""Ingest group: source_videos -> clips -> frames (docs/architecture.md §1)."""


import dagster as dg

from ego_assets.defs.k8s import op_tags, pool
from ego_assets.defs.partitions import backfill_policy, videos
from ego_assets.defs.runner import PartitionOutput, check_specs, progress_logger, run_partitions
from ego_assets.defs.settings import EgoStorage
from ego_assets.lib import clips as clips_lib
from ego_assets.lib import frames as frames_lib
from ego_assets.lib import schemas
from ego_assets.lib.probe import probe_video, sha256_file
from ego_assets.lib.quality import INGEST_CHECKS

GROUP = "ingest"


def checks_for(asset: str):
    return [c for c in INGEST_CHECKS if c.asset == asset]


class IngestConfig(dg.Config):
    force: bool = False  # recompute even when inputs, code and parameters are unchanged


class ClipsConfig(IngestConfig):
    window_s: float = 20.0
    overlap_s: float = 2.0


class FramesConfig(IngestConfig):
    rate_hz: float = 10.0
    long_side: int = 640


def local_source(store, rec: dict) -> str:
    """A local path for the partition's source video (object-store sources are cached locally)."""
    import fsspec

    fs, p = fsspec.core.url_to_fs(rec["uri"])
    if fs.protocol in ("file", "local") or "file" in (fs.protocol if isinstance(fs.protocol, tuple) else ()):
        if not fs.exists(p):
            raise FileNotFoundError(f"{rec['uri']}: the source file no longer exists")
        return p
    import os
    import tempfile

    local = os.path.join(tempfile.gettempdir(), "ego_assets_sources", rec["partition_key"] + "-" + rec["name"])
    if not os.path.exists(local):
        os.makedirs(os.path.dirname(local), exist_ok=True)
        fs.get_file(p, local + ".part")
        os.replace(local + ".part", local)
    return local


@dg.asset(
    partitions_def=videos, backfill_policy=backfill_policy, group_name=GROUP, code_version="1",
    op_tags=op_tags(None), pool=pool(None),
    kinds={"pyav", "parquet"}, check_specs=check_specs("source_videos", checks_for("source_videos")),
    description="Probe of each source video: duration, fps, size, codec, rotation, content hash. "
                "A file that is not a decodable video fails its own partition with the reason.",
)
def source_videos(context: dg.AssetExecutionContext, config: IngestConfig, ego: EgoStorage):
    store = ego.store()

    def body(pk: str) -> PartitionOutput:
        rec = store.video_record(pk)
        path = local_source(store, rec)
        row, _ = probe_video(path)
        import fsspec

        fs, p = fsspec.core.url_to_fs(rec["uri"])
        row.update(source=rec["source"], uri=rec["uri"], name=rec["name"], sha256=sha256_file(fs, p))
        with store.write_partition("source_videos", pk) as w:
            w.write_table("videos", schemas.conform("videos", {k: [v] for k, v in row.items()}, pk))
        return PartitionOutput(tables=["videos"], metadata=dict(
            file=rec["name"], source=rec["source"], duration_s=round(row["duration_s"], 3),
            fps=round(row["fps"], 3), n_frames=row["n_frames"], size=f"{row['width']}x{row['height']}",
            codec=row["codec"], rotation_deg=row["rotation_deg"], vfr=row["is_vfr"],
            size_mb=round(row["size_bytes"] / 1e6, 2)))

    return run_partitions(context, store, body, params={}, checks=checks_for("source_videos"),
                          force=config.force)


@dg.asset(
    partitions_def=videos, backfill_policy=backfill_policy, group_name=GROUP, code_version="1",
    op_tags=op_tags(None), pool=pool(None),
    deps=[source_videos], kinds={"pyav", "parquet"}, check_specs=check_specs("clips", checks_for("clips")),
    description="Overlapping windows (default 20 s, 2 s overlap) covering the whole video, remuxed "
                "from the source without re-encoding; exact start/end times in the clips table.",
)
def clips(context: dg.AssetExecutionContext, config: ClipsConfig, ego: EgoStorage):
    store = ego.store()
    p = clips_lib.ClipParams(config.window_s, config.overlap_s)

    def body(pk: str) -> PartitionOutput:
        rec = store.video_record(pk)
        path = local_source(store, rec)
        v = store.read_table("videos", pk).to_pylist()[0]
        from ego_assets.lib.probe import index_packets

        idx = index_packets(path)
        windows = clips_lib.plan_windows(v["duration_s"], p)
        with store.write_partition("clips", pk) as w:
            ext = clips_lib.clip_extension(path)  # mp4, or mov/mkv for codecs MP4 cannot hold
            names = [f"clip_{i:04d}.{ext}" for i in range(len(windows))]
            rows = clips_lib.remux_clips(path, idx, windows, [w.path(n) for n in names])
            for r, n in zip(rows, names):
                r["uri"] = store.url(store.artifact("clips", pk, n))
            w.write_table("clips", schemas.conform(
                "clips", {k: [r[k] for r in rows] for k in rows[0]}, pk))
        return PartitionOutput(tables=["clips"], metadata=dict(
            n_clips=len(rows), window_s=p.window_s, overlap_s=p.overlap_s,
            duration_s=round(v["duration_s"], 3)))

    return run_partitions(context, store, body, params=dict(window_s=p.window_s, overlap_s=p.overlap_s),
                          checks=checks_for("clips"), force=config.force)


@dg.asset(
    partitions_def=videos, backfill_policy=backfill_policy, group_name=GROUP, code_version="1",
    op_tags=op_tags(None), pool=pool(None),
    deps=[source_videos], kinds={"pyav", "parquet"}, check_specs=check_specs("frames", checks_for("frames")),
    description="Frames sampled at the dataset rate (default 10 fps) as a compact upright proxy video "
                "(long side 640 px) + per-frame time, keyframe flag, blur, brightness, motion.",
)
def frames(context: dg.AssetExecutionContext, config: FramesConfig, ego: EgoStorage):
    store = ego.store()
    p = frames_lib.FrameParams(rate_hz=config.rate_hz, long_side=config.long_side)

    def body(pk: str) -> PartitionOutput:
        rec = store.video_record(pk)
        path = local_source(store, rec)
        v = store.read_table("videos", pk).to_pylist()[0]
        with store.write_partition("frames", pk) as w:
            cols, stats = frames_lib.sample_frames(
                path, w.path("proxy.mp4"), v["width"], v["height"], v["rotation_deg"], p,
                progress=progress_logger(context, "frames", pk, "source frames"),
                n_source=v["n_frames"])
            w.write_table("frames", schemas.conform("frames", cols, pk))
        import numpy as np

        return PartitionOutput(tables=["frames"], metadata=dict(
            n_frames=stats["n_sampled"], rate_hz=p.rate_hz,
            proxy=f"{stats['proxy_width']}x{stats['proxy_height']}",
            decode_fps=round(stats["decode_fps"], 1),
            mean_blur=round(float(np.mean(cols["blur"])), 1),
            mean_brightness=round(float(np.mean(cols["brightness"])), 3),
            mean_motion=round(float(np.mean(cols["motion"])), 4)))

    return run_partitions(context, store, body, params=dict(rate_hz=p.rate_hz, long_side=p.long_side),
                          checks=checks_for("frames"), force=config.force)
CHECKS = INGEST_CHECKS
