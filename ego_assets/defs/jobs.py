import dagster as dg

# Every per-video asset (all of them are partitioned by `videos`), in one partitioned job.
# The groups over all videos (everything else is per video).
ALL_VIDEO_GROUPS = ("dataset", "catalog")

per_video_job = dg.define_asset_job(
    "per_video_job", selection=dg.AssetSelection.all() - dg.AssetSelection.groups(*ALL_VIDEO_GROUPS),
    description="Every per-video asset for the partitions of the run.")

# The unpartitioned dataset over every video (built after the per-video runs, or by automation).
dataset_job = dg.define_asset_job(
    "dataset_job", selection=dg.AssetSelection.groups(*ALL_VIDEO_GROUPS),
    description="Assemble the LeRobot dataset from every video whose inputs are materialized, and "
                "refresh the catalog's views.")

# Running by default: a new source's videos reach the dataset with no other step (the sensor requests a
# `dataset_job`-like run of the dataset group when DATASET_CONDITION holds).
dataset_automation = dg.AutomationConditionSensorDefinition(
    "dataset_automation", target=dg.AssetSelection.groups(*ALL_VIDEO_GROUPS),
    default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
    description="Re-assembles the LeRobot dataset (and refreshes the catalog's views) after its input "
                "videos changed and their runs ended.")
