"""Backends of the ``camera_poses`` stage (registry: ``ego_assets.lib.backends``, stage "poses").

Interface: ``estimate(proxy_path, frames, clips, calib, hand_tracks, progress=None, *, scene_depth=None)
-> odometry.PoseResult`` with ``.poses`` (CAMERA_POSES columns without partition_key, one row per frame of
``frames``, camera-to-world, world = camera of the first sampled frame; untracked frames have
``tracked=false`` and NaN poses) and ``.stats`` (dict).

A GPU method (MegaSAM, DROID-SLAM, ...) plugs in as another class with the same method and
``resources = Resources(gpu=1, ...)``; ``odometry.pose_table`` and ``stitch`` are there to reuse.
"""

from __future__ import annotations

from typing import Callable

import pyarrow as pa

from ego_assets.lib.backends import Backend, Resources, register
from ego_assets.lib.geometry import odometry


@register("poses")
class OpenCVOdometry(Backend):
    name = odometry.METHOD
    version = "1"
    resources = Resources(cpu=1, memory_gib=1.5)
    description = ("Monocular visual odometry (KLT, essential matrix, PnP, sliding-window bundle "
                   "adjustment) with hands masked out, clip by clip, Sim(3)-stitched; metric scale from "
                   "DepthPro depth or resting hands when available.")

    def __init__(self, params: odometry.VOParams | None = None):
        self.params = params or odometry.VOParams()

    def estimate(self, proxy_path: str, frames: pa.Table, clips: pa.Table | None, calib: dict,
                 hand_tracks: pa.Table | None, progress: Callable[[int, int], None] | None = None, *,
                 scene_depth: pa.Table | None = None) -> odometry.PoseResult:
        return odometry.estimate(proxy_path, frames, clips, calib, hand_tracks, progress,
                                 scene_depth=scene_depth, params=self.params)
