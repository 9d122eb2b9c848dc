"""OpenCV on one thread in the per-video stages (lib/opencv_threads): the same results as OpenCV's own
thread pool, and the caller's thread count back afterwards."""

import contextlib

import cv2
import numpy as np
import pyarrow as pa
import pytest

import ego_assets.lib.opencv_threads as ot
from ego_assets.lib.geometry import calibration as cal
from ego_assets.lib.geometry import odometry, render
from ego_assets_tests.lib.geometry.test_odometry import _calib


@pytest.fixture
def pool_of_four():
    old = cv2.getNumThreads()
    cv2.setNumThreads(4)
    yield
    cv2.setNumThreads(old)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    p = str(tmp_path_factory.mktemp("threads") / "head.mp4")
    seq, _ = render.render_sequence(p, n_frames=36, kind="head")
    return p, seq


def test_the_block_runs_on_n_threads_and_the_count_comes_back(pool_of_four):
    with ot.opencv_threads(1):
        assert cv2.getNumThreads() == 1
        with ot.opencv_threads(2):
            assert cv2.getNumThreads() == 2
        assert cv2.getNumThreads() == 1
    assert cv2.getNumThreads() == 4
    with pytest.raises(RuntimeError), ot.opencv_threads(1):
        raise RuntimeError("boom")
    assert cv2.getNumThreads() == 4


def _poses(res):
    return np.column_stack([res.poses.column(c).to_numpy(zero_copy_only=False)
                            for c in ("tx", "ty", "tz", "qx", "qy", "qz", "qw")])


def test_odometry_on_one_thread_equals_opencvs_pool(head, pool_of_four, monkeypatch):
    p, seq = head
    clips = pa.table(dict(clip_index=[0, 1], start_s=[0.0, 1.6], end_s=[2.4, 3.6]))  # two trackers overlap
    args = (p, seq.frames_table(), clips, _calib(seq), seq.hand_tracks())
    threads = []
    one = odometry.estimate(*args, progress=lambda d, n: threads.append(cv2.getNumThreads()))
    assert threads and set(threads) == {1} and cv2.getNumThreads() == 4
    # the reference: OpenCV's own pool of 4 threads all along
    monkeypatch.setattr(ot, "opencv_threads", lambda n=1: contextlib.nullcontext())
    threads.clear()
    pool = odometry.estimate(*args, progress=lambda d, n: threads.append(cv2.getNumThreads()))
    assert set(threads) == {4}
    assert one.stats["tracked_fraction"] == 1.0 and one.stats["n_clips"] == 2
    np.testing.assert_array_equal(_poses(one), _poses(pool))
    assert one.stats["n_keyframes"] == pool.stats["n_keyframes"]


def test_camera_motion_on_one_thread_equals_opencvs_pool(head, pool_of_four, monkeypatch):
    p, _ = head
    threads = []
    one = cal.classify_camera_motion(p, 36, n_pairs=10, progress=lambda d, n: threads.append(cv2.getNumThreads()))
    assert threads and set(threads) == {1} and cv2.getNumThreads() == 4
    monkeypatch.setattr(ot, "opencv_threads", lambda n=1: contextlib.nullcontext())
    pool = cal.classify_camera_motion(p, 36, n_pairs=10)
    assert one.label == pool.label == "moving" and len(one.pair_values) >= 5
    assert one.pair_values == pool.pair_values and one.value == pool.value


def test_a_step_with_the_machine_uses_its_cores(head, pool_of_four):
    """Inside ``parallel.using(n)`` (a video running alone) OpenCV gets n threads; the result is the same."""
    from ego_assets.lib import parallel

    p, _ = head
    threads = []
    with parallel.using(3):
        three = cal.classify_camera_motion(p, 36, n_pairs=10, progress=lambda d, n: threads.append(cv2.getNumThreads()))
    assert threads and set(threads) == {3} and cv2.getNumThreads() == 4
    one = cal.classify_camera_motion(p, 36, n_pairs=10)
    assert one.pair_values == three.pair_values and one.value == three.value
