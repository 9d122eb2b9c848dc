"""Hands group: hand_tracks (docs/architecture.md §1; issue 3)."""

import dagster as dg

from ego_assets.defs.k8s import op_tags, pool
from ego_assets.defs.partitions import backfill_policy, videos
from ego_assets.defs.runner import PartitionOutput, check_specs, progress_logger, run_partitions
from ego_assets.defs.settings import EgoStorage
from ego_assets.defs.stages import LazyBackend, backend_code_version, calib_row, proxy
from ego_assets.lib import schemas
from ego_assets.lib.quality import ERROR, WARN, CheckDef

GROUP = "hands"
STAGE = "hands"


def _tracks(store, pk):
    return store.read_table("hand_tracks", pk)


def _n_frames(store, pk):
    return store.read_table("frames", pk, ["frame_index"]).num_rows


def _detection_rate(store, pk):
    from ego_assets.lib.hands.checks import check_detection_rate

    return check_detection_rate(_tracks(store, pk), _n_frames(store, pk))


def _hands_found(store, pk):
    from ego_assets.lib.hands.checks import check_hands_found

    v = store.read_table("videos", pk, ["duration_s"]).to_pylist()[0]
    return check_hands_found(_tracks(store, pk), _n_frames(store, pk), v["duration_s"])


def _joints(store, pk):
    from ego_assets.lib.hands.checks import check_joints_plausible

    return check_joints_plausible(_tracks(store, pk))


def _handedness(store, pk):
    from ego_assets.lib.hands.checks import check_handedness_consistent

    return check_handedness_consistent(_tracks(store, pk))


def _handedness_cues(store, pk):
    from ego_assets.lib.hands.checks import check_handedness_cues_agree

    return check_handedness_cues_agree(store.read_table("hand_detections", pk))


CHECKS = [
    CheckDef("hand_detection_rate", "hand_tracks", WARN,
             "Hands found in at least half of the frames.", _detection_rate),
    CheckDef("hands_found", "hand_tracks", ERROR,
             "At least one hand in a video long enough (>= 3 s) to expect hands.", _hands_found),
    CheckDef("hand_joints_plausible", "hand_tracks", ERROR,
             "Joints finite and bone lengths within human range.", _joints),
    CheckDef("handedness_consistent", "hand_tracks", ERROR,
             "Left and right never both assigned to one track.", _handedness),
    CheckDef("handedness_cues_agree", "hand_tracks", ERROR,
             "The network's left/right and the image cues (thumb side, forearm side) agree per track: "
             "a video whose hands may be swapped is stopped here.", _handedness_cues),
]


class HandsConfig(dg.Config):
    force: bool = False


def _preview(proxy_path: str, tracks) -> str | None:
    """A frame with the most hands, skeletons drawn, as a Markdown image."""
    import numpy as np

    from ego_assets.lib.hands.preview import draw_skeletons
    from ego_assets.lib.plots import md_image, png
    from ego_assets.lib.video import read_frames

    if tracks.num_rows == 0:
        return None
    fi = tracks.column("frame_index").to_numpy()
    counts = np.bincount(fi)
    best = int(np.flatnonzero(counts == counts.max())[len(np.flatnonzero(counts == counts.max())) // 2])
    img = read_frames(proxy_path, [best])[best]
    rows = tracks.filter(tracks.column("frame_index").to_numpy() == best)
    return md_image(png(draw_skeletons(img, rows)), f"hands at frame {best}")


@dg.asset(
    partitions_def=videos, backfill_policy=backfill_policy, group_name=GROUP,
    code_version=backend_code_version(STAGE), deps=["frames", "calibrations"],
    op_tags=op_tags(STAGE), pool=pool(STAGE),
    kinds={"mediapipe", "parquet"}, check_specs=check_specs("hand_tracks", CHECKS),
    description="Per frame and hand, in the camera frame: 2D keypoints, 21 metric 3D joints, wrist "
                "rotation, finger pose (MANO order), handedness with confidence. Table hand_tracks "
                "(cleaned: outliers rejected, short gaps filled) and hand_detections (raw).",
)
def hand_tracks(context: dg.AssetExecutionContext, config: HandsConfig, ego: EgoStorage):
    from ego_assets.lib import backends

    store = ego.store()
    backend = LazyBackend(STAGE)

    def body(pk: str) -> PartitionOutput:
        p = proxy(store, pk)
        frames = store.read_table("frames", pk, ["frame_index", "t_s"])
        res = backend().track(p, frames, calib_row(store, pk),
                              progress=progress_logger(context, "hand_tracks", pk))
        with store.write_partition("hand_tracks", pk) as w:
            w.write_table("hand_tracks", schemas.conform("hand_tracks", res.tracks, pk))
            w.write_table("hand_detections", schemas.conform("hand_detections", res.detections, pk))
        meta = {k: v for k, v in res.stats.items() if isinstance(v, (int, float, str, bool))}
        meta["rows"] = res.tracks.num_rows
        prev = _preview(p, res.tracks)
        if prev:
            meta["preview"] = dg.MetadataValue.md(prev)
        return PartitionOutput(tables=["hand_tracks", "hand_detections"], metadata=meta)

    bcls = backends.backend_class(STAGE)
    return run_partitions(context, store, body, params={"backend": bcls.name}, checks=CHECKS, force=config.force)
