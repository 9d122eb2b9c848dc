"""The mediapipe hands backend end to end: registry, input errors, and the real egocentric clip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from ego_assets.lib import backends, schemas
from ego_assets.lib.hands import checks, skeleton
from ego_assets.lib.hands.backends import HandTrackingInputError, MediaPipeHands


def test_registered_as_cpu_backends():
    assert {"mediapipe", "mediapipe_lite"} <= set(backends.available("hands"))
    cls = backends.backend_class("hands")  # the default
    assert cls is MediaPipeHands and cls.stage == "hands"
    assert cls.resources.gpu == 0 and cls.code_version() == f"mediapipe@{cls.version}"
    assert backends.backend_class("hands", "mediapipe_lite").model_variant == "lite"


@pytest.fixture(scope="module")
def backend(real_model):
    return MediaPipeHands(model_path=str(real_model))


@pytest.fixture(scope="module")
def pour_result(backend, pour_proxy, kit):
    proxy, frames = pour_proxy
    calls = []
    res = backend.track(str(proxy), frames, kit.pinhole_calib(hfov_deg=65.0),
                        progress=lambda d, n: calls.append((d, n)))
    return res, frames, calls


def test_real_clip_hands_found_in_most_frames(pour_result):
    res, frames, calls = pour_result
    n = frames.num_rows
    assert n == 50 and calls[-1] == (n, n)
    s = res.stats
    # the clip shows both hands in nearly every frame (checked by eye: left hand on the image's left,
    # right hand on its right, the right one lifting the jar and pouring into the mug)
    assert s["detection_rate"] >= 0.95
    assert s["left_rate"] >= 0.9 and s["right_rate"] >= 0.7
    assert s["both_hands_rate"] >= 0.7
    assert res.detections.num_rows >= 85


def test_real_clip_handedness_is_consistent(pour_result):
    res, frames, _ = pour_result
    t = res.tracks
    assert checks.check_handedness_consistent(t)[0]
    hand = np.array(t.column("hand").to_pylist())
    kp = np.array(t.column("kp2d").to_pylist()).reshape(-1, 21, 2)
    # the person's left hand is on the left of this (non-mirrored) image the whole clip
    right_side = kp[:, 0, 0] > 320
    assert (right_side == (hand == "right")).mean() >= 0.97
    # few, long tracks: one per hand here
    tid = np.array(t.column("track_id").to_pylist())
    per_hand = {h: set(tid[hand == h]) for h in ("left", "right")}
    assert len(per_hand["left"]) <= 2 and len(per_hand["right"]) <= 2
    conf = np.array(t.column("handedness_conf").to_pylist())
    assert conf.min() > 0.8
    assert res.stats["mp_labels_mirrored"] is False  # mediapipe >= 0.10.15 labels the given image


def test_real_clip_geometry_is_plausible(pour_result):
    res, _, _ = pour_result
    t = res.tracks
    ok, frac, detail = checks.check_joints_plausible(t)
    assert ok, detail
    J = np.array(t.column("joints_cam").to_pylist()).reshape(-1, 21, 3)
    assert (J[:, :, 2] > 0.05).all() and (J[:, 0, 2] < 1.0).all()  # in front, within arm's reach
    # each lifted hand projects close to its 2D keypoints (K of the 65 deg pinhole used above)
    f = 320 / np.tan(np.radians(32.5))
    kp = np.array(t.column("kp2d").to_pylist()).reshape(-1, 21, 2)
    proj = J[:, :, :2] / J[:, :, 2:] * f + [319.5, 239.5]
    obs = ~np.array(t.column("interpolated").to_pylist())
    err = np.linalg.norm(proj - kp, axis=-1).mean(1)[obs]
    assert np.median(err) < 12.0
    fp = np.array(t.column("finger_pose").to_pylist())
    assert fp.shape[1] == 45 and np.isfinite(fp).all() and np.abs(fp).max() < np.pi + 1e-6
    # the wrist stays put at 10 fps: frame-to-frame steps of a few cm, not jumps of decimetres
    for tr in set(t.column("track_id").to_pylist()):
        m = np.array(t.column("track_id").to_pylist()) == tr
        fi = np.array(t.column("frame_index").to_pylist())[m]
        step = np.linalg.norm(np.diff(J[m, 0], axis=0), axis=1)[np.diff(fi) == 1]
        assert np.median(step) < 0.02 and np.percentile(step, 95) < 0.08


def test_tables_conform_to_the_contract(pour_result):
    res, frames, _ = pour_result
    tr = schemas.conform("hand_tracks", res.tracks, "pk")
    de = schemas.conform("hand_detections", res.detections, "pk")
    assert tr.schema == schemas.HAND_TRACKS and de.schema == schemas.HAND_DETECTIONS
    # t_s comes from the frames table; rows are ordered by frame, then hand
    t_of = dict(zip(frames.column("frame_index").to_pylist(), frames.column("t_s").to_pylist()))
    fi, ts = tr.column("frame_index").to_pylist(), tr.column("t_s").to_pylist()
    assert all(t_of[f] == t for f, t in zip(fi, ts))
    keys = list(zip(tr.column("frame_index").to_pylist(), tr.column("hand").to_pylist()))
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    interp = np.array(tr.column("interpolated").to_pylist())
    assert interp.sum() == res.stats["n_interpolated"]
    assert set(de.column("fit").to_pylist()) <= {"pnp", "pnp:size_prior"} | {
        f for f in de.column("fit").to_pylist() if f.startswith("prior:")}
    for key in ("fps", "landmarker_ms_per_frame", "lifting_ms_per_hand", "model_sha256", "fit_pnp"):
        assert key in res.stats


def test_distorted_camera_is_rectified(backend, kit, tmp_path):
    proxy = tmp_path / "short.mp4"
    times = kit.make_real_proxy(proxy, start_s=0.0, dur_s=1.0)
    calib = kit.pinhole_calib(hfov_deg=65.0, distortion_model="radtan",
                              dist_coeffs=[-0.05, 0.01, 0.0, 0.0, 0.0])
    res = backend.track(str(proxy), kit.frames_table(times), calib)
    assert res.stats["undistorted"] is True
    assert res.stats["detection_rate"] >= 0.9
    assert res.stats["fx"] == pytest.approx(calib["rect_fx"])


def test_video_without_hands(backend, kit, tmp_path):
    proxy = tmp_path / "empty.mp4"
    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (1, 1, 3), dtype=np.uint8)
    images = [np.broadcast_to(base, (240, 320, 3)).copy() for _ in range(8)]
    times = [0.1 * i for i in range(8)]
    kit.write_proxy(proxy, images, times)
    res = backend.track(str(proxy), kit.frames_table(times), kit.pinhole_calib(320, 240))
    assert res.tracks.num_rows == 0 and res.detections.num_rows == 0
    assert res.stats["detection_rate"] == 0.0
    assert schemas.conform("hand_tracks", res.tracks, "pk").num_rows == 0


def test_bad_inputs_are_named(backend, pour_proxy, kit):
    proxy, frames = pour_proxy
    with pytest.raises(HandTrackingInputError, match="frame_index must be 0..n-1"):
        backend.track(str(proxy), frames.slice(1), kit.pinhole_calib())
    short = frames.slice(0, 5)
    with pytest.raises(HandTrackingInputError, match="more frames than the frames table"):
        backend.track(str(proxy), short, kit.pinhole_calib())
    with pytest.raises(HandTrackingInputError, match="calib is for 1280x960 images but the proxy is 640x480"):
        backend.track(str(proxy), frames, kit.pinhole_calib(1280, 960))
    bad_t = pa.table({"frame_index": frames.column("frame_index"),
                      "t_s": pa.array(np.zeros(frames.num_rows))})
    with pytest.raises(HandTrackingInputError, match="strictly increasing"):
        backend.track(str(proxy), bad_t, kit.pinhole_calib())
    assert isinstance(HandTrackingInputError("x"), ValueError)


def test_assemble_on_synthetic_detections_recovers_the_truth():
    """A backend whose detector is synthetic (the plugin path): two hands cross, MediaPipe-style labels
    are useless ('Right' for both), one detection drops out at the crossing; the shared assembly must
    keep identities, label the hands, and return the known wrist frame and finger pose."""
    from scipy.spatial.transform import Rotation

    from ego_assets.lib.hands.backends import HandDetections, HandsBackend
    from ego_assets.lib.hands.skeleton import template_hand

    K = np.array([[320.0, 0, 319.5], [0, 320.0, 239.5], [0, 0, 1]])
    R = np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]])  # back of the hand to the camera, fingers up
    n = 21
    rows = []
    for f in range(n):
        a = f / (n - 1)
        for hand, x in (("left", -0.16 + 0.32 * a), ("right", 0.16 - 0.32 * a)):
            if f == 10 and hand == "right":
                continue
            T = template_hand(hand, 20.0)
            J = (T - T[0]) @ R.T + [x, 0.08, 0.40 if hand == "left" else 0.45]
            p = J @ K.T
            rows.append((f, hand, p[:, :2] / p[:, 2:], J, (T - T.mean(0)) @ R.T))

    fit = "mano"  # metric joints measured by the backend itself: they keep their size

    class SyntheticHands(HandsBackend):
        name, version = "synthetic", "0"

        def detect(self, proxy_path, frames, calib, progress=None):
            D = len(rows)
            return HandDetections(self.name, frame_index=np.array([r[0] for r in rows]), detection=np.zeros(D, int),
                        mp_label=np.array(["Right"] * D), mp_score=np.full(D, 0.6),
                        kp2d=np.array([r[2] for r in rows]), world=np.array([r[4] for r in rows]),
                        joints_cam=np.array([r[3] for r in rows]), fit=np.array([fit] * D),
                        reproj_px=np.zeros(D), t_s=np.arange(n) * 0.1 + 5.0,
                        image_size=(640, 480), K=K, undistorted=False,
                        timing=dict(decode_s=0.0, landmarker_s=0.0, lifting_s=0.0))

    res = SyntheticHands().track("unused.mp4", None, {})
    t = res.tracks
    fi = np.array(t.column("frame_index").to_pylist())
    hand = np.array(t.column("hand").to_pylist())
    J = np.array(t.column("joints_cam").to_pylist()).reshape(-1, 21, 3)
    truth = {(r[0], r[1]): r[3] for r in rows}
    # every observed row is labelled with its true hand and keeps its true joints (float32)
    for i in np.flatnonzero(~np.array(t.column("interpolated").to_pylist())):
        np.testing.assert_allclose(J[i], truth[(fi[i], hand[i])], atol=1e-6)
    assert len(set(t.column("track_id").to_pylist())) == 2
    # the dropped detection is filled in by interpolation, at the true position (linear motion)
    (k,) = np.flatnonzero((fi == 10) & (hand == "right"))
    assert t.column("interpolated")[int(k)].as_py()
    np.testing.assert_allclose(J[k, 0], [0.0, 0.08, 0.45], atol=1e-6)
    np.testing.assert_allclose(t.column("t_s").to_pylist(), fi * 0.1 + 5.0)  # t_s from the frames
    # wrist frame = R for both hands; every finger joint bent 20 deg
    rv = np.array(t.column("wrist_rotvec_cam").to_pylist())
    np.testing.assert_allclose(Rotation.from_rotvec(rv).as_matrix(), np.broadcast_to(R, (len(rv), 3, 3)),
                               atol=1e-5)
    fp = np.array(t.column("finger_pose").to_pylist()).reshape(-1, 15, 3)
    np.testing.assert_allclose(np.degrees(np.linalg.norm(fp, axis=-1)), 20.0, atol=1e-3)
    assert res.stats["n_outliers"] == 0 and res.stats["n_depth_corrected"] == 0
    assert res.stats["both_hands_rate"] == pytest.approx(20 / 21)

    assert res.stats["finger_pose_convention"] == skeleton.FINGER_POSE_CONVENTION
    # per-track cue agreement is recorded: the weak 'Right' label (score 0.6) of the left hand is
    # outweighed within the network cue by its own left-handed 3D shape, so no track is contested
    det = res.detections
    assert set(det.column("track_id").to_pylist()) == set(t.column("track_id").to_pylist())
    cues = res.stats["handedness_cues"]
    assert {c["hand"] for c in cues.values()} == {"left", "right"}
    assert not any(c["contested"] for c in cues.values())
    assert all(c["agreement"] == 1.0 for c in cues.values())
    assert checks.check_handedness_cues_agree(det)[0]

    # the same detections as MediaPipe lifts them ('pnp'): scaled to the prior hand size about the
    # camera centre, so the 2D projection is unchanged and the depth shrinks by prior / 0.09
    fit = "pnp"
    t2 = SyntheticHands().track("unused.mp4", None, {}).tracks
    J2 = np.array(t2.column("joints_cam").to_pylist()).reshape(-1, 21, 3)
    obs = ~np.array(t2.column("interpolated").to_pylist())
    ratio = J2[obs][:, :, 2] / J[obs][:, :, 2]
    np.testing.assert_allclose(ratio, skeleton.HAND_SIZE_PRIOR_M / skeleton.TEMPLATE_SIZE_M, rtol=1e-5)
    np.testing.assert_allclose(J2[obs][..., :2] / J2[obs][..., 2:], J[obs][..., :2] / J[obs][..., 2:],
                               atol=1e-6)

    # a backend with its own MANO finger pose: kept (not recomputed), gap-filled, named
    # (changing linearly in time per hand: the 3-tap shape smoothing leaves it as it is)
    base = np.random.default_rng(0).normal(0, 0.3, (2, 2, 15, 3))
    pose = np.array([base[int(r[1] == "right"), 0] + base[int(r[1] == "right"), 1] * r[0] / n for r in rows])
    fit = "mano"

    class ManoHands(SyntheticHands):
        def detect(self, proxy_path, frames, calib, progress=None):
            return dataclasses.replace(super().detect(proxy_path, frames, calib, progress), finger_pose=pose)

    r3 = ManoHands().track("unused.mp4", None, {})
    assert r3.stats["finger_pose_convention"] == skeleton.MANO_POSE_CONVENTION
    t3 = r3.tracks
    fp3 = np.array(t3.column("finger_pose").to_pylist()).reshape(-1, 15, 3)
    fi3 = np.array(t3.column("frame_index").to_pylist())
    h3 = np.array(t3.column("hand").to_pylist())
    truth_pose = {(r[0], r[1]): pose[i] for i, r in enumerate(rows)}
    for i in np.flatnonzero(~np.array(t3.column("interpolated").to_pylist())):
        np.testing.assert_allclose(fp3[i], truth_pose[(fi3[i], h3[i])], atol=1e-6)
    (k,) = np.flatnonzero((fi3 == 10) & (h3 == "right"))
    np.testing.assert_allclose(fp3[k], (truth_pose[(9, "right")] + truth_pose[(11, "right")]) / 2, atol=1e-6)


def test_pipeline_on_projections_of_a_known_moving_hand():
    """Ground truth by construction: a right hand of the prior's size moves 0.6 -> 0.35 m from the
    camera while its fingers close; the 'landmarker' sees its exact projection plus 1.5 px noise and
    gives a 3D shape at its own population scale (9 cm) with 4 mm noise per joint. Through lift_hand
    and the whole assembly: no depth bias, palm centre within 2 cm, and the track's finger shape
    (joints relative to the middle MCP, the figure of the issue) better than the per-frame lifts."""
    from scipy.spatial.transform import Rotation

    from ego_assets.lib.hands import lifting
    from ego_assets.lib.hands.backends import HandDetections, HandsBackend

    rng = np.random.default_rng(21)
    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    n = 40
    R0 = np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]])
    truth, kps, worlds = [], [], []
    for f in range(n):
        a = f / (n - 1)
        T = skeleton.template_hand("right", 10 + 50 * a) * (skeleton.HAND_SIZE_PRIOR_M / skeleton.TEMPLATE_SIZE_M)
        R = Rotation.from_rotvec([0.5 + 0.3 * a, 0.2 * np.sin(3 * a), 0.1]).as_matrix() @ R0
        P = (T - T[0]) @ R.T + [0.08 - 0.1 * a, 0.06, 0.6 - 0.25 * a]
        p = P @ K.T
        truth.append(P)
        kps.append(p[:, :2] / p[:, 2:] + rng.normal(0, 1.5, (21, 2)))
        W = (P - P.mean(0)) * (0.09 / skeleton.HAND_SIZE_PRIOR_M) + rng.normal(0, 0.004, (21, 3))
        worlds.append(W)
    truth, kps, worlds = np.array(truth), np.array(kps), np.array(worlds)
    lifts = [lifting.lift_hand(k, w, K) for k, w in zip(kps, worlds)]

    class Projected(HandsBackend):
        name, version = "projected", "0"

        def detect(self, proxy_path, frames, calib, progress=None):
            return HandDetections(self.name, frame_index=np.arange(n), detection=np.zeros(n, int), mp_label=np.array(["Right"] * n),
                        mp_score=np.full(n, 0.95), kp2d=kps, world=worlds,
                        joints_cam=np.array([L.joints_cam for L in lifts]), fit=np.array([L.fit for L in lifts]),
                        reproj_px=np.array([L.reproj_px for L in lifts]), t_s=np.arange(n) * 0.1,
                        image_size=(640, 480), K=K, undistorted=False,
                        timing=dict(decode_s=0.0, landmarker_s=0.0, lifting_s=0.0))

    res = Projected().track("unused.mp4", None, {})
    t = res.tracks
    assert set(t.column("hand").to_pylist()) == {"right"} and t.num_rows == n
    J = np.array(t.column("joints_cam").to_pylist()).reshape(n, 21, 3)
    raw = np.array([L.joints_cam for L in lifts])
    palm = [0, 5, 9, 13, 17]

    def figures(X):
        c_err = np.linalg.norm(X[:, palm].mean(1) - truth[:, palm].mean(1), axis=-1)
        bias = np.median(X[:, palm, 2].mean(1) - truth[:, palm, 2].mean(1))
        shape = np.linalg.norm((X - X[:, 9:10]) - (truth - truth[:, 9:10]), axis=-1)[:, [j for j in range(21)
                                                                                          if j != 9]].mean()
        return np.median(c_err), bias, shape

    c_raw, b_raw, s_raw = figures(raw)
    c, b, s = figures(J)
    assert abs(b) < 0.01, b  # no depth bias: the prior is this hand's size
    assert c < 0.02, c
    assert s < s_raw and s < 0.012, (s, s_raw)
