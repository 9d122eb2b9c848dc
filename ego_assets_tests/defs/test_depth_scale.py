"""The calibration stage's metric depth reaches the pose stage (issue 4): a depth backend's per-frame
depth is kept with the calibration and becomes the metric scale of `camera_poses`.

The depth backend here is registered by the test (as a user's plug-in would be) and returns the exact
depth of a rendered scene, so the scale that comes out can be checked against ground truth; the real
DepthPro backend producing that same table from weights on disk is covered in
lib/geometry/test_calibration_backends.py.
"""

import numpy as np
import pytest

from ego_assets.defs.execute import materialize_videos
from ego_assets.defs.geometry import SCENE_DEPTH
from ego_assets.defs.partitions import videos
from ego_assets.lib import backends
from ego_assets.lib.geometry import render
from ego_assets.lib.geometry.calibration_backends import CalibrationResult, PriorCalibration
from ego_assets.lib.sources import Source
from ego_assets_tests.helpers.homes import register_source

TRUTH: dict = {}


@backends.register("calibration", "test_truth_depth")
class TruthDepthCalibration(PriorCalibration):
    """The source's intrinsics, plus the rendered scene's exact depth in the depth backends' table form."""

    def calibrate(self, video, proxy_path, frames, proxy_size, hints, progress=None):
        res = super().calibrate(video, proxy_path, frames, proxy_size, hints, progress)
        return CalibrationResult(self.name, res.calibration, TRUTH["seq"].scene_depth(every=2))


def _run(tmp_path, monkeypatch, backend: str):
    import dagster as dg

    home = tmp_path / backend / "home"
    folder = tmp_path / backend / "src"
    folder.mkdir(parents=True)
    seq, _ = render.render_sequence(str(folder / "room.mp4"), n_frames=29, fps=10.0, kind="head",
                                    hands=False, with_depth=True)
    TRUTH["seq"] = seq
    K = seq.K
    monkeypatch.setenv("EGO_ASSETS_HOME", str(home))
    monkeypatch.setenv("EGO_ASSETS_CALIBRATION_BACKEND", backend)
    from ego_assets.definitions import defs

    src = Source(name="room", uri=str(folder), intrinsics=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]])
    store, found = register_source(home, src)
    pk = found[0].partition_key
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(videos.name, [pk])
        status = materialize_videos(defs, instance, store, [pk])
    assert status[pk].status in ("ok", "failed")
    for a in ("calibrations", "camera_poses"):
        assert store.lineage(a, pk)[-1]["status"] == "ok", store.lineage(a, pk)[-1]
    return store, pk, seq


# 2.9 s: under the 3 s from which the hands gate expects hands (the rendered room has none)


@pytest.mark.slow
def test_depth_from_calibration_makes_camera_poses_metric(tmp_path, monkeypatch):
    store, pk, seq = _run(tmp_path, monkeypatch, "test_truth_depth")
    assert store.exists(store.artifact("calibrations", pk, SCENE_DEPTH))
    poses = store.read_table("camera_poses", pk)
    assert set(poses.column("scale").to_pylist()) == {"metric"}
    e = render.trajectory_errors(seq.T_wc, poses)
    assert abs(e["scale"] - 1.0) < 0.10, e  # metres, within 10 % on this short (2.9 s) path
    assert e["rot_err_deg_median"] < 1.0 and e["ate_pct"] < 3.0, e

    # without a depth backend (and no hands in view) the scale is honestly relative
    store2, pk2, _ = _run(tmp_path, monkeypatch, "prior")
    assert not store2.exists(store2.artifact("calibrations", pk2, SCENE_DEPTH))
    assert set(store2.read_table("camera_poses", pk2).column("scale").to_pylist()) == {"relative"}
    np.testing.assert_equal(pk, pk2)  # the same video
