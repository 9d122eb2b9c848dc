"""OpenCV's thread count for a block of work (``opencv_threads``)."""

from __future__ import annotations

import contextlib
import threading

_lock = threading.Lock()


@contextlib.contextmanager
def opencv_threads(n: int | None = None):
    """Run the block with OpenCV's parallel loops on ``n`` threads (default: the cores the current step
    may use, ``lib.parallel.cores()``: one in a backfill of several videos, outside a step too), then
    restore the previous count.

    The per-video stages that call OpenCV per frame (odometry, camera-motion classification, the episodes'
    undistortion) run one video per worker, one worker per core: their parallelism is the videos. OpenCV's
    own pool (one thread per core) splits each small call (KLT on a few hundred points, a corner search on
    a 640 px frame) and its threads spin while they wait: the same result for more CPU, which the other
    worker's video needed (odometry on real footage: 4-22 % more CPU than one thread, depending on the
    machine's load, about 10 % with two workers on two cores; benchmarks/stage_costs.py). The results do
    not depend on the thread count (ego_assets_tests/lib/test_opencv_threads.py compares them). A video
    running alone has every core (``lib.parallel``): OpenCV's pool then shortens its wall time (~10 % for
    camera_poses)."""
    import cv2

    from ego_assets.lib import parallel

    n = parallel.cores() if n is None else n
    with _lock:
        old = cv2.getNumThreads()
        cv2.setNumThreads(n)
    try:
        yield
    finally:
        with _lock:
            cv2.setNumThreads(old)
