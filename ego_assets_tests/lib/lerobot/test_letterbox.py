"""The letterbox of a frame already at the dataset width (no resize) equals the resizing path's output."""

import cv2
import numpy as np

from ego_assets.lib.lerobot.staging import _letterbox


def test_a_frame_at_the_dataset_width_gets_bars_only_and_the_same_bytes():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (360, 640, 3), np.uint8)
    out, g = _letterbox(img, (640, 480))
    assert out.shape == (480, 640, 3) and g["offset"] == [0, 60] and g["content"] == [640, 360]
    # the reference: what the resizing path gives (cv2.resize to the same size, into the bars)
    ref = np.zeros((480, 640, 3), np.uint8)
    ref[60:420] = cv2.resize(img, (640, 360), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out, ref)
    assert not out[:60].any() and not out[420:].any()
    out[60, 0, 0] ^= 1  # a copy, not a view of the caller's frame
    assert img[0, 0, 0] != out[60, 0, 0]


def test_a_smaller_frame_is_still_resized():
    img = np.full((180, 320, 3), 200, np.uint8)
    out, g = _letterbox(img, (640, 480))
    assert g["content"] == [640, 360] and out.shape == (480, 640, 3)
    assert (out[60:420] == 200).all() and not out[:60].any()
