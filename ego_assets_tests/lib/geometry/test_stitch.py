"""Sim(3) estimation and the stitching of overlapping clip trajectories, against known transforms."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ego_assets.lib.geometry import stitch
from ego_assets.lib.geometry.odometry import ClipTrajectory


def _sim3(seed=0):
    rng = np.random.default_rng(seed)
    return 1.7, Rotation.random(random_state=seed).as_matrix(), rng.normal(0, 2, 3)


def test_umeyama_recovers_known_sim3():
    s, R, t = _sim3(1)
    src = np.random.default_rng(2).normal(0, 1, (50, 3))
    dst = s * src @ R.T + t
    s2, R2, t2 = stitch.umeyama(src, dst)
    assert s2 == pytest.approx(s, rel=1e-9)
    np.testing.assert_allclose(R2, R, atol=1e-9)
    np.testing.assert_allclose(t2, t, atol=1e-9)
    # with noise it is still close, and a proper rotation (no reflection)
    noisy = dst + np.random.default_rng(3).normal(0, 0.01, dst.shape)
    s3, R3, _ = stitch.umeyama(src, noisy)
    assert abs(s3 - s) < 0.01 and np.linalg.det(R3) == pytest.approx(1.0)
    assert np.degrees(Rotation.from_matrix(R3.T @ R).magnitude()) < 0.5
    with pytest.raises(ValueError):
        stitch.umeyama(src[:2], dst[:2])


def _trajectory(n, seed=0):
    """A wandering camera: camera-to-world rotations and centres."""
    rng = np.random.default_rng(seed)
    rv = np.cumsum(rng.normal(0, 0.03, (n, 3)), 0)
    c = np.cumsum(rng.normal(0, 0.02, (n, 3)), 0)
    return Rotation.from_rotvec(rv).as_matrix(), c


def _clip(frames, R_wc, c, depth=None):
    n = len(frames)
    R_cw = np.transpose(R_wc, (0, 2, 1))
    t_cw = -np.einsum("nij,nj->ni", R_cw, c)
    return ClipTrajectory(np.asarray(frames), R_cw, t_cw, np.ones(n, bool), np.zeros(n, bool),
                          np.zeros(n, np.int32), np.ones(n) if depth is None else depth,
                          np.array(["map"] * n, object))


def test_stitching_two_overlapping_clips_with_a_known_sim3():
    R_gt, c_gt = _trajectory(60)
    # clip A: frames 0..39 in the world frame; clip B: frames 30..59 in its own frame, which is the world
    # mapped by a known similarity (as if B's odometry started elsewhere with another scale)
    s, R, t = _sim3(4)
    frames_b = np.arange(30, 60)
    Rb = np.einsum("ij,njk->nik", R.T, R_gt[frames_b])  # world = S(b): R_wc_world = R R_wc_b
    cb = (c_gt[frames_b] - t) @ R / s
    st = stitch.Stitcher(60)
    # scene depth 0.3 (world units): the overlap's centres spread over more than 5 % of it
    st.add(_clip(np.arange(40), R_gt[:40], c_gt[:40], np.full(40, 0.3)))
    st.add(_clip(frames_b, Rb, cb, np.full(30, 0.3 / s)))
    w = st.result()
    assert w.tracked.all()
    np.testing.assert_allclose(w.centres, c_gt, atol=1e-6)
    err = Rotation.from_matrix(np.einsum("nji,njk->nik", R_gt, w.R_wc)).magnitude()
    assert np.degrees(err.max()) < 1e-6
    info = st.info[1]
    assert info["method"] == "sim3" and info["n_overlap"] == 10
    assert info["scale"] == pytest.approx(s, rel=1e-6)


def test_stitching_uses_the_depth_ratio_when_the_overlap_does_not_move():
    # a head turning in place over the overlap: centres coincide, positions carry no scale
    n = 40
    R_gt = Rotation.from_euler("y", np.linspace(0, 40, n)[:, None], degrees=True).as_matrix()
    c_gt = np.zeros((n, 3))
    c_gt[25:] = np.linspace(0, 0.3, 15)[:, None] * [1, 0, 0]  # it moves after the overlap
    depth_a = np.full(n, 2.0)
    s = 0.5
    st = stitch.Stitcher(n)
    st.add(_clip(np.arange(25), R_gt[:25], c_gt[:25], depth_a[:25]))
    st.add(_clip(np.arange(20, n), R_gt[20:], c_gt[20:] / s, depth_a[20:] / s))
    w = st.result()
    assert st.info[1]["method"] == "depth_ratio"
    np.testing.assert_allclose(w.centres, c_gt, atol=1e-9)


def test_matched_depth_ratio_pairs_the_same_corners():
    rng = np.random.default_rng(0)
    uv = rng.uniform(0, 600, (80, 2)).astype(np.float32)
    z = rng.uniform(0.5, 3, 80).astype(np.float32)
    a = {5: (uv, z)}
    b = {5: (uv[::-1] + 0.2, z[::-1] / 2.5)}  # same corners in another order, another scale
    r, n = stitch.matched_depth_ratio(a, b, [5])
    assert n == 80 and r == pytest.approx(2.5, rel=1e-5)
    assert stitch.matched_depth_ratio(a, {}, [5]) == (None, 0)


def test_clip_without_overlap_is_anchored_not_aligned():
    R_gt, c_gt = _trajectory(30, seed=5)
    st = stitch.Stitcher(30)
    st.add(_clip(np.arange(15), R_gt[:15], c_gt[:15]))
    st.add(_clip(np.arange(15, 30), R_gt[15:], c_gt[15:] - c_gt[15]))
    assert st.info[1]["method"] == "anchored"
    w = st.result()
    np.testing.assert_allclose(w.centres[15], c_gt[14])  # continuity assumption, reported as such
