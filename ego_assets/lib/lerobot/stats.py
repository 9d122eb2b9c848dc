"""Per-episode statistics as LeRobot 0.4 computes them, vectorised over dimensions.

LeRobot's ``compute_episode_stats`` runs ``RunningQuantileStats``: min, max, mean, std and the quantiles
q01..q99 read off a 5000-bin histogram per dimension, bins from ``min - 1e-10`` to ``max + 1e-10``, with
linear interpolation inside a bin. It loops in Python over dimensions and quantiles (~0.25 s for one
102-D episode) and ``lerobot.datasets`` pulls in torch (20-50 s to import on a busy machine), which would
dominate staging. This module computes the same numbers (tests compare with LeRobot's functions) with
NumPy only; the constants below are LeRobot's values, checked by a test against ``lerobot.datasets``.
"""

from __future__ import annotations

import numpy as np

DEFAULT_QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # lerobot.datasets.compute_stats.DEFAULT_QUANTILES
NUM_QUANTILE_BINS = 5000  # RunningQuantileStats(num_quantile_bins=5000)
QUANTILE_KEYS = tuple(f"q{int(q * 100):02d}" for q in DEFAULT_QUANTILES)


def vector_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """Stats of ``x`` (n, d) per column, as ``RunningQuantileStats().update(x); get_statistics()``."""
    n, d = x.shape
    if n < 2:  # LeRobot's _compute_basic_stats: quantiles = mean
        mean = x.mean(0)
        out = {"min": x.min(0), "max": x.max(0), "mean": mean, "std": x.std(0), "count": np.array([n])}
        out.update({k: mean.copy() for k in QUANTILE_KEYS})
        return out
    return _weighted_stats(x.astype(np.float64, copy=False), np.ones((n, d)), n, x.min(0), x.max(0))


def _weighted_stats(u: np.ndarray, c: np.ndarray, n: int, mn: np.ndarray, mx: np.ndarray) -> dict:
    """Stats of columns given as values ``u`` (m, d) with multiplicities ``c`` (m, d), ``n`` samples each.
    Same histogram and interpolation as RunningQuantileStats; multiplicities let a uint8 image channel be
    summarised by its 256 value counts instead of millions of pixels."""
    m, d = u.shape
    mean = (u * c).sum(0) / n
    var = (u * u * c).sum(0) / n - mean ** 2
    nb = NUM_QUANTILE_BINS
    lo, hi = mn.astype(np.float64) - 1e-10, mx.astype(np.float64) + 1e-10
    edges = np.linspace(lo, hi, nb + 1)  # (nb + 1, d), as np.linspace per dimension
    # np.histogram with explicit edges: bin i holds e_i <= v < e_{i+1}, the last bin includes its right edge
    bins = np.empty((m, d), np.int64)
    for j in range(d):
        bins[:, j] = np.searchsorted(edges[:, j], u[:, j], side="right") - 1
    np.clip(bins, 0, nb - 1, out=bins)
    hist = np.bincount((bins + np.arange(d) * nb).ravel(), weights=c.ravel(), minlength=d * nb).reshape(d, nb)
    cs = np.cumsum(hist, axis=1)
    out = {"min": mn, "max": mx, "mean": mean, "std": np.sqrt(np.maximum(0.0, var)), "count": np.array([n])}
    cols = np.arange(d)
    for q, key in zip(DEFAULT_QUANTILES, QUANTILE_KEYS):
        target = q * n
        idx = (cs < target).sum(1)  # np.searchsorted(cumsum, target) per dimension
        ii = np.clip(idx, 1, nb - 1)
        before = cs[cols, ii - 1]
        in_bin = cs[cols, ii] - before
        e_lo, e_hi = edges[ii, cols], edges[np.minimum(ii + 1, nb), cols]
        with np.errstate(divide="ignore", invalid="ignore"):
            val = np.where(in_bin == 0, e_lo, e_lo + (target - before) / in_bin * (e_hi - e_lo))
        val = np.where(idx == 0, edges[0], val)
        val = np.where(idx >= nb, edges[-1], val)
        out[key] = val
    return out


def sample_indices(n: int) -> list[int]:
    """LeRobot's image sampling for stats (``compute_stats.sample_indices``): all frames up to 100, then
    ``n ** 0.75`` (at most 10000) evenly spread."""
    m = n if n < 100 else 100
    num = max(m, min(int(n ** 0.75), 10_000))
    return np.round(np.linspace(0, n - 1, num)).astype(int).tolist()


def downsample(img_chw: np.ndarray, target_size: int = 150, max_size_threshold: int = 300) -> np.ndarray:
    """LeRobot's ``auto_downsample_height_width``."""
    _, h, w = img_chw.shape
    if max(w, h) < max_size_threshold:
        return img_chw
    f = int(w / target_size) if w > h else int(h / target_size)
    return img_chw[:, ::f, ::f]


def image_stats(frames: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Stats of an episode's HxWx3 uint8 frames as LeRobot stores them for image/video features: per
    channel, (3, 1, 1), scaled to [0, 1], count = number of sampled frames.

    One deliberate difference: LeRobot 0.4.4 squares the uint8 pixels in uint8 (they wrap at 256), so its
    image ``std`` comes out wrong (mostly 0); ours is the true standard deviation."""
    idx = sample_indices(len(frames))
    imgs = np.stack([downsample(frames[i].transpose(2, 0, 1)) for i in idx])
    ch = imgs.shape[1]
    px = imgs.transpose(1, 0, 2, 3).reshape(ch, -1)
    counts = np.stack([np.bincount(px[k], minlength=256) for k in range(ch)], 1).astype(np.float64)
    values = np.repeat(np.arange(256, dtype=np.float64)[:, None], ch, 1)
    present = counts > 0
    mn = np.array([np.flatnonzero(present[:, k]).min() for k in range(ch)], np.uint8)
    mx = np.array([np.flatnonzero(present[:, k]).max() for k in range(ch)], np.uint8)
    st = _weighted_stats(values, counts, px.shape[1], mn, mx)
    out = {}
    for k, v in st.items():
        out[k] = np.array([len(idx)]) if k == "count" else (np.asarray(v, np.float64) / 255.0).reshape(ch, 1, 1)
    return out


def episode_stats(data: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Numeric features of one episode: (n,) arrays -> stats of shape (1,), (n, d) -> (d,), as LeRobot."""
    out = {}
    for key, x in data.items():
        x = np.asarray(x)
        if x.dtype == bool:
            x = x.astype(np.float32)
        st = vector_stats(x.reshape(-1, 1) if x.ndim == 1 else x)
        out[key] = {k: (np.asarray(v).reshape(1) if x.ndim == 1 and k != "count" else np.asarray(v))
                    for k, v in st.items()}
    return out
