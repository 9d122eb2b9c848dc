"""Sim(3) estimation and the stitching of overlapping clip trajectories, against known transforms."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ego_assets.lib.geometry import stitch
from ego_assets.lib.geometry.tracker import ClipTrajectory


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


# -- metric scale from a still hand under small head motion (issue 13.5) -------------------------------

UNITS_PER_M = 2.7  # the odometry's world unit is an arbitrary fraction of a metre


def _seated(head_scale: float, depth_bias: float = 0.0, moving_hands: bool = False, n: int = 120, seed: int = 0):
    """A seated person: the rendered scene's head path with its translation shrunk (``head_scale``
    0.3: ~6 cm extent, ~2 cm per second), the default hands (moving between pauses on the table, or
    never pausing), their metric camera-frame joints with 1 px image noise, 1 % depth jitter and a
    ``depth_bias`` (the size prior's error); the odometry's world = the exact poses in world units."""
    from ego_assets.lib.geometry import render

    rng = np.random.default_rng(seed)
    t = np.arange(n) / 10.0
    T_room = render.head_path(t, "head")
    T_room[:, :3, 3] *= head_scale
    T = np.einsum("ij,njk->nik", np.linalg.inv(T_room[0]), T_room)
    K = render.intrinsics(640, 360, 90)
    hands = render.default_hands()
    if moving_hands:
        for hp in hands:
            hp.pause_s = 0.0
    rows = []
    for i in range(n):
        R, c = T_room[i, :3, :3], T_room[i, :3, 3]
        for hp in hands:
            Jc = (hp.joints(t[i]) - c) @ R
            uv = Jc[:, :2] / Jc[:, 2:] * K[0, 0] + K[:2, 2] + rng.normal(0, 1.0, (21, 2))
            z = Jc[:, 2:] * (1 + depth_bias) * (1 + rng.normal(0, 0.01))
            rows.append(dict(frame_index=i, t_s=t[i], hand=hp.hand, kp2d=uv,
                             joints_cam=np.concatenate([(uv - K[:2, 2]) / K[0, 0] * z, z], 1)))
    world = stitch.World(T[:, :3, :3].copy(), T[:, :3, 3] * UNITS_PER_M, np.ones(n, bool), np.zeros(n, bool),
                         np.zeros(n, np.int32), np.ones(n), {})
    return world, render.hand_tracks_table(rows), {i: i for i in range(n)}, K


def test_still_hands_give_the_metric_scale_of_a_small_head_motion():
    truth = 1 / UNITS_PER_M
    world, ht, pos_of, K = _seated(0.3)
    extent = np.ptp(world.centres / UNITS_PER_M, axis=0)
    assert 0.03 < extent.max() < 0.08  # a few centimetres of head translation
    # the triangulation cue needs more parallax than this within a second: it gives up
    assert stitch.scale_from_hands(world, ht, pos_of, K)[0] is None
    s, info = stitch.scale_from_still_hands(world, ht, pos_of)
    assert s is not None and info["n_windows"] >= 4, info
    assert abs(s / truth - 1) < 0.08, (s / truth, info)
    # the scale carries the hand stage's depth error, and nothing more
    s_b, info_b = stitch.scale_from_still_hands(world, *_seated(0.3, depth_bias=0.08)[1:3])
    assert abs(s_b / truth - 1.08) < 0.08, (s_b / truth, info_b)
    # larger head motion: as exact as the triangulation
    s_l, _ = stitch.scale_from_still_hands(*_seated(1.0)[:3])
    assert abs(s_l / truth - 1) < 0.03


def test_still_hands_give_no_scale_without_a_still_hand_or_head_motion():
    # hands never pause: no window fits one world point
    s, info = stitch.scale_from_still_hands(*_seated(0.3, moving_hands=True)[:3])
    assert s is None and info["n_windows"] < 2, info
    # the head hardly translates (~1 cm): nothing to measure against, so no scale rather than a guess
    s, info = stitch.scale_from_still_hands(*_seated(0.05)[:3])
    assert s is None, info
    # windows that disagree more than allowed give no scale (their spread here is ~10 %)
    s, info = stitch.scale_from_still_hands(*_seated(0.3)[:3], max_iqr_rel=0.02)
    assert s is None and "disagree" in info["reason"] and 0.02 < info["iqr_rel"] < 0.3, info


def test_still_hands_ignore_filled_in_rows():
    import pyarrow as pa

    world, ht, pos_of, _ = _seated(0.3)
    assert stitch.scale_from_still_hands(world, ht, pos_of)[0] is not None
    filled = ht.append_column("interpolated", pa.array(np.ones(ht.num_rows, bool)))
    s, info = stitch.scale_from_still_hands(world, filled, pos_of)
    assert s is None and info["n_tried"] == 0, info
