import dagster as dg

# One partition per source video; keys are added by the discovery sensor and by `ego-assets run`.
videos = dg.DynamicPartitionsDefinition(name="videos")

# A run carries up to this many videos: a step loads its model once for all of them (DESIGN §7).
MAX_PARTITIONS_PER_RUN = 16
backfill_policy = dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_PARTITIONS_PER_RUN)
