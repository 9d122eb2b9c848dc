"""Per-episode statistics as LeRobot 0.6 computes them, vectorised over dimensions.

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


def _edges_at(i: np.ndarray, lo: np.ndarray, hi: np.ndarray, nb: int) -> np.ndarray:
    """``np.linspace(lo, hi, nb + 1)[i]`` per column, bit for bit (same formula, last edge exact)."""
    step = (hi - lo) / nb
    return np.where(i >= nb, hi, i * step + lo)


def _weighted_stats(u: np.ndarray, c: np.ndarray, n: int, mn: np.ndarray, mx: np.ndarray) -> dict:
    """Stats of columns given as values ``u`` (m, d) with multiplicities ``c`` (m, d), ``n`` samples each.

    The quantiles are those of RunningQuantileStats (a ``NUM_QUANTILE_BINS``-bin histogram from
    ``min - 1e-10`` to ``max + 1e-10``, linear interpolation inside the bin) without building the
    histogram: the bin that reaches the target count is the bin of a known order statistic, so sorting the
    values per column is enough. Multiplicities let a uint8 image channel be summarised by its 256 value
    counts instead of millions of pixels."""
    m, d = u.shape
    mean = (u * c).sum(0) / n
    var = (u * u * c).sum(0) / n - mean ** 2
    nb = NUM_QUANTILE_BINS
    lo, hi = mn.astype(np.float64) - 1e-10, mx.astype(np.float64) + 1e-10
    order = np.argsort(u, axis=0, kind="stable")
    us = np.take_along_axis(u, order, 0)
    cs = np.take_along_axis(c, order, 0)
    # bin of each value as np.histogram assigns it: e_i <= v < e_{i+1}, last bin closed on the right
    b = np.clip(np.floor((us - lo) / ((hi - lo) / nb)).astype(np.int64), 0, nb - 1)
    for _ in range(2):  # fix floating-point disagreements with the exact edges
        b = np.where(_edges_at(b, lo, hi, nb) > us, b - 1, b)
        b = np.where((b + 1 < nb) & (_edges_at(b + 1, lo, hi, nb) <= us), b + 1, b)
    b = np.clip(b, 0, nb - 1)
    cum = np.cumsum(cs, axis=0)  # count of values up to and including each sorted value
    cols = np.arange(d)
    out = {"min": mn, "max": mx, "mean": mean, "std": np.sqrt(np.maximum(0.0, var)), "count": np.array([n])}
    for q, key in zip(DEFAULT_QUANTILES, QUANTILE_KEYS):
        target = q * n
        # first histogram bin whose cumulative count reaches target = bin of the first value that does
        j = np.minimum((cum < target).sum(0), m - 1)
        idx = np.where(target <= 0, 0, b[j, cols])
        # counts strictly before that bin, and inside it
        before = np.where(b < idx[None, :], cs, 0).sum(0)
        in_bin = np.where(b == idx[None, :], cs, 0).sum(0)
        e_lo, e_hi = _edges_at(idx, lo, hi, nb), _edges_at(idx + 1, lo, hi, nb)
        with np.errstate(divide="ignore", invalid="ignore"):
            val = np.where(in_bin == 0, e_lo, e_lo + (target - before) / in_bin * (e_hi - e_lo))
        out[key] = np.where(idx == 0, lo, val)
    return out


def sample_indices(n: int) -> list[int]:
    """LeRobot's image sampling for stats (``compute_stats.sample_indices``): all frames up to 100, then
    ``n ** 0.75`` (at most 10000) evenly spread."""
    m = n if n < 100 else 100
    num = max(m, min(int(n ** 0.75), 10_000))
    return np.round(np.linspace(0, n - 1, num)).astype(int).tolist()


def _downsample_factor(h: int, w: int, target_size: int = 150, max_size_threshold: int = 300) -> int:
    if max(w, h) < max_size_threshold:
        return 1
    return int(w / target_size) if w > h else int(h / target_size)


def downsample(img_chw: np.ndarray) -> np.ndarray:
    """LeRobot's ``auto_downsample_height_width``."""
    f = _downsample_factor(*img_chw.shape[1:])
    return img_chw[:, ::f, ::f] if f > 1 else img_chw


def image_stats(frames: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Stats of an episode's HxWx3 uint8 frames as LeRobot stores them for image/video features: per
    channel, (3, 1, 1), scaled to [0, 1], count = number of sampled frames.

    LeRobot 0.6 accumulates mean and mean of squares in float32 (relative error ~1e-5); ours are exact
    (float64 over the value counts)."""
    import cv2

    idx = sample_indices(len(frames))
    h, w, ch = frames[0].shape
    f = _downsample_factor(h, w)
    counts = np.zeros((256, ch))
    for i in idx:  # per-channel value counts of the downsampled frames (OpenCV's histogram is the fastest)
        small = np.ascontiguousarray(frames[i][::f, ::f]) if f > 1 else frames[i]
        for k in range(ch):
            counts[:, k] += cv2.calcHist([small], [k], None, [256], [0, 256]).ravel()
    n_px = int(counts[:, 0].sum())
    values = np.repeat(np.arange(256, dtype=np.float64)[:, None], ch, 1)
    present = counts > 0
    mn = np.array([np.flatnonzero(present[:, k]).min() for k in range(ch)], np.uint8)
    mx = np.array([np.flatnonzero(present[:, k]).max() for k in range(ch)], np.uint8)
    st = _weighted_stats(values, counts, n_px, mn, mx)
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
