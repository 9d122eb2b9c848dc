"""OpenCV's thread count for a block of work (``opencv_threads``)."""

from __future__ import annotations

import contextlib
import threading

_lock = threading.Lock()


@contextlib.contextmanager
def opencv_threads(n: int = 1):
    """Run the block with OpenCV's parallel loops on ``n`` threads, then restore the previous count.

    The per-video stages that call OpenCV per frame (odometry, camera-motion classification, the episodes'
    undistortion) run one video per worker, one worker per core: their parallelism is the videos. OpenCV's
    own pool (one thread per core) splits each small call (KLT on a few hundred points, a corner search on
    a 640 px frame) and its threads spin while they wait: the same result for more CPU, which the other
    worker's video needed (odometry on real footage: 4-22 % more CPU than one thread, depending on the
    machine's load, about 10 % with two workers on two cores; benchmarks/stage_costs.py). The results do
    not depend on the thread count (ego_assets_tests/lib/test_opencv_threads.py compares them)."""
    import cv2

    with _lock:
        old = cv2.getNumThreads()
        cv2.setNumThreads(n)
    try:
        yield
    finally:
        with _lock:
            cv2.setNumThreads(old)
