"""Hands group: hand_tracks (docs/architecture.md §1; issue 3)."""

import dagster as dg

from ego_assets.defs.per_video import Step, per_video_asset
from ego_assets.defs.runner import PartitionOutput
from ego_assets.defs.stages import LazyBackend, backend_code_version, backend_name, calib_row, proxy
from ego_assets.lib import schemas
from ego_assets.lib.quality import ERROR, WARN, CheckDef, CheckInput

GROUP = "hands"
STAGE = "hands"


def _n_frames(inp: CheckInput) -> int:
    return inp.table("frames", ["frame_index"]).num_rows


def _detection_rate(inp: CheckInput):
    from ego_assets.lib.hands.checks import check_detection_rate

    return check_detection_rate(inp.table("hand_tracks"), _n_frames(inp))


def _hands_found(inp: CheckInput):
    from ego_assets.lib.hands.checks import check_hands_found

    v = inp.table("videos", ["duration_s"]).to_pylist()[0]
    return check_hands_found(inp.table("hand_tracks"), _n_frames(inp), v["duration_s"])


def _joints(inp: CheckInput):
    from ego_assets.lib.hands.checks import check_joints_plausible

    return check_joints_plausible(inp.table("hand_tracks"))


def _handedness(inp: CheckInput):
    from ego_assets.lib.hands.checks import check_handedness_consistent

    return check_handedness_consistent(inp.table("hand_tracks"))


def _handedness_cues(inp: CheckInput):
    from ego_assets.lib.hands.checks import check_handedness_cues_agree

    return check_handedness_cues_agree(inp.table("hand_detections"))


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


_BACKEND = LazyBackend(STAGE)


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


@per_video_asset(
    group=GROUP, code_version=backend_code_version(STAGE), deps=["frames", "calibrations"],
    kinds={"mediapipe", "parquet"}, checks=CHECKS, stage=STAGE,
    params=lambda step: {"backend": backend_name(STAGE)},
    description="Per frame and hand, in the camera frame: 2D keypoints, 21 metric 3D joints, wrist "
                "rotation, finger pose (MANO order), handedness with confidence. Table hand_tracks "
                "(cleaned: outliers rejected, short gaps filled) and hand_detections (raw).",
)
def hand_tracks(step: Step) -> PartitionOutput:
    p = proxy(step.store, step.pk)
    res = _BACKEND().track(p, step.table("frames", ["frame_index", "t_s"]), calib_row(step.store, step.pk),
                           progress=step.progress())
    with step.write() as w:
        w.write_table("hand_tracks", schemas.conform("hand_tracks", res.tracks, step.pk))
        w.write_table("hand_detections", schemas.conform("hand_detections", res.detections, step.pk))
    meta = {k: v for k, v in res.stats.items() if isinstance(v, (int, float, str, bool))}
    meta["rows"] = res.tracks.num_rows
    prev = _preview(p, res.tracks)
    if prev:
        meta["preview"] = dg.MetadataValue.md(prev)
    return PartitionOutput(metadata=meta)
