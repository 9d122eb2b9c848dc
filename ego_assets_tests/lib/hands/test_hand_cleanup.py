"""Outlier rejection and gap filling on track arrays."""

from __future__ import annotations

import numpy as np
import pytest

from ego_assets.lib.hands import cleanup


def test_outliers_are_the_spikes():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 3, 40)
    wrist = np.stack([0.1 * np.sin(t), 0.05 * t, 0.4 + 0.02 * np.cos(2 * t)], 1)
    wrist += rng.normal(0, 0.003, wrist.shape)
    spikes = [5, 6, 22, 39]
    wrist[5, 2] += 0.15  # depth jumps, as a bad lift gives
    wrist[6, 2] += 0.12
    wrist[22] += [0.08, -0.06, 0.0]
    wrist[39, 2] -= 0.1  # at the track's end
    keep = cleanup.reject_outliers(wrist)
    assert np.flatnonzero(~keep).tolist() == spikes


def test_steady_track_loses_nothing():
    rng = np.random.default_rng(1)
    wrist = np.array([0.0, 0.0, 0.4]) + rng.normal(0, 0.004, (30, 3))
    assert cleanup.reject_outliers(wrist).all()
    assert cleanup.reject_outliers(wrist[:2]).all()  # too short to judge


def test_outlier_window_is_validated():
    with pytest.raises(ValueError, match="window"):
        cleanup.reject_outliers(np.zeros((10, 3)), window=4)


def test_short_gaps_are_interpolated_long_ones_left_empty():
    fi = np.array([0, 1, 2, 5, 6, 12, 13])
    J = np.zeros((7, 21, 3))
    J[:, :, 0] = fi[:, None] * 0.01  # x moves 1 cm per frame
    score = np.array([0.9, 0.9, 0.8, 0.6, 0.9, 0.9, 0.9])
    f2, arr, interp = cleanup.fill_gaps(fi, {"joints": J, "score": score}, max_gap=3)
    assert f2.tolist() == [0, 1, 2, 3, 4, 5, 6, 12, 13]
    assert interp.tolist() == [False, False, False, True, True, False, False, False, False]
    np.testing.assert_allclose(arr["joints"][:, 0, 0], f2 * 0.01)
    assert arr["joints"].shape == (9, 21, 3)
    np.testing.assert_allclose(arr["score"][3:5], [0.8 - 0.2 / 3, 0.8 - 0.4 / 3])
    # a gap of exactly max_gap is filled, one more is not
    f3, _, i3 = cleanup.fill_gaps(np.array([0, 4, 9]), {"v": np.array([0.0, 4.0, 9.0])}, max_gap=3)
    assert f3.tolist() == [0, 1, 2, 3, 4, 9] and i3.sum() == 3
    f4, _, i4 = cleanup.fill_gaps(fi, {"v": fi.astype(float)}, max_gap=0)
    assert f4.tolist() == fi.tolist() and not i4.any()


def test_fill_gaps_rejects_bad_input():
    with pytest.raises(ValueError, match="strictly increasing"):
        cleanup.fill_gaps(np.array([0, 2, 2]), {"v": np.zeros(3)})
    with pytest.raises(ValueError, match="has 2 rows"):
        cleanup.fill_gaps(np.array([0, 2, 3]), {"v": np.zeros(2)})


def test_depth_jumps_are_corrected_keeping_the_projection():
    from ego_assets.lib.hands.skeleton import template_hand

    rng = np.random.default_rng(2)
    T = template_hand("right", 20.0)
    n = 25
    z = 0.4 + 0.05 * np.sin(np.linspace(0, 2, n))  # a smooth reach
    J = np.stack([T - T[0] + [0.05 * np.cos(i / 5), 0.05, zi] for i, zi in enumerate(z)])
    J *= (1 + rng.normal(0, 0.01, n))[:, None, None]  # ordinary depth noise: 1 %
    jumps = [4, 5, 17]
    J[jumps] *= np.array([0.6, 0.65, 1.5])[:, None, None]  # bad frames: 35-50 % off in depth
    proj = J[..., :2] / J[..., 2:]
    out, bad = cleanup.correct_depth_outliers(J)
    assert np.flatnonzero(bad).tolist() == jumps
    np.testing.assert_allclose(out[..., :2] / out[..., 2:], proj, atol=1e-12)  # same image
    palm_z = out[:, [0, 5, 9, 13, 17], 2].mean(1)
    # corrected frames land within 2 cm of their neighbours' depth; good frames are untouched
    assert np.abs(palm_z[jumps] - np.interp(jumps, np.flatnonzero(~bad), palm_z[~bad])).max() < 0.02
    np.testing.assert_array_equal(out[~bad], J[~bad])


def test_shape_smoothing_halves_jitter_and_keeps_motion_and_position():
    from ego_assets.lib.hands.skeleton import finger_pose, template_hand

    rng = np.random.default_rng(3)
    n = 40
    flex = np.linspace(0, 60, n)  # fingers closing steadily
    truth = np.stack([template_hand("right", f) + [0.1 * i / n, 0.0, 0.4] for i, f in enumerate(flex)])
    noisy = truth + rng.normal(0, 0.003, truth.shape)
    fi = np.arange(n)
    fi[25:] += 5  # a gap: the samples at its edges are not smoothed across it
    out = cleanup.smooth_shape({"joints_cam": noisy, "finger_pose": finger_pose(noisy, "right")}, fi)
    J = out["joints_cam"]
    palm = [0, 5, 9, 13, 17]
    np.testing.assert_allclose(J[:, palm].mean(1), noisy[:, palm].mean(1), atol=1e-12)  # position kept
    np.testing.assert_array_equal(J[[0, 24, 25, n - 1]], noisy[[0, 24, 25, n - 1]])
    err_before = np.linalg.norm(noisy - truth, axis=-1)[1:-1].mean()
    err_after = np.linalg.norm(J - truth, axis=-1)[1:-1].mean()
    assert err_after < 0.8 * err_before
    # noiseless steady motion passes unchanged (no lag)
    clean = cleanup.smooth_shape({"joints_cam": truth}, np.arange(n))["joints_cam"]
    assert np.abs(clean - truth).max() < 5e-4
    # the finger pose is smoothed like the joints: it stays close to the pose of the smoothed joints
    fp_joints = finger_pose(J, "right")
    assert np.abs(out["finger_pose"] - fp_joints)[1:24].mean() < 0.25 * np.abs(
        finger_pose(noisy, "right") - fp_joints)[1:24].mean()


def test_depth_smoothing_keeps_the_projection_and_the_motion():
    from ego_assets.lib.hands.skeleton import template_hand

    rng = np.random.default_rng(5)
    n = 40
    z = np.linspace(0.55, 0.35, n)  # the hand approaching steadily
    truth = np.stack([template_hand("right", 20) + [0.02, 0.05, zi] for zi in z])
    noisy = truth * (1 + rng.normal(0, 0.03, n))[:, None, None]  # 3 % depth noise about the camera
    out = cleanup.smooth_depth(noisy, np.arange(n))
    proj = lambda J: J[..., :2] / J[..., 2:]  # noqa: E731
    np.testing.assert_allclose(proj(out), proj(noisy), atol=1e-12)
    palm = [0, 5, 9, 13, 17]
    err = lambda J: np.abs(J[:, palm, 2].mean(1) - truth[:, palm, 2].mean(1))  # noqa: E731
    assert err(out).mean() < 0.6 * err(noisy).mean()
    clean = cleanup.smooth_depth(truth, np.arange(n))  # steady motion is not delayed
    assert np.abs(clean - truth)[2:-2].max() < 1e-3
