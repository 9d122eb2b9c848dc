"""Visual odometry on rendered sequences with exact ground truth (ego_assets.lib.geometry.render)."""

import numpy as np
import pyarrow as pa
import pytest
from scipy.spatial.transform import Rotation

from ego_assets.lib import backends, schemas
from ego_assets.lib.geometry import calibration as cal
from ego_assets.lib.geometry import checks, odometry, render, two_view


def _calib(seq, motion="moving"):
    K = seq.K
    intr = cal.Intrinsics(K[0, 0], K[1, 1], K[0, 2], K[1, 2], *seq.size, method="test")
    return cal.calibration_table(intr, cal.CameraMotion(motion, 1.0, [], 0)).to_pylist()[0]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    p = str(tmp_path_factory.mktemp("vo") / "head.mp4")
    seq, _ = render.render_sequence(p, n_frames=40, kind="head")
    return p, seq


def test_vo_on_a_rendered_head_sequence(head):
    p, seq = head
    b = backends.create("poses")
    assert b.name == "opencv_vo" and b.resources.gpu == 0
    seen = []
    res = b.estimate(p, seq.frames_table(), None, _calib(seq), seq.hand_tracks(),
                     progress=lambda d, n: seen.append((d, n)))
    t = schemas.conform("camera_poses", res.poses, "pk")
    assert t.num_rows == 40 and seen[-1] == (40, 40)
    e = render.trajectory_errors(seq.T_wc, res.poses)
    assert e["tracked_fraction"] == 1.0
    assert e["rot_err_deg_median"] < 1.0 and e["ate_pct"] < 3.0
    # world = the first camera
    assert res.poses.column("qw")[0].as_py() == pytest.approx(1.0)
    assert [res.poses.column(k)[0].as_py() for k in ("tx", "ty", "tz")] == [0.0, 0.0, 0.0]
    # metric scale from the resting hands (their joints_cam are metric)
    assert res.stats["scale_source"] == "hands" and res.poses.column("scale")[0].as_py() == "metric"
    assert abs(e["scale"] - 1) < 0.15
    for check in (checks.check_pose_jumps, checks.check_rotations, checks.check_tracked_fraction):
        assert check(res.poses)[0]
    png = odometry.plot_trajectory_topdown(res.poses)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_clips_are_stitched_into_one_world(head):
    p, seq = head
    clips = pa.table(dict(clip_index=[0, 1], start_s=[0.0, 1.6], end_s=[2.4, 3.9]))
    res = odometry.estimate(p, seq.frames_table(), clips, _calib(seq), seq.hand_tracks())
    assert res.stats["n_clips"] == 2
    info = res.stats["stitch"][1]
    assert info["method"] in ("matched_depth", "sim3") and info["n_overlap"] >= 5
    e = render.trajectory_errors(seq.T_wc, res.poses)
    assert e["tracked_fraction"] == 1.0 and e["rot_err_deg_median"] < 1.0 and e["ate_pct"] < 5.0


def test_tracking_loss_is_marked_and_recovered(tmp_path):
    p = str(tmp_path / "blackout.mp4")
    seq, _ = render.render_sequence(p, n_frames=30, kind="head", blackout=(14, 18), t0=3.0)
    res = odometry.estimate(p, seq.frames_table(), None, _calib(seq), seq.hand_tracks())
    tr = res.poses.column("tracked").to_numpy(zero_copy_only=False)
    assert not tr[14:18].any() and tr[:14].all() and tr[20:].all()
    assert np.isnan(res.poses.column("tx").to_numpy()[14:18]).all()  # no made-up pose
    assert res.stats["n_relocalised"] >= 1 and res.stats["n_new_segments"] == 0
    e = render.trajectory_errors(seq.T_wc, res.poses)
    assert e["rot_err_deg_median"] < 1.0  # the recovered part is in the same world frame


def test_static_camera_gives_identity_not_drift(tmp_path):
    p = str(tmp_path / "static.mp4")
    seq, _ = render.render_sequence(p, n_frames=12, kind="static")
    res = odometry.estimate(p, seq.frames_table(), None, _calib(seq, "static"), seq.hand_tracks())
    assert res.stats["static"] and res.poses.column("tracked").to_numpy(zero_copy_only=False).all()
    assert np.all(res.poses.column("qw").to_numpy() == 1.0)
    # classified 'moving' by mistake: the odometry sees no motion and keeps the first pose exactly
    res = odometry.estimate(p, seq.frames_table(), None, _calib(seq, "moving"), seq.hand_tracks())
    c = np.column_stack([res.poses.column(k).to_numpy() for k in ("tx", "ty", "tz")])
    q = np.column_stack([res.poses.column(k).to_numpy() for k in ("qx", "qy", "qz", "qw")])
    assert np.abs(c).max() == 0.0 and np.degrees(Rotation.from_quat(q).magnitude().max()) < 0.05


def test_rotation_only_fit_recovers_a_rotation_with_outliers():
    rng = np.random.default_rng(0)
    b1 = rng.normal(0, 1, (200, 3)) * [0.5, 0.3, 0] + [0, 0, 1]
    b1 /= np.linalg.norm(b1, axis=1, keepdims=True)
    R = Rotation.from_euler("xyz", [3, -8, 1], degrees=True).as_matrix()
    b2 = b1 @ R.T
    b2[:40] = rng.normal(0, 1, (40, 3))  # 20 % outliers (hands, say)
    b2 /= np.linalg.norm(b2, axis=1, keepdims=True)
    R2, inl = two_view.rotation_only(b1, b2, np.radians(0.5))
    assert np.degrees(Rotation.from_matrix(R2.T @ R).magnitude()) < 1e-6
    assert inl[40:].all() and inl[:40].sum() <= 2


def test_hand_masks_cover_the_hands():
    kp = render._RIGHT_HAND[:, [0, 2]] * 800 + [300, 150]  # a right hand seen from above, ~150 px long
    ht = render.hand_tracks_table([dict(frame_index=3, t_s=0.3, hand="left", kp2d=kp,
                                        joints_cam=np.ones((21, 3)))])
    m = odometry.HandMasker(ht, (640, 360))
    mask = m.mask(3)
    assert m.mask(2) is None and mask.shape == (360, 640)
    assert all(mask[int(y), int(x)] for x, y in kp)
    # grown beyond the keypoints by the margin, but not everywhere
    left = kp[np.argmin(kp[:, 0])]
    assert mask[int(left[1]), int(left[0]) - 8]  # grown beyond the keypoints by the margin
    assert not mask[int(left[1]), int(left[0]) - 40] and not mask[50, 50]  # but not far
    assert not odometry.HandMasker(None, (640, 360))


def test_bad_inputs_are_named(head):
    p, seq = head
    f = seq.frames_table()
    with pytest.raises(odometry.PoseInputError, match="t_s"):
        odometry.estimate(p, f.drop(["t_s"]), None, _calib(seq), None)
    with pytest.raises(odometry.PoseInputError, match="calibration"):
        odometry.estimate(p, f, None, {"fx": 1.0}, None)
    with pytest.raises(odometry.PoseInputError, match="320x180"):
        odometry.estimate(p, f, None, dict(_calib(seq), width=320, height=180), None)
    back = f.set_column(1, "t_s", pa.array(f.column("t_s").to_numpy()[::-1].copy()))
    with pytest.raises(odometry.PoseInputError, match="increasing"):
        odometry.estimate(p, back, None, _calib(seq), None)


@pytest.mark.slow
def test_a_seated_head_gets_a_metric_scale_from_a_still_hand(tmp_path):
    # issue 13.5: a seated person's head translates a few cm; the triangulation of a resting hand has
    # too little parallax, the still-hand cue still makes the poses metric
    p = str(tmp_path / "seated.mp4")
    seq, _ = render.render_sequence(p, n_frames=120, kind="seated")
    extent = np.ptp(seq.T_wc[:, :3, 3], axis=0).max()
    assert 0.03 < extent < 0.08
    res = odometry.estimate(p, seq.frames_table(), None, _calib(seq), seq.hand_tracks())
    assert res.stats["scale_source"] == "still_hands", res.stats["scale_detail"]
    assert set(res.poses.column("scale").to_pylist()) == {"metric"}
    assert res.stats["scale_detail"]["triangulated"]["n_windows"] == 0
    e = render.trajectory_errors(seq.T_wc, res.poses)
    assert abs(e["scale_est_on_truth"] - 1) < 0.05, (e, res.stats["scale_detail"])
    # without hands the same video is honestly relative
    res2 = odometry.estimate(p, seq.frames_table(), None, _calib(seq), None)
    assert set(res2.poses.column("scale").to_pylist()) == {"relative"}
