"""Intrinsics from each source, undistortion, and static-vs-moving classification."""

import math

import numpy as np
import pytest

from ego_assets.lib.geometry import calibration as cal
from ego_assets.lib.geometry import render

PROXY = (640, 360)


def test_hfov_hint_gives_a_centred_pinhole():
    intr = cal.intrinsics_from_hints({"hfov_deg": 100.0}, PROXY, (1920, 1080))
    assert intr.method == "hint:hfov"
    assert intr.fx == pytest.approx(320 / math.tan(math.radians(50)))
    assert (intr.cx, intr.cy) == (319.5, 179.5)
    assert intr.hfov_deg() == pytest.approx(100.0)


def test_intrinsics_hint_is_scaled_to_the_proxy():
    # 1920x1080 source, principal point off-centre; the proxy is a 1/3 downscale
    intr = cal.intrinsics_from_hints({"intrinsics": [1500.0, 1490.0, 970.0, 530.0]}, PROXY, (1920, 1080))
    assert intr.method == "hint:intrinsics"
    assert intr.fx == pytest.approx(500.0) and intr.fy == pytest.approx(1490 / 3)
    # pixel centres at integers: x_proxy = (x_src + 0.5) / 3 - 0.5
    assert intr.cx == pytest.approx((970.5) / 3 - 0.5) and intr.cy == pytest.approx(530.5 / 3 - 0.5)
    # a point projected in the source lands on the same scene ray in the proxy
    X = np.array([0.3, -0.2, 1.0])
    u_src = 1500 * X[0] / X[2] + 970
    assert (u_src + 0.5) / 3 - 0.5 == pytest.approx(intr.fx * X[0] / X[2] + intr.cx)


def test_metadata_35mm_focal_and_the_prior():
    # a 26 mm-equivalent phone lens: diagonal FoV 2 atan(43.27 / 52) ~ 79.5 deg
    intr = cal.intrinsics_from_metadata({"com.apple.quicktime.camera.focal_length.35mm_equivalent": "26"}, PROXY)
    diag = math.hypot(*PROXY)
    assert intr.method == "metadata:f35"
    assert intr.fx == pytest.approx(26 * diag / cal.FULL_FRAME_DIAGONAL_MM)
    assert math.degrees(2 * math.atan(diag / 2 / intr.fx)) == pytest.approx(
        math.degrees(2 * math.atan(cal.FULL_FRAME_DIAGONAL_MM / 52)))
    assert cal.intrinsics_from_metadata({"encoder": "Lavf"}, PROXY) is None
    assert cal.intrinsics_from_metadata({"focal_length_35mm": "1"}, PROXY) is None  # 170+ deg: misread
    prior = cal.resolve_intrinsics(None, {}, PROXY, None)
    assert prior.method == "prior:hfov90" and prior.fx == pytest.approx(320.0)
    # order of trust: hints over metadata over the prior
    both = cal.resolve_intrinsics({"hfov_deg": 70}, {"focal_length_35mm": 26}, PROXY, (1920, 1080))
    assert both.method == "hint:hfov"


@pytest.mark.parametrize("hints,needle", [
    ({"hfov_deg": 190}, "hfov_deg"),
    ({"intrinsics": [0, 100, 10, 10]}, "intrinsics"),
    ({"intrinsics": [100, 100, 5000, 10]}, "principal point"),
    ({"intrinsics": [500, 500, 320, 180], "distortion": {"model": "kb8", "coeffs": [0]}}, "model"),
    ({"intrinsics": [500, 500, 320, 180], "distortion": {"model": "fisheye", "coeffs": [0.1]}}, "4"),
    ({"distortion": {"model": "fisheye", "coeffs": [0.1, 0, 0, 0]}}, "without intrinsics"),
])
def test_bad_hints_are_named(hints, needle):
    with pytest.raises(cal.CalibrationInputError, match=needle):
        cal.intrinsics_from_hints(hints, PROXY, (640, 360))


def _dot_image(u, v, size=PROXY):
    img = np.zeros((size[1], size[0]), np.uint8)
    import cv2

    cv2.circle(img, (int(round(u * 16)), int(round(v * 16))), 3 * 16, 255, -1, lineType=cv2.LINE_AA, shift=4)
    return img


def _centroid(img):
    ys, xs = np.nonzero(img > 40)
    w = img[ys, xs].astype(float)
    return np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])


@pytest.mark.parametrize("model,coeffs", [("fisheye", [0.05, -0.02, 0.01, -0.003]),
                                          ("radtan", [-0.28, 0.08, 0.001, -0.0005, 0.0])])
def test_undistortion_maps_a_distorted_point_back(model, coeffs):
    import cv2

    hints = {"intrinsics": [300.0, 300.0, 319.5, 179.5], "distortion": {"model": model, "coeffs": coeffs}}
    intr = cal.intrinsics_from_hints(hints, PROXY, PROXY)
    rect = cal.rectified_intrinsics(intr)
    row = cal.calibration_table(intr, cal.CameraMotion("moving", 1.0, [], 0), rect).to_pylist()[0]
    und = cal.undistorter(row)
    assert und is not None and row["distortion_model"] == model
    # a scene ray, its distorted pixel, and where the rectified camera must show it
    ray = np.array([[[0.45, -0.25]]])
    D = np.asarray(coeffs, float)
    if model == "fisheye":
        dist = cv2.fisheye.distortPoints(ray, intr.K, D.reshape(4, 1)).reshape(2)
    else:
        dist = cv2.projectPoints(np.array([[0.45, -0.25, 1.0]]), np.zeros(3), np.zeros(3), intr.K, D)[0].reshape(2)
    expect = np.array([rect[0] * 0.45 + rect[2], rect[1] * -0.25 + rect[3]])
    assert np.linalg.norm(dist - expect) > 5  # the distortion is not negligible there
    found = _centroid(und(_dot_image(*dist)))
    assert np.linalg.norm(found - expect) < 0.5
    # and the row keeps the true field of view of the distorted camera
    assert row["hfov_deg"] == pytest.approx(intr.hfov_deg())
    assert cal.undistorter(dict(row, distortion_model="none")) is None


def test_fisheye_hfov_beyond_what_a_pinhole_could_see():
    # equidistant fisheye (k = 0): the border at 320 px from the centre with f = 160 is 2 rad off axis
    intr = cal.Intrinsics(160.0, 160.0, 319.5, 179.5, 640, 360, "fisheye", (0.0, 0.0, 0.0, 0.0))
    assert intr.distorted is False  # all-zero coefficients: nothing to undo
    intr = cal.Intrinsics(160.0, 160.0, 319.5, 179.5, 640, 360, "fisheye", (1e-9, 0.0, 0.0, 0.0))
    assert intr.hfov_deg() == pytest.approx(math.degrees(4.0), rel=1e-4)


@pytest.fixture(scope="module")
def static_and_moving(tmp_path_factory):
    d = tmp_path_factory.mktemp("motion")
    out = {}
    for kind in ("static", "head"):
        p = str(d / f"{kind}.mp4")
        seq, _ = render.render_sequence(p, n_frames=12, kind=kind)
        out[kind] = (p, seq)
    return out


def test_static_and_moving_cameras_from_background_motion(static_and_moving):
    from ego_assets.lib.geometry.odometry import HandMasker

    p, seq = static_and_moving["static"]
    m = cal.classify_camera_motion(p, 12)
    assert m.label == "static" and m.value < 0.3
    masker = HandMasker(seq.hand_tracks(), seq.size)
    assert cal.classify_camera_motion(p, 12, mask_fn=masker.mask).label == "static"
    p, seq = static_and_moving["head"]
    m = cal.classify_camera_motion(p, 12)
    assert m.label == "moving" and m.value > 3


def test_hands_over_a_still_scene_do_not_make_it_move():
    # a large textured patch (40 % of the frame) sliding over a static background
    from ego_assets_tests.helpers.synth import texture
    import cv2

    bg = cv2.cvtColor(texture(360, 640, 1), cv2.COLOR_RGB2GRAY)
    patch = cv2.cvtColor(texture(220, 300, 2), cv2.COLOR_RGB2GRAY)
    vals = []
    for i in range(3):
        a, b = bg.copy(), bg.copy()
        a[60:280, 40 + 20 * i: 340 + 20 * i] = patch
        b[60:280, 48 + 20 * i: 348 + 20 * i] = patch
        vals.append(cal.background_motion(a, b))
    assert max(vals) < 0.3
    # the same background shifted by 3 px is motion
    moved = cal.background_motion(bg, np.roll(bg, 3, axis=1))
    assert moved == pytest.approx(3.0, abs=0.3)


def test_calibrate_prior_row(static_and_moving):
    from ego_assets.lib import schemas

    p, seq = static_and_moving["head"]
    video = dict(width=1920, height=1080, rotation_deg=0, uri="/nonexistent.mp4")
    t = cal.calibrate_prior(video, p, seq.frames_table(), seq.size, {"hfov_deg": 90})
    row = schemas.conform("calibrations", t, "pk").to_pylist()[0]
    assert row["method"] == "hint:hfov" and row["camera_motion"] == "moving"
    assert row["fx"] == pytest.approx(seq.K[0, 0]) and row["rect_fx"] == row["fx"]
    assert row["distortion_model"] == "none" and row["dist_coeffs"] == []
    with pytest.raises(cal.CalibrationInputError, match="proxy_size"):
        cal.calibrate_prior(video, p, seq.frames_table(), (0, 0), None)
