"""Discovery: every source's new videos become partitions and are requested, one run per video (a bad
video fails alone; see ego_assets.defs.partitions)."""


import json

import dagster as dg

from ego_assets.defs.jobs import per_video_job
from ego_assets.defs.partitions import videos
from ego_assets.defs.settings import EgoStorage
from ego_assets.lib.sources import discover, hints_digest, load_sources

MAX_NEW_PER_TICK = 64


@dg.sensor(name="discover_videos", target=per_video_job, minimum_interval_seconds=15,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Registers new videos of every source in the sources file as partitions and "
                       f"requests one run per video (at most {MAX_NEW_PER_TICK} new videos per tick).")
def discover_videos(context: dg.SensorEvaluationContext, ego: EgoStorage):
    store = ego.store()
    path = ego.sources_path()
    sources = load_sources(path)
    if not sources:
        return dg.SkipReason(f"no sources in {path}")
    cursor = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(videos.name))
    # the storage home is never a source (its clips, proxies and dataset videos are our own output)
    new, seen, errors = discover(sources, cursor.get("seen", {}), known, MAX_NEW_PER_TICK,
                                 exclude=[store.url(store.root)])
    for src, err in errors.items():
        context.log.warning(f"source {src}: {err}")
    if not new:
        context.update_cursor(json.dumps({"seen": seen}))
        return dg.SkipReason(f"no new videos in {len(sources)} source(s)")
    for d in new:
        if not store.register_video(d.partition_key, d.record()) and d.hints_changed:
            store.update_video(d.partition_key, hints=d.hints)  # calibrations' params: it reruns
    keys = [d.partition_key for d in new]
    # a rerun for changed camera hints needs a run key of its own (a used run key is not run again)
    rehint = {d.partition_key: hints_digest(d.hints) for d in new if d.hints_changed}
    context.log.info(f"registering {len(keys)} new video(s): {', '.join(keys[:10])}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=k, partition_key=k) for k in keys if k not in rehint]
        + [dg.RunRequest(run_key=f"{k}@hints-{h}", partition_key=k) for k, h in rehint.items()],
        dynamic_partitions_requests=[videos.build_add_request([k for k in keys if k not in rehint])],
        cursor=json.dumps({"seen": seen}),
    )
