"""Our vectorised per-episode stats give LeRobot's numbers (its own functions are the reference)."""

from __future__ import annotations

import numpy as np

from ego_assets.lib.lerobot import stats as S


def test_constants_are_lerobots():
    from lerobot.datasets import compute_stats as C

    assert list(S.DEFAULT_QUANTILES) == list(C.DEFAULT_QUANTILES)
    assert C.RunningQuantileStats()._num_quantile_bins == S.NUM_QUANTILE_BINS
    for n in (1, 2, 50, 99, 100, 101, 777, 20000):
        assert S.sample_indices(n) == C.sample_indices(n)
    img = np.zeros((3, 360, 640), np.uint8)
    assert S.downsample(img).shape == C.auto_downsample_height_width(img).shape


def test_numeric_episode_stats_match_lerobot():
    from lerobot.datasets.compute_stats import compute_episode_stats

    rng = np.random.default_rng(0)
    data = {
        "vec": rng.normal(size=(57, 102)).astype(np.float32),
        "frame_index": np.arange(57, dtype=np.int64),
        "const": np.full(57, 3, np.int64),
        "skewed": np.r_[np.zeros(50), rng.uniform(5, 9, 7)].astype(np.float32),
        "t": rng.uniform(0, 4, 57),
    }
    feats = {k: {"dtype": str(v.dtype), "shape": (v.shape[1] if v.ndim > 1 else 1,)} for k, v in data.items()}
    ref = compute_episode_stats(data, feats)
    ours = S.episode_stats(data)
    for k in data:
        assert set(ours[k]) == set(ref[k])
        for s in ref[k]:
            a, b = np.asarray(ref[k][s], np.float64), np.asarray(ours[k][s], np.float64)
            assert a.shape == b.shape, (k, s)
            # LeRobot accumulates float32 features in float32; we use float64
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=f"{k}/{s}")


def test_image_stats_match_lerobot():
    from lerobot.datasets.compute_stats import auto_downsample_height_width, get_feature_stats, sample_indices

    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (180, 320, 3), dtype=np.uint8) // (1 + i % 3) for i in range(40)]
    imgs = np.stack([auto_downsample_height_width(frames[i].transpose(2, 0, 1)) for i in sample_indices(40)])
    ref = get_feature_stats(imgs, axis=(0, 2, 3), keepdims=True)
    ref = {k: v if k == "count" else np.squeeze(v / 255.0, axis=0) for k, v in ref.items()}
    ours = S.image_stats(frames)
    exact = imgs.transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64)
    for s in ref:
        assert np.asarray(ours[s]).shape == np.asarray(ref[s]).shape, s
        # LeRobot 0.6 accumulates the pixels in float32 (mean, mean of squares: std = sqrt of their
        # difference loses ~3 digits); its histogram edges are float32 too (quantiles to ~1e-7)
        tol = {"mean": 1e-4, "std": 2e-3}.get(s, 1e-6)
        np.testing.assert_allclose(ours[s], ref[s], rtol=tol, atol=1e-9, err_msg=s)
    # ours is the float64 value
    np.testing.assert_allclose(ours["mean"].reshape(3), exact.mean(1) / 255.0, rtol=1e-12)
    np.testing.assert_allclose(ours["std"].reshape(3), exact.std(1) / 255.0, rtol=1e-9)
