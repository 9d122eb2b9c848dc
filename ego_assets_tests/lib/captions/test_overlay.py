"""Overlay geometry: world trajectory -> each frame's camera -> pixels, and the drawing itself."""

import numpy as np
import pytest

from ego_assets.lib.captions import overlay
from ego_assets.lib.captions.base import segment_views
from ego_assets.lib.captions.overlay import (draw_overlay, make_projector, overlay_frame_indices,
                                             render_overlays)

from .conftest import build_scene


@pytest.fixture(scope="module")
def moving(tmp_path_factory):
    return build_scene(tmp_path_factory.mktemp("moving"), moving_camera=True)


def test_projection_matches_the_tracked_keypoints(moving):
    """The wrist of hand_world, taken back into frame f's camera with T_wc^-1 and projected, lands on
    the 2-D wrist keypoint the tracker saw in frame f (while the camera moves)."""
    views = segment_views(moving.segments, moving.hand_world, moving.tables.camera_poses)
    proj = make_projector(moving.calib)
    ht = moving.tables.hand_tracks.to_pylist()
    kp = {(r["frame_index"], r["hand"]): np.array(r["kp2d"][:2]) for r in ht}
    checked = 0
    for v in views:
        for f in overlay_frame_indices(v, 4):
            k = int(np.searchsorted(v.frame_index, f))
            uv, front = proj.project(v.to_camera(f, v.wrist[k:k + 1]), 160, 120)
            assert front.all()
            assert np.linalg.norm(uv[0] - kp[(f, v.hand)]) < 1.0
            checked += 1
    assert checked == 8


def test_overlay_frames_and_drawing(moving, tmp_path):
    views = segment_views(moving.segments, moving.hand_world, moving.tables.camera_poses)
    v = next(x for x in views if x.hand == "right")
    idx = overlay_frame_indices(v, 4)
    assert len(idx) == 4 and idx[0] == v.start_frame and idx[-1] == v.end_frame
    assert np.all(np.diff(idx) > 0)
    black = np.zeros((120, 160, 3), np.uint8)
    proj = make_projector(moving.calib)
    f = idx[0]
    img = draw_overlay(black, v, f, 1, proj)
    uv, _ = proj.project(v.to_camera(f, v.wrist), 160, 120)
    # pixels along the future path are drawn; colour runs from blue-ish (now) to red-ish (end)
    end = np.round(uv[-2]).astype(int)
    patch = img[end[1] - 1:end[1] + 2, end[0] - 1:end[0] + 2].reshape(-1, 3).astype(int)
    assert patch.sum(axis=1).max() > 100
    reddest = patch[np.argmax(patch.sum(axis=1))]
    assert reddest[0] > reddest[2]
    # the label: a black box in the top-left corner with the order in white (seen on a grey frame);
    # another order, another label; the bottom-left corner is untouched
    grey = np.full((120, 160, 3), 128, np.uint8)
    one, two = draw_overlay(grey, v, f, 1, proj), draw_overlay(grey, v, f, 2, proj)
    assert (one[:4, :4] == 0).all() and one[:20, :20].max() == 255
    assert not np.array_equal(one[:20, :20], two[:20, :20])
    assert img[:20, :20].max() == 255  # the number is drawn on a black frame too
    assert img[-10:, :10].max() == 0 and (one[-10:, :10] == 128).all()
    overlays = render_overlays(moving.proxy, views, moving.calib, n_frames=4)
    assert {sid: [f for f, _ in lst] for sid, lst in overlays.items()}[v.segment_id] == idx
    assert all(b[:2] == b"\xff\xd8" for lst in overlays.values() for _, b in lst)


def test_distortion_models(monkeypatch, moving):
    import cv2

    pts = np.array([[0.05, -0.03, 0.4], [-0.1, 0.05, 0.5], [0.0, 0.0, 1.0], [0.3, 0.2, 0.5]])
    base = dict(moving.calib, width=160, height=120)
    K = np.array([[base["fx"], 0, base["cx"]], [0, base["fy"], base["cy"]], [0, 0, 1.0]])
    monkeypatch.setattr(overlay, "_geometry_undistorter", lambda calib: None)
    radtan = dict(base, distortion_model="radtan", dist_coeffs=[-0.2, 0.05, 0.001, -0.001, 0.0])
    p = make_projector(radtan)
    assert p.model == "radtan"
    uv, _ = p.project(pts, 160, 120)
    ref, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), K, np.array(radtan["dist_coeffs"]))
    assert np.allclose(uv, ref.reshape(-1, 2))
    fish = dict(base, distortion_model="fisheye", dist_coeffs=[0.1, -0.02, 0.0, 0.0])
    uv, _ = make_projector(fish).project(pts, 160, 120)
    ref, _ = cv2.fisheye.projectPoints(pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K,
                                       np.array(fish["dist_coeffs"]).reshape(4, 1))
    assert np.allclose(uv, ref.reshape(-1, 2))
    assert np.linalg.norm(uv[3] - (K @ pts[3] / pts[3, 2])[:2]) > 5.0  # a wide angle: not a pinhole
    # with an undistorter, the frame is rectified and the rectified pinhole is used
    calls = []
    p2 = make_projector(dict(radtan, rect_fx=100.0, rect_fy=100.0, rect_cx=80.0, rect_cy=60.0),
                        undistort=lambda im: calls.append(1) or im[::-1].copy())
    assert p2.model == "none" and p2.K[0, 0] == 100.0
    p2.prepare(np.zeros((120, 160, 3), np.uint8))
    assert calls == [1]
    uv, _ = p2.project(np.array([[0.0, 0.0, 1.0]]), 160, 120)
    assert np.allclose(uv, [[80.0, 60.0]])
    # intrinsics follow the image size when it differs from the calibration's
    uv, _ = make_projector(dict(base, width=320, height=240)).project(pts[:1], 160, 120)
    assert np.allclose(uv[0], ((K @ pts[0] / pts[0, 2])[:2] - [base["cx"], base["cy"]]) / 2
                       + [base["cx"] / 2, base["cy"] / 2])
    with pytest.raises(ValueError, match="distortion_model"):
        make_projector(dict(base, distortion_model="kannala", dist_coeffs=[0.1]))
    with pytest.raises(ValueError, match="'fx'"):
        make_projector({"fy": 1.0})


def test_short_proxy_is_a_clear_error(moving, tmp_path):
    from .conftest import write_proxy

    short = tmp_path / "short.mp4"
    write_proxy(short, moving.tables.frames["t_s"].to_numpy()[:10])
    views = segment_views(moving.segments, moving.hand_world, moving.tables.camera_poses)
    with pytest.raises(ValueError, match="short.mp4.*ended before frame"):
        render_overlays(str(short), views, moving.calib, n_frames=4)


def test_undistorted_frame_agrees_with_distorted_projection(moving):
    """A dot drawn where the distortion model puts a 3-D point on the raw frame lands, after the
    geometry stage's undistorter, where the rectified pinhole puts it: both routes agree."""
    import cv2

    calib = dict(moving.calib, distortion_model="radtan", dist_coeffs=[-0.25, 0.08, 0.0, 0.0, 0.0],
                 rect_fx=110.0, rect_fy=110.0, rect_cx=80.0, rect_cy=60.0)
    raw_route = make_projector({k: v for k, v in calib.items() if not k.startswith("rect_")})
    assert raw_route.model == "radtan" and raw_route.undistort is None
    rect_route = make_projector(calib)  # uses ego_assets.lib.geometry.calibration.undistorter
    assert rect_route.model == "none" and rect_route.undistort is not None
    pt = np.array([[0.12, -0.08, 0.45]])
    uv_raw, _ = raw_route.project(pt, 160, 120)
    img = np.zeros((120, 160, 3), np.uint8)
    cv2.circle(img, tuple(int(v) for v in np.round(uv_raw[0] * 16)), 2 * 16, (255, 255, 255), -1,
               cv2.LINE_AA, 4)
    rect = rect_route.prepare(img)[..., 0].astype(float)
    ys, xs = np.nonzero(rect > 20)
    w = rect[ys, xs]
    centroid = np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])
    uv_rect, _ = rect_route.project(pt, 160, 120)
    assert np.linalg.norm(centroid - uv_rect[0]) < 0.7
    assert np.linalg.norm(uv_rect[0] - uv_raw[0]) > 3.0  # the two images really differ there
