"""The mediapipe backend on several cores (``lib.parallel``): a video's frames in contiguous chunks run at
once, each with its own landmarkers started a few frames early, against the one-landmarker pass on real
footage."""

from __future__ import annotations

import numpy as np
import pytest

from ego_assets.lib import parallel
from ego_assets.lib.hands.backends import MediaPipeHands
from ego_assets.lib.video import clear_decoded, is_cached, iter_frames
from ego_assets_tests.helpers import synth


@pytest.fixture(scope="module")
def pour(kit, tmp_path_factory):
    """8 s of the real clip (both hands, pouring) as a 10 fps, 640-px proxy."""
    if not kit.POUR_CLIP.is_file():
        pytest.skip(f"real clip {kit.POUR_CLIP} not found (shared test data is outside the repo)")
    images, times = synth.sample_frames(kit.POUR_CLIP, 10.0, 640, start_s=1.0, dur_s=8.0)
    p = tmp_path_factory.mktemp("hand_chunks") / "proxy.mp4"
    kit.write_proxy(p, images, times)
    return p, kit.frames_table(times)


class _Chunked(MediaPipeHands):
    MIN_CHUNK_S = 3.0  # 8 s on 2 cores: chunks 0-39 and 40-79 (frames at 10 Hz)


@pytest.fixture(scope="module")
def runs(real_model, pour, kit):
    proxy, frames = pour
    calib = kit.pinhole_calib(hfov_deg=65.0)
    b = _Chunked(model_path=str(real_model))
    clear_decoded()
    one = b.detect(str(proxy), frames, calib)  # decodes the proxy, which is then kept
    assert is_cached(str(proxy))
    with parallel.using(2):
        two = b.detect(str(proxy), frames, calib)
    clear_decoded()
    with parallel.using(2):  # frames not kept decoded: the second chunk decodes from the start itself
        cold = b.detect(str(proxy), frames, calib)
    return one, two, cold


def _per_frame(det, n):
    return {f: det.kp2d[det.frame_index == f] for f in range(n)}


def _matched_px(h1: np.ndarray, h2: np.ndarray) -> float:
    """Mean keypoint distance (px) between two frames' hands (k, 21, 2), hands paired the closest way."""
    import itertools

    return min(np.mean([np.linalg.norm(h1[i] - h2[j], axis=-1).mean() for i, j in enumerate(perm)])
               for perm in itertools.permutations(range(len(h2))))


def test_chunks_run_with_cores_from_kept_or_decoded_frames(runs):
    one, two, cold = runs
    assert one.timing["chunks"] == 1 and two.timing["chunks"] == 2 and cold.timing["chunks"] == 2
    np.testing.assert_array_equal(cold.frame_index, two.frame_index)
    np.testing.assert_array_equal(cold.kp2d, two.kp2d)


def test_chunked_detections_are_the_unsplit_ones(runs):
    one, two, _ = runs
    n = one.n_frames
    assert n == 80 and two.n_frames == 80
    a, b = _per_frame(one, n), _per_frame(two, n)
    # the first chunk is the unsplit pass itself, bit for bit
    for f in range(40):
        np.testing.assert_array_equal(a[f], b[f])
    # the second chunk's landmarkers started 2 s early: the same hands on nearly every frame (a hand
    # at the detection threshold, lost on one frame by one pass and on another by the other), keypoints
    # within a pixel where the tracking states joined. Tracking is history-dependent: where one pass
    # loses a hand and picks it up again from the palm detector (here, a hand moving behind the jug),
    # the two can disagree by ~20 px for about a second, then join again (measured on this clip: frames
    # 52-66, then < 1 px to the end); the unsplit pass is no more right than the chunked one there.
    same_count = sum(len(a[f]) == len(b[f]) for f in range(40, n))
    assert same_count >= 36, same_count
    d = np.array([_matched_px(a[f], b[f]) if len(a[f]) == len(b[f]) and len(a[f]) else np.nan
                  for f in range(40, n)])
    ok = d[np.isfinite(d)]
    assert len(ok) >= 30 and np.median(ok) < 1.5 and (ok < 5.0).mean() >= 0.6, np.round(d, 1).tolist()
    assert np.nanmax(d[-10:]) < 2.0, np.round(d, 1).tolist()  # joined again by the chunk's end
    # both hands seen on most frames, in both runs (the clip shows both)
    counts = np.bincount(two.frame_index, minlength=n)
    assert (counts >= 2).mean() > 0.7


def test_a_short_proxy_raises_in_any_chunk(real_model, pour, kit, tmp_path):
    """A frames table longer than the proxy: the error names the proxy, as unsplit."""
    import pyarrow as pa

    proxy, frames = pour
    t = np.concatenate([np.asarray(frames["t_s"].to_pylist()), frames["t_s"].to_pylist()[-1] + 0.1 * np.arange(1, 11)])
    longer = pa.table({"frame_index": np.arange(len(t)), "t_s": t})
    list(iter_frames(str(proxy)))  # kept decoded
    with parallel.using(2), pytest.raises(Exception, match="proxy .*decoded .* frames table has 90"):
        _Chunked(model_path=str(real_model)).detect(str(proxy), longer, kit.pinhole_calib(hfov_deg=65.0))
