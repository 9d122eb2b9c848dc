import dagster as dg

from ego_assets.defs.partitions import videos

# Every per-video asset (all of them are partitioned by `videos`), in one partitioned job.
per_video_job = dg.define_asset_job(
    "per_video_job", selection=dg.AssetSelection.all() - dg.AssetSelection.groups("dataset"),
    partitions_def=videos,
    description="Every per-video asset for the partitions of the run.")
