import dagster as dg

# One partition per source video; keys are added by the discovery sensor and by `ego-assets run`.
videos = dg.DynamicPartitionsDefinition(name="videos")

# A run carries one video, whoever requests it (the sensor, a UI backfill, the CLI): a video that fails
# or is blocked fails its own run, visibly, and never holds back another video (docs/architecture.md §8). Models are
# loaded once per process (ego_assets.defs.stages), so the CLI loads them once for all its videos.
VIDEOS_PER_RUN = 1
backfill_policy = dg.BackfillPolicy.multi_run(max_partitions_per_run=VIDEOS_PER_RUN)
