"""Ingest group: source_videos -> clips -> frames (docs/architecture.md §1)."""


from ego_assets.defs.per_video import Step, config_from, params_of, per_video_asset
from ego_assets.defs.runner import PartitionOutput
from ego_assets.lib import clips as clips_lib
from ego_assets.lib import frames as frames_lib
from ego_assets.lib import schemas, settings
from ego_assets.lib.keys import file_sha256
from ego_assets.lib.probe import probe_video
from ego_assets.lib.quality import INGEST_CHECKS

GROUP = "ingest"


def checks_for(asset: str):
    return [c for c in INGEST_CHECKS if c.asset == asset]


ClipsConfig = config_from(clips_lib.ClipParams)
# one rate: the frames are sampled at the dataset's fps (EGO_ASSETS_DATASET_FPS) unless a run says otherwise
FramesConfig = config_from(frames_lib.FrameParams, ("rate_hz", "long_side"),
                           defaults={"rate_hz": float(settings.get("DATASET_FPS"))})


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


@per_video_asset(
    group=GROUP, code_version="1", kinds={"pyav", "parquet"}, checks=checks_for("source_videos"),
    description="Probe of each source video: duration, fps, size, codec, rotation, content hash. "
                "A file that is not a decodable video fails its own partition with the reason.",
)
def source_videos(step: Step) -> PartitionOutput:
    import fsspec

    rec = step.record()
    row, _ = probe_video(local_source(step.store, rec))
    fs, p = fsspec.core.url_to_fs(rec["uri"])
    row.update(source=rec["source"], uri=rec["uri"], name=rec["name"], sha256=file_sha256(fs, p))
    with step.write() as w:
        w.write_table("videos", schemas.conform("videos", {k: [v] for k, v in row.items()}, step.pk))
    return PartitionOutput(metadata=dict(
        file=rec["name"], source=rec["source"], duration_s=round(row["duration_s"], 3),
        fps=round(row["fps"], 3), n_frames=row["n_frames"], size=f"{row['width']}x{row['height']}",
        codec=row["codec"], rotation_deg=row["rotation_deg"], vfr=row["is_vfr"],
        size_mb=round(row["size_bytes"] / 1e6, 2)))


@per_video_asset(
    group=GROUP, code_version="1", deps=[source_videos], kinds={"pyav", "parquet"},
    checks=checks_for("clips"), config=ClipsConfig,
    params=lambda step: dict(window_s=step.config.window_s, overlap_s=step.config.overlap_s),
    description="Overlapping windows (default 20 s, 2 s overlap) covering the whole video, remuxed "
                "from the source without re-encoding; exact start/end times in the clips table.",
)
def clips(step: Step) -> PartitionOutput:
    from ego_assets.lib.probe import index_packets

    p = params_of(step.config, clips_lib.ClipParams)
    path = local_source(step.store, step.record())
    v = step.video()
    idx = index_packets(path)
    windows = clips_lib.plan_windows(v["duration_s"], p)
    with step.write() as w:
        ext = clips_lib.clip_extension(path)  # mp4, or mov/mkv for codecs MP4 cannot hold
        names = [f"clip_{i:04d}.{ext}" for i in range(len(windows))]
        rows = clips_lib.remux_clips(path, idx, windows, [w.path(n) for n in names])
        for r, n in zip(rows, names):
            r["uri"] = step.store.url(step.store.artifact("clips", step.pk, n))
        w.write_table("clips", schemas.conform("clips", {k: [r[k] for r in rows] for k in rows[0]}, step.pk))
    return PartitionOutput(metadata=dict(
        n_clips=len(rows), window_s=p.window_s, overlap_s=p.overlap_s, duration_s=round(v["duration_s"], 3)))


@per_video_asset(
    group=GROUP, code_version="1", deps=[source_videos], kinds={"pyav", "parquet"},
    checks=checks_for("frames"), config=FramesConfig,
    params=lambda step: dict(rate_hz=step.config.rate_hz, long_side=step.config.long_side),
    description="Frames sampled at the dataset rate (default 10 fps) as a compact upright proxy video "
                "(long side 640 px) + per-frame time, keyframe flag, blur, brightness, motion.",
)
def frames(step: Step) -> PartitionOutput:
    import numpy as np

    p = params_of(step.config, frames_lib.FrameParams)
    v = step.video()
    with step.write() as w:
        cols, stats = frames_lib.sample_frames(
            local_source(step.store, step.record()), w.path("proxy.mp4"), v["width"], v["height"],
            v["rotation_deg"], p, progress=step.progress("source frames"), n_source=v["n_frames"])
        w.write_table("frames", schemas.conform("frames", cols, step.pk))
    return PartitionOutput(metadata=dict(
        n_frames=stats["n_sampled"], rate_hz=p.rate_hz,
        proxy=f"{stats['proxy_width']}x{stats['proxy_height']}",
        decode_fps=round(stats["decode_fps"], 1),
        mean_blur=round(float(np.mean(cols["blur"])), 1),
        mean_brightness=round(float(np.mean(cols["brightness"])), 3),
        mean_motion=round(float(np.mean(cols["motion"])), 4)))


CHECKS = INGEST_CHECKS
