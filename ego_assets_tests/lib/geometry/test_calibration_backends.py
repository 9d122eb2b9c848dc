"""Calibration backends through the registry; DepthPro with a tiny random-weight model saved to disk and
loaded through the same path as the real weights."""

import math

import numpy as np
import pytest

from ego_assets.lib import backends, schemas
from ego_assets.lib.geometry import calibration_backends as cb
from ego_assets.lib.geometry import checks, render
from ego_assets_tests.helpers import tiny_models


@pytest.fixture(scope="module")
def small_proxy(tmp_path_factory):
    p = str(tmp_path_factory.mktemp("proxy") / "proxy.mp4")
    seq, _ = render.render_sequence(p, n_frames=5, size=(160, 96), hands=False)
    return p, seq


def test_registry_defaults_and_resources():
    assert {"prior", "depthpro", "moge"} <= set(backends.available("calibration"))
    assert backends.backend_class("calibration", "prior") is cb.PriorCalibration
    assert cb.PriorCalibration.resources.gpu == 0
    assert cb.DepthProCalibration.resources.gpu == 1
    assert cb.DepthProCalibration.code_version() == "depthpro@1"


def test_prior_backend_row(small_proxy):
    p, seq = small_proxy
    b = backends.create("calibration", "prior")
    res = b.calibrate({"width": 160, "height": 96}, p, seq.frames_table(), (160, 96), None)
    row = schemas.conform("calibrations", res.calibration, "pk").to_pylist()[0]
    assert row["method"] == "prior:hfov90" and checks.check_intrinsics(row)[0]
    assert res.scene_depth is None  # the prior measures no depth


@pytest.fixture(scope="module")
def tiny_depthpro(tmp_path_factory):
    return tiny_models.tiny_depthpro(tmp_path_factory.mktemp("depthpro"))


@pytest.mark.slow
def test_depthpro_loads_from_the_configured_path_and_runs(tiny_depthpro, small_proxy, monkeypatch):
    monkeypatch.setenv("EGO_ASSETS_DEPTHPRO_MODEL", tiny_depthpro)
    p, seq = small_proxy
    b = backends.create("calibration", "depthpro", depth_every=2, device="cpu")
    assert b.source() == tiny_depthpro
    fov, unit = b.infer(np.zeros((96, 160, 3), np.uint8) + 128)
    assert isinstance(fov, float) and unit.shape == (96, 160) and np.all(unit > 0)

    # no hint: the model's FoV is used if plausible (random weights: usually not, and the method says so)
    res = b.calibrate({"width": 160, "height": 96}, p, seq.frames_table(), (160, 96), None)
    row = schemas.conform("calibrations", res.calibration, "pk").to_pylist()[0]
    assert row["method"] == "depthpro" or row["method"].startswith("prior:hfov90+depthpro:")
    assert checks.check_intrinsics(row)[0]
    sd = res.scene_depth
    # every 2nd frame, plus the frames sampled for the field of view (here all 5)
    assert sd.column("frame_index").to_pylist() == [0, 1, 2, 3, 4]
    assert np.all(np.isfinite(sd.column("depth_m").to_numpy())) and np.all(sd.column("depth_m").to_numpy() > 0)
    assert len(sd.column("depth_grid")[0].as_py()) == cb.DEPTH_GRID[0] * cb.DEPTH_GRID[1]

    # metric depth follows the focal length the calibration settles on: depth = (f / W) / inverse depth
    sd90 = b.calibrate({"width": 160, "height": 96}, p, seq.frames_table(), (160, 96), {"hfov_deg": 90}).scene_depth
    assert sd90.column("frame_index").to_pylist() == [0, 2, 4]  # a hint: no FoV sampling
    d90 = sd90.column("depth_m").to_numpy()
    d60 = b.calibrate({"width": 160, "height": 96}, p, seq.frames_table(), (160, 96),
                      {"hfov_deg": 60}).scene_depth.column("depth_m").to_numpy()
    np.testing.assert_allclose(d60 / d90, math.tan(math.radians(45)) / math.tan(math.radians(30)), rtol=1e-5)


def test_fov_estimates_to_intrinsics():
    intr = cb.fov_intrinsics([88.0, 91.0, 90.0, 300.0], (640, 360), "depthpro")
    assert intr.method == "depthpro" and intr.hfov_deg() == pytest.approx(90.0)
    rej = cb.fov_intrinsics([-12.0, 400.0], (640, 360), "depthpro")
    assert rej.method.startswith("prior:hfov90+depthpro:fov_rejected")


@pytest.mark.slow
def test_missing_weights_and_missing_package_are_clear(tmp_path, small_proxy, monkeypatch):
    p, seq = small_proxy
    monkeypatch.setenv("EGO_ASSETS_DEPTHPRO_MODEL", str(tmp_path / "nothing-here"))
    with pytest.raises(cb.ModelUnavailableError, match="EGO_ASSETS_DEPTHPRO_MODEL"):
        backends.create("calibration", "depthpro").calibrate({}, p, seq.frames_table(), (160, 96), None)
    with pytest.raises(cb.ModelUnavailableError, match="MoGe-2 package is not installed"):
        backends.create("calibration", "moge").calibrate({}, p, seq.frames_table(), (160, 96), None)
